"""Integrated gradients."""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

# blur_baseline, noise_baseline and their constants are re-exported for notebook 03.
from .baselines import (  # noqa: F401
    BLUR_SIGMA,
    NOISE_SEED,
    blur_baseline,
    noise_baseline,
    resolve_baseline,
)
from .core import (
    check_batch_size,
    chunks,
    eval_mode,
    grid_chunks,
    input_gradient,
    select,
)
from .gradient import gradient_textbook
from .validate import check_choice, check_input, check_int, check_model, target_tensor

QUADRATURE_RULES = (
    "riemann_trapezoid",
    "gausslegendre",
    "riemann_left",
    "riemann_right",
    "riemann_middle",
    "clenshaw_curtis",
)


def integrated_gradients_textbook(
    model, x, target, baseline="black", n_steps=50, method="riemann_trapezoid"
):
    """IG(x) ≈ (x − x₀) ⊙ Σ_k w_k ∇f_target(x₀ + α_k (x − x₀)), the plain loop.

    One gradient per point α_k of the quadrature rule (`quadrature`); model in
    eval mode; baseline as in `integrated_gradients`.
    """
    x = x.detach()
    x0 = resolve_baseline(baseline, x, model).expand_as(x)
    total = torch.zeros_like(x)
    for alpha, weight in zip(*quadrature(method, n_steps)):
        point = x0 + alpha * (x - x0)  # on the straight path from x₀ to x
        total += weight * gradient_textbook(model, point, target)
    return (x - x0) * total


