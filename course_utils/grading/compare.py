"""Whether an answer matches its reference: pure comparisons of arrays and short answers.

Used on both sides of the trust boundary with the same results: by `checks` in
a student's kernel (a visible test's ✓ or ✗) and by `verify` in the grader's
own process (the score). Importing this module changes nothing and imports
no torch: a tensor can only reach these functions once its caller has
imported torch, so they look it up in `sys.modules`.
"""

from __future__ import annotations

import math
import sys

import numpy as np

VALUE_KINDS = ("number", "bool", "choice")
COMPARE_MODES = ("allclose", "exact", "nonzero_pattern")


def _tensor(value) -> bool:
    """Whether `value` is a torch.Tensor (without importing torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def to_array(out) -> np.ndarray:
    """A function's output as a numpy array; TypeError naming what was returned."""
    if _tensor(out):
        return out.detach().cpu().numpy().copy()
    if isinstance(out, np.ndarray):
        return out.copy()
    if isinstance(out, (int, float, np.number)) and not isinstance(out, bool):
        return np.asarray(out)
    raise TypeError(f"returned {type(out).__name__}, expected a torch.Tensor")


def compare_arrays(
    actual: np.ndarray,
    expected: np.ndarray,
    compare: str = "allclose",
    rtol: float = 1e-3,
    atol: float = 1e-5,
) -> tuple[bool, str]:
    """Whether an answer's array matches the reference, and why not.

    "allclose": same shape and ‖a − e‖₂ ≤ rtol·‖e‖₂ + atol·√n (a relative
    error on the whole map, robust to round-off near zero). "exact": equal
    arrays. "nonzero_pattern": the same entries are non-zero.
    """
    if compare not in COMPARE_MODES:
        raise ValueError(f"compare must be one of {COMPARE_MODES}, got {compare!r}")
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    if actual.shape != expected.shape:
        return False, f"shape {actual.shape}, expected {expected.shape}"
    if actual.dtype.kind not in "biuf" or expected.dtype.kind not in "biuf":
        return False, f"dtype {actual.dtype} is not numeric"
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    if not np.isfinite(a).all():
        return False, "contains NaN or Inf"
    if compare == "exact":
        ok = bool(np.array_equal(a, e))
        return ok, "" if ok else f"{int((a != e).sum())} of {a.size} entries differ"
    if compare == "nonzero_pattern":
        diff = (a != 0) != (e != 0)
        ok = not diff.any()
        return (
            ok,
            ""
            if ok
            else f"{int(diff.sum())} of {a.size} entries zero/non-zero wrongly",
        )
    err = float(np.linalg.norm(a - e))
    scale = float(np.linalg.norm(e))
    ok = err <= rtol * scale + atol * math.sqrt(max(a.size, 1))
    if ok:
        return True, ""
    rel = err / scale if scale > 0 else float("inf")
    return False, f"relative error {rel:.3g} (max |diff| {np.abs(a - e).max():.3g})"


def normalize_value(value, kind: str):
    """A short answer in canonical form: float, "TRUE"/"FALSE" or a lower-case choice.

    Raises:
        TypeError/ValueError: the value has the wrong type or form for `kind`.
    """
    if kind not in VALUE_KINDS:
        raise ValueError(f"kind must be one of {VALUE_KINDS}, got {kind!r}")
    if _tensor(value) and value.numel() == 1:
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"expected a number, got {type(value).__name__} {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"expected a finite number, got {value!r}")
        return float(value)
    if kind == "bool":
        if isinstance(value, bool):
            return "TRUE" if value else "FALSE"
        if isinstance(value, str) and value.strip().upper() in ("TRUE", "FALSE"):
            return value.strip().upper()
        raise ValueError(f'expected "TRUE" or "FALSE", got {value!r}')
    if not isinstance(value, str):
        raise TypeError(f'expected a letter such as "b", got {type(value).__name__}')
    return value.strip().strip("()").strip().lower()


def compare_values(actual, expected, kind: str, tol: float = 0.0) -> tuple[bool, str]:
    """Whether a normalised short answer equals the expected one (numbers: within tol)."""
    if kind == "number":
        ok = abs(float(actual) - float(expected)) <= tol + 1e-9 * abs(float(expected))
    else:
        ok = actual == expected
    return ok, "" if ok else "not the expected answer"
