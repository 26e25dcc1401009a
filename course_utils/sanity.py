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
`cascade_grid`, `label_chart`).

Importing this module registers "small_cnn_random_labels" and
"small_cnn_seed1" in `models.TRAINERS` (so `course train NAME` rebuilds them)
and `models.EXTRA_MODELS` (so `models.load_pretrained(NAME)` loads them).
"""

from __future__ import annotations

import copy
import math
import numbers
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, partial

import altair as alt
import numpy as np
import pandas as pd
import torch
from scipy.stats import rankdata
from skimage.feature import hog
from skimage.metrics import structural_similarity
from torch import nn

from . import data, models
from . import saliency as sal
from .saliency._common import target_tensor

__all__ = [
    "BOTH_CONSTANT",
    "DEFAULT_METHODS",
    "METRICS",
    "ONE_CONSTANT",
    "RANDOM_LABELS_NAME",
    "RESEEDED_NAME",
    "RULES",
    "TARGET_MODES",
    "VERDICT_METRICS",
    "SanityResult",
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

# The six methods of the lecture's sanity-check slides, by `sal.METHODS` name.
DEFAULT_METHODS = (
    "gradient",
    "input_x_gradient",
    "integrated_gradients",
    "smoothgrad",
    "grad_cam",
    "guided_backprop",
)
METRICS = ("spearman", "spearman_abs", "ssim", "hog")
METRIC_TITLES = {
    "spearman": "Spearman (signed)",
    "spearman_abs": "Spearman (absolute)",
    "ssim": "SSIM",
    "hog": "HOG correlation",
}
RULES = ("reset", "normal")
_STEP_TITLES = {
    "cascading": "randomized layers (top down, cumulative)",
    "independent": "randomized layer (alone)",
    "labels": "model",
}
TARGET_MODES = ("original", "argmax")
# Documented values when a map is constant (all its values equal), where a
# correlation is undefined (0/0): both constant → identical → 1; one constant →
# it shares no ranking/structure with the other → 0 (never NaN).
BOTH_CONSTANT = 1.0
ONE_CONSTANT = 0.0
# HOG parameters for 28×28 maps: 4×4 cells of 7×7 pixels, 3×3 blocks of 2×2 cells
# (324 features; skimage's default 8×8-pixel cells leave one block on a digit).
HOG_PARAMS = {"orientations": 9, "pixels_per_cell": (7, 7), "cells_per_block": (2, 2)}

RANDOM_LABELS_NAME = "small_cnn_random_labels"
RESEEDED_NAME = "small_cnn_seed1"
# Label randomization recipe. Measured: 1,000 digits pass 95% train accuracy
# after 50 epochs, ≈ 40 CPU-seconds on one thread (the shipped checkpoint; 3-4
# minutes of wall time on a shared, busy 2-core machine). Memorising all 4,000
# would take several times longer, so the subset keeps retraining in class time.
RANDOM_LABELS_N_TRAIN = 1000
RANDOM_LABELS_THRESHOLD = 0.95
RANDOM_LABELS_MAX_EPOCHS = 150
RANDOM_LABELS_LR = 3e-3
RANDOM_LABELS_BATCH_SIZE = 64
RANDOM_LABELS_SEED = 0


def default_methods(n_steps: int = 50, n_samples: int = 50) -> dict[str, Callable]:
    """The six `DEFAULT_METHODS` as {name: f(model, x, target)}, with IG's
    `n_steps` and SmoothGrad's `n_samples` set (both ≥ 1; default 50 = the
    `sal.METHODS` defaults). Fewer steps/samples make the many recomputations
    of a randomization test cheaper; the cost is linear in both."""
    n_steps = _check_int(n_steps, "n_steps", 1)
    n_samples = _check_int(n_samples, "n_samples", 1)
    out = {name: sal.METHODS[name] for name in DEFAULT_METHODS}
    out["integrated_gradients"] = partial(sal.integrated_gradients, n_steps=n_steps)
    out["smoothgrad"] = partial(sal.smoothgrad, n_samples=n_samples)
    return out


# ------------------------------------------------------------------ layers


def randomization_layers(model: nn.Module) -> list[str]:
    """The model's named blocks that hold parameters, in forward (bottom-up) order.

    These are the top-level children with parameters, in registration order
    (which is the order of the forward pass for the course's models):
    SmallCNN → ["conv1", "conv2", "fc1", "fc2"]; ResNetSmall → ["stem",
    "layer1", "layer2", "layer3", "fc"]. `normalize` (buffers only), ReLUs and
    pooling hold no parameters and are skipped.
    """
    _check_model(model)
    names = [n for n, m in model.named_children() if any(True for _ in m.parameters())]
    if not names:
        raise ValueError("model has no child module with parameters to randomize")
    return names


def _check_layers(model: nn.Module, layers) -> list[str]:
    available = randomization_layers(model)
    if layers is None:
        return available
    if isinstance(layers, str) or not isinstance(layers, Sequence):
        raise TypeError(
            "layers must be None or a list of block names in bottom-up order, "
            f"e.g. {available}; got {type(layers).__name__}"
        )
    layers = list(layers)
    if not layers:
        raise ValueError(
            f"layers must not be empty; the model's blocks are {available}"
        )
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers must be unique, got {layers}")
    for name in layers:
        if not isinstance(name, str):
            raise TypeError(f"layers must hold block names (str), got {name!r}")
        if not name:
            raise ValueError(f"layers: a block name must not be empty; use {available}")
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ValueError(
                f"layers: the model has no submodule {name!r}; its blocks are "
                f"{available}"
            ) from None
        if not any(True for _ in module.parameters()):
            raise ValueError(
                f"layers: {name!r} holds no parameters; its blocks are {available}"
            )
    return layers


def _layer_seed(seed: int, name: str) -> int:
    """A per-layer seed from (seed, layer name), so a layer is re-initialised
    identically whatever else is randomized (cascading and independent agree
    on it)."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63 - 1)


@torch.no_grad()
def _reinit_(block: nn.Module, rule: str, sigma: float, seed: int) -> None:
    """Re-initialise every parameterised module inside `block`, in place."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in block.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                # γ = 1, β = 0, running mean 0, running var 1: exactly a freshly
                # built layer (finite, no NaN) under either rule.
                module.reset_parameters()
                continue
            own = list(module.parameters(recurse=False))
            if not own:
                continue
            if rule == "reset":
                if not hasattr(module, "reset_parameters"):
                    raise TypeError(
                        f"rule='reset' needs reset_parameters() on every module with "
                        f"parameters; {type(module).__name__} has none (use "
                        "rule='normal')"
                    )
                module.reset_parameters()
            else:
                for p in own:
                    p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * sigma)


def randomize(
    model: nn.Module,
    layers: str | Sequence[str],
    rule: str = "reset",
    sigma: float = 0.01,
    seed: int = 0,
) -> nn.Module:
    """A deep copy of `model` with the named blocks re-initialised.

    Rules (the weights of every Conv/Linear inside each block):

    * "reset" (default): the layer's own initialisation, `reset_parameters()`
      — PyTorch's Kaiming-uniform weights and uniform biases, i.e. exactly what
      a freshly built model holds. This matches Adebayo et al.'s code, which
      re-runs each variable's initialiser.
    * "normal": every weight and bias ~ N(0, σ²), σ = `sigma` (the lecture's
      code).

    BatchNorm under either rule: γ = 1, β = 0, running mean 0, running
    variance 1 (`reset_parameters()`, as freshly built), so eval-mode
    normalisation stays finite — never NaN.

    Seeding: block `name` is drawn from its own generator seeded by
    (`seed`, `name`), so randomizing fc2 alone or as part of a cascade gives
    the same new fc2. The global RNG is left as it was.

    Args:
        model: any module; never modified.
        layers: one dotted block name or a list of them ("fc2", ["fc1", "fc2"]).
        rule: "reset" or "normal".
        sigma: σ for rule="normal" (> 0). Default 0.01.
        seed: int ≥ 0. Default 0.
    Returns:
        The randomized copy, in eval mode.
    """
    _check_model(model)
    names = _check_layers(model, [layers] if isinstance(layers, str) else layers)
    rule, sigma, seed = _check_rule(rule, sigma, seed)
    out = copy.deepcopy(model)
    for name in names:
        _reinit_(out.get_submodule(name), rule, sigma, _layer_seed(seed, name))
    return out.eval()


# ------------------------------------------------------------------ similarity


def _as_maps(maps, name: str) -> np.ndarray:
    """(N, C, H, W) / (N, H, W) / (H, W) → (N, H, W) float64, channels summed."""
    if isinstance(maps, torch.Tensor):
        maps = maps.detach().cpu().double().numpy()
    elif not isinstance(maps, np.ndarray):
        raise TypeError(
            f"{name} must be a torch.Tensor or numpy array of maps "
            f"(N, C, H, W), (N, H, W) or (H, W); got {type(maps).__name__}"
        )
    a = np.asarray(maps, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    elif a.ndim == 4:
        a = a.sum(1)
    elif a.ndim != 3:
        raise ValueError(
            f"{name} must have shape (N, C, H, W), (N, H, W) or (H, W), got {a.shape}"
        )
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite; it holds NaN or Inf values")
    return a


def _constant(flat: np.ndarray) -> np.ndarray:
    """(N, P) → (N,) bool: every value of the row equal (exactly)."""
    return flat.max(1) == flat.min(1)


def _correlation(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise Pearson r of (N, P) arrays with the constant-map rule.

    Returns (r, constant) where constant[i] says a row of a or b is constant.
    """
    ca, cb = _constant(a), _constant(b)
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(1) / den
    r = np.where(ca & cb, BOTH_CONSTANT, np.where(ca | cb, ONE_CONSTANT, r))
    return np.clip(r, -1.0, 1.0), ca | cb


def _unit_abs(a: np.ndarray) -> np.ndarray:
    """|E| / max|E| per map, in [0, 1] (a constant-zero map stays 0)."""
    m = np.abs(a)
    top = m.reshape(len(m), -1).max(1)
    return m / np.where(top > 0, top, 1.0)[:, None, None]


def spearman(reference, maps, absolute: bool = False) -> np.ndarray:
    """Spearman rank correlation per image: Pearson r of the pixel ranks.

    ρ = corr(rank(E₁), rank(E₂)) over the H·W pixels of each image (ties get
    their average rank, as `scipy.stats.spearmanr`). With `absolute=True` the
    ranks are of |E|. Adebayo et al. report both: the signed ("diverging")
    version catches a map whose sign pattern changed, the absolute one ignores
    sign flips. Rank correlation needs no normalisation (it is invariant to
    any increasing rescaling of either map).

    Constant map (all values equal; e.g. Grad-CAM after its ReLU zeroes
    everything): ρ = ONE_CONSTANT (0.0) if one map is constant, BOTH_CONSTANT
    (1.0) if both are — never NaN.

    Args:
        reference, maps: (N, C, H, W), (N, H, W) or (H, W); channels are summed.
    Returns:
        (N,) float64 in [−1, 1].
    """
    return _metric_values("spearman_abs" if absolute else "spearman", reference, maps)[
        0
    ]


def ssim(reference, maps) -> np.ndarray:
    """Structural similarity (SSIM) per image of the normalised absolute maps.

    Each map is normalised as Adebayo et al. do for their comparisons and
    figures: Ê = |E| / max|E| ∈ [0, 1]. Then SSIM(Ê₁, Ê₂) (Wang et al., 2004)
    with `skimage.metrics.structural_similarity(data_range=1)`: 7×7 uniform
    window (or the largest odd window that fits), K₁ = 0.01, K₂ = 0.03.

    Constant map: ONE_CONSTANT (0.0) if one map is constant, BOTH_CONSTANT
    (1.0) if both are (SSIM itself would be defined here, but a constant map
    carries no structure; the same rule for every metric keeps tables
    comparable).

    Returns:
        (N,) float64 in [−1, 1].
    """
    return _metric_values("ssim", reference, maps)[0]


def hog_similarity(reference, maps) -> np.ndarray:
    """Pearson correlation of the HOG features of the normalised absolute maps.

    Each map is normalised to Ê = |E| / max|E| ∈ [0, 1] (Adebayo et al.), then
    described by histograms of oriented gradients (Dalal & Triggs, 2005;
    `skimage.feature.hog` with `HOG_PARAMS`: 9 orientations, 7×7-pixel cells,
    2×2-cell blocks, L2-Hys normalisation) and the two feature vectors are correlated.

    Constant map (or constant HOG vector): ONE_CONSTANT (0.0) / BOTH_CONSTANT
    (1.0), as for `spearman`.

    Returns:
        (N,) float64 in [−1, 1].
    """
    return _metric_values("hog", reference, maps)[0]


def _ssim_window(shape) -> int:
    side = min(shape)
    if side < 3:
        raise ValueError(f"maps must be at least 3×3 pixels for SSIM, got {shape}")
    return min(7, side if side % 2 else side - 1)


class _Prepared:
    """One batch of maps with what every metric needs, computed once (lazily).

    signed: (N, H·W) maps (channels summed); abs: |signed|; ranks of both
    (average ranks for ties); unit: |E| / max|E| as (N, H, W); hog: HOG
    features of unit; constant flags of the signed and absolute maps.
    """

    def __init__(self, maps, name: str):
        self.maps = _as_maps(maps, name)
        n = len(self.maps)
        self.signed = self.maps.reshape(n, -1)
        self.abs = np.abs(self.signed)
        self.const_signed = _constant(self.signed)
        self.const_abs = _constant(self.abs)
        self._cache: dict[str, np.ndarray] = {}

    def get(self, what: str) -> np.ndarray:
        if what not in self._cache:
            if what == "rank_signed":
                value = rankdata(self.signed, axis=1)
            elif what == "rank_abs":
                value = rankdata(self.abs, axis=1)
            elif what == "unit":
                value = _unit_abs(self.maps)
            else:  # "hog"
                value = np.stack(
                    [
                        hog(m, feature_vector=True, **HOG_PARAMS)
                        for m in self.get("unit")
                    ]
                )
            self._cache[what] = value
        return self._cache[what]


def _compare(metric: str, a: _Prepared, b: _Prepared) -> tuple[np.ndarray, np.ndarray]:
    """(values (N,), constant (N,) bool) of one metric; constant-map rule applied."""
    if a.maps.shape != b.maps.shape:
        raise ValueError(
            f"reference and maps must have the same shape, got {a.maps.shape} and "
            f"{b.maps.shape}"
        )
    if metric == "spearman":
        ca, cb = a.const_signed, b.const_signed
        vals, _ = _correlation(a.get("rank_signed"), b.get("rank_signed"))
    elif metric == "spearman_abs":
        ca, cb = a.const_abs, b.const_abs
        vals, _ = _correlation(a.get("rank_abs"), b.get("rank_abs"))
    elif metric == "ssim":
        ca, cb = a.const_abs, b.const_abs
        win = _ssim_window(a.maps.shape[1:])
        vals = np.array(
            [
                structural_similarity(p, q, data_range=1.0, win_size=win)
                for p, q in zip(a.get("unit"), b.get("unit"))
            ]
        )
    elif metric == "hog":
        ca = a.const_abs | _constant(a.get("hog"))
        cb = b.const_abs | _constant(b.get("hog"))
        vals, _ = _correlation(a.get("hog"), b.get("hog"))
    else:
        raise ValueError(f"metric must be one of {list(METRICS)}, got {metric!r}")
    vals = np.where(ca & cb, BOTH_CONSTANT, np.where(ca | cb, ONE_CONSTANT, vals))
    return vals.astype(np.float64), ca | cb


def _metric_values(metric: str, reference, maps) -> tuple[np.ndarray, np.ndarray]:
    """(values (N,), constant (N,) bool) of one metric for two batches of maps."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {list(METRICS)}, got {metric!r}")
    return _compare(metric, _Prepared(reference, "reference"), _Prepared(maps, "maps"))


def similarity(reference, maps, metric: str = "spearman") -> np.ndarray:
    """One of `METRICS` per image: "spearman" (signed maps), "spearman_abs"
    (absolute maps), "ssim", "hog" — see `spearman`, `ssim`, `hog_similarity`
    for formulas, normalisation and the constant-map values.

    Args:
        reference, maps: (N, C, H, W), (N, H, W) or (H, W) tensors or arrays
            of the same shape; channels are summed.
        metric: a name in `METRICS`. Default "spearman".
    Returns:
        (N,) float64, never NaN.
    """
    return _metric_values(metric, reference, maps)[0]


# ------------------------------------------------------------------ results


@dataclass
class SanityResult:
    """What a sanity check computed.

    Attributes:
        test: "cascading", "independent" or "labels".
        key: the column naming what was randomized: "layer" (model tests) or
            "model" (label test).
        per_image: tidy DataFrame, one row per (step, key, method, metric,
            image): value, constant (a map was constant; value follows the
            documented rule).
        maps: {key label: {method: (N, C, H, W) or (N, 1, H, W) maps}} in step
            order; the first entry is the trained model ("original").
        x: (N, C, H, W) inputs. target: (N,) classes explained on the trained
            model.
        settings: the arguments that produced it (rule, seed, …).
    """

    test: str
    key: str
    per_image: pd.DataFrame
    maps: dict[str, dict[str, torch.Tensor]]
    x: torch.Tensor
    target: torch.Tensor
    settings: dict = field(default_factory=dict)

    @cached_property
    def table(self) -> pd.DataFrame:
        """Tidy summary: step, key, method, metric, mean, std, n, n_constant.

        mean and std (ddof=0) are over the images; n_constant counts images
        whose value came from the constant-map rule. Computed once from
        `per_image` (do not edit `per_image` in place afterwards).
        """
        cols = ["step", self.key, "method", "metric"]
        g = self.per_image.groupby(cols, sort=False)
        out = g["value"].agg(mean="mean", std=lambda v: float(np.std(v))).reset_index()
        out["n"] = g["value"].size().to_numpy()
        out["n_constant"] = g["constant"].sum().astype(int).to_numpy()
        return out

    @property
    def order(self) -> list[str]:
        """The key labels in step order ("original" first)."""
        return list(self.maps)

    def pivot(self, metric: str = "spearman") -> pd.DataFrame:
        """Mean similarity as a methods × steps table for one metric."""
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {list(METRICS)}, got {metric!r}")
        t = self.table[self.table.metric == metric]
        p = t.pivot(index="method", columns=self.key, values="mean")
        methods = list(dict.fromkeys(t.method))
        return p.loc[methods, [k for k in self.order if k in p.columns]]


# ------------------------------------------------------------------ checks


def _check_model(model) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(
            "model must be a torch.nn.Module returning logits, got "
            f"{type(model).__name__}"
        )
    return model


def _check_rule(rule, sigma, seed) -> tuple[str, float, int]:
    if rule not in RULES:
        raise ValueError(f"rule must be one of {list(RULES)}, got {rule!r}")
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
        raise TypeError(f"sigma must be a number > 0, got {type(sigma).__name__}")
    if not (sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma must be a finite number > 0, got {sigma}")
    return rule, float(sigma), _check_seed(seed)


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int ≥ 0, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be an int ≥ 0, got {seed}")
    return int(seed)


def _check_x(x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"x must be a torch.Tensor (N, C, H, W), got {type(x).__name__}"
        )
    if not x.is_floating_point() or x.dim() != 4 or x.shape[0] < 1:
        raise ValueError(
            f"x must be a floating-point (N, C, H, W) tensor with N ≥ 1, got "
            f"{x.dtype} {tuple(x.shape)}"
        )
    return x


def _check_methods(methods) -> dict[str, Callable]:
    """None | name | callable | list of names/callables | {name: fn or name}."""
    if methods is None:
        methods = DEFAULT_METHODS
    if isinstance(methods, str) or callable(methods):
        methods = [methods]
    if isinstance(methods, Mapping):
        pairs = list(methods.items())
    elif isinstance(methods, Sequence):
        pairs = [
            (m if isinstance(m, str) else getattr(m, "__name__", repr(m)), m)
            for m in methods
        ]
    else:
        raise TypeError(
            "methods must be None, a name in sal.METHODS, a function f(model, x, "
            f"target), a list of those or a dict {{name: …}}; got "
            f"{type(methods).__name__}"
        )
    out: dict[str, Callable] = {}
    for name, fn in pairs:
        if isinstance(fn, str):
            if fn not in sal.METHODS:
                raise ValueError(
                    f"methods: unknown method {fn!r}; known: {sorted(sal.METHODS)}"
                )
            fn = sal.METHODS[fn]
        if not callable(fn):
            raise TypeError(f"methods[{name!r}] must be callable f(model, x, target)")
        if name in out:
            raise ValueError(f"methods: duplicate name {name!r}")
        out[str(name)] = fn
    if not out:
        raise ValueError("methods must name at least one method")
    return out


def _check_metrics(metrics) -> list[str]:
    if metrics is None:
        return list(METRICS)
    if isinstance(metrics, str):
        metrics = [metrics]
    metrics = list(metrics)
    bad = [m for m in metrics if m not in METRICS]
    if bad or not metrics:
        raise ValueError(
            f"metrics must be a non-empty list from {list(METRICS)}, got {metrics}"
        )
    return metrics


def _check_int(value, name: str, low: int, high: int | None = None) -> int:
    """Accept an int (not bool) in low … high (high=None: no cap)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        accepted = f"in {low}..{high}" if high is not None else f"≥ {low}"
        raise ValueError(f"{name} must be an int {accepted}, got {value}")
    return int(value)


def _resolve_target(model: nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    """One class per row as an int64 (N,) tensor on x's device.

    None → the (eval-mode copy of the) trained model's predicted class; an int
    → that class for every row; a list/tuple/1-D integer tensor → one per row.
    Every class must be in 0 … K−1 for the model's K outputs.
    """
    logits = models.predict(model, x)
    n, k = logits.shape
    if target is None:
        return logits.argmax(1)
    idx = target_tensor(target, n, torch.device("cpu"))
    if bool(((idx < 0) | (idx >= k)).any()):
        raise ValueError(
            f"target must hold class indices in 0..{k - 1}, got {idx.tolist()}"
        )
    return idx.to(x.device)


# ------------------------------------------------------------------ engine


def _explain_all(model, x, target, methods, seed) -> dict[str, torch.Tensor]:
    """Every method's maps; stochastic methods (SmoothGrad) see the same noise
    for every model because the global RNG is re-seeded (in a fork) per call."""
    out = {}
    for name, fn in methods.items():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out[name] = fn(model, x, target).detach().cpu()
    return out


def _rows(step, key, label, ref, maps, metrics) -> list[dict]:
    """Per-image rows comparing `maps` with `ref` ({method: _Prepared})."""
    rows = []
    for method, m in maps.items():
        for metric in metrics:
            vals, const = _compare(metric, ref[method], m)
            for i, (v, c) in enumerate(zip(vals, const)):
                rows.append(
                    {
                        "step": step,
                        key: label,
                        "method": method,
                        "metric": metric,
                        "image": i,
                        "value": float(v),
                        "constant": bool(c),
                    }
                )
    return rows


def _target_for(copy_model, x, target, target_mode) -> torch.Tensor:
    if target_mode == "original":
        return target
    return models.predict(copy_model, x).argmax(1)


def _run(
    test,
    key,
    model,
    x,
    target,
    methods,
    variants,
    metrics,
    seed,
    target_mode,
    progress,
    settings,
) -> SanityResult:
    """Explain with the trained model and every variant; compare maps.

    variants: iterable of (label, fn() -> model) built lazily, in step order.
    """
    from tqdm.auto import tqdm

    if target_mode not in TARGET_MODES:
        raise ValueError(
            f"target_mode must be one of {list(TARGET_MODES)}, got {target_mode!r}"
        )
    variants = list(variants)
    trained = copy.deepcopy(model).eval()
    target = _resolve_target(trained, x, target)
    bar = tqdm(
        total=len(variants) + 1, desc=f"{test} randomization", disable=not progress
    )
    try:
        maps = {"original": _explain_all(trained, x, target, methods, seed)}
        ref = {m: _Prepared(a, f"maps[{m!r}]") for m, a in maps["original"].items()}
        rows = _rows(0, key, "original", ref, ref, metrics)
        bar.update(1)
        for step, (label, build) in enumerate(variants, start=1):
            bar.set_postfix_str(label)
            variant = build()
            t = _target_for(variant, x, target, target_mode)
            maps[label] = _explain_all(variant, x, t, methods, seed)
            prepared = {m: _Prepared(a, f"maps[{m!r}]") for m, a in maps[label].items()}
            rows += _rows(step, key, label, ref, prepared, metrics)
            bar.update(1)
    finally:
        bar.close()
    per_image = pd.DataFrame(rows)
    return SanityResult(
        test, key, per_image, maps, x.detach().clone(), target.cpu(), settings
    )


def cascading_randomization(
    model: nn.Module,
    x: torch.Tensor,
    target=None,
    methods=None,
    layers: Sequence[str] | None = None,
    *,
    rule: str = "reset",
    sigma: float = 0.01,
    seed: int = 0,
    target_mode: str = "original",
    metrics: Sequence[str] | None = None,
    progress: bool = True,
) -> SanityResult:
    """Cascading model randomization (Adebayo et al., 2018, Sec. 3.1).

    With blocks L₁ … L_B in forward order, step k re-initialises L_B, L_{B−1},
    …, L_{B−k+1} (logits first, top down) and compares every method's maps
    E(x; θ_k) with the trained model's E(x; θ₀), image by image, with each
    metric. Step 0 is the trained model compared with itself (1 by
    definition), so curves start at 1. Each step adds one block to the copy
    of the previous step; the trained model is never modified.

    Args:
        model: the trained model; works on deep copies.
        x: (N, C, H, W) inputs.
        target: class per row (int, list or tensor); None (default) = the
            trained model's predicted class.
        methods: None (default: `DEFAULT_METHODS`), a `sal.METHODS` name, a
            function f(model, x, target), a list of those, or {label: name or
            function}. Functions get the (randomized) copy, so Grad-CAM's layer
            must be given by name (as `sal.METHODS["grad_cam"]` does).
        layers: block names in forward order; None = `randomization_layers`
            (SmallCNN: conv1, conv2, fc1, fc2; ResNetSmall: stem, layer1,
            layer2, layer3, fc). They are randomized in reverse order.
        rule, sigma, seed: re-initialisation, see `randomize` (default: each
            layer's own `reset_parameters()`, BatchNorm reset to γ=1, β=0, μ=0,
            σ²=1; seed 0). Stochastic methods are run with the global RNG
            seeded by `seed` (in a fork), so SmoothGrad's noise is the same for
            every step and the result is reproducible.
        target_mode: which class is explained after randomization: "original"
            (default; the same class as on the trained model, so the two maps
            explain the same output, as Adebayo et al. compare) or "argmax"
            (the randomized model's own predicted class).
        metrics: subset of `METRICS`; None = all four.
        progress: tqdm bar, one tick per step.
    Returns:
        `SanityResult` with key "layer": steps 0 ("original") … B (the
        bottom block), `.table` (mean, std over images per step, method,
        metric), `.per_image`, `.maps`.
    """
    _check_model(model)
    x = _check_x(x)
    layers = _check_layers(model, layers)
    rule, sigma, seed = _check_rule(rule, sigma, seed)
    methods = _check_methods(methods)
    metrics = _check_metrics(metrics)
    state = {"model": copy.deepcopy(model).eval()}

    def step(name):
        def build():
            _reinit_(
                state["model"].get_submodule(name), rule, sigma, _layer_seed(seed, name)
            )
            return state["model"]

        return build

    variants = [(name, step(name)) for name in reversed(layers)]
    settings = {
        "layers": layers,
        "rule": rule,
        "sigma": sigma,
        "seed": seed,
        "target_mode": target_mode,
        "methods": list(methods),
    }
    return _run(
        "cascading",
        "layer",
        model,
        x,
        target,
        methods,
        variants,
        metrics,
        seed,
        target_mode,
        progress,
        settings,
    )


def independent_randomization(
    model: nn.Module,
    x: torch.Tensor,
    target=None,
    methods=None,
    layers: Sequence[str] | None = None,
    *,
    rule: str = "reset",
    sigma: float = 0.01,
    seed: int = 0,
    target_mode: str = "original",
    metrics: Sequence[str] | None = None,
    progress: bool = True,
) -> SanityResult:
    """Independent (one layer at a time) model randomization (Adebayo et al.).

    Step k re-initialises only block L_{B−k+1} (top down, as in the cascade)
    on a fresh copy of the trained model; every other block keeps its trained
    weights. A layer gets the very same new weights as in
    `cascading_randomization` with the same seed, so step 1 of both is the
    same model. Arguments and result as in `cascading_randomization`.
    """
    _check_model(model)
    x = _check_x(x)
    layers = _check_layers(model, layers)
    rule, sigma, seed = _check_rule(rule, sigma, seed)
    methods = _check_methods(methods)
    metrics = _check_metrics(metrics)
    variants = [
        (name, partial(randomize, model, name, rule, sigma, seed))
        for name in reversed(layers)
    ]
    settings = {
        "layers": layers,
        "rule": rule,
        "sigma": sigma,
        "seed": seed,
        "target_mode": target_mode,
        "methods": list(methods),
    }
    return _run(
        "independent",
        "layer",
        model,
        x,
        target,
        methods,
        variants,
        metrics,
        seed,
        target_mode,
        progress,
        settings,
    )


# ------------------------------------------------------------------ labels


def random_labels(
    n_train: int = RANDOM_LABELS_N_TRAIN, seed: int = RANDOM_LABELS_SEED
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n_train` training digits with their labels permuted.

    A permutation (not fresh draws) keeps each class's count, so no class is
    easier to guess; the digits are the stratified prefix of the train split
    (every class present).

    Returns:
        x (n_train, 1, 28, 28) and permuted labels (n_train,).
    """
    split = data.load_split("train")
    n_train = _check_int(n_train, "n_train", 10, len(split))
    seed = _check_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n_train, generator=gen)
    return split.x[:n_train].clone(), split.y[:n_train][perm].clone()


def train_random_labels(
    n_train: int = RANDOM_LABELS_N_TRAIN,
    threshold: float = RANDOM_LABELS_THRESHOLD,
    max_epochs: int = RANDOM_LABELS_MAX_EPOCHS,
    lr: float = RANDOM_LABELS_LR,
    batch_size: int = RANDOM_LABELS_BATCH_SIZE,
    seed: int = RANDOM_LABELS_SEED,
    build: Callable[[], nn.Module] = models.SmallCNN,
    progress: bool = True,
) -> tuple[nn.Module, dict]:
    """Train a model to memorise permuted labels (Adebayo et al.'s data test).

    Adam at a constant learning rate on `random_labels(n_train, seed)`,
    without augmentation, one epoch at a time; after each epoch the training
    accuracy (eval mode, all n_train digits, against the permuted labels) is
    measured and training stops as soon as it is ≥ `threshold` (the
    lecture's 95%). A network can memorise random labels (Zhang et al.,
    2017), but it takes many epochs: 1,000 digits by default so it fits in
    class time (50 epochs, ≈ 40 CPU-seconds for the shipped checkpoint).

    Args:
        n_train: digits memorised, 10 … 4,000. Default 1,000.
        threshold: train accuracy to reach, in (0, 1]. Default 0.95.
        max_epochs: cap; RuntimeError if the threshold is not reached by then.
        lr: Adam learning rate. batch_size: rows per step. seed: labels'
            permutation, initialisation and shuffling.
        build: the architecture (default `models.SmallCNN`).
        progress: tqdm bar, one tick per epoch, with the accuracy.
    Returns:
        (model in eval mode, report: seconds, epochs, train_accuracy,
        test_accuracy (true test labels; chance ≈ 0.1), n_train, threshold,
        seed, lr).
    Raises:
        RuntimeError: the threshold was not reached within max_epochs.
    """
    from tqdm.auto import tqdm

    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, numbers.Real)
        or not 0 < threshold <= 1
    ):
        raise ValueError(f"threshold must be a number in (0, 1], got {threshold!r}")
    max_epochs = _check_int(max_epochs, "max_epochs", 1)
    batch_size = _check_int(batch_size, "batch_size", 1)
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not lr > 0:
        raise ValueError(f"lr must be a number > 0, got {lr!r}")
    x, y = random_labels(n_train, seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
    gen = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    acc = 0.0
    bar = tqdm(total=max_epochs, desc="memorising random labels", disable=not progress)
    epoch = 0
    for epoch in range(1, max_epochs + 1):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        for b in range(0, len(x), batch_size):
            rows = order[b : b + batch_size]
            loss = loss_fn(model(x[rows]), y[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        acc = float((models.predict(model, x).argmax(1) == y).float().mean())
        bar.update(1)
        bar.set_postfix(train_acc=f"{acc:.3f}")
        if acc >= threshold:
            break
    bar.close()
    if acc < threshold:
        raise RuntimeError(
            f"train_random_labels: training accuracy {acc:.3f} < threshold "
            f"{threshold} after max_epochs={max_epochs}; raise max_epochs or lr, or "
            "lower n_train"
        )
    report = {
        "seconds": time.perf_counter() - start,
        "epochs": epoch,
        "train_accuracy": acc,
        "test_accuracy": models.evaluate(model),
        "n_train": len(x),
        "threshold": float(threshold),
        "seed": seed,
        "lr": float(lr),
    }
    return model.eval(), report


def _as_model(obj, name: str) -> nn.Module:
    if isinstance(obj, str):
        return models.load_pretrained(obj)
    if isinstance(obj, nn.Module):
        return obj
    raise TypeError(
        f"{name} must be an nn.Module or a checkpoint name, got {type(obj).__name__}"
    )


def label_randomization(
    model: nn.Module,
    x: torch.Tensor,
    target=None,
    methods=None,
    random_model: nn.Module | str = RANDOM_LABELS_NAME,
    control_model: nn.Module | str | None = None,
    *,
    seed: int = 0,
    target_mode: str = "original",
    metrics: Sequence[str] | None = None,
    progress: bool = True,
) -> SanityResult:
    """Data (label) randomization test (Adebayo et al., 2018, Sec. 4).

    Compares the maps of `model` (trained on the true labels) with those of
    the same architecture trained on permuted labels, per image and metric.
    A method that depends on what the model learned gives dissimilar maps.
    The control, when given, is the same recipe trained on the true labels
    with another seed: it says how similar two models that learned the task
    are, the yardstick for "dissimilar".

    Args:
        model: the true-label model.
        x, target, methods, metrics, seed, target_mode, progress: as in
            `cascading_randomization` (the target is the true-label model's;
            "original" explains the same class with every model).
        random_model: the random-label model or a checkpoint name; default
            the shipped "small_cnn_random_labels" (retrain with
            `train_random_labels()` or `course train small_cnn_random_labels`).
        control_model: None (default: no control), a model or a checkpoint
            name such as "small_cnn_seed1".
    Returns:
        `SanityResult` with key "model": "original", "random labels" and,
        with a control, "true labels (re-seeded)".
    """
    _check_model(model)
    x = _check_x(x)
    methods = _check_methods(methods)
    metrics = _check_metrics(metrics)
    seed = _check_seed(seed)
    variants = [
        (
            "random labels",
            lambda: copy.deepcopy(_as_model(random_model, "random_model")).eval(),
        )
    ]
    if control_model is not None:
        variants.append(
            (
                "true labels (re-seeded)",
                lambda: copy.deepcopy(_as_model(control_model, "control_model")).eval(),
            )
        )
    settings = {"seed": seed, "target_mode": target_mode, "methods": list(methods)}
    return _run(
        "labels",
        "model",
        model,
        x,
        target,
        methods,
        variants,
        metrics,
        seed,
        target_mode,
        progress,
        settings,
    )


# ------------------------------------------------------------------ verdicts


VERDICT_METRICS = ("spearman", "spearman_abs", "ssim")


def verdict(
    result: SanityResult,
    at: str | None = None,
    metrics: Sequence[str] = VERDICT_METRICS,
    threshold: float = 0.5,
) -> pd.DataFrame:
    """Pass/fail per method: did the map change when the model did?

    A method passes at a step if its mean similarity to the trained model's
    map (over the images) is below `threshold` on every one of `metrics`: the
    map changed, whichever way one looks at it. A map that stays similar on
    any of them after the weights or labels were destroyed fails — it shows
    something that does not depend on what was destroyed.

    Args:
        result: a `SanityResult`.
        at: the step label to judge, e.g. "fc2" (top layer randomized),
            "conv1" (full SmallCNN cascade), "random labels"; None = the last
            step.
        metrics: names from `METRICS`. Default signed and absolute Spearman
            and SSIM.
        threshold: in (−1, 1]. Default 0.5.
    Returns:
        DataFrame indexed by method: one column of mean similarity per
        metric, then "passes" (bool).
    """
    metrics = _check_metrics(metrics)
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, numbers.Real)
        or not -1 < threshold <= 1
    ):
        raise ValueError(f"threshold must be a number in (-1, 1], got {threshold!r}")
    labels = result.order
    at = labels[-1] if at is None else at
    if at not in labels:
        raise ValueError(f"at must be one of {labels}, got {at!r}")
    t = result.table
    t = t[(t.metric.isin(metrics)) & (t[result.key] == at)]
    out = t.pivot(index="method", columns="metric", values="mean")
    out = out.loc[list(dict.fromkeys(t.method)), metrics]
    out.columns.name = None
    out["passes"] = (out[metrics] < threshold).all(axis=1)
    return out


# ------------------------------------------------------------------ pictures


def cascade_curve(
    result: SanityResult,
    metrics: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    band: bool = True,
    width: int = 220,
    height: int = 200,
) -> alt.Chart:
    """Similarity vs randomization depth: one line per method, one panel per metric.

    x: the randomized layer in step order ("original", then top down), y: the
    mean similarity over images, with a ±1 std band. The lecture's cascade
    curve (Adebayo et al., 2018, Fig. 2/4); works for independent results too.

    Args:
        result: a `SanityResult` of `cascading_randomization` or
            `independent_randomization`.
        metrics: panels, a subset of `METRICS`; None = all four.
        methods: lines; None = every method in the result.
        band: draw mean ± std over the images (default True).
        width, height: size of one panel in pixels.
    Returns:
        A faceted Altair chart (one column per metric).
    """
    metrics = _check_metrics(metrics)
    t = result.table
    t = t[t.metric.isin(metrics)]
    if methods is not None:
        t = t[t.method.isin(list(methods))]
    t = t.assign(
        metric=t.metric.map(METRIC_TITLES),
        lo=t["mean"] - t["std"],
        hi=t["mean"] + t["std"],
    )
    x = alt.X(
        f"{result.key}:N",
        sort=result.order,
        title=_STEP_TITLES[result.test],
        axis=alt.Axis(labelAngle=-40),
    )
    low = min(-0.2, math.floor(10 * float(t["lo"].min())) / 10)
    color = alt.Color("method:N", sort=list(dict.fromkeys(t.method)))
    base = alt.Chart().encode(x=x, color=color)
    lines = base.mark_line(point=True).encode(
        y=alt.Y(
            "mean:Q",
            title="similarity to trained map",
            scale=alt.Scale(domain=[low, 1]),
        ),
        tooltip=[
            "method",
            "metric",
            result.key,
            alt.Tooltip("mean:Q", format=".3f"),
            alt.Tooltip("std:Q", format=".3f"),
            "n_constant",
        ],
    )
    layers = [lines]
    if band:
        layers.insert(0, base.mark_area(opacity=0.12).encode(y="lo:Q", y2="hi:Q"))
    title = {
        "cascading": "Cascading randomization",
        "independent": "Independent layer randomization",
        "labels": "Label randomization",
    }[result.test]
    return (
        alt.layer(*layers)
        .properties(width=width, height=height)
        .facet(
            column=alt.Column(
                "metric:N", sort=[METRIC_TITLES[m] for m in metrics], title=None
            ),
            data=t,
            title=title,
        )
    )


def cascade_grid(
    result: SanityResult,
    image: int = 0,
    methods: Sequence[str] | None = None,
    scale: str = "independent",
    absolute: bool = True,
    overlay: bool = False,
    size: int = 72,
) -> alt.Chart:
    """The lecture's cascade figure: rows = methods, columns = steps, one digit.

    Drawn with `plotting.grid`. By default every map gets its own colour scale
    (`scale="independent"`: |E| / its own top value, as Adebayo et al.'s
    figures normalise each map), so a randomized map that shrank is still
    visible and the eye compares patterns, as the rank measures do. Works for
    every `SanityResult` (columns: layers, or the compared models of the label
    test).

    Args:
        result: a `SanityResult`.
        image: which of its images, 0 … N−1. Default 0.
        methods: rows; None = every method in the result.
        scale: "independent" (default), "row" (one scale per method: shows
            how the maps' magnitude collapses), "shared" or "column" (see
            `plotting.grid`).
        absolute: show |E| (default True, as Adebayo et al.'s figures); False
            shows signed maps on the diverging scale.
        overlay: draw the maps over the digit (default False: maps alone, so
            a map that merely copies the digit shows it by itself).
        size: width of a cell in pixels.
    Returns:
        A faceted Altair chart.
    """
    from . import plotting

    n = len(result.x)
    if (
        isinstance(image, bool)
        or not isinstance(image, numbers.Integral)
        or not 0 <= image < n
    ):
        raise ValueError(f"image must be an int in 0..{n - 1}, got {image!r}")
    methods = list(result.maps["original"]) if methods is None else list(methods)
    unknown = [m for m in methods if m not in result.maps["original"]]
    if unknown:
        raise ValueError(
            f"methods: not in the result: {unknown}; "
            f"it has {list(result.maps['original'])}"
        )
    rows = {}
    for m in methods:
        rows[m] = {}
        for label, maps in result.maps.items():
            a = maps[m][image].sum(0, keepdim=True)
            rows[m][label] = a.abs() if absolute else a
    return plotting.grid(
        rows,
        image=result.x[image] if overlay else None,
        scale=scale,
        signed=False if absolute else None,
        size=size,
        row_title="method",
        column_title=_STEP_TITLES[result.test],
        legend_title="|attribution|" if absolute else "attribution",
    )


def label_chart(
    result: SanityResult,
    metrics: Sequence[str] | None = None,
    width: int = 160,
    height: int = 200,
) -> alt.Chart:
    """The data randomization figure: similarity to the true-label model's maps.

    One panel per metric; per method one bar per compared model (random
    labels, and the re-seeded control when the result has one) at the mean
    over images, with a ±1 std rule.

    Args:
        result: a `SanityResult` of `label_randomization`.
        metrics: panels, a subset of `METRICS`; None = all four.
        width, height: size of one panel in pixels.
    Returns:
        A faceted Altair chart.
    """
    if result.test != "labels":
        raise ValueError(
            f"result must come from label_randomization, got a {result.test!r} "
            "result (use cascade_curve)"
        )
    metrics = _check_metrics(metrics)
    t = result.table
    t = t[(t.metric.isin(metrics)) & (t[result.key] != "original")]
    t = t.assign(
        metric=t.metric.map(METRIC_TITLES),
        lo=t["mean"] - t["std"],
        hi=t["mean"] + t["std"],
    )
    low = min(-0.2, math.floor(10 * float(t["lo"].min())) / 10)
    base = alt.Chart().encode(
        y=alt.Y("method:N", sort=list(dict.fromkeys(t.method)), title=None),
        color=alt.Color(f"{result.key}:N", title="compared model"),
        yOffset=f"{result.key}:N",
    )
    bars = base.mark_bar().encode(
        x=alt.X(
            "mean:Q",
            title="similarity to true-label map",
            scale=alt.Scale(domain=[low, 1]),
        ),
        tooltip=[
            "method",
            result.key,
            alt.Tooltip("mean:Q", format=".3f"),
            alt.Tooltip("std:Q", format=".3f"),
            "n_constant",
        ],
    )
    rules = base.mark_rule(color="black").encode(x="lo:Q", x2="hi:Q")
    return (
        alt.layer(bars, rules, data=t)
        .properties(width=width, height=height)
        .facet(
            column=alt.Column(
                "metric:N", sort=[METRIC_TITLES[m] for m in metrics], title=None
            ),
            title="Label randomization",
        )
    )


# ------------------------------------------------------------------ registry


def _train_random_labels_checkpoint(
    progress: bool = True, epochs: int | None = None, seed: int | None = None
) -> tuple[nn.Module, dict]:
    """`course train small_cnn_random_labels`: --epochs caps max_epochs, --seed
    sets the permutation/initialisation seed."""
    kwargs = {}
    if epochs is not None:
        kwargs["max_epochs"] = epochs
    if seed is not None:
        kwargs["seed"] = seed
    return train_random_labels(progress=progress, **kwargs)


models.EXTRA_MODELS[RANDOM_LABELS_NAME] = models.SmallCNN
models.TRAINERS[RANDOM_LABELS_NAME] = _train_random_labels_checkpoint
models.EXTRA_MODELS[RESEEDED_NAME] = models.SmallCNN
# The small_cnn recipe with seed 1 (a different initialisation and order).
models.TRAINERS[RESEEDED_NAME] = partial(models.build_and_train, "small_cnn", seed=1)
