"""How similar two batches of saliency maps are, image by image.

Each measure is a pure function f(a, b) of two prepared (N, …) arrays that
returns (N,) values, registered by name in `SIMILARITIES` (as Quantus keeps its
similarity functions swappable): Spearman rank correlation of the signed maps
and of the absolute maps, SSIM and HOG-feature correlation (Adebayo et al.,
2018). What every measure shares lives once here: turning maps into arrays,
the views a measure reads (ranks, |E| / max|E|, HOG features, computed once per
batch and cached), and the constant-map rule, applied in one place (`compare`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import rankdata

# Documented values when a map is constant (all its values equal), where a
# correlation is undefined (0/0): both constant → identical → 1; one constant →
# it shares no ranking/structure with the other → 0 (never NaN).
BOTH_CONSTANT = 1.0
ONE_CONSTANT = 0.0
# HOG parameters for 28×28 maps: 4×4 cells of 7×7 pixels, 3×3 blocks of 2×2 cells
# (324 features; skimage's default 8×8-pixel cells leave one block on a digit).
HOG_PARAMS = {"orientations": 9, "pixels_per_cell": (7, 7), "cells_per_block": (2, 2)}


# ------------------------------------------------------------------ pure f(a, b)


def pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Pearson r of two (N, P) arrays, clipped to [−1, 1].

    NaN where a row is constant (0/0); `compare` replaces those by the
    constant-map rule. (`correlation.pearson` on numpy arrays.)
    """
    from ..correlation import pearson

    return pearson(torch.as_tensor(a), torch.as_tensor(b)).numpy()


def ssim_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM (Wang et al., 2004) of each pair of (H, W) maps in [0, 1]:
    `skimage.metrics.structural_similarity(data_range=1)`, 7×7 uniform window
    (or the largest odd window that fits), K₁ = 0.01, K₂ = 0.03."""
    from skimage.metrics import structural_similarity

    win = _ssim_window(a.shape[1:])
    return np.array(
        [
            structural_similarity(p, q, data_range=1.0, win_size=win)
            for p, q in zip(a, b)
        ]
    )


def _ssim_window(shape) -> int:
    side = min(shape)
    if side < 3:
        raise ValueError(f"maps must be at least 3×3 pixels for SSIM, got {shape}")
    return min(7, side if side % 2 else side - 1)


@dataclass(frozen=True)
class Similarity:
    """A registered measure: the view of the maps it reads, the views whose
    constancy triggers the constant-map rule, and the pure function f(a, b)."""

    view: str
    constant: tuple[str, ...]
    fn: Callable[[np.ndarray, np.ndarray], np.ndarray]


# name -> measure; `METRICS` lists the names in table order.
SIMILARITIES: dict[str, Similarity] = {
    "spearman": Similarity("rank_signed", ("signed",), pearson_rows),
    "spearman_abs": Similarity("rank_abs", ("abs",), pearson_rows),
    "ssim": Similarity("unit", ("abs",), ssim_rows),
    "hog": Similarity("hog", ("abs", "hog"), pearson_rows),
}
METRICS = tuple(SIMILARITIES)


# ------------------------------------------------------------------ views


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


def _unit_abs(a: np.ndarray) -> np.ndarray:
    """|E| / max|E| per map, in [0, 1] (a constant-zero map stays 0)."""
    m = np.abs(a)
    top = m.reshape(len(m), -1).max(1)
    return m / np.where(top > 0, top, 1.0)[:, None, None]


class Prepared:
    """One batch of maps and the views the measures read, each computed once.

    Views: "signed" (N, H·W) maps (channels summed), "abs" |signed|, their
    average ranks "rank_signed" / "rank_abs", "unit" |E| / max|E| as (N, H, W),
    "hog" HOG features of "unit".
    """

    def __init__(self, maps, name: str):
        self.maps = _as_maps(maps, name)
        self.signed = self.maps.reshape(len(self.maps), -1)
        self._cache: dict[str, np.ndarray] = {"signed": self.signed}

    def view(self, what: str) -> np.ndarray:
        if what not in self._cache:
            self._cache[what] = self._compute(what)
        return self._cache[what]

    def _compute(self, what: str) -> np.ndarray:
        if what == "abs":
            return np.abs(self.signed)
        if what == "rank_signed":
            return rankdata(self.signed, axis=1)
        if what == "rank_abs":
            return rankdata(self.view("abs"), axis=1)
        if what == "unit":
            return _unit_abs(self.maps)
        if what == "hog":
            from skimage.feature import hog

            return np.stack(
                [hog(m, feature_vector=True, **HOG_PARAMS) for m in self.view("unit")]
            )
        raise ValueError(f"unknown view {what!r}")

    def constant(self, views: tuple[str, ...]) -> np.ndarray:
        """(N,) bool: the map is constant in any of `views`."""
        out = np.zeros(len(self.maps), dtype=bool)
        for v in views:
            flat = self.view(v)
            out |= _constant(flat.reshape(len(flat), -1))
        return out


def _check_metric(metric: str) -> Similarity:
    if metric not in SIMILARITIES:
        raise ValueError(f"metric must be one of {list(METRICS)}, got {metric!r}")
    return SIMILARITIES[metric]


def compare(metric: str, a: Prepared, b: Prepared) -> tuple[np.ndarray, np.ndarray]:
    """(values (N,), constant (N,) bool) of one measure; the one place where the
    constant-map rule is applied: both maps constant → `BOTH_CONSTANT`, one →
    `ONE_CONSTANT`."""
    measure = _check_metric(metric)
    if a.maps.shape != b.maps.shape:
        raise ValueError(
            f"reference and maps must have the same shape, got {a.maps.shape} and "
            f"{b.maps.shape}"
        )
    vals = measure.fn(a.view(measure.view), b.view(measure.view))
    ca, cb = a.constant(measure.constant), b.constant(measure.constant)
    vals = np.where(ca & cb, BOTH_CONSTANT, np.where(ca | cb, ONE_CONSTANT, vals))
    return vals.astype(np.float64), ca | cb


# ------------------------------------------------------------------ public


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
    _check_metric(metric)
    return compare(metric, Prepared(reference, "reference"), Prepared(maps, "maps"))[0]


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
    return similarity(reference, maps, "spearman_abs" if absolute else "spearman")


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
    return similarity(reference, maps, "ssim")


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
    return similarity(reference, maps, "hog")
