"""Hints that diagnose: what a wrong answer's output says about the bug behind it.

A visible test that only prints "relative error 1.79" tells a student that the
answer is wrong, not why. The functions here compare the student's output with
the expected one, and the student's function with itself, and name the likely
cause of the classic bugs:

* `diagnose(actual, expected, alternatives)` — the output is a multiple of the
  reference ("your map is 3.0× the reference: summed instead of averaged?"),
  its sign is flipped, its rows belong to other rows' targets ("rows swapped:
  check target[row]"), or it matches what another target would give; else its
  correlation with the reference says whether the shape or only the scale is off.
* `behaviour(fn, args, kwargs)` — side effects a single comparison cannot see:
  the caller's `x` was changed in place or left with `requires_grad`, a
  gradient was accumulated into `x.grad` (so a second call returns twice the
  first), or the result is still attached to the autograd graph.
* `target_alternatives(reference, args, kwargs)` — the reference's output under
  the usual wrong per-row targets, for `diagnose`.
* `grad_cam_alternatives` and `grad_cam_shape` — for a Grad-CAM answer (ps6):
  the map without its ReLU, with per-position instead of per-channel weights,
  weights averaged over the wrong axis, the probability's or every logit's
  gradient, the layer's input or the default layer; a map of the input's
  shape, one per channel, upsampled or at another layer's resolution.

`checks.check` calls them all in the visible tests (plain mode). They never
change a verdict that the comparison made; `behaviour` adds failures of its own,
because a function that mutates its input can return the right numbers once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
import torch

# How close a least-squares fit a·s ≈ e must be to call the answer "s× the reference".
FIT_TOLERANCE = 0.02
# Correlation above which two maps have "the same shape".
SAME_SHAPE = 0.99


def _flat(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).ravel()


def correlation(a, b) -> float:
    """Pearson correlation of two arrays (NaN when either is constant)."""
    a, b = _flat(a), _flat(b)
    if a.size != b.size or a.size < 2:
        return math.nan
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else math.nan


def _close(a, e, rtol: float = 1e-3, atol: float = 1e-5) -> bool:
    a, e = _flat(a), _flat(e)
    if a.shape != e.shape:
        return False
    err = float(np.linalg.norm(a - e))
    return err <= rtol * float(np.linalg.norm(e)) + atol * math.sqrt(max(a.size, 1))


def scale_factor(actual, expected) -> tuple[float, float]:
    """The s minimising ‖actual − s·expected‖ and the relative residual of that fit."""
    a, e = _flat(actual), _flat(expected)
    ee = float((e * e).sum())
    if ee == 0 or a.shape != e.shape:
        return math.nan, math.inf
    s = float((a * e).sum()) / ee
    res = float(np.linalg.norm(a - s * e)) / max(float(np.linalg.norm(a)), 1e-300)
    return s, res


def _ratio_hint(s: float) -> str:
    if abs(s + 1) < 0.02:
        return (
            "sign flipped: your map is −1.0× the reference. Did you subtract in the "
            "wrong order (baseline − x instead of x − baseline) or negate the score?"
        )
    if s < 0:
        return f"your map is {s:.2f}× the reference: the sign is flipped and the scale off"
    n = round(s)
    if n in (100, 255) and abs(s - n) < 0.02 * n:
        scale = "a percentage" if n == 100 else "0 … 255 intensities"
        return f"your map is {s:.1f}× the reference: {scale} instead of a fraction?"
    if n >= 2 and abs(s - n) < 0.02 * n:
        return (
            f"your map is {s:.1f}× the reference: summed instead of averaged? (or a "
            f"gradient accumulated {n} times)"
        )
    if s < 1 and abs(1 / s - round(1 / s)) < 0.02 / s and round(1 / s) >= 2:
        return (
            f"your map is 1/{round(1 / s)} of the reference: averaged where the "
            "formula sums, or divided by the number of steps twice?"
        )
    return f"your map is {s:.3g}× the reference: a missing or extra factor?"


def diagnose(
    actual,
    expected,
    alternatives: Mapping[str, np.ndarray] | None = None,
) -> list[str]:
    """Likely causes of a mismatch between an answer and the reference.

    Args:
        actual: the student's output (array-like).
        expected: the reference output, same shape.
        alternatives: {description: reference output under a wrong choice}
            (see `target_alternatives`); a match names that choice.
    Returns:
        Hint sentences, most specific first; empty when nothing is recognised
        (or when the two agree).
    """
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        if a.size == 1 and e.size > 1:
            return [
                (f"a single number for the whole batch: return one value per image, "
                f"shape {e.shape}")
            ]
        if a.size == e.size:
            return [f"right number of values but shape {a.shape}: reshape to {e.shape}"]
        if a.ndim == e.ndim + 1 and a.shape[1:] == e.shape:
            return [
                f"one extra leading axis of {a.shape[0]}: average (or sum) over it"
            ]
        return []
    if not np.isfinite(a).all() or _close(a, e):
        return []
    hints: list[str] = []
    for what, alt in (alternatives or {}).items():
        if np.shape(alt) == a.shape and _close(a, alt):
            hints.append(what)
    if a.ndim >= 2 and len(a) > 1 and not hints:
        swapped = []
        for i in range(len(a)):
            if _close(a[i], e[i]):
                continue
            j = next(
                (j for j in range(len(e)) if j != i and _close(a[i], e[j])), None
            )
            if j is not None:
                swapped.append(f"your row {i} is the reference's row {j}")
        if swapped:
            hints.append("rows swapped: " + "; ".join(swapped) + ": check target[row]")
    if hints:
        return hints
    s, res = scale_factor(a, e)
    if math.isfinite(s) and res < FIT_TOLERANCE and abs(s - 1) > 0.01:
        return [_ratio_hint(s)]
    r = correlation(a, e)
    if not math.isfinite(r):
        if not a.any():
            return ["your output is all zeros"]
        return []
    if r > SAME_SHAPE:
        return [
            (f"same shape as the reference (correlation {r:.3f}) but not the same "
            "values: check a detail of the formula (the steps, their weights, the "
            "baseline)")
        ]
    if r < -SAME_SHAPE:
        return [f"correlation {r:.3f} with the reference: the sign is flipped"]
    if a.ndim >= 2 and len(a) > 1:
        bad = [i for i in range(len(a)) if not _close(a[i], e[i])]
        if len(bad) < len(a):
            return [
                (f"rows {bad} are wrong, the others right (correlation {r:.2f}): check "
                "what differs for those rows, e.g. target[row]")
            ]
    return [f"correlation {r:.2f} with the reference: a different quantity?"]


def target_alternatives(
    reference: Callable, args: tuple, kwargs: dict
) -> dict[str, np.ndarray]:
    """The reference's output under the usual wrong per-row targets.

    For `fn(model, x, target, ...)` with a target tensor of several different
    classes: every row explaining target[0]; the targets in reverse order
    (rows swapped); every row explaining the sum over all rows' targets (what
    `logits[:, target].sum()` differentiates). Empty for other signatures.
    """
    if (
        len(args) < 3
        or not isinstance(args[0], torch.nn.Module)
        or not isinstance(args[1], torch.Tensor)
    ):
        return {}
    model, x, target = args[:3]
    rest = args[3:]
    if not isinstance(target, torch.Tensor) or target.numel() < 2:
        return {}
    if len(set(target.tolist())) < 2:
        return {}

    def run(t):
        out = reference(model, x.clone(), t, *rest, **kwargs)
        return np.asarray(out.detach().cpu().numpy(), dtype=np.float64)

    alts = {}
    try:
        alts[
            "every row explains target[0]: use each row's own target[row] "
            "(logits[torch.arange(N), target])"
        ] = run(target[:1].expand_as(target).clone())
        alts["rows swapped: you explain the targets in reverse order; check target[row]"] = (
            run(target.flip(0))
        )
        alts[
            "every row explains the sum of all rows' targets: logits[:, target] picks "
            "N×N entries; use logits[torch.arange(N), target] (check target[row])"
        ] = sum(run(torch.full_like(target, int(t))) for t in target.tolist())
    except Exception:  # noqa: BLE001 — a hint is optional; never mask the real failure
        return {}
    return alts


def _tensors(args: tuple, kwargs: dict) -> list[tuple[str, torch.Tensor]]:
    names = [f"argument {i + 1}" for i in range(len(args))]
    x_at = 1 if args and isinstance(args[0], torch.nn.Module) else 0
    if len(args) > x_at:
        names[x_at] = "x"
    out = [(n, a) for n, a in zip(names, args) if isinstance(a, torch.Tensor)]
    out += [(k, v) for k, v in kwargs.items() if isinstance(v, torch.Tensor)]
    return out


def behaviour(fn: Callable, args: tuple, kwargs: dict) -> list[str]:
    """Side effects of `fn(*args, **kwargs)` that one comparison cannot see.

    Calls `fn` twice on the *same* argument objects (the caller's tensors) and
    reports: an input changed in place; `requires_grad` switched on, or a
    gradient left in `.grad`, on an input; a second call that returns
    something else than the first (e.g. 2× because `.backward()` accumulated
    into `x.grad`); a result still attached to the autograd graph.

    Args:
        fn: the student's function.
        args, kwargs: fresh copies of a case's arguments (they are modified).
    Returns:
        Hint sentences; empty when the function behaved.
    """
    inputs = _tensors(args, kwargs)
    before = [(n, t, t.detach().clone(), t.requires_grad) for n, t in inputs]
    problems: list[str] = []
    try:
        first = fn(*args, **kwargs)
    except Exception:  # noqa: BLE001 — the comparison reports errors
        return []
    first_copy = first.detach().clone() if isinstance(first, torch.Tensor) else None
    if isinstance(first, torch.Tensor) and first.requires_grad:
        problems.append(
            "your result is still attached to the autograd graph (requires_grad="
            "True): return it .detach()ed"
        )
    for name, t, old, flag in before:
        if t.shape != old.shape or not torch.equal(t.detach(), old):
            problems.append(
                f"your function changed the caller's {name} in place: work on "
                f"{name}.detach().clone()"
            )
        if t.requires_grad and not flag:
            problems.append(
                f"your function switched on requires_grad of the caller's {name} "
                f"(requires_grad_() on the tensor you were given): use "
                f"{name}.detach().clone().requires_grad_(True)"
            )
        if t.grad is not None:
            problems.append(
                f"your function left a gradient in the caller's {name}.grad: "
                ".backward() accumulates there, so a second call adds to it; use "
                "torch.autograd.grad on a copy of the input"
            )
    if first_copy is None or any("in place" in p for p in problems):
        return problems
    try:
        second = fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001
        problems.append(
            f"a second call on the same inputs raised {type(exc).__name__}: {exc} — "
            "the first call left the inputs in another state"
        )
        return problems
    if isinstance(second, torch.Tensor) and second.shape == first_copy.shape:
        a, b = second.detach().numpy(), first_copy.numpy()
        if not _close(a, b):
            s, res = scale_factor(a, b)
            times = f" {s:.1f}× the first" if res < FIT_TOLERANCE else " something else"
            problems.append(
                f"a second call on the same x returned{times}: gradients accumulate "
                "in x.grad across calls; compute on x.detach().clone() with "
                "torch.autograd.grad (or zero .grad)"
            )
    return problems


# --------------------------------------------------- Grad-CAM's classic bugs
#
# A wrong Grad-CAM usually has the right shape and a map that "looks like" a
# heat map, so the generic diagnosis above can only say "correlation 0.7".
# Computing the usual wrong variants names the bug instead (ps6).

GRAD_CAM = "saliency.grad_cam"  # the reference's name (`checks.saliency`)


def _cam_arguments(args: tuple, kwargs: dict):
    """(model, x, target, layer) of a `grad_cam(model, x, target, layer)` call."""
    model, x, target = args[:3]
    layer = args[3] if len(args) > 3 else kwargs.get("layer")
    if not isinstance(model, torch.nn.Module) or not isinstance(x, torch.Tensor):
        raise TypeError("not a (model, x, target, layer) call")
    return model, x, target, layer


def _cam_parts(model, x, target, layer) -> dict[str, torch.Tensor]:
    """The layer's output A and input, and ∂s/∂A for three scores s.

    "logit": Σ_rows f_target (the right one); "prob": Σ_rows softmax_target;
    "all": Σ of every logit; "input": ∂f_target/∂(the layer's input).
    The layer is found with the course's own `resolve_layer`, so this runs
    only where the reference implementation is installed.
    """
    from course_utils.saliency.core import resolve_layer
    from course_utils.saliency.validate import target_tensor

    module = resolve_layer(model, layer)
    idx = target_tensor(target, len(x), x.device)
    store: dict[str, torch.Tensor] = {}

    def hook(_module, inputs, output):
        store["input"], store["output"] = inputs[0], output
        return output.clone()  # what runs downstream cannot change A in place

    handle = module.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = model(x.detach().clone().requires_grad_(True))
    finally:
        handle.remove()
    scores = {
        "logit": logits.gather(1, idx[:, None]).sum(),
        "prob": torch.softmax(logits, 1).gather(1, idx[:, None]).sum(),
        "all": logits.sum(),
    }
    parts = {"A": store["output"].detach(), "A_in": store["input"].detach()}
    for name, score in scores.items():
        (parts[name],) = torch.autograd.grad(score, store["output"], retain_graph=True)
    (parts["grad_in"],) = torch.autograd.grad(scores["logit"], store["input"])
    return parts


def _cam(weights: torch.Tensor, act: torch.Tensor, size) -> np.ndarray:
    cam = (weights * act).sum(1, keepdim=True).clamp(min=0)
    if tuple(cam.shape[2:]) != tuple(size):
        cam = torch.nn.functional.interpolate(cam, size=tuple(size), mode="bilinear")
    return cam.detach().numpy().astype(np.float64)


def grad_cam_alternatives(
    reference: Callable, args: tuple, kwargs: dict
) -> dict[str, np.ndarray]:
    """Grad-CAM under its classic wrong choices, for `diagnose`.

    For an answer `grad_cam(model, x, target, layer)` checked against
    ``checks.saliency("grad_cam", ...)``, with A the layer's output and
    α_k = mean over (h, w) of ∂f_target/∂A^k: the map without its ReLU; Σ_k
    (∂f/∂A^k)·A^k per position (no spatial mean); weights averaged over the
    channels instead of over (h, w); the gradient of the softmax probability,
    or of every logit summed, instead of the target's logit; A taken as the
    layer's input; the default layer instead of `layer`. Empty for any other
    reference, or where the reference implementation is not installed.
    """
    if getattr(reference, "__name__", "") != GRAD_CAM or len(args) < 3:
        return {}
    try:
        model, x, target, layer = _cam_arguments(args, kwargs)
        expected = reference(model, x.clone(), target, *args[3:], **kwargs)
        size = tuple(expected.shape[2:])
        p = _cam_parts(model, x, target, layer)
        spatial = (2, 3)
        alts = {
            "no ReLU: Grad-CAM keeps only the positive part, ReLU(Σ_k α_k A^k) "
            "(.clamp(min=0) or torch.relu)": reference(
                model, x.clone(), target, *args[3:], **{**kwargs, "relu": False}
            ),
            "you multiplied the gradient and A position by position: α_k is one "
            "number per channel, the mean of ∂f/∂A^k over (h, w) (dim=(2, 3))": _cam(
                p["logit"], p["A"], size
            ),
            "weights averaged over the channels (dim=1) instead of over the positions: "
            "α_k = mean over (h, w) of ∂f/∂A^k, dim=(2, 3)": _cam(
                p["logit"].mean(1, keepdim=True), p["A"], size
            ),
            "gradient of the softmax probability: Grad-CAM differentiates the "
            "target's logit (the score before the softmax)": _cam(
                p["prob"].mean(spatial, keepdim=True), p["A"], size
            ),
            "gradient of every logit summed: differentiate only the target's logit, "
            "logits[torch.arange(N), target]": _cam(
                p["all"].mean(spatial, keepdim=True), p["A"], size
            ),
            "A is the layer's input (a forward hook's `inputs[0]`): use its output": (
                _cam(p["grad_in"].mean(spatial, keepdim=True), p["A_in"], size)
            ),
        }
        if layer is not None:
            alts[
                "this is Grad-CAM at the model's default layer: use the layer you are "
                f"given ({layer!r}, model.get_submodule(layer))"
            ] = reference(model, x.clone(), target, None, *args[4:], **kwargs)
    except Exception:  # noqa: BLE001 — a hint is optional; never mask the real failure
        return {}
    return {k: np.asarray(v, dtype=np.float64) for k, v in alts.items()}


def grad_cam_shape(reference: Callable, actual, expected, args: tuple) -> list[str]:
    """What a Grad-CAM answer of the wrong shape did (empty if the shape is right).

    The reference's map is (N, 1, h, w) at the layer's resolution (or at x's,
    when it upsamples); the answer may be x-shaped (the input gradient), one
    map per channel, upsampled, or at another layer's resolution.
    """
    if getattr(reference, "__name__", "") != GRAD_CAM or len(args) < 2:
        return []
    a, e = np.shape(actual), np.shape(expected)
    x = args[1]
    if a == e or len(e) != 4 or len(a) != 4 or not isinstance(x, torch.Tensor):
        return []
    if a == tuple(x.shape) and a[1] != 1:
        return [
            f"your map has the input's shape {a}: Grad-CAM's is {e}, one channel at the "
            "layer's resolution — take the gradient with respect to the layer's output "
            "A (a forward hook on the layer), not with respect to x"
        ]
    if a[0] == e[0] and a[2:] == e[2:] and a[1] > 1:
        return [
            f"one map per channel ({a[1]} of them): sum α_k A^k over the channels k "
            "(.sum(dim=1, keepdim=True))"
        ]
    if e[2:] == tuple(x.shape[2:]):
        return []  # an upsampling reference: the generic diagnosis speaks
    if a[:2] == e[:2] and a[2:] == tuple(x.shape[2:]):
        return [
            f"your map is upsampled to the input's {a[2]}×{a[3]}: return it at the "
            f"layer's resolution {e[2]}×{e[3]}, without interpolating"
        ]
    if a[:2] == e[:2]:
        return [
            f"your map is {a[2]}×{a[3]}, the layer you were given outputs "
            f"{e[2]}×{e[3]}: hook that layer (model.get_submodule(layer))"
        ]
    return []
