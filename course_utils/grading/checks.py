"""Checks that exercise notebooks run: visible tests with hints, hidden tests for grading.

A test cell of an exercise notebook calls these helpers on the student's function::

    checks.check("my_method_visible", my_method, VISIBLE_CASES,
                 reference=checks.saliency("my_method"),
                 hint="Differentiate the target logit with respect to x.")
    ### BEGIN HIDDEN TESTS
    checks.check("my_method_hidden", my_method, HIDDEN_CASES,
                 reference=checks.saliency("my_method"))
    ### END HIDDEN TESTS

and for a short answer, a visible format check plus a hidden record::

    checks.validate(my_answer, "bool")
    ### BEGIN HIDDEN TESTS
    checks.check_value("my_answer", my_answer, "bool")
    ### END HIDDEN TESTS

The first two arguments of every `check`/`check_value` call must be a literal
name and the expression naming the student's function or answer: the grader
reads them from the test cell's source (`notebooks.planned_checks`).

What a call does depends on the environment variable ``COURSE_GRADING_MODE``:

* unset — a student in JupyterLab, ``course check``, nbval over ``solutions/``:
  runs the function and the reference on every case and raises `CheckFailed`
  (an AssertionError shown without a traceback, with the hint) when they
  disagree;
* ``"reference"`` — the grader running the instructor's solution (in a
  sandbox with the whole course package): checks that the solution agrees
  with the reference and writes the reference outputs, and the cases' inputs
  (``NAME.cases.pt``), under ``COURSE_GRADING_RECORD_DIR``;
* ``"record"`` — ``course grade`` running a submission in its sandbox: the
  test cells are not run at all; should a student's own cell call a check,
  it only prints that the grader checks after the last cell. The grader's
  harness (`harness`) then feeds the recorded inputs to the student's
  functions, and `verify` compares in the grader's own process.

In plain mode (the student's own machine) a profiler hook still tells a
student whose function calls a reference implementation, and `tampering`
lists replaced comparison helpers — feedback only: no grade depends on
anything a kernel reports about itself.
"""

from __future__ import annotations

import builtins
import json
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import hints
from .atomic import atomic_write
from .withheld import REFERENCE_MODULES, matching

MODE_ENV = "COURSE_GRADING_MODE"
RECORD_DIR_ENV = "COURSE_GRADING_RECORD_DIR"
MODES = ("", "record", "reference")

# Modules whose code a student's answer must not run: the reference
# implementations the answers are graded against (one list: withheld.py).
DEFAULT_FORBID = REFERENCE_MODULES
VALUE_KINDS = ("number", "bool", "choice")
COMPARE_MODES = ("allclose", "exact", "nonzero_pattern")
NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
MAX_CASES = 64
RECORD_VERSION = 1


