"""What the reference gives under the usual wrong choices, for `hints.diagnose`.

A wrong answer is most often the right method with one wrong choice in it. The
checker computes that choice itself, on the same inputs, with the reference,
and `hints.diagnose` names it when the student's output matches (exactly or
up to a factor, e.g. 1/N for a loss averaged over the batch):

* the target of each row (`targets`): the predicted class, every row
  explaining target[0], the rows' targets reversed, the sum over all rows'
  targets (``logits[:, target]``);
* the quantity explained (`quantities`): for a method of the logit f_c, the
  same method on the softmax probability p_c (the lecture's f), on the
  cross-entropy loss −log p_c (training's quantity: its sign is flipped too),
  on log p_c and on the sum of all logits, by wrapping the model in a head;
  for occlusion, which the exercises run on p_c, the logit;
* an option of the method (`options`): integrated gradients' other
  quadrature rules, occlusion's black patches instead of grey;
* a neighbouring method (`neighbours`): the plain gradient for input ×
  gradient, SmoothGrad at x without its noise or with the noise scaled twice,
  IG multiplied by x instead of x − baseline, or with the gradient at x alone;
* Grad-CAM's own wrong choices (`grad_cam`, ps6): the map without its ReLU,
  per-position instead of per-channel weights, weights averaged over the
  channels, A taken as the layer's input, the default layer instead of the
  given one (its probability and its sum of all logits are `quantities`');
* the closed-form answers of ps2–ps4 (`answers`): path points from k = 0, on
  linspace(0, 1, m) or reversed, or not starting at the baseline; σ from the
  standard deviation, the maximum alone or the whole batch; Spearman as the
  Pearson correlation of the values, or with ranks that do not average ties.

Every alternative is optional: one that cannot be computed (another signature,
a reference that is not installed) is left out. Runs in the student's kernel,
only after a visible comparison failed; the checker computes these with the
reference, never the student's function.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.stats
import torch
from torch import nn

from .references import reference_answer, saliency

Found = dict[str, np.ndarray]


def _np(out) -> np.ndarray:
    if isinstance(out, torch.Tensor):
        out = out.detach().cpu().numpy()
    return np.asarray(out, dtype=np.float64)


def _saliency_call(args: tuple) -> bool:
    """Whether args look like (model, x, target, …)."""
    return (
        len(args) >= 3
        and isinstance(args[0], nn.Module)
        and isinstance(args[1], torch.Tensor)
    )


def targets(reference: Callable, args: tuple, kwargs: dict) -> Found:
    """The reference under the usual wrong per-row targets (several different ones)."""
    if not _saliency_call(args):
        return {}
    model, x, target = args[:3]
    rest = args[3:]

    def run(t):
        return _np(reference(model, x.clone(), t, *rest, **kwargs))

    with torch.no_grad():
        pred = model(x).argmax(1)
    out = {}
    if not torch.equal(pred, torch.as_tensor(target).expand(len(x))):
        out["your map explains the predicted class (argmax), not target"] = run(pred)
    if not isinstance(target, torch.Tensor) or len(set(target.tolist())) < 2:
        return out
    return out | {
        "every row explains target[0]: use each row's own target[row] "
        "(logits[torch.arange(N), target])": run(target[:1].expand_as(target).clone()),
        "rows swapped: you explain the targets in reverse order; check target[row]": run(
            target.flip(0)
        ),
        "every row explains the sum of all rows' targets: logits[:, target] picks "
        "N×N entries; use logits[torch.arange(N), target] (check target[row])": sum(
            run(torch.full_like(target, int(t))) for t in target.tolist()
        ),
    }


class _Head(nn.Module):
    """The model followed by softmax, log-softmax, the loss −log-softmax, or the
    sum of all logits in every column ("all")."""

    def __init__(self, model: nn.Module, kind: str):
        super().__init__()
        self.model, self.kind = model, kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)
        if self.kind == "prob":
            return torch.softmax(z, 1)
        if self.kind == "all":
            return z.sum(1, keepdim=True).expand_as(z)
        return torch.log_softmax(z, 1) * (1 if self.kind == "log_prob" else -1)


_LOGIT_INSTEAD = (
    "differentiate the logit logits[row, target[row]] itself (no softmax, no loss)"
)
HEADS = {
    "prob": (
        "your map explains the softmax probability p_c, not the logit f_c: the "
        "lecture writes f for the probability, the course explains the logit, "
        "whose gradient does not vanish when the model is sure (notebook 01, "
        f"section 6); {_LOGIT_INSTEAD}"
    ),
    "loss": (
        "your map explains the cross-entropy loss −log p_c, not the class score "
        "f_c: the loss falls where the score rises, so the sign is flipped too, "
        f"and it goes through the softmax; {_LOGIT_INSTEAD}"
    ),
    "log_prob": (
        "your map explains log p_c (log_softmax), not the logit f_c: log_softmax "
        f"subtracts the log-sum-exp of all the logits; {_LOGIT_INSTEAD}"
    ),
    "all": (
        "your map explains the sum of all the classes' logits (logits.sum()), not "
        "the target's: pick logits[row, target[row]] before summing over the rows"
    ),
}


def _explains(reference: Callable) -> str:
    """"logit" or "prob": what the reference's method takes the target's value of."""
    method = getattr(reference, "method", None)
    default = "prob" if method == "occlusion" else "logit"
    return getattr(reference, "fixed", {}).get("output", default)


def _layer_as_module(reference: Callable, model: nn.Module, rest: list, kwargs: dict):
    """(rest, kwargs) with Grad-CAM's layer given as the module itself.

    A dotted name ("_blocks.10") or None (the default layer) names a module of
    `model`, not of a `_Head` around it; the module object names the same
    one in both. Other references: unchanged.
    """
    if getattr(reference, "method", None) != "grad_cam":
        return rest, kwargs
    from course_utils.saliency.core import resolve_layer  # where the reference is

    if "layer" in kwargs:
        return rest, {**kwargs, "layer": resolve_layer(model, kwargs["layer"])}
    if len(rest) >= 3:  # (x, target, layer, …)
        return [*rest[:2], resolve_layer(model, rest[2]), *rest[3:]], kwargs
    return rest, {**kwargs, "layer": resolve_layer(model, None)}


def quantities(reference: Callable, args: tuple, kwargs: dict) -> Found:
    """The reference on another output than the one it explains."""
    if not _saliency_call(args):
        return {}
    model, *rest = args
    if _explains(reference) == "logit":
        rest, kwargs = _layer_as_module(reference, model, rest, kwargs)
        return {
            what: _np(reference(_Head(model, kind), *rest, **kwargs))
            for kind, what in HEADS.items()
        }
    if hasattr(reference, "variant"):
        logit = reference.variant(output="logit")
        return {
            "your drops are of the logit f_c, not of the softmax probability p_c "
            "the question asks for: take torch.softmax(model(...), 1)[row, "
            "target[row]]": _np(logit(*args, **kwargs))
        }
    return {}


RULES = {
    "riemann_left": "steps k = 0 … m−1 (a left Riemann sum, from the baseline): "
    "use α_k = k/m for k = 1 … m",
    "riemann_middle": "steps at the midpoints (k − ½)/m: use α_k = k/m for k = 1 … m",
    "riemann_trapezoid": "the trapezoid rule: the question asks for the right "
    "Riemann sum, α_k = k/m for k = 1 … m, each weighted 1/m",
    "gausslegendre": "Gauss–Legendre nodes: use α_k = k/m for k = 1 … m",
}


def options(reference: Callable, args: tuple, kwargs: dict) -> Found:
    """The reference with another value of one of its fixed options."""
    method = getattr(reference, "method", None)
    fixed = getattr(reference, "fixed", {})
    out = {}
    if method == "integrated_gradients":
        for rule, what in RULES.items():
            if rule != fixed.get("method"):
                out[what] = _np(reference.variant(method=rule)(*args, **kwargs))
    if method == "occlusion" and fixed.get("baseline", "grey") == "grey":
        black = reference.variant(baseline="black")
        out[
            "your patches are set to 0 (black), not to the grey of model.normalize.mean"
        ] = _np(black(*args, **kwargs))
    if method == "occlusion" and _explains(reference) == "prob":
        model, x, target = args[:3]
        with torch.no_grad():
            p = torch.softmax(model(x), 1)[torch.arange(len(x)), target]
        drop = _np(reference(*args, **kwargs))
        out[
            "your map holds p(x̃), the probability with the patch grey, not the drop "
            "p(x) − p(x̃)"
        ] = _np(p).reshape(-1, *[1] * (drop.ndim - 1)) - drop
    return out


def _baseline(args: tuple, kwargs: dict):
    return kwargs["baseline"] if "baseline" in kwargs else args[3]


def neighbours(reference: Callable, args: tuple, kwargs: dict) -> Found:
    """A neighbouring method: the usual confusions of one step of the formula."""
    method = getattr(reference, "method", None)
    name = getattr(reference, "answer", None)
    out: Found = {}
    if method == "input_x_gradient":
        out["the gradient alone: multiply it by x, element by element"] = _np(
            saliency("gradient")(*args, **kwargs)
        )
    if method == "integrated_gradients":
        x = args[1]
        base = torch.as_tensor(_baseline(args, kwargs), dtype=x.dtype).expand_as(x)
        out[
            "(x − baseline) ⊙ the gradient at x alone: average the gradients at all "
            "the path points"
        ] = _np((x - base) * saliency("gradient")(*args[:3]))
        diff = (x - base).double()
        ig = torch.as_tensor(_np(reference(*args, **kwargs)))
        ratio = torch.where(diff.abs() > 1e-6, x.double() / diff, torch.nan)
        out[
            "you multiply the averaged gradient by x, not by x − baseline"
        ] = _np(ig * ratio)
    if name == "smoothgrad_from_noise":
        model, x, target = args[:3]
        noise = kwargs["noise"] if "noise" in kwargs else args[3]
        sigma = torch.as_tensor(reference_answer("noise_sigma")(x, 0.15))
        out["your average ignores the noise: take the gradient at x + noise[s]"] = _np(
            reference(model, x, target, torch.zeros_like(noise))
        )
        out[
            "the noise is scaled twice: it comes already scaled, add noise[s] as it is"
        ] = _np(reference(model, x, target, noise * sigma.view(1, -1, 1, 1, 1)))
    return out


def _ranks(v: np.ndarray, method: str) -> np.ndarray:
    return scipy.stats.rankdata(v, method=method)


def _pearson(u: np.ndarray, v: np.ndarray) -> float:
    return float(np.corrcoef(u, v)[0, 1])


def _per_row(fn, a, b) -> np.ndarray:
    return np.array([fn(_np(u).ravel(), _np(v).ravel()) for u, v in zip(a, b)])


def answers(reference: Callable, args: tuple, kwargs: dict) -> Found:
    """Wrong variants of the closed-form answers (ps2–ps4)."""
    name = getattr(reference, "answer", None)
    if name == "spearman":
        a, b = args[:2]
        return {
            "the Pearson correlation of the values, not of their ranks: rank each "
            "flattened map first": _per_row(_pearson, a, b),
            "ties get different ranks (argsort of argsort): equal values must share "
            "their average rank, as scipy.stats.rankdata does by default": _per_row(
                lambda u, v: _pearson(_ranks(u, "ordinal"), _ranks(v, "ordinal")), a, b
            ),
        }
    if name == "noise_sigma":
        x, level = args[:2]
        flat = _np(x).reshape(len(x), -1)
        return {
            "σ from each image's standard deviation, not from its range max − min":
                level * flat.std(1),
            "σ from the maximum alone: subtract each image's minimum (max − min)":
                level * flat.max(1),
            "one σ for the whole batch (its max − min) copied to every image: "
            "take each image's own max and min": np.full(
                len(x), level * (flat.max() - flat.min())
            ),
        }
    if name == "path_points":
        x, baseline, m = args[:3]
        points = _np(reference(x, baseline, m))
        base = np.broadcast_to(_np(torch.as_tensor(baseline, dtype=x.dtype)), x.shape)
        out = {
            "steps k = 0 … m−1 (from the baseline itself): entry k − 1 is "
            "x0 + (k/m)(x − x0) for k = 1 … m": np.concatenate([base[None], points[:-1]]),
            "your points run from x back to the baseline: entry 0 is the one "
            "nearest the baseline, x0 + (1/m)(x − x0)": points[::-1].copy(),
            "your points are α·x: the path starts at the baseline, "
            "x0 + α(x − x0)": _np(reference(x, 0.0, m)),
        }
        if m >= 2:
            out[
                "α = linspace(0, 1, m) (k/(m − 1)): use α_k = k/m for k = 1 … m"
            ] = np.concatenate([base[None], _np(reference(x, baseline, m - 1))])
        return out
    return {}


def _cam_parts(model: nn.Module, x: torch.Tensor, target, layer) -> dict:
    """The layer's output A and input, ∂f/∂A and ∂f/∂(the layer's input).

    f = Σ_rows the target's logit (Grad-CAM's score). The layer is found with
    the course's `resolve_layer`, so this runs only where the reference
    implementation is installed.
    """
    from course_utils.saliency.core import resolve_layer
    from course_utils.saliency.validate import target_tensor

    module = resolve_layer(model, layer)
    idx = target_tensor(target, len(x), x.device)
    store: dict[str, torch.Tensor] = {}

    def hook(_module, inputs, output):
        store["A_in"], store["A"] = inputs[0], output
        return output.clone()  # what runs downstream cannot change A in place

    handle = module.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = model(x.detach().clone().requires_grad_(True))
    finally:
        handle.remove()
    score = logits.gather(1, idx[:, None]).sum()
    grad, grad_in = torch.autograd.grad(score, [store["A"], store["A_in"]])
    return {"A": store["A"].detach(), "A_in": store["A_in"].detach(),
            "grad": grad, "grad_in": grad_in}


def _cam(weights: torch.Tensor, act: torch.Tensor, size) -> np.ndarray:
    """ReLU(Σ_k weights_k A^k), resized bilinearly to `size` if it differs."""
    cam = (weights * act).sum(1, keepdim=True).clamp(min=0)
    if tuple(cam.shape[2:]) != tuple(size):
        cam = nn.functional.interpolate(cam, size=tuple(size), mode="bilinear")
    return _np(cam)


def grad_cam(reference: Callable, args: tuple, kwargs: dict) -> Found:
    """Grad-CAM under its own classic wrong choices (ps6).

    For ``grad_cam(model, x, target, layer)`` checked against
    ``checks.saliency("grad_cam", ...)``, with A the layer's output and α_k =
    mean over (h, w) of ∂f_target/∂A^k: the map without its ReLU; Σ_k
    (∂f/∂A^k)·A^k position by position (no spatial mean); weights averaged
    over the channels instead; A taken as the layer's input; the default
    layer instead of `layer` (a map of another resolution: `hints.grad_cam_shape`
    names it when the shapes differ). The probability's and every logit's
    gradient are `quantities`'.
    """
    if getattr(reference, "method", None) != "grad_cam" or not _saliency_call(args):
        return {}
    model, x, target = args[:3]
    layer = args[3] if len(args) > 3 else kwargs.get("layer")
    size = tuple(reference(*args, **kwargs).shape[2:])
    p = _cam_parts(model, x, target, layer)
    out = {
        "no ReLU: Grad-CAM keeps only the positive part, ReLU(Σ_k α_k A^k) "
        "(.clamp(min=0) or torch.relu)": _np(reference.variant(relu=False)(*args, **kwargs)),
        "you multiplied the gradient and A position by position: α_k is one number "
        "per channel, the mean of ∂f/∂A^k over (h, w) (dim=(2, 3))": _cam(
            p["grad"], p["A"], size
        ),
        "weights averaged over the channels (dim=1) instead of over the positions: "
        "α_k = mean over (h, w) of ∂f/∂A^k, dim=(2, 3)": _cam(
            p["grad"].mean(1, keepdim=True), p["A"], size
        ),
        "A is the layer's input (a forward hook's `inputs[0]`): use its output": _cam(
            p["grad_in"].mean((2, 3), keepdim=True), p["A_in"], size
        ),
    }
    if layer is not None:
        default = (
            reference(model, x, target, **{**kwargs, "layer": None})
            if "layer" in kwargs
            else reference(model, x, target, None, *args[4:], **kwargs)
        )
        out[
            "this is Grad-CAM at the model's default layer: use the layer you are "
            f"given ({layer!r}, model.get_submodule(layer))"
        ] = _np(default)
    return out


FAMILIES = (targets, quantities, options, neighbours, grad_cam, answers)


def of(reference: Callable, args: tuple, kwargs: dict) -> Found:
    """Every alternative that can be computed for this reference and case.

    Args:
        reference: the check's reference (see `references`).
        args, kwargs: fresh copies of a case's arguments.
    Returns:
        {what the wrong choice is: the reference's output under it}.
    """
    found: Found = {}
    for family in FAMILIES:
        try:
            found.update(family(reference, args, kwargs))
        except Exception:  # noqa: BLE001, S112 — a hint is optional; never mask the failure
            continue
    return found
