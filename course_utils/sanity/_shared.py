"""What every sanity module shares: the saliency package's argument checks (the
only import of them, so a rename happens here) and the sanity-specific ones."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence

from .. import saliency as sal
from ..saliency.validate import (
    check_input,
    check_int,
    check_model,
    check_target,
    target_tensor,
)

__all__ = [
    "check_input",
    "check_int",
    "check_methods",
    "check_metrics",
    "check_model",
    "check_real",
    "check_seed",
    "check_target",
    "target_tensor",
]

# The six methods of the lecture's sanity-check slides, by `sal.METHODS` name.
DEFAULT_METHODS = (
    "gradient",
    "input_x_gradient",
    "integrated_gradients",
    "smoothgrad",
    "grad_cam",
    "guided_backprop",
)


def check_seed(seed) -> int:
    """An int ≥ 0 (not bool)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int ≥ 0, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be an int ≥ 0, got {seed}")
    return int(seed)


def check_real(value, name: str, low: float, high: float, low_open: bool = True):
    """A finite real number (not bool) in (low, high] (or [low, high])."""
    ok = (
        not isinstance(value, bool)
        and isinstance(value, numbers.Real)
        and math.isfinite(value)
        and (low < value if low_open else low <= value)
        and value <= high
    )
    if not ok:
        left = "(" if low_open else "["
        raise ValueError(f"{name} must be a number in {left}{low}, {high}], got {value!r}")
    return value


def check_methods(methods) -> dict[str, Callable]:
    """None | name | callable | list of names/callables | {name: fn or name}."""
    if methods is None:
        methods = DEFAULT_METHODS
    if isinstance(methods, str) or callable(methods):
        methods = [methods]
    if isinstance(methods, Mapping):
        pairs = list(methods.items())
    elif isinstance(methods, Sequence):
        pairs = [
            (m if isinstance(m, str) else getattr(m, "__name__", repr(m)), m)
            for m in methods
        ]
    else:
        raise TypeError(
            "methods must be None, a name in sal.METHODS, a function f(model, x, "
            f"target), a list of those or a dict {{name: …}}; got "
            f"{type(methods).__name__}"
        )
    out: dict[str, Callable] = {}
    for name, fn in pairs:
        if isinstance(fn, str):
            if fn not in sal.METHODS:
                raise ValueError(
                    f"methods: unknown method {fn!r}; known: {sorted(sal.METHODS)}"
                )
            fn = sal.METHODS[fn]
        if not callable(fn):
            raise TypeError(f"methods[{name!r}] must be callable f(model, x, target)")
        if name in out:
            raise ValueError(f"methods: duplicate name {name!r}")
        out[str(name)] = fn
    if not out:
        raise ValueError("methods must name at least one method")
    return out


def check_metrics(metrics, known: Sequence[str]) -> list[str]:
    """None (all of `known`) | a name | a non-empty list of names from `known`."""
    if metrics is None:
        return list(known)
    if isinstance(metrics, str):
        metrics = [metrics]
    metrics = list(metrics)
    bad = [m for m in metrics if m not in known]
    if bad or not metrics:
        raise ValueError(
            f"metrics must be a non-empty list from {list(known)}, got {metrics}"
        )
    return metrics
