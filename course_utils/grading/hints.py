"""Hints that diagnose: what a wrong answer's output says about the bug behind it.

A visible test that only prints "relative error 1.79" tells a student that the
answer is wrong, not why. The functions here compare the student's output with
the expected one, and the student's function with itself, and name the likely
cause of the classic bugs:

* `diagnose(actual, expected, alternatives)` — the output is what the
  reference gives under a wrong choice (`alternatives`: the probability or the
  loss instead of the logit, another target, another step rule…), exactly or
  up to a factor; or a multiple of the reference ("your map is 3.0× the
  reference: summed instead of averaged?"), its sign flipped, its absolute
  value, its rows belonging to other rows' targets, the reference with some
  entries left at zero (a window not visited); else, for a few values, the
  values themselves, and for a map its correlation with the reference.
* `behaviour(fn, args, kwargs)` — side effects a single comparison cannot see:
  the caller's `x` was changed in place or left with `requires_grad`, a
  gradient was accumulated into `x.grad` (so a second call returns twice the
  first), the result is a numpy array or still attached to the autograd
  graph; `model_states`/`model_changes`: the model was switched to train
  mode, or its weights, buffers, flags or hooks changed.
* `grad_cam_shape(reference, actual, expected, args)` — a Grad-CAM answer
  (ps6) of the wrong shape: the input's shape (the input gradient), one map
  per channel, upsampled, or at another layer's resolution. Its wrong choices
  of the same shape are `alternatives.grad_cam`'s.

`checks.check` calls them in the visible tests (plain mode). They never change
a verdict that the comparison made; `behaviour` adds failures of its own,
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
# Outputs of at most this many values are shown as values, not as a correlation.
SMALL_OUTPUT = 4


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


def _scaled(a: np.ndarray, alt: np.ndarray) -> tuple[float, float] | None:
    """(s, residual) with a ≈ s·alt on alt's finite entries, or None: no fit."""
    if np.shape(alt) != a.shape:
        return None
    alt = np.asarray(alt, dtype=np.float64)
    mask = np.isfinite(alt)
    if mask.mean() < 0.5 or not alt[mask].any() or not a[mask].any():
        return None
    if _close(a[mask], alt[mask]):
        return 1.0, 0.0
    s, res = scale_factor(a[mask], alt[mask])
    ok = math.isfinite(s) and res < _fit_tolerance(a) and abs(s) > 1e-6
    return (s, res) if ok else None


def _fit_tolerance(a: np.ndarray) -> float:
    """A few values fit almost any factor: then only a near-exact fit counts."""
    return FIT_TOLERANCE if a.size > SMALL_OUTPUT else 1e-4


def _factor_note(s: float, n: int) -> str:
    """How a match up to the factor s is off, for a batch of n rows."""
    if abs(s - 1) <= 0.01:
        return ""
    sign = "negated and " if s < 0 else ""
    if n > 1 and abs(abs(s) * n - 1) <= 0.02:
        return (
            f". Also {sign}divided by {n}, the batch size: a mean over the batch (such "
            "as F.cross_entropy's default reduction='mean') shrinks every row's map "
            "by 1/N; a map must not depend on how many images share the batch"
        )
    return ". Also negated" if abs(s + 1) <= 0.02 else f". Also scaled by {s:.3g}"


def _named(
    a: np.ndarray, e: np.ndarray, alternatives: Mapping
) -> tuple[list[str], list[str]]:
    """The wrong choices whose output a matches: (exactly, the best up to a factor)."""
    exact, scaled = [], []
    for what, alt in alternatives.items():
        alt = np.asarray(alt, dtype=np.float64)
        fit = _scaled(a, alt)
        if fit is None or _scaled(e, alt) == (1.0, 0.0):
            continue  # no match, or the wrong choice changes nothing here
        (exact if abs(fit[0] - 1) <= 0.01 else scaled).append((what, *fit))
    best = sorted(scaled, key=lambda m: m[2])[:1]  # the closest fit
    n = len(a) if a.ndim else 1
    return [m[0] for m in exact], [what + _factor_note(s, n) for what, s, _ in best]


def _shape_hint(a: np.ndarray, e: np.ndarray) -> list[str]:
    if a.size == 1 and e.size > 1:
        return [
            (f"a single number for the whole batch: return one value per image, "
            f"shape {e.shape}")
        ]
    if a.size == e.size:
        return [f"right number of values but shape {a.shape}: reshape to {e.shape}"]
    if a.ndim == e.ndim + 1 and a.shape[1:] == e.shape:
        return [f"one extra leading axis of {a.shape[0]}: average (or sum) over it"]
    if a.ndim >= 1 and e.ndim >= 1 and a.shape[0] != e.shape[0]:
        return [
            f"shape {a.shape}: the first axis should be the batch's {e.shape[0]} rows; "
            "did you reduce (mean, max, sum…) over the wrong axis?"
        ]
    return []


def _left_zero(a: np.ndarray, e: np.ndarray) -> str | None:
    """a is e with some entries left at 0 (a window not visited, a patch not filled)."""
    missing = (a == 0) & (np.abs(e) > 1e-9 * max(float(np.abs(e).max()), 1e-300))
    if not missing.any() or not _close(np.where(missing, 0.0, e), a):
        return None
    return (
        f"your output equals the reference except at {int(missing.sum())} of {a.size} "
        "entries, which you leave at 0: is every window visited and every patch "
        "filled? (check the loop bounds and the slices)"
    )


