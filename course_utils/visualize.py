"""What the network sees: class model visualization, top activations, unit projections.

* `class_model`: gradient ascent on the input, from the grey image, on a
  class logit with L2 decay, optionally jitter and blur (Simonyan, Vedaldi &
  Zisserman 2014, §2; Yosinski, Clune, Nguyen, Fuchs & Lipson 2015).
* `receptive_field`: which input pixels a layer's unit (i, j) can see,
  computed from the layer geometry (kernel, stride, padding, dilation of every
  conv and pooling layer on the way, the union over residual branches); it
  lives in `receptive_fields`, re-exported here.
* `top_activations`: the k test images whose patch most activates a unit,
  with the receptive-field boxes and the patches (Zeiler & Fergus 2014, Fig. 2).
* `unit_projection`: one unit's activation projected back to input space with
  the deconvnet, guided-backprop or plain-gradient rule at every ReLU
  (Zeiler & Fergus 2014; Springenberg, Dosovitskiy, Brox & Riedmiller 2015).
  The rules are `saliency.guided_backprop.relu_rule`, not a copy.

Same guarantees as the saliency methods: batched, a tqdm bar when a call
takes more than a second, and no side effects on the model (weights, modes,
`requires_grad`, hooks) or the input, also when a call raises.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
from torch import nn

from .receptive_fields import ReceptiveField, receptive_field

# The shared saliency layer.
from .saliency.baselines import grey
from .saliency.cam import feature_maps
from .saliency.core import (
    as_leaf,
    capture_output,
    check_batch_size,
    chunks,
    eval_mode,
    get_layer,
    select,
)
from .saliency.guided_backprop import relu_rule
from .saliency.validate import (
    check_choice,
    check_input,
    check_int,
    check_model,
    target_tensor,
)

__all__ = [
    "PROJECTION_RULES",
    "ClassModel",
    "ReceptiveField",
    "TopActivations",
    "class_model",
    "crop",
    "layer_channels",
    "receptive_field",
    "top_activations",
    "unit_projection",
]

# rule name → `relu_rule` name: the backward rule at every ReLU.
PROJECTION_RULES = {"deconvnet": "deconvnet", "guided": "guided", "gradient": "plain"}
# A progress bar appears only if the call is still running after this many seconds.
PROGRESS_DELAY = 1.0


def _bar(total: int, desc: str, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not progress, delay=PROGRESS_DELAY)


def _check_number(value: object, name: str, low: float, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < low or (strict and value == low):
        sign = ">" if strict else "≥"
        raise ValueError(f"{name} must be a finite number {sign} {low}, got {value}")
    return value


# ------------------------------------------------------------ class models


@dataclass(frozen=True)
class ClassModel:
    """Result of `class_model`.

    images: (T, C, H, W) one image per target, detached.
    targets: (T,) the classes.
    scores: (steps, T) the target logit at each step (on the jittered image
        the step differentiated; without jitter, the image before the step).
    final_logits: (T, K) the logits of the returned images.
    """

    images: torch.Tensor
    targets: torch.Tensor
    scores: torch.Tensor
    final_logits: torch.Tensor

    @property
    def final_scores(self) -> torch.Tensor:
        """(T,) each image's target logit."""
        return self.final_logits.gather(1, self.targets[:, None])[:, 0]


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur, radius ⌈3σ⌉, reflect padding (shape kept)."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    pad = min(radius, x.shape[2] - 1, x.shape[3] - 1)
    if pad < radius:  # tiny images: zero-pad the rest
        x = nn.functional.pad(x, (radius - pad,) * 4)
    x = nn.functional.pad(x, (pad,) * 4, mode="reflect")
    x = nn.functional.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return nn.functional.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


