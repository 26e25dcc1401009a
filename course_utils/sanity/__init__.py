"""Sanity checks for saliency maps: model and label randomization.

Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim, "Sanity Checks for Saliency
Maps", NeurIPS 2018. A map that looks plausible may not depend on the model.
If it is an explanation *of the model*, it must change when the model's
weights are destroyed or when the model learned nothing about the labels.

Tests (each works on deep copies: the trained model is never touched):

* `cascading_randomization`: re-initialise the named blocks top down (logits
  first, then each block down to the first), recompute every map after each
  step and compare it with the trained model's map.
* `independent_randomization`: re-initialise one block at a time, the others
  keep their trained weights.
* `label_randomization`: compare the maps of the trained model with those of
  the same architecture trained on permuted labels (`train_random_labels`;
  shipped as `weights/small_cnn_random_labels.pt`), next to a control: the
  same recipe trained on the true labels with another seed
  (`weights/small_cnn_seed1.pt`).

Similarities, per image (`similarity`, `METRICS`): Spearman rank correlation
of the signed maps and of the absolute maps, SSIM and HOG-feature
correlation. Results are `SanityResult`s holding tidy pandas tables
(`.table`: step, layer or model, method, metric, mean, std, n, n_constant;
`.per_image`: one row per image) ready for Altair (`cascade_curve`,
`cascade_grid`, `label_chart`, which live in `course_utils.plotting.sanity`).

The package, one concern per module:

* `randomize`: re-initialising blocks of copies (`randomize`, `Randomization`);
* `similarity`: the measures, pure f(a, b) functions registered by name
  (`SIMILARITIES`), and the constant-map rule (`compare`);
* `result`: `SanityResult`;
* `run`: the one engine (`run`, `Settings`) and the two model tests;
* `labels`: random-label training (through `models.train`) and the label test;
* `verdict`: pass/fail per method.

The functions `randomize` and `similarity` share their names with their
modules and win at the package level; reach the modules with
`importlib.import_module("course_utils.sanity.similarity")`. The engine is
`course_utils.sanity.run.run`.

The checkpoints "small_cnn_random_labels" and "small_cnn_seed1" are declared in
`models.CHECKPOINTS` (`course train NAME` rebuilds them); importing this
package changes no registry.
"""

from __future__ import annotations

from ._shared import DEFAULT_METHODS
from .labels import (
    RANDOM_LABELS_BATCH_SIZE,
    RANDOM_LABELS_LR,
    RANDOM_LABELS_MAX_EPOCHS,
    RANDOM_LABELS_N_TRAIN,
    RANDOM_LABELS_NAME,
    RANDOM_LABELS_SEED,
    RANDOM_LABELS_THRESHOLD,
    RESEEDED_NAME,
    label_randomization,
    random_labels,
    train_random_labels,
)
from .randomize import RULES, Randomization, randomization_layers, randomize
from .result import SanityResult
from .run import (
    TARGET_MODES,
    Settings,
    cascading_randomization,
    default_methods,
    independent_randomization,
)
from .similarity import (
    BOTH_CONSTANT,
    HOG_PARAMS,
    METRICS,
    ONE_CONSTANT,
    SIMILARITIES,
    hog_similarity,
    similarity,
    spearman,
    ssim,
)
from .verdict import VERDICT_METRICS, verdict

__all__ = [
    "BOTH_CONSTANT",
    "DEFAULT_METHODS",
    "HOG_PARAMS",
    "METRICS",
    "ONE_CONSTANT",
    "RANDOM_LABELS_BATCH_SIZE",
    "RANDOM_LABELS_LR",
    "RANDOM_LABELS_MAX_EPOCHS",
    "RANDOM_LABELS_NAME",
    "RANDOM_LABELS_N_TRAIN",
    "RANDOM_LABELS_SEED",
    "RANDOM_LABELS_THRESHOLD",
    "RESEEDED_NAME",
    "RULES",
    "SIMILARITIES",
    "TARGET_MODES",
    "VERDICT_METRICS",
    "Randomization",
    "SanityResult",
    "Settings",
    "cascade_curve",
    "cascade_grid",
    "cascading_randomization",
    "default_methods",
    "hog_similarity",
    "independent_randomization",
    "label_chart",
    "label_randomization",
    "random_labels",
    "randomization_layers",
    "randomize",
    "similarity",
    "spearman",
    "ssim",
    "train_random_labels",
    "verdict",
]

# The charts live in plotting; imported on first use so that this package does
# not need Altair.
_CHARTS = ("cascade_curve", "cascade_grid", "label_chart", "METRIC_TITLES")


def __getattr__(name: str):
    if name in _CHARTS:
        from ..plotting import sanity as charts

        return getattr(charts, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_CHARTS})