@lru_cache(maxsize=128)
def quadrature(method: str, n_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points α_k in [0, 1] and weights w_k of a rule with n_steps points (cached).

    * riemann_left:   α_k = k/n,        w_k = 1/n     (k = 0 … n−1)
    * riemann_right:  α_k = (k+1)/n,    w_k = 1/n
    * riemann_middle: α_k = (k+½)/n,    w_k = 1/n
    * riemann_trapezoid: α_k = k/(n−1), w_k = 1/(n−1), halved at both ends
      (n ≥ 2); Σ w_k = 1.
    * gausslegendre: Gauss–Legendre nodes t_k and weights ω_k on [−1, 1]
      (numpy's `leggauss`), α_k = (1 + t_k)/2, w_k = ω_k/2.
    * clenshaw_curtis: with N = n − 1 and θ_k = kπ/N (k = 0 … N),
      α_k = (1 − cos θ_k)/2 and
      w_k = (c_k / 2N) · [1 − Σ_{j=1}^{⌊N/2⌋} b_j cos(2jθ_k) / (4j² − 1)],
      c_0 = c_N = 1, c_k = 2 otherwise; b_j = 1 if 2j = N, else 2
      (Clenshaw & Curtis, "A method for numerical integration on an automatic
      computer", Numer. Math. 1960; n = 1 is the midpoint, α = ½, w = 1).
      Like Gauss–Legendre its points crowd towards both ends of the path;
      it integrates polynomials of degree n − 1 exactly (n for odd n; Gauss:
      2n − 1) and is about as accurate as Gauss for smooth integrands
      (Trefethen, "Is Gauss quadrature better than Clenshaw–Curtis?", SIAM
      Review 2008). Its grids **nest**: the points of n = 2^k + 1 (2, 3, 5,
      9, 17, 33, 65 …) are every other point of the next one, bit for bit,
      so a caller that keeps the gradients along the path gets every coarser
      rule for free and pays only for the new points of a finer one
      (`widgets.PhotoExplainer`). Captum has no such rule.

    Except clenshaw_curtis, the points are computed exactly as Captum
    computes them (the same `torch.linspace` calls), so the path points agree
    bit for bit. Returns float32 CPU tensors (alphas, weights), each of shape
    (n_steps,); callers must not modify them.
    """
    n = n_steps
    if method in ("gausslegendre", "clenshaw_curtis"):
        import numpy as np

        if method == "gausslegendre":
            nodes, omegas = np.polynomial.legendre.leggauss(n)
            alphas, weights = 0.5 * (1 + nodes), 0.5 * omegas
        else:
            alphas, weights = _clenshaw_curtis(n)
        return torch.tensor(alphas.tolist()).float(), torch.tensor(weights.tolist()).float()
    if method == "riemann_trapezoid":
        alphas = torch.linspace(0, 1, n)
        weights = [1 / (n - 1)] * n
        weights[0] /= 2
        weights[-1] /= 2
        return alphas, torch.tensor(weights).float()
    if method == "riemann_left":
        alphas = torch.linspace(0, 1 - 1 / n, n)
    elif method == "riemann_middle":
        alphas = torch.linspace(1 / (2 * n), 1 - 1 / (2 * n), n)
    elif method == "riemann_right":
        alphas = torch.linspace(1 / n, 1, n)
    else:
        raise ValueError(
            f"method must be one of {list(QUADRATURE_RULES)}, got {method!r}"
        )
    return alphas, torch.tensor([1 / n] * n).float()


def _clenshaw_curtis(n: int):
    """Clenshaw–Curtis points and weights on [0, 1] (float64 numpy), see `quadrature`."""
    import numpy as np

    if n == 1:
        return np.array([0.5]), np.array([1.0])
    big_n = n - 1
    # π·k/N: the points of N and 2N intervals agree bit for bit ((2a)/(2b) = a/b).
    theta = np.pi * np.arange(n) / big_n
    j = np.arange(1, big_n // 2 + 1)
    b = np.where(2 * j == big_n, 1.0, 2.0)
    bracket = 1.0 - (b / (4.0 * j * j - 1.0)) @ np.cos(2.0 * np.outer(j, theta))
    c = np.full(n, 2.0)
    c[0] = c[-1] = 1.0
    return (1.0 - np.cos(theta)) / 2, c * bracket / (2 * big_n)


def integrated_gradients(
    model: nn.Module,
    x: torch.Tensor,
    target,
    baseline="black",
    n_steps: int = 50,
    method: str = "riemann_trapezoid",
    batch_size: int | None = None,
    return_delta: bool = False,
):
    """IG(x) = (x − x₀) ⊙ ∫₀¹ ∇f_target(x₀ + α(x − x₀)) dα.

    Approximated by a quadrature rule with points α_k and weights w_k:
    IG(x) ≈ (x − x₀) ⊙ Σ_k w_k ∇f_target(x₀ + α_k(x − x₀)).

    Sundararajan, Taly & Yan, "Axiomatic Attribution for Deep Networks",
    ICML 2017. Completeness: Σ IG(x) ≈ f_target(x) − f_target(x₀), with f the
    logit (pass a model ending in softmax to explain probabilities).

    Args:
        model: maps (N, C, H, W) inputs to (N, K) logits.
        x: (N, C, H, W) inputs.
        target: class index, or one per row.
        baseline: x₀: a number, a tensor broadcastable to x, or a name
            (`baselines.resolve_baseline`): "black"/"zero" (0), "grey"
            (`model.normalize.mean`), "blur" (Gaussian, σ = BLUR_SIGMA = 3
            px), "noise" (uniform, NOISE_SEED = 0). Default "black".
        n_steps: points on the path, ≥ 1 (≥ 2 for riemann_trapezoid).
            Default 50.
        method: quadrature rule, one of QUADRATURE_RULES (see `quadrature`).
            Default "riemann_trapezoid".
        batch_size: most rows per model call, default `default_batch_size(x,
            model)` (256 for SmallCNN on digits, 4 for ResNet-18 at 224 px).
        return_delta: also return the completeness gap per row.
    Returns:
        (N, C, H, W) attributions, detached, on x's device; with return_delta,
        (attr, delta) where delta (N,) = Σ attr − (f(x) − f(x₀)) (Captum's
        sign convention).

    Captum: `IntegratedGradients(model).attribute(x, baselines=x₀,
    target=target, n_steps=n_steps, method=method,
    internal_batch_size=batch_size, return_convergence_delta=return_delta)`.
    Departures: (1) Captum's default rule is "gausslegendre", ours
    "riemann_trapezoid"; (2) Captum's trapezoid weights are 1/n (halved at the
    ends), which sum to (n−1)/n although its points are spaced 1/(n−1), so its
    trapezoid result is ours × (n−1)/n; ours uses the true trapezoid weights
    (`reference.integrated_gradients` rescales Captum's result by n/(n−1));
    (3) Captum refuses n_steps = 1 for the Riemann rules; we allow it for
    left/right/middle; (4) like Captum's internal_batch_size our chunks hold
    whole steps (⌊batch_size/N⌋ of them), but when batch_size < N we split
    the rows of a step (Captum warns and runs N rows per call).
    """
    check_model(model)
    check_input(x)
    alphas, weights = _rule(method, n_steps, x)
    batch_size = check_batch_size(batch_size, x, model)
    n = x.shape[0]
    idx = target_tensor(target, n, x.device)
    base = resolve_baseline(baseline, x, model).expand_as(x)
    x = x.detach()
    diff = x - base
    total = torch.zeros_like(x)
    with eval_mode(model):
        # Path points in Captum's order: step-major, (step k, row i) ↦ k·N + i;
        # a block of s steps × r rows is base + α ⊙ (x − base), broadcast.
        for steps, rows in grid_chunks(n_steps, n, batch_size):
            a = alphas[steps].view(-1, 1, 1, 1, 1)
            points = (base[rows] + a * diff[rows]).flatten(0, 1)
            n_block = a.shape[0]
            grad, _ = input_gradient(model, points, idx[rows].repeat(n_block))
            # Σ_k w_k ∇f(point_k): one matrix product over the block's steps.
            # reshape, not view: a channels_last input or model gives
            # channels_last gradients, which are not contiguous.
            summed = weights[steps][None] @ grad.reshape(n_block, -1)
            total[rows] += summed.reshape(total[rows].shape)
        attr = total * diff
        if not return_delta:
            return attr
        return attr, completeness_delta(model, x, base, idx, attr, batch_size)


def _rule(method: object, n_steps: object, x: torch.Tensor) -> tuple:
    """`quadrature(method, n_steps)` after checking both, on x's device and dtype."""
    method = check_choice(method, "method", QUADRATURE_RULES)
    n_steps = check_int(n_steps, "n_steps", 1)
    if method == "riemann_trapezoid" and n_steps < 2:
        raise ValueError(
            "n_steps must be an int ≥ 2 for method='riemann_trapezoid' (the rule "
            f"needs both ends); use ≥ 1 with the other rules, got {n_steps}"
        )
    return tuple(t.to(device=x.device, dtype=x.dtype) for t in quadrature(method, n_steps))


def completeness_delta(model, x, base, idx, attr, batch_size) -> torch.Tensor:
    """δ (N,) = Σ attr − (f_idx(x) − f_idx(base)), Captum's sign; model in eval mode."""
    n = x.shape[0]
    with torch.inference_mode():
        ends = torch.cat([x, base])
        both = torch.cat([model(ends[part]) for part in chunks(2 * n, batch_size)])
        out = select(both, idx.repeat(2))
    return (attr.reshape(n, -1).sum(1) - (out[:n] - out[n:])).clone()