class CheckFailed(AssertionError):
    """A visible test failed: IPython shows only the message (the ✗ lines and
    the hint), not a traceback through this module."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


class ReferenceWithheld(CheckFailed):
    """A visible test could not compare: the course module holding its reference
    is not installed here (a hand-out before the set's deadline). Not a ✓, not a
    wrong answer: `course check` shows it as "graded after submission"."""


def mode() -> str:
    """The grading mode from COURSE_GRADING_MODE: "", "record" or "reference"."""
    value = os.environ.get(MODE_ENV, "")
    if value not in MODES:
        raise RuntimeError(f"{MODE_ENV} must be one of {MODES}, got {value!r}")
    return value


# ------------------------------------------------------------------ test cases


@dataclass(frozen=True)
class Noise:
    """A noise tensor (n_samples, *x.shape) ~ N(0, scale²), drawn from `seed`."""

    n_samples: int
    scale: float
    seed: int = 0

    def make(self, x: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed)
        return torch.randn((self.n_samples, *x.shape), generator=gen) * self.scale


@dataclass(frozen=True)
class Built:
    """A case made concrete: call `fn(*args, **kwargs)`; `model` if there is one."""

    args: tuple
    kwargs: dict
    model: nn.Module | None
    label: str
    case: object = None


def _linear_model(seed: int) -> nn.Module:
    """f(x) = W·flatten(x) + b on 28×28 digits, 10 classes, weights from `seed`."""
    gen = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(10, 28 * 28, generator=gen) * 0.05)
        model[1].bias.copy_(torch.randn(10, generator=gen) * 0.1)
    return model.eval()


def build_model(name: str, seed: int = 0) -> nn.Module:
    """A fresh eval-mode model for a case.

    Args:
        name: "small_cnn" or "resnet_small" (the shipped, trained checkpoints),
            "small_cnn:random" / "resnet_small:random" (untrained, initialised
            from `seed`), or "linear" (a linear model f(x) = W·x + b from `seed`).
        seed: initialisation seed for the random and linear models.
    """
    from course_utils import models

    if name == "linear":
        return _linear_model(seed)
    arch, _, variant = name.partition(":")
    if variant == "":
        return models.load_pretrained(arch)
    if variant != "random":
        raise ValueError(
            f"model must be 'linear', an architecture name or 'NAME:random', got {name!r}"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = models.build(arch)
    return model.eval()


@dataclass(frozen=True)
class Case:
    """Inputs for a saliency function `fn(model, x, target, **kwargs)`.

    Args:
        model: see `build_model`.
        digits: indices into the data split; they form the batch x (N, 1, 28, 28).
        target: "label" (the digits' labels), "pred" (the model's prediction),
            one int for every row, or one int per row.
        seed: seed of random and linear models.
        split: "train" or "test".
        kwargs: extra keyword arguments for fn and the reference; a `Noise`
            value is turned into a tensor shaped (n_samples, *x.shape).
    """

    model: str = "small_cnn"
    digits: tuple[int, ...] = (0,)
    target: int | str | tuple[int, ...] = "label"
    seed: int = 0
    split: str = "test"
    kwargs: dict = field(default_factory=dict)

    def build(self) -> Built:
        from course_utils import data

        split = data.load_split(self.split)
        rows = list(self.digits)
        x = split.x[rows].clone()
        model = build_model(self.model, self.seed)
        if self.target == "label":
            target = split.y[rows].clone()
        elif self.target == "pred":
            with torch.no_grad():
                target = model(x).argmax(1)
        elif isinstance(self.target, int):
            target = self.target
        else:
            target = torch.tensor(list(self.target))
        kwargs = {
            k: v.make(x) if isinstance(v, Noise) else v for k, v in self.kwargs.items()
        }
        return Built((model, x, target), kwargs, model, self.describe(), self)

    def describe(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.kwargs.items())
        return (
            f"{self.model}, digits {list(self.digits)}, target {self.target!r}{extra}"
        )


@dataclass(frozen=True)
class Inputs:
    """Inputs built by a function: `fn(*args, **kwargs)` with (args, kwargs) = make(gen).

    Args:
        make: builds the arguments from a seeded `torch.Generator`; returns a
            tuple of positional arguments, or (args, kwargs).
        seed: the generator's seed.
        label: a short description shown in messages.

    The first `nn.Module` among the arguments, if any, is the case's model
    (see `parameter_changes`).
    """

    make: Callable[[torch.Generator], tuple]
    seed: int = 0
    label: str = "inputs"

    def build(self) -> Built:
        made = self.make(torch.Generator().manual_seed(self.seed))
        if len(made) == 2 and isinstance(made[0], tuple) and isinstance(made[1], dict):
            args, kwargs = made
        else:
            args, kwargs = tuple(made), {}
        model = next((a for a in args if isinstance(a, nn.Module)), None)
        return Built(tuple(args), dict(kwargs), model, self.describe(), self)

    def describe(self) -> str:
        return f"{self.label} (seed {self.seed})"


def _fresh(built: Built) -> tuple[tuple, dict]:
    """Copies of the tensors in a built case, so fn and reference see the same data."""

    def copy(v):
        return v.clone() if isinstance(v, torch.Tensor) else v

    return tuple(copy(a) for a in built.args), {
        k: copy(v) for k, v in built.kwargs.items()
    }


# ------------------------------------------------ comparisons (pure functions)


def to_array(out) -> np.ndarray:
    """A function's output as a numpy array; TypeError naming what was returned."""
    if isinstance(out, torch.Tensor):
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
    if isinstance(value, torch.Tensor) and value.numel() == 1:
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


def validate(value, kind: str, choices: Sequence[str] | None = None) -> None:
    """Visible format check of a short answer; AssertionError says what is accepted.

    Args:
        value: the student's answer.
        kind: "number", "bool" ("TRUE"/"FALSE") or "choice" (a letter).
        choices: for "choice", the accepted letters, e.g. "abcd".
    """
    try:
        norm = normalize_value(value, kind)
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"answer has the wrong form: {exc}") from None
    if (
        kind == "choice"
        and choices is not None
        and norm not in [c.lower() for c in choices]
    ):
        raise AssertionError(f"answer must be one of {list(choices)}, got {value!r}")
    print(f"✓ answer has the right form ({kind}); it is graded after submission")


