"""Every baseline the course names, for every method, metric and widget.

A baseline x₀ is what "absent" means: IG integrates from it, occlusion pastes
it over a window, deletion/insertion curves delete to it or insert onto it.
One resolver, `resolve_baseline`, turns a name, a number or a tensor into a
tensor broadcastable to x, so the same names work everywhere:

* "black" / "zero": 0 (the digits' background);
* "grey": `model.normalize.mean`, zero after normalisation (`grey`);
* "blur": x blurred per channel by a Gaussian of σ = BLUR_SIGMA = 3 px
  (`blur_baseline`; Petsiuk et al.'s insertion canvas);
* "noise": uniform noise in each row's [min, max], seeded with
  NOISE_SEED = 0, so the same image every call (`noise_baseline`).

`BASELINE_NAMES` lists the names; `BASELINE_LABELS` gives each (but the
"zero" alias) a label for menus.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch
from torch import nn

BLUR_SIGMA = 3.0  # pixels, the "blur" baseline's Gaussian σ
NOISE_SEED = 0  # seed of the "noise" baseline's generator


def grey(model: nn.Module) -> torch.Tensor | float:
    """The model's neutral grey: `model.normalize.mean` (zero after normalisation).

    Falls back to `course_utils.data.grey_value()` for a model without a
    `normalize` module holding a `mean` buffer. A per-channel mean of shape
    (C,) is returned as (1, C, 1, 1).
    """
    norm = getattr(model, "normalize", None)
    mean = getattr(norm, "mean", None)
    if isinstance(mean, torch.Tensor):
        mean = mean.detach()
        return mean.reshape(1, -1, 1, 1) if mean.dim() == 1 else mean
    from .. import data

    return data.grey_value()


def blur_baseline(x: torch.Tensor, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """x blurred per channel by a Gaussian of σ = sigma pixels.

    Separable kernel of radius ⌈3σ⌉, normalised to sum 1; borders are padded
    by replicating the edge pixels (so a constant image stays constant).
    """
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    out = nn.functional.pad(x.detach(), (radius,) * 4, mode="replicate")
    out = nn.functional.conv2d(
        out, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c
    )
    return nn.functional.conv2d(
        out, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c
    )


def noise_baseline(x: torch.Tensor, seed: int = NOISE_SEED) -> torch.Tensor:
    """Uniform noise in each row's own range [min xᵢ, max xᵢ], seeded.

    Drawn on the CPU from `torch.Generator().manual_seed(seed)` (the same
    baseline on every call and device), then moved to x's device.
    """
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(x.shape, generator=gen, dtype=x.dtype).to(x.device)
    flat = x.detach().reshape(x.shape[0], -1)
    low = flat.min(1).values.view(-1, 1, 1, 1)
    high = flat.max(1).values.view(-1, 1, 1, 1)
    return low + u * (high - low)


# name → fn(x, model) giving the baseline (a number or a tensor broadcastable to x)
BASELINES: dict[str, Callable] = {
    "black": lambda x, model: 0.0,
    "zero": lambda x, model: 0.0,
    "grey": lambda x, model: grey(model),
    "blur": lambda x, model: blur_baseline(x),
    "noise": lambda x, model: noise_baseline(x),
}
BASELINE_NAMES = tuple(BASELINES)
BASELINE_LABELS = {
    "black": "black (zeros)",
    "grey": "grey (mean, 0 after normalisation)",
    "blur": "blurred digit",
    "noise": "uniform noise",
}


def resolve_baseline(
    baseline: object, x: torch.Tensor, model: nn.Module
) -> torch.Tensor:
    """A baseline as a tensor broadcastable to x, on x's device and dtype.

    Args:
        baseline: a number; a tensor broadcastable to x (e.g. (C, H, W),
            (1, C, H, W) or (N, C, H, W)); or a name of `BASELINE_NAMES`.
        x: (N, C, H, W) inputs.
        model: the model explained (its `normalize.mean` is "grey").
    """
    if isinstance(baseline, str):
        if baseline not in BASELINES:
            raise ValueError(
                f"baseline must be a number, a tensor broadcastable to x or one of "
                f"{list(BASELINE_NAMES)}, got {baseline!r}"
            )
        value: object = BASELINES[baseline](x, model)
    else:
        value = baseline
    if isinstance(value, bool):
        raise TypeError("baseline must be a number, a tensor or a name, got bool")
    if isinstance(value, numbers.Real):
        if not math.isfinite(float(value)):
            raise ValueError(f"baseline must be finite, got {value!r}")
        return torch.tensor(float(value), dtype=x.dtype, device=x.device)
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"baseline must be a number, a tensor broadcastable to x or one of "
            f"{list(BASELINE_NAMES)}, got {type(value).__name__}"
        )
    try:
        shape = torch.broadcast_shapes(value.shape, x.shape)
    except RuntimeError:
        shape = None
    if shape != x.shape:
        raise ValueError(
            f"baseline must be broadcastable to x's shape {tuple(x.shape)}, "
            f"got shape {tuple(value.shape)}"
        )
    if not bool(torch.isfinite(value).all()):
        raise ValueError("baseline must be finite; it holds NaN or Inf values")
    return value.detach().to(device=x.device, dtype=x.dtype)