@dataclass(frozen=True)
class _Ascent:
    """`class_model`'s checked settings, and its gradient-ascent loop."""

    lr: float
    l2: float
    jitter: int
    blur_every: int
    seed: int
    blur_sigma: float
    shape: tuple[int, int, int]
    clamp: tuple[float, float] | None

    @classmethod
    def checked(cls, lr, l2, jitter, blur_every, seed, blur_sigma, shape, clamp):
        """The settings after `class_model`'s argument checks (in its order)."""
        settings = cls(
            _check_number(lr, "lr", 0.0, strict=True),
            _check_number(l2, "l2", 0.0),
            check_int(jitter, "jitter", 0),
            check_int(blur_every, "blur_every", 0),
            check_int(seed, "seed", 0),
            _check_number(blur_sigma, "blur_sigma", 0.0, strict=True),
            shape,
            clamp,
        )
        if (
            not isinstance(shape, (tuple, list))
            or len(shape) != 3
            or not all(isinstance(s, numbers.Integral) and s >= 1 for s in shape)
        ):
            raise ValueError(f"shape must be (C, H, W) with ints ≥ 1, got {shape!r}")
        if clamp is not None and (
            not isinstance(clamp, (tuple, list))
            or len(clamp) != 2
            or clamp[0] >= clamp[1]
        ):
            raise ValueError(
                f"clamp must be None or (low, high) with low < high, got {clamp!r}"
            )
        return settings

    def run(self, model, base, idx, n, steps, progress):
        """`steps` ascent steps from `base` for n targets: (images, (steps, n) scores)."""
        gen = torch.Generator().manual_seed(self.seed)
        x = base.expand(n, *self.shape).clone()
        scores = torch.empty(steps, n, dtype=base.dtype)
        bar = _bar(steps, "class model", progress)
        try:
            for step in range(steps):
                x, scores[step] = self.step(model, x, base, idx, gen, step)
                bar.update(1)
        finally:
            bar.close()
        return x, scores

    def step(self, model, x, base, idx, gen, step):
        """One step: jitter, gradient of the target logits, L2 decay, blur, clamp."""
        j = self.jitter
        dy, dx = torch.randint(-j, j + 1, (2,), generator=gen).tolist() if j else (0, 0)
        leaf = as_leaf(torch.roll(x, (dy, dx), dims=(2, 3)))
        with torch.enable_grad():
            out = select(model(leaf), idx)
            (grad,) = torch.autograd.grad(out.sum(), leaf)
        grad = torch.roll(grad, (-dy, -dx), dims=(2, 3))
        x = x + self.lr * (grad - 2 * self.l2 * (x - base))
        if self.blur_every and (step + 1) % self.blur_every == 0:
            x = base + _gaussian_blur(x - base, self.blur_sigma)
        if self.clamp is not None:
            x = x.clamp(float(self.clamp[0]), float(self.clamp[1]))
        return x, out.detach().cpu()


def _grey_image(model: nn.Module, shape) -> torch.Tensor:
    """(1, *shape) of the model's grey, on its parameters' device and dtype."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    base = torch.zeros(1, *shape, dtype=dtype, device=device)
    return base + torch.as_tensor(grey(model), dtype=dtype, device=device)


def _class_targets(model: nn.Module, target, base: torch.Tensor):
    """`class_model`'s target (None = every class) as (idx, n); in eval mode."""
    with torch.no_grad():
        n_classes = int(model(base).shape[1])
    if target is None:
        target = list(range(n_classes))
    if isinstance(target, torch.Tensor) and target.dim() == 0:
        target = target.reshape(1)
    if isinstance(target, numbers.Integral) and not isinstance(target, bool):
        target = [int(target)]
    n = len(target) if isinstance(target, (list, tuple, torch.Tensor)) else 1
    idx = target_tensor(target, n, base.device)
    hi = int(idx.max())
    if hi >= n_classes:
        raise ValueError(f"target must hold classes in 0..{n_classes - 1}, got {hi}")
    return idx, n


