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

`checks.check` calls all three in the visible tests (plain mode). They never
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
