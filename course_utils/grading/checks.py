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
  with the reference and writes the reference outputs (`records`), and the
  cases' inputs (``NAME.cases.pt``), under ``COURSE_GRADING_RECORD_DIR``;
* ``"record"`` — ``course grade`` running a submission in its sandbox: the
  test cells are not run at all; should a student's own cell call a check,
  it only prints that the grader checks after the last cell. The grader's
  harness (`harness`) then feeds the recorded inputs to the student's
  functions, and `verify` compares in the grader's own process.

This module runs in the student's kernel only; the grader never imports it.
What both sides share is pure and lives elsewhere: the comparisons in
`compare`, the record format in `records`.

In plain mode (the student's own machine) a profiler hook still tells a
student whose function calls a reference implementation, and `tampering`
lists replaced comparison helpers — feedback only: no grade depends on
anything a kernel reports about itself.
"""

from __future__ import annotations

import builtins
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from . import alternatives as _alternatives
from . import cases as _cases
from . import compare as _compare
from . import hints as _hints
from . import invariants as _invariants
from . import records as _records
from . import references as _references
from .cases import Built, Case, Inputs, Noise, build_model, fresh, parameter_changes
from .compare import (
    COMPARE_MODES,
    VALUE_KINDS,
    compare_arrays,
    compare_values,
    normalize_value,
    to_array,
)
from .invariants import efficiency, logit_shift
from .records import (
    MAX_CASES,
    RECORD_VERSION,
    cases_file,
    check_name,
    mode,
    record_dir,
    write_record,
)
from .references import reference_answer, saliency
from .withheld import REFERENCE_MODULES, SHORT_ANSWERS, SHORT_ANSWERS_WHY, matching

__all__ = [  # what exercise notebooks use; Case … parameter_changes live in `cases`
    "DEFAULT_FORBID",
    "Case",
    "CheckFailed",
    "Inputs",
    "Noise",
    "ReferenceWithheld",
    "build_model",
    "check",
    "check_value",
    "efficiency",
    "logit_shift",
    "parameter_changes",
    "reference_answer",
    "saliency",
    "tampering",
    "validate",
]

# Modules whose code a student's answer must not run: the reference
# implementations the answers are graded against (one list: withheld.py).
DEFAULT_FORBID = REFERENCE_MODULES


class CheckFailed(AssertionError):
    """A visible test failed: IPython shows only the message (the ✗ lines and
    the hint), not a traceback through this module."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


class ReferenceWithheld(CheckFailed):
    """A visible test could not compare: the course module holding its reference
    is not installed here (a hand-out before the set's deadline). Not a ✓, not a
    wrong answer: `course check` shows it as "graded after submission"."""


def validate(value, kind: str, choices: Sequence[str] | None = None) -> None:
    """Visible check of a short answer's form; never says whether it is right.

    Prints "○ form ok" and why right or wrong is not shown before grading
    (`withheld.SHORT_ANSWERS`): the same line for every answer of the right
    form, so it gives nothing away. AssertionError says what is accepted.

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
    form = {"number": "a number", "bool": "TRUE or FALSE"}.get(kind, "a letter")
    print(f"○ form ok ({form}); {SHORT_ANSWERS}: {SHORT_ANSWERS_WHY}")


# ------------------------------------------------------- tamper evidence


def _resolve(path: str):
    root, *rest = path.split(".")
    obj = {"torch": torch, "numpy": np, "builtins": builtins}[root]
    for part in rest:
        obj = getattr(obj, part)
    return obj


# The helper modules whose functions `tampering` watches, with this one.
_HELPERS = (_alternatives, _cases, _compare, _hints, _invariants, _records, _references)
_OWN_MODULES = tuple(m.__name__ for m in _HELPERS) + (__name__,)

# What a student could replace to fake a comparison or a reference: the
# functions `tampering` compares with their state at import.
WATCHED = (
    "torch.allclose", "torch.isclose", "torch.equal", "torch.testing.assert_close",
    "torch.Tensor.allclose", "torch.Tensor.equal", "torch.Tensor.__eq__",
    "torch.Tensor.detach", "torch.Tensor.numpy", "torch.Tensor.clone",
    "torch.Tensor.backward", "torch.autograd.grad", "torch.nn.Module.__call__",
    "torch.randn", "torch.Generator", "torch.manual_seed", "numpy.allclose",
    "numpy.isclose", "numpy.array_equal", "numpy.asarray", "numpy.linalg.norm",
    "numpy.testing.assert_allclose", "numpy.testing.assert_array_equal",
    "numpy.testing.assert_array_almost_equal", "numpy.testing.assert_equal",
    "numpy.savez", "builtins.isinstance", "builtins.len", "builtins.abs",
    "builtins.float", "builtins.int", "builtins.print", "builtins.open",
    "builtins.__import__", "builtins.getattr", "builtins.sum", "builtins.max",
    "builtins.min", "builtins.AssertionError", "builtins.Exception",
    "builtins.KeyboardInterrupt",
)  # fmt: skip


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
    """What was replaced since import: names among WATCHED, functions of this
    module or of `cases`, `compare` or `records`."""
    changed = []
    for path, original in _PRISTINE.items():
        try:
            current = _resolve(path)
        except AttributeError:
            changed.append(path)
            continue
        if current is not original and not _dynamo_wrapper_of(current, original):
            changed.append(path)
    for qualified, original in _OWN.items():
        module_name, _, attr = qualified.rpartition(".")
        module = sys.modules.get(module_name)
        if module is None or getattr(module, attr, None) is not original:
            changed.append(qualified)
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


# ------------------------------------------------------------------ the check


@dataclass(frozen=True)
class _Spec:
    """One `check` call's arguments, validated; see `check` for their meaning."""

    name: str
    fn: Callable
    cases: tuple
    reference: Callable | None
    hint: str
    rtol: float
    atol: float
    compare: str
    transform: Callable | None
    forbid: tuple[str, ...]
    invariant: Callable | None = None

    def run(self, built: Built):
        """Run fn on a copy of a built case: (array or None, error or None, tripwire)."""
        args, kwargs = fresh(built)
        with _Tripwire(self.forbid) as wire:
            try:
                out = self.fn(*args, **kwargs)
                error = None
            except Exception as exc:  # noqa: BLE001 — the student's error is a result
                out, error = None, f"{type(exc).__name__}: {exc}"
        array = None
        if error is None:
            try:
                array = self.as_array(out, built)
            except Exception as exc:  # noqa: BLE001 — a bad return value is a result
                error = f"{type(exc).__name__}: {exc}"
        return array, error, wire

    def expected(self, built: Built) -> np.ndarray:
        """The reference's output on a copy of a built case."""
        args, kwargs = fresh(built)
        return self.as_array(self.reference(*args, **kwargs), built)

    def as_array(self, out, built: Built) -> np.ndarray:
        return to_array(self.transform(out, built) if self.transform else out)

    def agrees(self, mine: np.ndarray, expected: np.ndarray) -> tuple[bool, str]:
        return compare_arrays(mine, expected, self.compare, self.rtol, self.atol)


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
    invariant: Callable | None = None,
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
        invariant: a property every right output has, checked in plain mode
            without the reference (so also in a hand-out that lacks it):
            `invariant(fn, output, built)` returns what fails, e.g.
            `efficiency` or `logit_shift("gradient")` (see `invariants`).
    """
    check_name(name)
    if not callable(fn):
        raise AssertionError(  # noqa: TRY004 — a failed test, shown to the student
            f"{name}: expected a function, got {type(fn).__name__}"
        )
    if compare not in COMPARE_MODES:
        raise ValueError(f"compare must be one of {COMPARE_MODES}, got {compare!r}")
    if invariant is not None and not callable(invariant):
        raise ValueError(f"invariant must be a function or None, got {invariant!r}")
    cases = tuple(cases)
    if not 1 <= len(cases) <= MAX_CASES:
        raise ValueError(f"cases must hold 1 … {MAX_CASES} cases, got {len(cases)}")
    spec = _Spec(
        name, fn, cases, reference, hint, rtol, atol, compare, transform,
        tuple(forbid), invariant,
    )
    current = mode()
    if current == "record":
        # Grading: the grader's harness feeds the cases after every student
        # cell and compares outside the kernel; nothing is judged here.
        print(f"{name}: checked by the grader after your last cell")
    elif current == "reference":
        _check_reference(spec)
    else:
        _check_plain(spec)


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


def _check_reference(spec: _Spec) -> None:
    """Check the solution against the reference; record the outputs and inputs."""
    name = spec.name
    arrays, metas, inputs = {}, [], []
    for i, case in enumerate(spec.cases):
        built = case.build()
        mine, error, wire = spec.run(built)
        if error is not None:
            raise AssertionError(
                f"{name}: the solution raised on {built.label}: {error}"
            )
        if wire.hits:
            raise AssertionError(f"{name}: the solution calls {wire.hits}")
        if spec.invariant and (broken := spec.invariant(spec.fn, mine, built)):
            raise AssertionError(f"{name}: the solution fails the invariant: {broken}")
        if spec.reference is None:
            expected = mine
        else:
            expected = spec.expected(built)
            ok, why = spec.agrees(mine, expected)
            if not ok:
                raise AssertionError(
                    f"{name}: the solution disagrees with the reference on "
                    f"{built.label}: {why}"
                )
        arrays[i] = expected
        metas.append({"label": built.label, "error": None})
        inputs.append(fresh(built))
    meta = {
        "version": RECORD_VERSION,
        "name": name,
        "kind": "arrays",
        "cases": metas,
        "compare": {"mode": spec.compare, "rtol": spec.rtol, "atol": spec.atol},
        "hint": spec.hint,
        "transform": _transform_name(spec.transform),
    }
    write_record(name, meta, arrays)
    # The inputs themselves, for the grader's harness (it feeds them to the
    # student's function after every student cell, in the sandbox).
    torch.save(inputs, record_dir() / cases_file(name))
    print(f"{name}: reference recorded for {len(spec.cases)} case(s)")


def _plain_case(spec: _Spec, built: Built) -> tuple[str | None, str | None]:
    """One case in plain mode: (what failed or None, withheld module or None).

    The comparison needs the reference; the invariant and the side effects
    (`hints.behaviour`) do not, so they are checked also where it is withheld."""
    models = _hints.model_states(built.args)
    mine, error, wire = spec.run(built)
    if wire.hits:
        return (
            f"on {built.label}: your function calls {', '.join(wire.hits)} — a "
            "reference implementation; write the method yourself with torch"
        ), None
    if error is not None:
        return f"on {built.label}: raised {error}", None
    found, withheld = _compared(spec, built, mine)
    if spec.invariant is not None:  # after the error size, before the guesses
        found[1:1] = spec.invariant(spec.fn, mine, built)
    if spec.transform is None:  # side effects a single comparison cannot see
        found += _hints.model_changes(models) + _hints.behaviour(spec.fn, *fresh(built))
    found = list(dict.fromkeys(found))
    return (f"on {built.label}: " + "; ".join(found) if found else None), withheld


def _compared(spec: _Spec, built: Built, mine) -> tuple[list[str], str | None]:
    """What the comparison with the reference found, and the withheld module."""
    if spec.reference is None:
        return [], None
    args, kwargs = fresh(built)
    try:
        out = spec.reference(*args, **kwargs)
    except ModuleNotFoundError as exc:
        if not _withheld(exc):
            raise
        return [], exc.name  # a hand-out before the deadline
    expected = spec.as_array(out, built)
    ok, why = spec.agrees(mine, expected)
    if ok:
        return [], None
    found = [why]
    if spec.compare == "allclose" and spec.transform is None:
        wrong = _alternatives.of(spec.reference, *fresh(built))
        found += _hints.grad_cam_shape(spec.reference, mine, expected, fresh(built)[0])
        found += _hints.diagnose(mine, expected, wrong)
    return found, None


def _check_plain(spec: _Spec) -> None:
    """Compare fn with the reference on every case; ✓, or CheckFailed with the hint."""
    failures = []
    withheld = None  # the reference's module, when it is not installed here
    for case in spec.cases:
        built = case.build()
        if withheld is not None:  # only run fn: the reference cannot be
            failure, _ = _plain_case(replace(spec, reference=None), built)
        else:
            failure, withheld = _plain_case(spec, built)
        if failure is not None:
            failures.append(failure)
    n = len(spec.cases)
    if failures:
        lines = [f"✗ {spec.name}: {len(failures)} of {n} case(s) failed"]
        lines += [f"  - {f}" for f in failures]
        if spec.hint:
            lines.append(f"Hint: {spec.hint}")
        raise CheckFailed("\n".join(lines))
    if withheld is not None:
        # The course's reference ships after the deadline: say so; never a ✓
        # for what was not compared.
        raise ReferenceWithheld(
            f"○ {spec.name}: your function ran on {n} case(s) without error or "
            "side effect; "
            f"the reference it is compared with ({withheld}) ships after the "
            "deadline, so this is graded after submission"
        )
    if spec.reference is None:  # the solution is the reference, when graded
        print(f"○ {spec.name}: your function ran on {n} case(s) without error; it "
              "is compared with the model solution when graded")
        return
    print(f"✓ {spec.name}: {n} case(s) passed")


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
    check_name(name)
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
        write_record(name, meta, {})
        print(f"{name}: reference answer recorded")
    else:
        print(f"✓ {name}")


def _withheld(exc: ModuleNotFoundError) -> bool:
    """Whether a failed import is of a module a set withholds (course or Captum)."""
    return matching(exc.name or "") is not None


# Taken when a kernel imports this module (its setup cell), before any
# student code: what `tampering` compares with. The helper modules take
# nothing at import.
_PRISTINE = _snapshot()
_OWN = {
    f"{module.__name__}.{k}": v
    for module in (sys.modules[__name__], *_HELPERS)
    for k, v in vars(module).items()
    if callable(v)
    and not k.startswith("__")
    and getattr(v, "__module__", None) in _OWN_MODULES
}
