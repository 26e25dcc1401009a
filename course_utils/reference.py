"""The saliency methods computed by Captum, under the course's conventions.

Each function has the name and signature of its `course_utils.saliency`
twin and returns what Captum returns once our conventions are translated into
Captum's arguments. Tests and notebooks use it for "our map equals Captum's".

Translations (and nothing else):

* model mode: the model runs in eval mode during the call, as ours does
  (Captum uses whatever mode it is given); its flags are restored after
  (`saliency.core.eval_mode`).
* targets: one int per row, as Captum takes them (resolved by
  `saliency.validate.target_tensor`, so bad arguments fail with the same
  messages).
* baselines: names are converted here, by this module's own code (`_baseline`),
  not by `saliency.baselines`, so a bug there cannot pass the parity tests
  unseen: "black"/"zero" 0, "grey" `model.normalize.mean`, "blur" a Gaussian
  blur of σ = 3 px (one 2-D kernel, replicate borders), "noise" uniform in each
  row's [min, max] from a CPU generator seeded with 0.
* `gradient`: `Saliency(abs=absolute)` (Captum's default abs=True).
* `integrated_gradients`: `IntegratedGradients(method=..., n_steps=...,
  internal_batch_size=batch_size)`. For "riemann_trapezoid" Captum's step
  weights (1/n, halved at the ends) sum to (n − 1)/n although its points are
  1/(n − 1) apart; the result is rescaled by n/(n − 1) to the true trapezoid
  rule ours uses, and the convergence delta recomputed from the rescaled
  attributions. Captum refuses n_steps = 1 for every Riemann rule.
* `smoothgrad`: `NoiseTunnel(...)` called once per row with Captum's absolute
  σ = noise_level · (max xᵢ − min xᵢ), computed here per row (`_sigma`).
  Captum draws its noise from the global generator; when a `generator` is
  given its state is loaded into the global generator for the call (inside
  `torch.random.fork_rng`, so the global state is untouched) and copied back
  afterwards, so Captum draws exactly the ε ours draws (ours: one
  `torch.randn((n_samples, C, H, W))` per row, row after row; Captum:
  `torch.normal(0, σ·ones((n_samples, C, H, W)))` per row, the same values).
  `batch_size` → `nt_samples_batch_size` (samples per call, one row per call).
* `occlusion`: `Occlusion(f)` with `sliding_window_shapes=(C, patch, patch)`,
  `strides=(C, stride, stride)`, f = softmax ∘ model for output="prob";
  `batch_size` → `perturbations_per_eval = max(1, batch_size // N)`
  (None → Captum's default, 1).
* `grad_cam`: `LayerGradCam(relu_attributions=relu)` +
  `LayerAttribution.interpolate(..., interpolate_mode="bilinear")`.
* `guided_grad_cam`: `GuidedGradCam(interpolate_mode="bilinear")`.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager

import torch
from captum.attr import (
    Deconvolution,
    GuidedBackprop,
    GuidedGradCam,
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from torch import nn

from . import saliency as sal
from .saliency.core import eval_mode, resolve_layer
from .saliency.validate import check_input, check_model, target_tensor

# The course's definitions of the named baselines, written out again on purpose.
BLUR_SIGMA = 3.0
NOISE_SEED = 0


def _blur(x: torch.Tensor) -> torch.Tensor:
    """x convolved per channel with a normalised 2-D Gaussian, σ = BLUR_SIGMA px."""
    radius = math.ceil(3 * BLUR_SIGMA)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    g = torch.exp(-(t**2) / (2 * BLUR_SIGMA**2))
    kernel = torch.outer(g, g) / g.sum() ** 2
    c = x.shape[1]
    padded = nn.functional.pad(x.detach(), [radius] * 4, mode="replicate")
    return nn.functional.conv2d(padded, kernel.expand(c, 1, -1, -1), groups=c)


def _baseline(baseline, x: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """A named or given baseline as a tensor shaped like x (Captum's `baselines`)."""
    if isinstance(baseline, str):
        if baseline in ("black", "zero"):
            baseline = 0.0
        elif baseline == "grey":
            mean = getattr(getattr(model, "normalize", None), "mean", None)
            if not isinstance(mean, torch.Tensor):
                from . import data

                mean = torch.tensor(data.grey_value())
            baseline = mean.detach().reshape(1, -1, 1, 1)
        elif baseline == "blur":
            baseline = _blur(x)
        elif baseline == "noise":
            gen = torch.Generator().manual_seed(NOISE_SEED)
            u = torch.rand(x.shape, generator=gen, dtype=x.dtype).to(x.device)
            low = x.detach().amin(dim=(1, 2, 3), keepdim=True)
            high = x.detach().amax(dim=(1, 2, 3), keepdim=True)
            baseline = low + u * (high - low)
        else:
            raise ValueError(f"baseline {baseline!r} has no Captum reference")
    base = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
    return base.detach().expand_as(x).contiguous()


def _sigma(row: torch.Tensor, noise_level: float) -> float:
    """Captum's absolute σ for one row: noise_level · (max − min) of its values."""
    return float(noise_level * (row.max() - row.min()))


def _prepare(model, x, target):
    """(a private copy of x that requires grad, one target int per row for Captum).

    Captum's gradient methods set the flag on the tensor they are given (and
    warn), so they get a copy.
    """
    check_model(model)
    check_input(x)
    idx = target_tensor(target, x.shape[0], x.device)
    return x.detach().clone().requires_grad_(), idx.tolist()


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        warnings.filterwarnings("ignore", message=".*did not already require gradients")
        return fn(*args, **kwargs)


def gradient(model, x, target, absolute: bool = False) -> torch.Tensor:
    """`Saliency(model).attribute(x, target=target, abs=absolute)`."""
    x, target = _prepare(model, x, target)
    with eval_mode(model):
        return Saliency(model).attribute(x, target=target, abs=absolute).detach()


def input_x_gradient(model, x, target) -> torch.Tensor:
    """`InputXGradient(model).attribute(x, target=target)`."""
    x, target = _prepare(model, x, target)
    with eval_mode(model):
        return InputXGradient(model).attribute(x, target=target).detach()


def integrated_gradients(model, x, target, baseline="black", n_steps=50,
                         method="riemann_trapezoid", batch_size=None, return_delta=False):
    """`IntegratedGradients(model).attribute(...)`, trapezoid weights corrected.

    See the module docstring for the n/(n − 1) rescaling of Captum's
    "riemann_trapezoid" result.
    """
    check_input(x)
    base = _baseline(baseline, x, model)
    x, target = _prepare(model, x, target)
    with eval_mode(model):
        attr, delta = IntegratedGradients(model).attribute(
            x,
            baselines=base,
            target=target,
            n_steps=n_steps,
            method=method,
            internal_batch_size=batch_size,
            return_convergence_delta=True,
        )
    if method == "riemann_trapezoid":
        scaled = attr * (n_steps / (n_steps - 1))
        n = x.shape[0]
        delta = delta + scaled.reshape(n, -1).sum(1) - attr.reshape(n, -1).sum(1)
        attr = scaled
    attr = attr.detach()
    return (attr, delta.detach()) if return_delta else attr


# Our explain functions and the Captum class that computes each.
_CAPTUM_CLASS = {
    sal.gradient: (Saliency, {"abs": False}),
    sal.input_x_gradient: (InputXGradient, {}),
    sal.guided_backprop: (GuidedBackprop, {}),
    sal.deconvnet: (Deconvolution, {}),
}


@contextmanager
def _global_rng_from(generator: torch.Generator | None, device: torch.device):
    """Run the block on the global generator of `device` set to `generator`'s state."""
    if generator is None:
        yield
        return
    if device.type == "cpu":
        default, devices = torch.default_generator, []
    else:
        index = (
            device.index if device.index is not None else torch.cuda.current_device()
        )
        default, devices = torch.cuda.default_generators[index], [index]
    with torch.random.fork_rng(devices=devices, device_type=device.type):
        default.set_state(generator.get_state())
        yield
        generator.set_state(default.get_state())


def smoothgrad(model, x, target, explain=sal.gradient, n_samples=50, noise_level=0.15,
               kind="smoothgrad", batch_size=None, generator=None) -> torch.Tensor:
    """`NoiseTunnel(<explain's Captum class>)` per row with σᵢ from noise_level.

    Args:
        explain: one of sal.gradient, sal.input_x_gradient,
            sal.guided_backprop, sal.deconvnet (or their reference twins).
        other arguments: as `saliency.smoothgrad`.
    """
    explain = {
        gradient: sal.gradient,
        input_x_gradient: sal.input_x_gradient,
        guided_backprop: sal.guided_backprop,
        deconvnet: sal.deconvnet,
    }.get(explain, explain)
    if explain not in _CAPTUM_CLASS:
        raise ValueError(
            "explain must be one of sal.gradient, sal.input_x_gradient, "
            "sal.guided_backprop, sal.deconvnet for the Captum reference, "
            f"got {explain!r}"
        )
    cls, extra = _CAPTUM_CLASS[explain]
    x, target = _prepare(model, x, target)
    rows = []
    with eval_mode(model), _global_rng_from(generator, x.device):
        tunnel = NoiseTunnel(cls(model))
        for i in range(x.shape[0]):
            rows.append(
                _quiet(
                    tunnel.attribute,
                    x[i : i + 1],
                    nt_type=kind,
                    nt_samples=n_samples,
                    nt_samples_batch_size=batch_size,
                    stdevs=_sigma(x[i].detach(), noise_level),
                    target=target[i],
                    **extra,
                )
            )
    return torch.cat(rows).detach()


def occlusion(model, x, target, patch=4, stride=None, baseline="grey", output="prob",
              batch_size=None) -> torch.Tensor:
    """`Occlusion(f).attribute(x, sliding_window_shapes=(C, p, p),
    strides=(C, s, s), baselines=...)`, f = softmax ∘ model for output="prob"."""
    check_input(x)
    base = _baseline(baseline, x, model)
    x, target = _prepare(model, x, target)
    stride = patch if stride is None else stride
    c = x.shape[1]

    def prob(inputs):
        return torch.softmax(model(inputs), dim=1)

    forward = prob if output == "prob" else model
    per_eval = 1 if batch_size is None else max(1, batch_size // x.shape[0])
    with eval_mode(model), torch.no_grad():
        return Occlusion(forward).attribute(
            x,
            sliding_window_shapes=(c, patch, patch),
            strides=(c, stride, stride),
            baselines=base,
            target=target,
            perturbations_per_eval=per_eval,
        )


def grad_cam(model, x, target, layer=None, relu: bool = True, upsample: bool = True):
    """`LayerGradCam(model, layer).attribute(x, target, relu_attributions=relu)`,
    then `LayerAttribution.interpolate(attr, (H, W), interpolate_mode="bilinear")`."""
    module = resolve_layer(model, layer)
    x, target = _prepare(model, x, target)
    with eval_mode(model):
        attr = LayerGradCam(model, module).attribute(
            x, target=target, relu_attributions=relu
        )
    if upsample:
        attr = LayerAttribution.interpolate(attr, tuple(x.shape[2:]), "bilinear")
    return attr.detach()


def guided_backprop(model, x, target) -> torch.Tensor:
    """`GuidedBackprop(model).attribute(x, target=target)`."""
    x, target = _prepare(model, x, target)
    with eval_mode(model):
        return _quiet(GuidedBackprop(model).attribute, x, target=target).detach()


def deconvnet(model, x, target) -> torch.Tensor:
    """`Deconvolution(model).attribute(x, target=target)`."""
    x, target = _prepare(model, x, target)
    with eval_mode(model):
        return _quiet(Deconvolution(model).attribute, x, target=target).detach()


def guided_grad_cam(model, x, target, layer=None) -> torch.Tensor:
    """`GuidedGradCam(model, layer).attribute(x, target=target,
    interpolate_mode="bilinear")`."""
    module = resolve_layer(model, layer)
    x, target = _prepare(model, x, target)
    with eval_mode(model):
        return _quiet(
            GuidedGradCam(model, module).attribute,
            x,
            target=target,
            interpolate_mode="bilinear",
        ).detach()


# ------------------------------------------------- Shapley values (notebook 10)


def _patch_ids(height: int, width: int, grid) -> torch.Tensor:
    """Captum's feature_mask for a rows × cols grid, built here (not with ours)."""
    rows, cols = (grid, grid) if isinstance(grid, int) else grid
    r = torch.div(torch.arange(height) * rows, height, rounding_mode="floor")
    c = torch.div(torch.arange(width) * cols, width, rounding_mode="floor")
    return r[:, None] * cols + c[None, :]


def _baseline_digits(baselines, x: torch.Tensor) -> torch.Tensor:
    """GradientShap's `baselines`: "train" = the first 200 training digits."""
    if isinstance(baselines, str):
        if baselines != "train":
            raise ValueError(f"baselines {baselines!r} has no Captum reference")
        from . import data

        baselines = data.load_split("train").x[:200]
    dist = torch.as_tensor(baselines).detach()
    return (dist[None] if dist.dim() == 3 else dist).to(x.device, x.dtype)


def kernel_shap(
    model,
    x,
    target,
    grid=4,
    baseline="grey",
    output="logit",
    n_samples=1000,
    seed=0,
) -> torch.Tensor:
    """`KernelShap(f).attribute(x[i:i+1], baselines=baseline, target=target_i,
    feature_mask=patch_ids, n_samples=n_samples)` per row, after
    `torch.manual_seed(seed)` (inside `fork_rng`: the global state is untouched).

    f = model ("logit") or softmax ∘ model ("prob"); baseline names are resolved
    by this module's own `_baseline`; feature_mask = its own `_patch_ids`. Rows
    run one after the other from the same seeded stream, as
    `shapley.kernel_shap(..., generator=None)` after `torch.manual_seed(seed)`
    draws them (Captum's coalition sampler is the same code path; its
    regression's DataLoader takes a few extra global draws, undone between
    rows). Returns (N, P) per-patch values (float64).
    """
    from captum.attr import KernelShap

    from . import shapley

    x, target = _prepare(model, x, target)
    ids = _patch_ids(x.shape[-2], x.shape[-1], grid).to(x.device)
    base = _baseline(baseline, x, model).expand_as(x)

    def forward(inp):
        out = model(inp)
        return torch.softmax(out, 1) if output == "prob" else out

    values = []
    with eval_mode(model), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in range(x.shape[0]):
            state = torch.get_rng_state()
            attr = _quiet(
                KernelShap(forward).attribute,
                x[i : i + 1],
                baselines=base[i : i + 1],
                target=target[i],
                feature_mask=ids.view(1, 1, *ids.shape).expand_as(x[i : i + 1]),
                n_samples=n_samples,
            ).detach()
            # Captum's fit iterates a DataLoader, which takes a few more draws
            # from the global generator; leave it where the sampler alone would
            # (where ours leaves it), so the next row draws the same coalitions.
            torch.set_rng_state(state)
            shapley._draw_coalitions(int(ids.max()) + 1, n_samples, None)
            patch = torch.zeros(int(ids.max()) + 1, dtype=torch.float64)
            patch[ids.flatten()] = attr[0, 0].flatten().double()  # equal per patch
            values.append(patch)
    return torch.stack(values)


def gradient_shap(
    model, x, target, baselines="train", n_samples=50, noise_level=0.0, seed=0
):
    """`GradientShap(model).attribute(x, baselines=B, n_samples=n_samples,
    stdevs=σ, target=target)` with np.random and torch seeded from `seed`
    (their global states are restored afterwards).

    σ = noise_level · (max xᵢ − min xᵢ), which Captum takes as one number for
    the batch: the rows of x must share one range (ValueError otherwise).
    Returns (attr, draws): Captum's attributions and the draws Captum made, as
    a `saliency.gradient_shap.GradientShapDraws` (its draw order:
    `np.random.choice(M, N·S)` baseline indices, then `torch.normal(0, σ)`
    noise of shape (N·S, C, H, W), then `np.random.uniform(0, 1, N·S)` path
    points; rows repeat_interleave'd, row i sample s at i·S + s), so that
    `sal.gradient_shap(..., draws=draws)` can be compared with it one for one.
    """
    import numpy as np
    from captum.attr import GradientShap

    from .saliency.gradient_shap import GradientShapDraws

    x, target = _prepare(model, x, target)
    dist = _baseline_digits(baselines, x)
    sigmas = [_sigma(row.detach(), noise_level) for row in x]
    if any(sigma != sigmas[0] for sigma in sigmas):
        raise ValueError(
            "x's rows must share one range (max − min) for Captum's single stdevs"
        )
    stdev = sigmas[0]
    n, s = x.shape[0], n_samples
    np_state = np.random.get_state()
    try:
        with eval_mode(model), torch.random.fork_rng(devices=[]):
            np.random.seed(seed)
            torch.manual_seed(seed)
            attr = _quiet(
                GradientShap(model).attribute,
                x,
                baselines=dist,
                n_samples=s,
                stdevs=stdev,
                target=target,
            ).detach()
            np.random.seed(seed)
            torch.manual_seed(seed)
            index = np.random.choice(dist.shape[0], s * n).tolist()
            noise = torch.normal(
                0, torch.tensor(stdev, device=x.device).repeat((n * s, *x.shape[1:]))
            )
            alpha = np.random.uniform(0.0, 1.0, n * s)
    finally:
        np.random.set_state(np_state)
    draws = GradientShapDraws(
        index=torch.tensor(index, device=x.device),
        noise=noise.to(x.dtype),
        alpha=torch.tensor(alpha, device=x.device, dtype=x.dtype),
    )
    return attr, draws


# name -> the Captum twin of `sal.METHODS[name]`, for the maps (gradient_shap's
# twin also returns Captum's draws, so it is called by name, not from here).
METHODS = {name: globals()[name] for name in sal.METHODS if name != "gradient_shap"}
