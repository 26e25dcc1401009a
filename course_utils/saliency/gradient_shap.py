"""Expected gradients / GradientSHAP: integrated gradients averaged over baselines."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .core import chunks, eval_mode, input_gradient
from .smoothgrad import check_sampling, noise_sigma

SEED = 0  # seed of the draws when no generator is given (repeatable maps)
N_TRAIN_BASELINES = 200  # training digits in the "train" distribution


@dataclass(frozen=True)
class GradientShapDraws:
    """The random draws of `gradient_shap`, row i sample s at position i·S + s.

    Attributes:
        index: (N·S,) int64, which baseline of the distribution each sample uses.
        noise: (N·S, C, H, W) ε added to the input (already scaled by σ).
        alpha: (N·S,) the point α ∈ [0, 1] on the path from baseline to x + ε.
    """

    index: torch.Tensor
    noise: torch.Tensor
    alpha: torch.Tensor


def resolve_distribution(baselines, x: torch.Tensor) -> torch.Tensor:
    """The baseline distribution as an (M, C, H, W) tensor on x's device and dtype.

    "train": the first N_TRAIN_BASELINES = 200 digits of the course's training
    split (a stratified shuffle, so all classes), for 1×28×28 inputs only; a
    tensor (M, C, H, W) (or (C, H, W), one baseline) of x's image shape.
    """
    if isinstance(baselines, str):
        if baselines != "train":
            raise ValueError(
                "baselines must be 'train' or an (M, C, H, W) tensor of baselines, "
                f"got {baselines!r}"
            )
        if tuple(x.shape[1:]) != (1, 28, 28):
            raise ValueError(
                "baselines='train' holds 1×28×28 digits; for inputs of shape "
                f"{tuple(x.shape[1:])} pass an (M, C, H, W) tensor of baselines"
            )
        from .. import data

        dist = data.load_split("train").x[:N_TRAIN_BASELINES]
    elif isinstance(baselines, torch.Tensor):
        dist = baselines.detach()
        if dist.dim() == 3:
            dist = dist[None]
        if dist.dim() != 4 or dist.shape[1:] != x.shape[1:] or dist.shape[0] == 0:
            raise ValueError(
                f"baselines must have shape (M, {', '.join(map(str, x.shape[1:]))}) "
                f"with M ≥ 1, got {tuple(baselines.shape)}"
            )
        if not dist.is_floating_point() or not bool(torch.isfinite(dist).all()):
            raise ValueError("baselines must be finite floating-point values")
    else:
        raise TypeError(
            "baselines must be 'train' or an (M, C, H, W) tensor, "
            f"got {type(baselines).__name__}"
        )
    return dist.to(device=x.device, dtype=x.dtype)


def draw(
    x: torch.Tensor,
    n_baselines: int,
    n_samples: int,
    noise_level: float,
    generator: torch.Generator | None = None,
) -> GradientShapDraws:
    """Draws for `gradient_shap`: baseline index, then noise, then α, per sample.

    index ~ uniform on 0 … M − 1 (`torch.randint`), ε = σᵢ·N(0, I) with
    σᵢ = noise_level · (max xᵢ − min xᵢ) (`torch.randn`), α ~ U[0, 1)
    (`torch.rand`), all from `generator` (None: a fresh generator seeded with
    SEED = 0, so maps are repeatable), drawn on the CPU and moved to x's device.
    """
    gen = torch.Generator().manual_seed(SEED) if generator is None else generator
    total = x.shape[0] * n_samples
    index = torch.randint(n_baselines, (total,), generator=gen)
    eps = torch.randn((total, *x.shape[1:]), generator=gen, dtype=x.dtype)
    alpha = torch.rand(total, generator=gen, dtype=x.dtype)
    sigma = noise_sigma(x, noise_level).cpu().repeat_interleave(n_samples)
    noise = eps * sigma.view(-1, *([1] * (x.dim() - 1)))
    return GradientShapDraws(index.to(x.device), noise.to(x.device), alpha.to(x.device))


def _check_draws(draws, total: int, x: torch.Tensor, m: int) -> GradientShapDraws:
    if not isinstance(draws, GradientShapDraws):
        raise TypeError(f"draws must be GradientShapDraws, got {type(draws).__name__}")
    shapes = {
        "index": (total,),
        "noise": (total, *x.shape[1:]),
        "alpha": (total,),
    }
    for name, shape in shapes.items():
        value = getattr(draws, name)
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
            raise ValueError(f"draws.{name} must have shape {shape} (N·n_samples rows)")
    if int(draws.index.min()) < 0 or int(draws.index.max()) >= m:
        raise ValueError(f"draws.index must hold baseline indices in 0..{m - 1}")
    return GradientShapDraws(
        draws.index.to(x.device),
        draws.noise.to(device=x.device, dtype=x.dtype),
        draws.alpha.to(device=x.device, dtype=x.dtype),
    )


def gradient_shap(
    model: nn.Module,
    x: torch.Tensor,
    target,
    baselines="train",
    n_samples: int = 50,
    noise_level: float = 0.0,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    draws: GradientShapDraws | None = None,
) -> torch.Tensor:
    """EG(x) = E_{x₀ ~ D, α ~ U[0,1], ε} [(x̃ − x₀) ⊙ ∇f_target(x₀ + α(x̃ − x₀))], x̃ = x + ε.

    Monte Carlo over S samples per row: each draws a baseline x₀ from the
    distribution D, a point α on the straight path from x₀ to the (noisy)
    input and Gaussian noise ε; the map is the mean of (x̃ − x₀) ⊙ ∇f at that
    point. With one baseline and no noise it is integrated gradients with
    random path points (its expectation is IG); averaging over a data
    distribution answers IG's "which baseline?" by not choosing one. In
    expectation Σ EG ≈ f(x) − E_D f(x₀) (efficiency, approximately, per
    sample count).

    Erion, Janizek, Sturmfels, Lundberg & Lee, "Improving performance of deep
    learning models with axiomatic attribution priors and expected
    gradients", Nature Machine Intelligence 2021; Lundberg & Lee 2017
    (GradientSHAP).

    Args:
        model: maps (N, C, H, W) inputs to (N, K) logits.
        x: (N, C, H, W) inputs.
        target: class index, or one per row.
        baselines: the distribution D: "train" (default: 200 training digits,
            for 1×28×28 inputs) or an (M, C, H, W) tensor.
        n_samples: S samples per row, ≥ 1. Default 50.
        noise_level: σ of ε as a fraction of each row's range (max − min), as
            in `smoothgrad`, ≥ 0. Default 0 (Erion et al.'s expected
            gradients; Captum's default stdevs is 0 too).
        batch_size: rows per model call over the N·S samples (default
            `default_batch_size(x, model)`).
        generator: torch.Generator (CPU) for the draws (see `draw`); None =
            a fresh generator seeded with SEED = 0 (repeatable).
        draws: explicit `GradientShapDraws` (N·S rows) instead of drawing,
            e.g. Captum's (see `reference.gradient_shap`).
    Returns:
        (N, C, H, W) attributions, detached, on x's device.

    Captum: `GradientShap(model).attribute(x, baselines=D, n_samples=S,
    stdevs=σ, target=target)` with σ absolute (one number per input tensor;
    = noise_level for digits in [0, 1]). Captum multiplies by (x̃ − x₀) with
    the noisy input, as we do. Departures: Captum draws the baseline indices
    and α from numpy's global generator and ε from torch's global one; we
    draw all three from one torch generator. Given Captum's draws
    (`reference.gradient_shap` returns them), the maps agree to round-off.
    """
    n_samples, noise_level, batch_size, targets = check_sampling(
        model, x, target, n_samples, noise_level, batch_size, generator
    )
    n = x.shape[0]
    dist = resolve_distribution(baselines, x)
    x = x.detach()
    total = n * n_samples
    if draws is None:
        draws = draw(x, dist.shape[0], n_samples, noise_level, generator)
    else:
        draws = _check_draws(draws, total, x, dist.shape[0])
    out = torch.empty((total, *x.shape[1:]), dtype=x.dtype, device=x.device)
    with eval_mode(model):
        for part in chunks(total, batch_size):
            rows = torch.arange(part.start, part.stop, device=x.device)
            noisy = x[rows // n_samples] + draws.noise[part]
            base = dist[draws.index[part]]
            diff = noisy - base
            alpha = draws.alpha[part].view(-1, 1, 1, 1)
            # x₀ + α(x̃ − x₀), written as Captum writes it (α x̃ + (1 − α) x₀) so
            # that ReLU and max-pool ties break the same way in both
            points = alpha * noisy + (1.0 - alpha) * base
            grad, _ = input_gradient(model, points, targets[part])
            out[part] = diff * grad
    return out.view(n, n_samples, *x.shape[1:]).mean(1)
