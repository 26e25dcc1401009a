"""Properties every right answer has, checked without the reference.

A visible check compares with the reference where it is installed; where it
is not (a hand-out before the set's deadline) it could only run the
function. An invariant needs no reference, so it tells a wrong idea apart
there too, with numbers the student can check by hand. `checks.check(...,
invariant=checks.efficiency)` calls one on each case's output, in plain mode.

Each is called as ``invariant(fn, output, built)``: the student's function,
its output on the case, and the case.

* `efficiency` — Shapley values of a row add up to f(x) − f(baseline)
  (Shapley 1953; Lundberg & Lee 2017, "local accuracy"). Banzhaf values
  (every coalition weighted 1/2^(D−1)) coincide with them on a model with
  only pairwise interactions, and miss this sum as soon as three features
  interact; leave-one-out drops miss it on any interaction.
* `logit_shift(response)` — the function again, on the model with
  h(x) = Σ k ⊙ x added to *every* logit of a row. That changes no
  probability, and it changes the gradient of any logit by exactly k: a map
  of the logit f_c moves by k ("gradient", "smoothgrad"), x ⊙ k
  ("input_x_gradient") or (x − baseline) ⊙ k ("integrated_gradients"); a
  map of the probability or of the loss does not move at all, and occlusion
  on probabilities must not move ("none"). So the lecture's probability and
  training's loss are told apart from the logit without the reference.

Runs in the student's kernel; it never calls a reference implementation and
never differentiates anything itself.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from .cases import Built, fresh

# |sum − (f(x) − f(b))| allowed: relative to the sizes involved, plus round-off.
EFFICIENCY_RTOL = 1e-4
EFFICIENCY_ATOL = 1e-5


def _worths(built: Built) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """f_target(x), f_target(baseline) and f_target(0) of every row, float64."""
    args, kwargs = fresh(built)
    model, x, target = args[:3]
    baseline = args[3] if len(args) > 3 else kwargs["baseline"]
    index = torch.arange(len(x))
    t = torch.as_tensor(target).expand(len(x))
    base = torch.as_tensor(baseline).to(x.dtype).expand(x.shape)
    with torch.no_grad():
        out = [model(z)[index, t] for z in (x, base, torch.zeros_like(x))]
    return tuple(np.asarray(o.double().numpy()) for o in out)


def _near(a: np.ndarray, b: np.ndarray, scale: np.ndarray) -> bool:
    return bool((np.abs(a - b) <= EFFICIENCY_RTOL * scale + EFFICIENCY_ATOL).all())


def _cause(sums, delta, zero_delta, scale) -> str:
    """What a sum that misses f(x) − f(b) says about the bug, when it says anything."""
    if not _near(delta, zero_delta, scale) and _near(sums, zero_delta, scale):
        return (
            " They add up to f(x) − f(0) instead: the features outside S must take "
            "the baseline's values, not 0."
        )
    if _near(sums, -delta, scale):
        return (
            " They add up to −(f(x) − f(baseline)): the sign is flipped; use "
            "v(S ∪ {i}) − v(S)."
        )
    ratio = sums / np.where(delta == 0, np.nan, delta)
    if np.isfinite(ratio).all() and np.ptp(ratio) < 1e-3 * abs(ratio.mean()):
        k = float(ratio.mean())
        return f" They add up to {k:.4g}× f(x) − f(baseline): a factor missing in the weights?"
    return ""


def efficiency(fn: Callable, output: np.ndarray, built: Built) -> list[str]:
    """Whether each row of `output` adds up to f_target(x) − f_target(baseline).

    For `fn(model, x, target, baseline)` with x (N, D), target an int or one per
    row, baseline (D,): the row sums of `output` (N, D) are compared with the
    model's own worths, computed here (a forward pass, nothing else); `fn`
    is not called again.

    Returns:
        One sentence naming the gap as numbers (and its likely cause), or [].
    """
    out = np.asarray(output, dtype=np.float64)
    fx, fb, f0 = _worths(built)
    if out.ndim < 1 or len(out) != len(fx):
        return []  # a shape the comparison reports
    sums = out.reshape(len(out), -1).sum(1)
    delta = fx - fb
    scale = np.abs(delta) + np.abs(out).reshape(len(out), -1).sum(1)
    if _near(sums, delta, scale):
        return []
    bad = [
        i for i in range(len(out))
        if not _near(sums[i : i + 1], delta[i : i + 1], scale[i : i + 1])
    ]
    first, *rest = bad
    more = "".join(
        f"; row {i}: {sums[i]:.4f} against {delta[i]:.4f}" for i in rest[:2]
    )
    return [
        f"the values do not add up (efficiency): row {first} sums to {sums[first]:.4f}, "
        f"but f(x) − f(baseline) = {delta[first]:.4f} (f(x) = {fx[first]:.4f}, f(baseline) "
        f"= {fb[first]:.4f}): a gap of {sums[first] - delta[first]:+.4f}{more}. Shapley "
        "values always add up "
        "to f(x) − f(baseline): check the weights |S|!(D−|S|−1)!/D! (one weight "
        "1/2^(D−1) for every coalition gives Banzhaf values, which miss the sum once "
        "three or more features interact)." + _cause(sums, delta, fx - f0, scale)
    ]


# Seed and size of the shift's weights k (one per input value).
SHIFT_SEED = 0
SHIFT_SCALE = 0.1
RESPONSES = ("gradient", "smoothgrad", "input_x_gradient", "integrated_gradients", "none")


class _Shifted(nn.Module):
    """The model with h(x) = Σ k ⊙ x added to every logit of a row."""

    def __init__(self, model: nn.Module, k: torch.Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("k", k)
        if isinstance(getattr(model, "normalize", None), nn.Module):
            self.normalize = model.normalize  # what occlusion's grey reads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) + (x * self.k).flatten(1).sum(1, keepdim=True)


def _response(response: str, args: tuple, kwargs: dict, k: torch.Tensor) -> np.ndarray:
    """How a right answer's map moves under the shift."""
    x = args[1]
    if response in ("gradient", "smoothgrad"):
        moved = k.expand_as(x)
    elif response == "input_x_gradient":
        moved = x * k
    elif response == "integrated_gradients":
        baseline = kwargs["baseline"] if "baseline" in kwargs else args[3]
        moved = (x - torch.as_tensor(baseline).to(x.dtype)) * k
    else:
        moved = torch.zeros_like(x)
    return np.asarray(moved.detach().double().numpy())