# ------------------------------------------------------- tamper evidence


def _resolve(path: str):
    root, *rest = path.split(".")
    obj = {"torch": torch, "numpy": np, "builtins": builtins}[root]
    for part in rest:
        obj = getattr(obj, part)
    return obj


WATCHED = (
    "torch.allclose",
    "torch.isclose",
    "torch.equal",
    "torch.testing.assert_close",
    "torch.Tensor.allclose",
    "torch.Tensor.equal",
    "torch.Tensor.__eq__",
    "torch.Tensor.detach",
    "torch.Tensor.numpy",
    "torch.Tensor.clone",
    "torch.Tensor.backward",
    "torch.autograd.grad",
    "torch.nn.Module.__call__",
    "torch.randn",
    "torch.Generator",
    "torch.manual_seed",
    "numpy.allclose",
    "numpy.isclose",
    "numpy.array_equal",
    "numpy.asarray",
    "numpy.linalg.norm",
    "numpy.testing.assert_allclose",
    "numpy.testing.assert_array_equal",
    "numpy.testing.assert_array_almost_equal",
    "numpy.testing.assert_equal",
    "numpy.savez",
    "builtins.isinstance",
    "builtins.len",
    "builtins.abs",
    "builtins.float",
    "builtins.int",
    "builtins.print",
    "builtins.open",
    "builtins.__import__",
    "builtins.getattr",
    "builtins.sum",
    "builtins.max",
    "builtins.min",
    "builtins.AssertionError",
    "builtins.Exception",
    "builtins.KeyboardInterrupt",
)


def _snapshot() -> dict[str, object]:
    snap = {}
    for path in WATCHED:
        try:
            snap[path] = _resolve(path)
        except AttributeError:
            continue
    return snap


def _dynamo_wrapper_of(current: object, original: object) -> bool:
    """True when `current` is torch._dynamo's own wrapper around `original`.

    Importing torch._dynamo (torch.compile, some libraries) replaces e.g.
    `torch.manual_seed` with a `functools.wraps` wrapper defined in torch's
    own files; that is not tampering. A student's replacement fails the
    file check even if it sets `__wrapped__`.
    """
    code = getattr(current, "__code__", None)
    return (
        getattr(current, "__wrapped__", None) is original
        and code is not None
        and "torch" in Path(code.co_filename).parts
        and Path(code.co_filename).is_relative_to(Path(torch.__file__).parent)
    )


def tampering() -> list[str]:
    """Names among WATCHED and this module's functions replaced since import."""
    changed = []
    for path, original in _PRISTINE.items():
        try:
            current = _resolve(path)
        except AttributeError:
            changed.append(path)
            continue
        if current is not original and not _dynamo_wrapper_of(current, original):
            changed.append(path)
    module = sys.modules.get(__name__)
    for attr, original in _OWN.items():
        if module is None or getattr(module, attr, None) is not original:
            changed.append(f"{__name__}.{attr}")
    return changed


class _Tripwire:
    """Notes calls into forbidden modules while the student's function runs.

    A profile hook (sys.setprofile) sees every Python-level call; a call whose
    code lives in a forbidden module is recorded by module and function name.
    """

    def __init__(self, forbid: Sequence[str]):
        self.forbid = tuple(forbid)
        self.hits: list[str] = []
        self.disabled = False
        self._previous = None
        self._hook = self._profile  # one bound method, so `is` can recognise it

    def _forbidden(self, module: str) -> bool:
        return any(module == p or module.startswith(p + ".") for p in self.forbid)

    def _profile(self, frame, event, arg):
        if event == "call":
            module = frame.f_globals.get("__name__", "")
            if isinstance(module, str) and self._forbidden(module):
                caller = frame.f_back
                outer = caller.f_globals.get("__name__", "") if caller else ""
                if isinstance(outer, str) and self._forbidden(outer):
                    return  # a call inside the reference; the entry is recorded
                hit = f"{module}.{frame.f_code.co_name}"
                if hit not in self.hits and len(self.hits) < 20:
                    self.hits.append(hit)

    def __enter__(self):
        self._previous = sys.getprofile()
        if self.forbid:
            sys.setprofile(self._hook)
        return self

    def __exit__(self, *exc):
        if self.forbid and sys.getprofile() is not self._hook:
            self.disabled = True
        sys.setprofile(self._previous)
        return False