def _values(a: np.ndarray, e: np.ndarray) -> str:
    def fmt(v):
        return "[" + ", ".join(f"{float(x):.4g}" for x in v.ravel()) + "]"

    return f"your values {fmt(a)}, the reference's {fmt(e)}"


def diagnose(
    actual,
    expected,
    alternatives: Mapping[str, np.ndarray] | None = None,
) -> list[str]:
    """Likely causes of a mismatch between an answer and the reference.

    Args:
        actual: the student's output (array-like).
        expected: the reference output.
        alternatives: {description: reference output under a wrong choice}
            (`alternatives.of`); a match, exact or up to a factor, names it.
    Returns:
        Hint sentences, most specific first; empty when nothing is recognised
        (or when the two agree).
    """
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        return _shape_hint(a, e)
    if not np.isfinite(a).all() or _close(a, e):
        return []
    if not a.any():
        return ["your output is all zeros"]
    named, scaled = _named(a, e, alternatives or {})
    if named:
        return named
    s, res = scale_factor(a, e)
    if math.isfinite(s) and res < _fit_tolerance(a) and abs(s - 1) > 0.01:
        return [_ratio_hint(s)]
    if scaled:
        return scaled
    if (e < 0).any() and _close(a, np.abs(e)):
        return ["your output is the absolute value of the reference: the question "
                "asks for the signed one (no abs)"]
    if a.ndim >= 2 and len(a) > 1:
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
            return ["rows swapped: " + "; ".join(swapped) + ": check target[row]"]
    zero = _left_zero(a, e)
    if zero:
        return [zero]
    if a.size <= SMALL_OUTPUT:
        return [_values(a, e)]
    r = correlation(a, e)
    if not math.isfinite(r):
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


def _tensors(args: tuple, kwargs: dict) -> list[tuple[str, torch.Tensor]]:
    names = [f"argument {i + 1}" for i in range(len(args))]
    x_at = 1 if args and isinstance(args[0], torch.nn.Module) else 0
    if len(args) > x_at:
        names[x_at] = "x"
    out = [(n, a) for n, a in zip(names, args) if isinstance(a, torch.Tensor)]
    out += [(k, v) for k, v in kwargs.items() if isinstance(v, torch.Tensor)]
    return out


def model_states(args: tuple) -> list[tuple]:
    """The state of every model among `args`, for `model_changes` after a call."""
    return [(m, _model_state(m)) for m in args if isinstance(m, torch.nn.Module)]


def model_changes(states: list[tuple]) -> list[str]:
    """What a call did to the models `model_states` saw: mode, tensors, flags, hooks."""
    return [p for model, before in states for p in _model_changes(model, before)]


def _model_state(model: torch.nn.Module) -> tuple:
    """What a function must leave as it was: modes, tensors, flags, hooks."""
    modes = [m.training for m in model.modules()]
    tensors = {k: v.detach().clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    hooks = sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )
    return modes, tensors, flags, hooks


def _model_changes(model: torch.nn.Module, before: tuple) -> list[str]:
    modes, tensors, flags, hooks = before
    now = _model_state(model)
    out = []
    if any(now_train and not was for now_train, was in zip(now[0], modes)):
        out.append(
            "your function left the model in train mode (model.train()): a saliency "
            "map needs no train mode, and there dropout and batch-norm change the "
            "output (batch-norm even updates its statistics); leave the model in the "
            "eval mode you got it in"
        )
    if now[1].keys() != tensors.keys() or any(
        not torch.equal(now[1][k], v) for k, v in tensors.items()
    ):
        out.append(
            "your function changed the model's weights or buffers (an optimizer "
            "step, a forward pass in train mode, an in-place edit): explaining a "
            "model must not change it"
        )
    if now[2] != flags:
        out.append(
            "your function changed requires_grad of the model's parameters: the "
            "gradient with respect to x needs no change there; leave them as they were"
        )
    if now[3] != hooks:
        out.append("your function left hooks registered on the model: remove them")
    return out


def behaviour(fn: Callable, args: tuple, kwargs: dict) -> list[str]:
    """Side effects of `fn(*args, **kwargs)` that one comparison cannot see.

    Calls `fn` twice on the *same* argument objects (the caller's tensors) and
    reports: an input changed in place; `requires_grad` switched on, or a
    gradient left in `.grad`, on an input; a second call that returns
    something else than the first (e.g. 2× because `.backward()` accumulated
    into `x.grad`); a result still attached to the autograd graph, or a numpy
    array where the question asks for a tensor. What a call does to the model
    is `model_changes`'s (the caller snapshots it before the first call).

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
    if isinstance(first, np.ndarray):
        problems.append(
            "your function returns a numpy array: return a torch.Tensor, as the "
            "question asks (stay in torch, or torch.from_numpy)"
        )
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


def grad_cam_shape(reference: Callable, actual, expected, args: tuple) -> list[str]:
    """What a Grad-CAM answer of the wrong shape did (empty if the shape is right).

    The reference's map is (N, 1, h, w) at the layer's resolution (or at x's,
    when it upsamples); the answer may be x-shaped (the input gradient), one
    map per channel, upsampled, or at another layer's resolution. Silent for
    any other reference (`diagnose`'s shape hints speak there).
    """
    if getattr(reference, "method", None) != "grad_cam" or len(args) < 2:
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
