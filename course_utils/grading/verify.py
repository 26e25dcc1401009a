"""The verdict, computed where the student's code never ran.

The grader runs each submission in a sandboxed kernel that only *records* what
the student's functions returned on the visible and hidden cases (see
`harness`). This module reads those records (`records.load_record`: numpy
archives loaded with ``allow_pickle=False``, so reading them executes
nothing) and compares them (`compare`),
in the grader's own process, with the reference records written by the
instructor's solution. Whatever the student's code did to torch, numpy or the
test helpers inside its kernel cannot change this comparison; at most it
changes the recorded outputs, which then fail to match, or leaves evidence
(replaced helpers, calls into reference implementations) that flags the
submission for review.

Scoring: a test cell's points are shared equally among the cases of its
*hidden* checks (a short answer is one case); a case scores when the
student's output matches the reference within the check's tolerance. Visible
checks are compared too, for feedback only. Every case ends in one
`CaseStatus`; nothing here reads message text. A case that did not pass also
gets the kind of mistake it shows (`mistakes.classify`: sign flipped, summed
instead of averaged, …; "raised", "not_run", …), decided from the numbers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from . import mistakes
from .compare import compare_arrays, compare_values, normalize_value
from .records import MAX_RECORD_BYTES, Record, RecordError, load_record

__all__ = [  # the record reader lives in `records`; these names stay importable here
    "MAX_RECORD_BYTES",
    "CaseResult",
    "CaseStatus",
    "CellMarking",
    "Check",
    "Marking",
    "Record",
    "RecordError",
    "load_record",
    "reference_checks",
    "verify",
]


class CaseStatus(enum.Enum):
    """How one case of a check ended."""

    PASSED = "passed"
    FAILED = "failed"  # ran, but the output does not match
    RAISED = "raised"  # the student's code raised, or returned the wrong type
    MISSING = "missing"  # no record: the harness did not reach this check
    MALFORMED = "malformed"  # a record that is not what the harness writes


@dataclass
class Check:
    """A reference check: its test cell, whether it is hidden, what it expects."""

    name: str
    grade_id: str
    record: Record
    hidden: bool = True

    @property
    def units(self) -> int:
        """How many cases the check scores (a short answer is one)."""
        if self.record.meta["kind"] == "value":
            return 1
        return len(self.record.meta["cases"])

    def labels(self) -> list[str]:
        if self.record.meta["kind"] == "value":
            return [self.name]
        return [
            c.get("label", f"case {i}") for i, c in enumerate(self.record.meta["cases"])
        ]


@dataclass(frozen=True)
class CaseResult:
    """One case's result; `mistake`: a `mistakes.CATEGORIES` id unless it passed."""

    check: str
    label: str
    status: CaseStatus
    why: str = ""
    hidden: bool = True
    mistake: str = ""


@dataclass
class CellMarking:
    """Score and explanation of one auto-graded test cell (hidden cases score)."""

    grade_id: str
    max_points: float
    cases: list[CaseResult] = field(default_factory=list)

    def _hidden(self) -> list[CaseResult]:
        return [c for c in self.cases if c.hidden]

    @property
    def passed(self) -> int:
        return sum(c.status is CaseStatus.PASSED for c in self._hidden())

    @property
    def total(self) -> int:
        return len(self._hidden())

    @property
    def complete(self) -> bool:
        """Every hidden case has a result (the harness reached it)."""
        return all(c.status is not CaseStatus.MISSING for c in self._hidden())

    @property
    def score(self) -> float:
        if self.total == 0:
            return 0.0
        return round(self.max_points * self.passed / self.total, 2)

    def mistakes(self) -> dict[str, int]:
        """Category → how many hidden cases that did not pass show it."""
        out: dict[str, int] = {}
        for c in self._hidden():
            if c.status is not CaseStatus.PASSED:
                key = mistakes.known(c.mistake)
                out[key] = out.get(key, 0) + 1
        return out

    @property
    def lines(self) -> list[str]:
        """Feedback: visible cases (✓/✗ with the reason), then the hidden tally."""
        out = []
        for c in self.cases:
            if not c.hidden:
                mark = "✓" if c.status is CaseStatus.PASSED else "✗"
                out.append(
                    f"{mark} visible {c.check}: {c.label}"
                    + (f" — {c.why}" if c.why else "")
                )
        hidden = self._hidden()
        if hidden:
            out.append(f"hidden tests: {self.passed}/{self.total} cases pass")
            out += [
                f"  ✗ {c.check}: {c.label} — {c.why}"
                for c in hidden
                if c.status is not CaseStatus.PASSED
            ]
        return out


@dataclass
class Marking:
    """The marking of one notebook from its records: per-cell scores and review
    notes (`sanity.verdict` is a different thing: a sanity check's pass/fail)."""

    cells: dict[str, CellMarking]
    notes: list[str] = field(default_factory=list)

    def score(self, grade_id: str) -> float:
        return self.cells[grade_id].score


