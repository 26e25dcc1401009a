"""Interactive explorers: move a slider, the saliency map is recomputed and redrawn.

`OcclusionExplorer`, `IGExplorer`, `SmoothGradExplorer` (`method_explorers`),
`MethodBrowser` (`method_browser`), `PhotoExplainer` (`photo_explainer`: a
photo of your own on the ImageNet model), the lab's `TrainingLab` (`training_lab`)
and the `UnitBrowser` (`unit_browser`). What every explorer offers (``view``,
``controls``, ``result``, ``chart``, ``update()``, caching, the busy state, the
CSS classes the browser tests use) is described in `widgets.explorer`, where
their shared base lives; what every widget shares (chart output, error
read-out, display) is in `widgets.view`.
"""

from .. import saliency as sal  # noqa: F401  (kept: `widgets.sal` was public)
from .explorer import (
    IG_BASELINES,
    IG_RULES,
    PREDICTED,
    SMOOTHGRAD_EXPLAIN,
    SMOOTHGRAD_KINDS,
)
from .method_browser import MethodBrowser
from .method_explorers import IGExplorer, OcclusionExplorer, SmoothGradExplorer
from .photo_explainer import PhotoExplainer
from .training_lab import TrainingLab
from .unit_browser import UnitBrowser

__all__ = [
    "IG_BASELINES",
    "IG_RULES",
    "PREDICTED",
    "SMOOTHGRAD_EXPLAIN",
    "SMOOTHGRAD_KINDS",
    "IGExplorer",
    "MethodBrowser",
    "OcclusionExplorer",
    "PhotoExplainer",
    "SmoothGradExplorer",
    "TrainingLab",
    "UnitBrowser",
]