def class_model(
    model: nn.Module,
    target=None,
    steps: int = 200,
    lr: float = 0.1,
    l2: float = 0.01,
    jitter: int = 0,
    blur_every: int = 0,
    seed: int = 0,
    *,
    blur_sigma: float = 0.5,
    shape: tuple[int, int, int] = (1, 28, 28),
    clamp: tuple[float, float] | None = (0.0, 1.0),
    progress: bool = True,
) -> ClassModel:
    """x* = argmax_x f_c(x) − λ ‖x − x̄‖², by gradient ascent from the grey image x̄.

    Each step, for every target at once (one image per target, one batch):

        x ← x + lr · (∇ₓ f_c(shift(x)) − 2λ (x − x̄))

    where shift is a random translation by up to `jitter` pixels (undone on
    the gradient; Yosinski et al.'s "jitter"), then every `blur_every` steps
    x ← x̄ + blur_σ(x − x̄) (their Gaussian blur), and, if `clamp`, x is
    clipped to the valid input range. x̄ = the model's grey
    (`model.normalize.mean`, zero after normalisation), so the L2 term is
    Simonyan et al.'s λ‖I‖² on the mean-subtracted image.

    Simonyan, Vedaldi & Zisserman, "Deep Inside Convolutional Networks:
    Visualising Image Classification Models and Saliency Maps", ICLR workshop
    2014 (§2, class model visualisation). Yosinski, Clune, Nguyen, Fuchs &
    Lipson, "Understanding Neural Networks Through Deep Visualization", ICML
    Deep Learning workshop 2015 (L2 decay, blur, jitter-style robustness).
    Departures: Simonyan uses no clipping; Yosinski also clips small-norm
    and small-contribution pixels (not done here). Captum has no equivalent.

    Args:
        model: maps (N, C, H, W) inputs to (N, K) logits.
        target: a class, a list of classes (one image each), or None (default)
            for every class 0 … K−1.
        steps: gradient-ascent steps, ≥ 1. Default 200.
        lr: step size (> 0). Default 0.1.
        l2: λ ≥ 0, the L2 decay towards grey. Default 0.01.
        jitter: largest random shift in pixels (0 = off, default).
        blur_every: blur every this many steps (0 = off, default).
        seed: seeds the jitter shifts (own generator; the global RNG is not
            touched). With jitter 0 the result does not depend on it.
        blur_sigma: σ of the Gaussian blur in pixels (> 0). Default 0.5.
        shape: (C, H, W) of one image. Default (1, 28, 28).
        clamp: (low, high) input range, or None. Default (0, 1).
        progress: a tqdm bar (shown after one second). Default True.
    Returns:
        A `ClassModel` (images, targets, per-step scores, final logits).
    """
    check_model(model)
    steps = check_int(steps, "steps", 1)
    ascent = _Ascent.checked(lr, l2, jitter, blur_every, seed, blur_sigma, shape, clamp)
    base = _grey_image(model, ascent.shape)
    with eval_mode(model):
        idx, n = _class_targets(model, target, base)
        x, scores = ascent.run(model, base, idx, n, steps, progress)
        with torch.no_grad():
            final = model(x)
    targets = idx if isinstance(idx, torch.Tensor) else torch.full((n,), idx)
    return ClassModel(x.detach(), targets.cpu(), scores, final.detach())


# ------------------------------------------------------------ top activations


@dataclass(frozen=True)
class TopActivations:
    """Result of `top_activations`: the k strongest images for one unit.

    indices: (k,) rows of `images`, strongest first. values: (k,) the
        activation. positions: (k, 2) (i, j) of the maximum in the layer's map.
    boxes: (k, 4) receptive-field windows (top, left, bottom, right) in input
        pixels, bottom/right exclusive, unclipped (see `ReceptiveField.box`).
    patches: (k, C, size, size) the image inside each box, zero (black)
        where the box leaves the image.
    field: the layer's `ReceptiveField`.
    """

    indices: torch.Tensor
    values: torch.Tensor
    positions: torch.Tensor
    boxes: torch.Tensor
    patches: torch.Tensor
    field: ReceptiveField