def reference_checks(
    cell_records: dict[str, list[str]],
    files: dict[str, Path],
    hidden: dict[str, bool] | None = None,
) -> dict[str, Check]:
    """The checks the solution recorded, keyed by name.

    Args:
        cell_records: for each test cell's grade id, the records it wrote.
        files: record name → file, from the reference run.
        hidden: check name → whether it sits in a hidden-tests block.
    Raises:
        RecordError: a record is malformed or two cells wrote the same name.
    """
    out: dict[str, Check] = {}
    for gid, names in cell_records.items():
        for name in names:
            if name in out:
                raise RecordError(f"check {name!r} is recorded by two cells")
            out[name] = Check(
                name,
                gid,
                load_record(files[name], name),
                (hidden or {}).get(name, True),
            )
    return out


def _compare_case(check: Check, record: Record, i: int) -> tuple[CaseStatus, str, str]:
    """(status, why, mistake category) of case i of an arrays check."""
    ref = check.record
    error = record.meta["cases"][i].get("error")
    if error:
        return CaseStatus.RAISED, f"raised {str(error)[:200]}", "raised"
    if i not in record.arrays:
        return CaseStatus.RAISED, "no output", "raised"
    cmp = ref.meta.get("compare", {})
    tolerance = (float(cmp.get("rtol", 1e-3)), float(cmp.get("atol", 1e-5)))
    ok, why = compare_arrays(
        record.arrays[i], ref.arrays[i], cmp.get("mode", "allclose"), *tolerance
    )
    if ok:
        return CaseStatus.PASSED, "", ""
    mistake = mistakes.classify(record.arrays[i], ref.arrays[i], None, tolerance)
    return CaseStatus.FAILED, why, mistake


def _compare_value(check: Check, record: Record) -> tuple[CaseStatus, str, str]:
    """(status, why, mistake category) of a short answer."""
    ref = check.record.meta
    if record.meta.get("error"):
        return (
            CaseStatus.RAISED,
            f"answer has the wrong form: {str(record.meta['error'])[:200]}",
            "wrong_form",
        )
    value, expected = record.meta.get("value"), ref.get("value")
    kind = ref.get("value_kind", "choice")
    try:
        value = normalize_value(value, kind)
    except (TypeError, ValueError) as exc:
        return CaseStatus.RAISED, f"answer has the wrong form: {exc}", "wrong_form"
    ok, _ = compare_values(value, expected, kind, float(ref.get("tol", 0.0)))
    if ok:
        return CaseStatus.PASSED, "", ""
    return (
        CaseStatus.FAILED,
        f"answer {value!r} is not the expected one",
        "wrong_answer",
    )


def verify(
    reference: dict[str, Check],
    student_files: dict[str, Path],
    max_points: dict[str, float],
) -> Marking:
    """Compare a submission's records (from the harness) with the reference.

    Args:
        reference: from `reference_checks`.
        student_files: record name → file copied out of the sandbox.
        max_points: points of every auto-graded test cell, by grade id.
    """
    cells = {gid: CellMarking(gid, pts) for gid, pts in max_points.items()}
    notes: list[str] = []
    for name, check in reference.items():
        cell = cells.setdefault(check.grade_id, CellMarking(check.grade_id, 0.0))
        labels = check.labels()

        def add(status, why="", i=None, mistake="", _c=check, _cell=cell, _l=labels):
            for k, label in enumerate(_l):
                if i is None or k == i:
                    _cell.cases.append(
                        CaseResult(_c.name, label, status, why, _c.hidden, mistake)
                    )

        path = student_files.get(name)
        if path is None:
            add(
                CaseStatus.MISSING,
                "not run (an earlier cell stopped the kernel)",
                mistake="not_run",
            )
            continue
        try:
            record = load_record(path, name)
            if record.meta["kind"] != check.record.meta["kind"]:
                raise RecordError(f"record {name} is of the wrong kind")
            if (
                record.meta["kind"] == "arrays"
                and len(record.meta["cases"]) != check.units
            ):
                raise RecordError(f"record {name} lists the wrong number of cases")
        except (RecordError, RecursionError, KeyError, TypeError) as exc:
            why = f"{type(exc).__name__}: {str(exc)[:200]}"
            add(CaseStatus.MALFORMED, why, mistake="malformed")
            notes.append(f"malformed record {name}: {why}")
            continue
        if record.meta["kind"] == "value":
            status, why, mistake = _compare_value(check, record)
            add(status, why, mistake=mistake)
            continue
        for i in range(check.units):
            status, why, mistake = _compare_case(check, record, i)
            add(status, why, i, mistake)
    return Marking(cells, notes)
