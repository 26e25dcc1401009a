"""SmoothGrad, SmoothGrad² and VarGrad."""

from __future__ import annotations

import torch
from torch import nn

from .core import (
    check_batch_size,
    chunks,
    eval_mode,
    input_gradient,
)
from .gradient import gradient
from .validate import (
    check_choice,
    check_generator,
    check_input,
    check_int,
    check_model,
    check_noise_level,
    target_tensor,
)

KINDS = ("smoothgrad", "smoothgrad_sq", "vargrad")


def smoothgrad_textbook(
    model, x, target, explain=gradient, n_samples=50, noise_level=0.15,
    kind="smoothgrad", generator=None,
):  # fmt: skip
    """(1/S) Σₛ E(x + σ·εₛ), εₛ ~ N(0, I), σ = noise_level·(max x − min x): the loop.

    One image and one noisy copy at a time (the noise drawn as the batched
    version draws it: S samples per row, row after row). kind "smoothgrad_sq"
    averages E², "vargrad" takes the variance over the samples.
    """
    target = torch.as_tensor(target).expand(len(x))  # one class per row
    out = []
    for i in range(len(x)):
        row, t = x[i : i + 1].detach(), target[i : i + 1]
        sigma = noise_level * (row.max() - row.min())
        eps = torch.randn(
            (n_samples, *x.shape[1:]),
            generator=generator,
            dtype=x.dtype,
            device=x.device,
        )
        maps = torch.cat(
            [explain(model, row + sigma * eps[s : s + 1], t) for s in range(n_samples)]
        )
        if kind == "smoothgrad":
            out.append(maps.mean(0))
        elif kind == "smoothgrad_sq":
            out.append((maps**2).mean(0))
        else:
            out.append(((maps - maps.mean(0)) ** 2).mean(0))
    return torch.stack(out)


def noise_sigma(x: torch.Tensor, noise_level: float) -> torch.Tensor:
    """σᵢ = noise_level · (max xᵢ − min xᵢ), one per row, shape (N,), x's dtype."""
    flat = x.detach().reshape(x.shape[0], -1)
    return noise_level * (flat.max(1).values - flat.min(1).values)


