"""Reference answers of the exercises that are not a `course_utils.saliency` method.

Test cells pass them to `checks.check` as ``reference=checks.reference_answer(NAME)``,
so that computing the expected values leaves nothing in the student's namespace
that returns the answer. Answers must not call this module (the tripwire of
`checks` lists it among the reference implementations).
"""

from __future__ import annotations

import itertools
import math

import scipy.stats
import torch


def path_points(x: torch.Tensor, baseline, n_steps: int) -> torch.Tensor:
    """x₀ + (k/m)(x − x₀) for k = 1 … m, stacked on a new first axis: (m, *x.shape)."""
    base = torch.as_tensor(baseline, dtype=x.dtype).expand_as(x)
    alphas = torch.arange(1, n_steps + 1, dtype=x.dtype) / n_steps
    return base + alphas.view(-1, *([1] * x.dim())) * (x - base)


def noise_sigma(x: torch.Tensor, noise_level: float) -> torch.Tensor:
    """σ = noise_level · (max − min) of each image over all C·H·W values: (N,)."""
    return noise_level * (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3)))


def smoothgrad_from_noise(model, x, target, noise: torch.Tensor) -> torch.Tensor:
    """(1/n) Σ_s ∇ₓ f_target(x + noise[s]), with the course's gradient."""
    from course_utils import saliency as sal

    return torch.stack([sal.gradient(model, x + eps, target) for eps in noise]).mean(0)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each pair of flattened maps: (N,) float64."""
    rows = [
        scipy.stats.spearmanr(u.flatten().numpy(), v.flatten().numpy())[0]
        for u, v in zip(a.detach(), b.detach())
    ]
    return torch.tensor(rows, dtype=torch.float64)


def linear_plus_product_shapley(model, x, target, baseline) -> torch.Tensor:
    """Closed-form Shapley values of `models.LinearPlusProduct` (see its docstring):
    (N, D) for x (N, D), one target per row or one for all, baseline (D,).

    The linear part gives w_i (x_i − b_i). The product over the m features T
    is a game among T alone; feature i ∈ T gets
    c (x_i − b_i) Σ_{R ⊆ T∖{i}} |R|!(m − |R| − 1)!/m! ∏_{j ∈ R} x_j ∏_{j ∈ T∖R∖{i}} b_j
    (for m = 2: c/2 (x_i − b_i)(x_j + b_j)).
    """
    t = torch.as_tensor(target).expand(len(x))
    w, c, b = model.w.detach()[t], model.c.detach()[t], baseline
    phi = w * (x - b)
    product = list(model.product)
    m = len(product)
    for i in product:
        others = [j for j in product if j != i]
        share = torch.zeros(len(x), dtype=x.dtype)
        for size in range(m):
            weight = math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)
            for kept in itertools.combinations(others, size):
                term = torch.ones(len(x), dtype=x.dtype)
                for j in others:
                    term = term * (x[:, j] if j in kept else b[j])
                share = share + weight * term
        phi[:, i] += c * (x[:, i] - b[i]) * share
    return phi


REFERENCES = {
    "path_points": path_points,
    "noise_sigma": noise_sigma,
    "smoothgrad_from_noise": smoothgrad_from_noise,
    "spearman": spearman,
    "linear_plus_product_shapley": linear_plus_product_shapley,
}
