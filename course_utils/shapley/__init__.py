"""Shapley values over patches (and over features): the exact answer, and KernelSHAP.

A game: players are the P patches of a grid laid over the image (or the D
features of a table row); a coalition S ⊆ {1 … P} keeps its players' pixels
as in x and sets every other pixel to the baseline; its worth is

    v(S) = f_target(x with the pixels outside S set to the baseline),

with f the target's logit ("logit", default) or softmax probability ("prob").
The Shapley value of player i is its marginal contribution averaged over all
orders in which the players can join:

    φ_i = Σ_{S ⊆ P∖{i}} |S|! (P − |S| − 1)! / P! · [v(S ∪ {i}) − v(S)].

It is the only attribution with efficiency (Σ φ_i = v(P) − v(∅) = f(x) −
f(baseline)), symmetry, dummy (a player that never changes v gets 0) and
additivity (Shapley 1953; Lundberg & Lee, "A Unified Approach to
Interpreting Model Predictions", NeurIPS 2017). Integrated gradients'
completeness (Σ IG = f(x) − f(x₀)) is the same efficiency, reached along one
straight path instead of averaged over all orders.

* `shapley_textbook(value, n_players)`: the formula above as a loop over
  subsets, for any value function (a few players).
* `exact(model, x, target, grid=4, …)`: the same numbers for the patches of an
  image, batched — every coalition is one masked copy, all 2^P copies run in
  chunks under `torch.inference_mode()`, and the weights are applied with one
  matrix product φ = v · W (`shapley_matrix`).
* `exact_features(model, x, target, …)`: the same for (N, D) table rows, with
  optional feature groups.
* `kernel_shap(model, x, target, grid=4, n_samples=…)`: Lundberg & Lee's
  KernelSHAP over the same patches, drawing coalitions exactly as Captum's
  `KernelShap` draws them.

Measured cost of `exact` (4×4 grid, 65,536 coalitions, SmallCNN, one digit,
one torch thread, this course's 2-core machine, bench/bench_shapley.py): 3.8 s
on a lightly loaded machine (≈ 58 µs per model evaluation in chunks of 256),
18 s at load average 13; in both 1.1× the time of the same number of bare
forward passes. KernelSHAP with 1,000 samples: 0.09 s lightly loaded, 3.7×
faster than Captum's KernelShap with the same draws. N images cost N times as
much (each image is its own game, looped).
"""

from __future__ import annotations

from .game import (
    INF_WEIGHT,
    MAX_PLAYERS,
    OUTPUTS,
    ShapleyResult,
    coalitions,
    shapley_matrix,
    shapley_textbook,
)
from .patches import (  # _draw_coalitions: tests compare the draws with Captum's
    _draw_coalitions,  # noqa: F401
    check_images,
    exact,
    kernel_shap,
    kernel_shap_fit,
    patch_ids,
    patch_map,
    patch_sums,
)
from .tabular import RowsAsImages, TabularExample, exact_features, wine_example

__all__ = [
    "INF_WEIGHT",
    "MAX_PLAYERS",
    "OUTPUTS",
    "RowsAsImages",
    "ShapleyResult",
    "TabularExample",
    "check_images",
    "coalitions",
    "exact",
    "exact_features",
    "kernel_shap",
    "kernel_shap_fit",
    "patch_ids",
    "patch_map",
    "patch_sums",
    "shapley_matrix",
    "shapley_textbook",
    "wine_example",
]