def layer_channels(model, module, layer, x) -> int:
    """The layer's output channel count D, from a forward pass on one image.

    ValueError if the layer is not called or does not output (N, D, h, w).
    """
    with capture_output(module) as store, torch.no_grad():
        model(x[:1])
    return int(feature_maps(store, layer).shape[1])


def crop(images: torch.Tensor, boxes) -> torch.Tensor:
    """images[n, :, top:bottom, left:right] for each (n, box), zero outside the image.

    Args:
        images: (k, C, H, W). boxes: k (top, left, bottom, right), all the same size.
    Returns:
        (k, C, bottom − top, right − left).
    """
    out = []
    h, w = images.shape[2:]
    for img, (top, left, bottom, right) in zip(images, boxes, strict=True):
        pt, pl = max(0, -top), max(0, -left)
        pix = nn.functional.pad(img, (pl, max(0, right - w), pt, max(0, bottom - h)))
        out.append(pix[:, top + pt : bottom + pt, left + pl : right + pl])
    return torch.stack(out)


def top_activations(
    model: nn.Module,
    layer,
    unit: int,
    images: torch.Tensor,
    k: int = 9,
    batch_size: int | None = None,
    progress: bool = True,
) -> TopActivations:
    """The k images with the strongest activation of one unit, and where it sees.

    For every image n the unit's strongest response a_n = max_ij A^unit_ij(x_n)
    (one patch per image, as in Zeiler & Fergus's top-9 grids); the k largest
    a_n are returned with the receptive-field box of their (i, j).

    Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks",
    ECCV 2014 (Fig. 2: top-9 patches per feature map).

    Args:
        model: maps (N, C, H, W) to logits; run in eval mode.
        layer: dotted name or module with (N, D, h, w) output ("conv1", "relu2").
        unit: channel of the layer, 0 … D−1.
        images: (N, C, H, W), e.g. the test split.
        k: how many, 1 … N. Default 9.
        batch_size: rows per forward pass (default: `default_batch_size`).
        progress: tqdm bar (shown after one second).
    """
    check_model(model)
    check_input(images, "images")
    module = get_layer(model, layer)
    n = images.shape[0]
    k = check_int(k, "k", 1, n)
    batch_size = check_batch_size(batch_size, images, model)
    with eval_mode(model):
        d = layer_channels(model, module, layer, images)
        unit = check_int(unit, "unit", 0, d - 1)
        best = torch.empty(n, dtype=images.dtype)
        where = torch.empty(n, dtype=torch.long)
        bar = _bar(n, "top activations", progress)
        try:
            with capture_output(module) as store, torch.no_grad():
                for rows in chunks(n, batch_size):
                    model(images[rows])
                    fmap = store["output"][:, unit].flatten(1)
                    value, pos = fmap.max(1)
                    best[rows], where[rows] = value.cpu(), pos.cpu()
                    bar.update(rows.stop - rows.start)
                width = store["output"].shape[-1]
        finally:
            bar.close()
    values, order = best.topk(k)
    pos = torch.stack([where[order] // width, where[order] % width], 1)
    field = receptive_field(model, layer)
    boxes = [field.box(int(i), int(j)) for i, j in pos]
    patches = crop(images[order.to(images.device)].detach(), boxes)
    return TopActivations(order, values, pos, torch.tensor(boxes), patches, field)


# ------------------------------------------------------------ projections


def unit_projection(
    model: nn.Module,
    x: torch.Tensor,
    layer,
    unit: int,
    rule: str = "deconvnet",
    position=None,
    batch_size: int | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """∂A^unit_ij / ∂x under a ReLU backward rule: one unit's activation in input space.

    Zeiler & Fergus keep one activation of the layer, set all others to zero
    and run the network backwards to the pixels. That is the gradient of the
    single activation A^unit_ij(x) with respect to x, with every ReLU's
    backward replaced by the rule (`saliency.guided_backprop.relu_rule`; g is
    the gradient arriving at a ReLU output y):

    * "deconvnet": max(g, 0) (Zeiler & Fergus 2014),
    * "guided":    max(g, 0) · 1[y > 0] (Springenberg et al. 2015),
    * "gradient":  g · 1[y > 0], the true gradient.

    (Max-pooling "switches" are the pooling's own gradient, which routes to
    the max, as in the papers.)

    Args:
        model: maps (N, C, H, W) to logits; out-of-place nn.ReLU modules.
        x: (N, C, H, W) inputs.
        layer: dotted name or module with (N, D, h, w) output.
        unit: channel, 0 … D−1.
        rule: "deconvnet" (default), "guided" or "gradient".
        position: None (default) = each image's strongest (i, j) for the unit;
            one (i, j) for all images; or an (N, 2) integer tensor, one (i, j)
            per image (e.g. `top_activations(...).positions`).
        batch_size: rows per forward/backward pass. progress: tqdm bar (after 1 s).
    Returns:
        (N, C, H, W) projections, detached; zero outside the receptive field
        of the chosen position.
    """
    check_model(model)
    check_input(x)
    rule = check_choice(rule, "rule", tuple(PROJECTION_RULES))
    module = get_layer(model, layer)
    batch_size = check_batch_size(batch_size, x, model)
    n = x.shape[0]
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    with eval_mode(model):
        d = layer_channels(model, module, layer, x)
        unit = check_int(unit, "unit", 0, d - 1)
        bar = _bar(n, f"{rule} projection", progress)
        try:
            with (
                relu_rule(model, PROJECTION_RULES[rule]),
                capture_output(module) as store,
            ):
                for rows in chunks(n, batch_size):
                    leaf = as_leaf(x[rows])
                    with torch.enable_grad():
                        model(leaf)
                        fmap = store["output"][:, unit]  # (b, h, w)
                        flat = fmap.flatten(1)
                        pick = _positions(position, fmap.shape[1:], flat, rows)
                        chosen = flat.gather(1, pick[:, None]).sum()
                        (grad,) = torch.autograd.grad(chosen, leaf)
                    out[rows] = grad
                    bar.update(rows.stop - rows.start)
        finally:
            bar.close()
    return out


def _positions(position, size, flat: torch.Tensor, rows: slice) -> torch.Tensor:
    """Flat indices into the (h, w) map of the chosen position of each row."""
    if position is None:
        return flat.detach().argmax(1)
    h, w = size
    accepted = (
        f"position must be None, one (i, j) or an (N, 2) integer tensor with "
        f"0 ≤ i < {h}, 0 ≤ j < {w}"
    )
    if isinstance(position, torch.Tensor):
        if (
            position.is_floating_point()
            or position.dim() != 2
            or position.shape[1] != 2
        ):
            raise ValueError(f"{accepted}, got a tensor {tuple(position.shape)} "
                             f"{position.dtype}")  # fmt: skip
        ij = position[rows].to(device=flat.device, dtype=torch.long)
        if ij.shape[0] != flat.shape[0]:
            raise ValueError(f"{accepted}: one row per image, got {position.shape[0]}")
    elif (
        isinstance(position, (tuple, list))
        and len(position) == 2
        and all(isinstance(p, numbers.Integral) for p in position)
    ):
        ij = torch.tensor([list(position)], device=flat.device).expand(flat.shape[0], 2)
    else:
        raise ValueError(f"{accepted}, got {position!r}")
    if bool(((ij < 0) | (ij >= torch.tensor([h, w], device=ij.device))).any()):
        raise ValueError(f"{accepted}, got positions outside the map")
    return ij[:, 0] * w + ij[:, 1]