def _moved_text(s: float) -> str:
    if abs(s) < 0.05:
        return (
            "your map did not move: it depends on the logits only through the "
            "softmax (the probability p_c, or the loss −log p_c), not on the logit "
            "f_c itself; differentiate logits[row, target[row]]"
        )
    if abs(s + 1) < 0.05:
        return "your map moved by −k: the sign is flipped"
    return f"your map moved by {s:.3g}× that: a factor too many or too few?"


def logit_shift(response: str) -> Callable:
    """The invariant: fn on the shifted model moves by the `response` (see above).

    Args:
        response: "gradient", "smoothgrad", "input_x_gradient",
            "integrated_gradients" (maps of the logit) or "none" (occlusion on
            probabilities).
    """
    if response not in RESPONSES:
        raise ValueError(f"response must be one of {RESPONSES}, got {response!r}")

    def invariant(fn: Callable, output: np.ndarray, built: Built) -> list[str]:
        args, kwargs = fresh(built)
        if len(args) < 2 or not isinstance(args[0], nn.Module):
            return []
        gen = torch.Generator().manual_seed(SHIFT_SEED)
        k = torch.randn(args[1].shape[1:], generator=gen, dtype=args[1].dtype)
        k = k * SHIFT_SCALE
        expected = _response(response, args, kwargs, k)
        try:
            shifted = fn(_Shifted(args[0], k), *args[1:], **kwargs)
            moved = np.asarray(shifted.detach().double().numpy()) - output
        except Exception:  # noqa: BLE001 — the comparison reports the errors
            return []
        if moved.shape != expected.shape:
            return []  # a shape the comparison reports
        scale = float(np.linalg.norm(expected)) + 1e-3 * float(np.linalg.norm(output))
        if float(np.linalg.norm(moved - expected)) <= 1e-3 * scale + 1e-6:
            return []
        if response == "none":
            return [
                "adding the same number to every logit of a row (no probability "
                "changes) changed your map: you use the logit f_c, not the softmax "
                "probability p_c"
            ]
        ee = float((expected * expected).sum())
        s = float((moved * expected).sum()) / ee
        return [
            "adding h(x) = Σ k ⊙ x to every logit of a row changes no probability but "
            f"adds k to the gradient of the logit f_c; {_moved_text(s)}"
        ]

    invariant.__name__ = f"logit_shift_{response}"
    return invariant