def _banned_modules_loaded() -> list[str]:
    return sorted(
        m
        for m in sys.modules
        if (m == "captum" or m.startswith("captum.")) and m not in _MODULES_AT_IMPORT
    )[:5]


# -------------------------------------------------------------- recording


def _record_dir() -> Path:
    path = os.environ.get(RECORD_DIR_ENV)
    if not path:
        raise RuntimeError(f"{MODE_ENV} is set but {RECORD_DIR_ENV} is not")
    return Path(path)


def _write_record(
    name: str, meta: dict, arrays: dict[int, np.ndarray], out: Path | None = None
) -> None:
    """Write NAME.npz (arrays case_i plus JSON meta) atomically into `out`
    (default: the record dir of COURSE_GRADING_RECORD_DIR)."""
    out = _record_dir() if out is None else Path(out)
    payload = {f"case_{i}": np.ascontiguousarray(a) for i, a in arrays.items()}
    payload["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with atomic_write(out / f"{name}.npz", "wb", chmod=0o644) as fh:
        np.savez(fh, **payload)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ValueError(
            f"name must be a letter then up to 63 letters, digits or _, got {name!r}"
        )


def _run(fn: Callable, built: Built, forbid: Sequence[str], transform):
    """Run fn on a copy of a built case: (array or None, error or None, tripwire)."""
    args, kwargs = _fresh(built)
    with _Tripwire(forbid) as wire:
        try:
            out = fn(*args, **kwargs)
            error = None
        except Exception as exc:  # noqa: BLE001 — the student's error is a result
            out, error = None, f"{type(exc).__name__}: {exc}"
    array = None
    if error is None:
        try:
            array = to_array(transform(out, built) if transform else out)
        except Exception as exc:  # noqa: BLE001 — a bad return value is a result too
            error = f"{type(exc).__name__}: {exc}"
    return array, error, wire


def check(
    name: str,
    fn: Callable,
    cases: Sequence[Case | Inputs],
    reference: Callable | None,
    *,
    hint: str = "",
    rtol: float = 1e-3,
    atol: float = 1e-5,
    compare: str = "allclose",
    transform: Callable | None = None,
    forbid: Sequence[str] = DEFAULT_FORBID,
) -> None:
    """Test `fn` against `reference` on `cases` (see the module docstring for modes).

    Args:
        name: this check's key in the grading records, unique in the notebook.
        fn: the student's function.
        cases: `Case` (fn(model, x, target, **kwargs)) or `Inputs` objects.
        reference: the function fn must agree with, same signature; None makes
            the instructor's solution the reference (plain mode then only
            checks that fn runs).
        hint: shown to the student when a visible check fails.
        rtol, atol: tolerances of `compare_arrays`.
        compare: "allclose", "exact" or "nonzero_pattern".
        transform: turns fn's output into an array, `transform(output, built)`
            (e.g. a model into the per-parameter change it underwent).
        forbid: module prefixes fn must not call into (reference code).
    """
    _check_name(name)
    if not callable(fn):
        raise AssertionError(  # noqa: TRY004 — a failed test, shown to the student
            f"{name}: expected a function, got {type(fn).__name__}"
        )
    if compare not in COMPARE_MODES:
        raise ValueError(f"compare must be one of {COMPARE_MODES}, got {compare!r}")
    cases = list(cases)
    if not 1 <= len(cases) <= MAX_CASES:
        raise ValueError(f"cases must hold 1 … {MAX_CASES} cases, got {len(cases)}")
    current = mode()
    if current == "record":
        # Grading: the grader's harness feeds the cases after every student
        # cell and compares outside the kernel; nothing is judged here.
        print(f"{name}: checked by the grader after your last cell")
    elif current == "reference":
        _check_reference(
            name, fn, cases, reference, hint, rtol, atol, compare, transform, forbid
        )
    else:
        _check_plain(
            name, fn, cases, reference, hint, rtol, atol, compare, transform, forbid
        )


def _transform_name(transform) -> str | None:
    """A transform by name (the harness finds it in this module again)."""
    if transform is None:
        return None
    name = getattr(transform, "__name__", "")
    if globals().get(name) is not transform:
        raise ValueError(
            "transform must be a function of course_utils.grading.checks "
            f"(e.g. checks.parameter_changes), got {transform!r}"
        )
    return name


def _check_reference(
    name, fn, cases, reference, hint, rtol, atol, compare, transform, forbid
) -> None:
    arrays, metas, inputs = {}, [], []
    for i, case in enumerate(cases):
        built = case.build()
        mine, error, wire = _run(fn, built, forbid, transform)
        if error is not None:
            raise AssertionError(
                f"{name}: the solution raised on {built.label}: {error}"
            )
        if wire.hits:
            raise AssertionError(f"{name}: the solution calls {wire.hits}")
        if reference is None:
            expected = mine
        else:
            args, kwargs = _fresh(built)
            out = reference(*args, **kwargs)
            expected = to_array(transform(out, built) if transform else out)
            ok, why = compare_arrays(mine, expected, compare, rtol, atol)
            if not ok:
                raise AssertionError(
                    f"{name}: the solution disagrees with the reference on "
                    f"{built.label}: {why}"
                )
        arrays[i] = expected
        metas.append({"label": built.label, "error": None})
        inputs.append(_fresh(built))
    meta = {
        "version": RECORD_VERSION,
        "name": name,
        "kind": "arrays",
        "cases": metas,
        "compare": {"mode": compare, "rtol": rtol, "atol": atol},
        "hint": hint,
        "transform": _transform_name(transform),
    }
    _write_record(name, meta, arrays)
    # The inputs themselves, for the grader's harness (it feeds them to the
    # student's function after every student cell, in the sandbox).
    torch.save(inputs, _record_dir() / f"{name}.cases.pt")
    print(f"{name}: reference recorded for {len(cases)} case(s)")


def _check_plain(
    name, fn, cases, reference, hint, rtol, atol, compare, transform, forbid
) -> None:
    failures = []
    withheld = None  # the reference's module, when it is not installed here
    for case in cases:
        built = case.build()
        mine, error, wire = _run(fn, built, forbid, transform)
        if wire.hits:
            failures.append(
                f"on {built.label}: your function calls {', '.join(wire.hits)} — a "
                "reference implementation; write the method yourself with torch"
            )
            continue
        if error is not None:
            failures.append(f"on {built.label}: raised {error}")
            continue
        if reference is None:
            continue
        if withheld is not None:
            continue
        args, kwargs = _fresh(built)
        try:
            out = reference(*args, **kwargs)
        except ModuleNotFoundError as exc:
            if not _withheld(exc):
                raise
            withheld = exc.name  # a hand-out before the deadline
            continue
        expected = to_array(transform(out, built) if transform else out)
        ok, why = compare_arrays(mine, expected, compare, rtol, atol)
        found = [] if ok else [why]
        if not ok and compare == "allclose" and transform is None:
            found += hints.diagnose(
                mine, expected, hints.target_alternatives(reference, *_fresh(built))
            )
        if transform is None:  # side effects a single comparison cannot see
            found += hints.behaviour(fn, *_fresh(built))
        if found:
            failures.append(f"on {built.label}: " + "; ".join(found))
    if failures:
        lines = [f"✗ {name}: {len(failures)} of {len(cases)} case(s) failed"]
        lines += [f"  - {f}" for f in failures]
        if hint:
            lines.append(f"Hint: {hint}")
        raise CheckFailed("\n".join(lines))
    if withheld is not None:
        # The course's reference ships after the deadline: say so; never a ✓
        # for what was not compared.
        raise ReferenceWithheld(
            f"○ {name}: your function ran on {len(cases)} case(s) without error; "
            f"the reference it is compared with ({withheld}) ships after the "
            "deadline, so this is graded after submission"
        )
    print(f"✓ {name}: {len(cases)} case(s) passed")


def check_value(
    name: str,
    value,
    kind: str,
    *,
    reference=None,
    tol: float = 0.0,
) -> None:
    """Record a short answer for grading (hidden tests).

    Args:
        name: this answer's key in the grading records.
        value: the student's answer.
        kind: "number", "bool" or "choice" (see `normalize_value`).
        reference: the expected answer, or a function computing it; None makes
            the solution's own value the expected answer.
        tol: accepted absolute difference for numbers.
    """
    _check_name(name)
    if kind not in VALUE_KINDS:
        raise ValueError(f"kind must be one of {VALUE_KINDS}, got {kind!r}")
    current = mode()
    try:
        norm, error = normalize_value(value, kind), None
    except (TypeError, ValueError) as exc:
        norm, error = None, f"{type(exc).__name__}: {exc}"
    if current == "record":
        print(f"{name}: checked by the grader after your last cell")
        return
    expected = norm
    if reference is not None:
        expected = normalize_value(
            reference() if callable(reference) else reference, kind
        )
    if error is not None:
        raise AssertionError(f"{name}: {error}")
    ok, _ = compare_values(norm, expected, kind, tol)
    if not ok:
        raise AssertionError(f"{name}: the answer {value!r} is not the expected one")
    if current == "reference":
        meta = {
            "version": RECORD_VERSION,
            "name": name,
            "kind": "value",
            "value": expected,
            "error": None,
            "value_kind": kind,
            "tol": tol,
        }
        _write_record(name, meta, {})
        print(f"{name}: reference answer recorded")
    else:
        print(f"✓ {name}")


# ------------------------------------------------------- helpers for cases


def saliency(method: str, /, **fixed) -> Callable:
    """The course's implementation of a method, as a reference for `check`.

    ``checks.saliency("integrated_gradients", method="riemann_right")`` calls
    `course_utils.saliency.integrated_gradients` with those arguments fixed.
    Test cells use this rather than importing the package, so that no name
    bound to the reference implementation lands in the student's namespace.
    """

    def reference(*args, **kwargs):
        # Imported on the first call only: in the grading sandbox the module is
        # absent, and a test cell naming it must still be harmless there.
        from course_utils import saliency as sal

        if method not in sal.METHODS and not hasattr(sal, method):
            raise ValueError(
                f"method must be one of {sorted(sal.METHODS)}, got {method!r}"
            )
        return getattr(sal, method)(*args, **{**kwargs, **fixed})

    reference.__name__ = f"saliency.{method}"
    return reference


def reference_answer(name: str, /) -> Callable:
    """A reference answer from `course_utils.grading.closed_form`, for `check`.

    Like `saliency`, so that a test cell computes its expected values without
    binding a reference implementation to a name in the student's namespace.
    Imported on the first call only (the module is absent from the grading
    sandbox and from a hand-out before the set's deadline).
    """

    def reference(*args, **kwargs):
        from . import closed_form

        if name not in closed_form.REFERENCES:
            raise ValueError(
                f"name must be one of {sorted(closed_form.REFERENCES)}, got {name!r}"
            )
        return closed_form.REFERENCES[name](*args, **kwargs)

    reference.__name__ = f"closed_form.{name}"
    return reference


def _withheld(exc: ModuleNotFoundError) -> bool:
    """Whether a failed import is of a module a set withholds (course or Captum)."""
    return matching(exc.name or "") is not None


def parameter_changes(model: nn.Module, built: Built) -> np.ndarray:
    """Per-parameter change of a returned model, then of the model passed in.

    For a function that returns a modified copy of `built.model`: entry i is
    ‖pᵢ(returned) − pᵢ(original)‖ over the parameters in `named_parameters`
    order, followed by the same for the model that was passed in (which must
    not change). Compared with compare="nonzero_pattern".
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"returned {type(model).__name__}, expected an nn.Module")
    if built.model is None:
        raise TypeError("parameter_changes needs a case that passes a model")
    pristine = dict(built.case.build().model.named_parameters())
    returned = dict(model.named_parameters())
    passed = dict(built.model.named_parameters())
    if returned.keys() != pristine.keys():
        raise ValueError(
            "the returned model has different parameters than the original"
        )
    with torch.no_grad():
        out = [float((returned[k] - pristine[k]).norm()) for k in pristine]
        out += [float((passed[k] - pristine[k]).norm()) for k in pristine]
    return np.asarray(out)


_PRISTINE = _snapshot()
_MODULES_AT_IMPORT = frozenset(sys.modules)
_OWN = {
    k: v
    for k, v in dict(globals()).items()
    if callable(v)
    and not k.startswith("__")
    and getattr(v, "__module__", None) == __name__
}