def noisy_copies(
    x: torch.Tensor,
    n_samples: int,
    noise_level: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """x̃ᵢₛ = xᵢ + σᵢ·εᵢₛ, εᵢₛ ~ N(0, I): (N·n_samples, C, H, W), row-major (i, s).

    The noise of row i is drawn as one `torch.randn((n_samples, C, H, W))`
    from `generator` (the global generator when None), row after row (as one
    call for all rows where that gives the same values: on the CPU when
    n_samples·C·H·W is a multiple of 16). This is
    exactly the draw Captum's NoiseTunnel makes for one input row
    (`torch.normal(0, σ·ones)`), which is how `reference.smoothgrad` gets the
    identical noise.
    """
    sigma = noise_sigma(x, noise_level)
    per_row = n_samples * x[0].numel()
    if x.device.type == "cpu" and per_row % 16 == 0:
        # One draw for every row: on the CPU, torch fills normals in blocks
        # of 16 values, so when a row's draw is a whole number of blocks the
        # single call yields exactly the values of the row-by-row calls.
        eps = torch.randn(
            (x.shape[0], n_samples, *x.shape[1:]),
            generator=generator,
            dtype=x.dtype,
            device=x.device,
        )
        eps.mul_(sigma.view(-1, 1, 1, 1, 1)).add_(x.detach()[:, None])
        return eps.flatten(0, 1)
    out = []
    for i in range(x.shape[0]):
        eps = torch.randn(
            (n_samples, *x.shape[1:]),
            generator=generator,
            dtype=x.dtype,
            device=x.device,
        )
        out.append(x[i : i + 1].detach() + eps * sigma[i])
    return torch.cat(out)


def check_sampling(model, x, target, n_samples, noise_level, batch_size, generator):
    """The checks `smoothgrad` and `gradient_shap` share, in argument order.

    Returns (n_samples, noise_level, batch_size, targets): targets is the
    (N·n_samples,) class of every sample, row i's samples at i·S … i·S + S − 1.
    """
    check_model(model)
    check_input(x)
    n_samples = check_int(n_samples, "n_samples", 1)
    noise_level = check_noise_level(noise_level)
    batch_size = check_batch_size(batch_size, x, model)
    check_generator(generator)
    idx = target_tensor(target, x.shape[0], x.device)
    return n_samples, noise_level, batch_size, idx.repeat_interleave(n_samples)


def smoothgrad(
    model: nn.Module,
    x: torch.Tensor,
    target,
    explain=gradient,
    n_samples: int = 50,
    noise_level: float = 0.15,
    kind: str = "smoothgrad",
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Average a map over noisy copies of the input.

    With x̃ₛ = x + σ·εₛ, εₛ ~ N(0, I), s = 1 … S and E = `explain`:

    * "smoothgrad":    (1/S) Σₛ E(x̃ₛ)
    * "smoothgrad_sq": (1/S) Σₛ E(x̃ₛ)²
    * "vargrad":       (1/S) Σₛ (E(x̃ₛ) − mean)²   (population variance)

    Smilkov, Thorat, Kim, Viégas & Wattenberg, "SmoothGrad: removing noise by
    adding noise", arXiv:1706.03825, 2017 (SmoothGrad²/VarGrad: Adebayo et
    al., 2018; Hooker et al., 2019).

    Args:
        model: maps (N, C, H, W) inputs to (N, K) logits.
        x: (N, C, H, W) inputs.
        target: class index, or one per row.
        explain: the map to smooth, any `f(model, x, target)` returning a
            tensor with N rows (e.g. `gradient`, `input_x_gradient`,
            `guided_backprop`, `functools.partial(integrated_gradients,
            n_steps=20)`). Default `gradient`.
        n_samples: S noisy copies per row, ≥ 1. Default 50.
        noise_level: σ as a fraction of the input's range, ≥ 0, per row:
            σᵢ = noise_level · (max xᵢ − min xᵢ) over that row's C·H·W values
            (the paper's σ/(x_max − x_min)). Default 0.15.
        kind: "smoothgrad", "smoothgrad_sq" or "vargrad".
        batch_size: rows per call of `explain`; the N·S noisy copies go
            through in chunks of this many. Default `default_batch_size(x, model)`:
            sized by one row's activation memory on the model (256 rows for
            SmallCNN on digits, 4 for ResNet-18 at 3×224×224).
        generator: `torch.Generator` on x's device for the noise (see
            `noisy_copies` for the exact draws); None = the global generator.
    Returns:
        Attributions shaped like `explain`'s output for x (N, C, H, W),
        detached, on x's device.

    Captum: `NoiseTunnel(Saliency(model)).attribute(x, nt_type=kind,
    nt_samples=n_samples, stdevs=σᵢ, target=target, abs=False)` called for one
    row at a time (Captum's stdevs is one absolute σ per input tensor, not a
    fraction and not per row; `reference.smoothgrad` converts). Departures:
    σ relative to each row's range; Captum's `nt_samples_batch_size` counts
    samples per input, our batch_size counts rows per call; VarGrad is
    computed as the mean squared deviation (two passes) instead of Captum's
    E[a²] − E[a]², which can cancel to slightly negative values.
    """
    n_samples, noise_level, batch_size, targets = check_sampling(
        model, x, target, n_samples, noise_level, batch_size, generator
    )
    explain, kind = _check_explain(explain), check_choice(kind, "kind", KINDS)
    noisy = noisy_copies(x, n_samples, noise_level, generator)
    if explain is gradient:
        # Straight to the input gradient: the checks and eval mode once, not
        # per chunk, and each chunk's gradient overwrites its noisy copies
        # (no second N·S buffer, no concatenation).
        maps = noisy
        with eval_mode(model):
            for part in chunks(len(noisy), batch_size):
                grad, _ = input_gradient(model, noisy[part], targets[part])
                maps[part] = grad
    else:
        maps = torch.cat([
            explain(model, noisy[part], targets[part])
            for part in chunks(len(noisy), batch_size)
        ])
    return reduce_samples(maps.reshape(len(x), n_samples, *maps.shape[1:]), kind)


def _check_explain(explain: object):
    if not callable(explain):
        raise TypeError(
            "explain must be a saliency function f(model, x, target) such as "
            f"sal.gradient, got {type(explain).__name__}"
        )
    return explain


def reduce_samples(maps: torch.Tensor, kind: str) -> torch.Tensor:
    """Maps (N, S, …) of S noisy copies per row → (N, …): the mean ("smoothgrad"),
    the mean of squares ("smoothgrad_sq") or the population variance ("vargrad")."""
    if kind == "smoothgrad":
        return maps.mean(1)
    if kind == "smoothgrad_sq":
        return (maps * maps).mean(1)
    dev = maps - maps.mean(1, keepdim=True)
    return (dev * dev).mean(1)
