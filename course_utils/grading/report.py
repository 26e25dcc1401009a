"""`course report SET`: the class at a glance, for the instructor.

The CSV has one row per student; this report is the class. From the gradebook
alone (`gradebook.read_rows` for statuses and scores, `statuses.read_facts`
for grading times and mistakes) it says:

* how many submissions were graded, timed out, crashed, were flagged, are
  missing (every status of `outcome.STATUSES`);
* each question's score distribution: full marks, partial, zero, awaiting a
  person (a free answer, a test the kernel never reached), not submitted —
  which question the class failed;
* each auto-graded question's most frequent mistakes: for every hidden case
  that did not pass, the grader classified the output against the reference
  (`mistakes`: "sign flipped", "summed instead of averaged", "rows swapped",
  …); the report counts the students who made each one, and their cases;
* the slowest submissions (seconds to grade all their notebooks);
* who needs a person: flagged notebooks, grader errors, interrupted runs,
  tests awaiting review; and how many free answers wait in formgrader.

`summarize` is the pure aggregation (tested on constructed rows) and
`load_report` reads a course's gradebook; `report_charts` draws the charts and
`report_page` writes one HTML page with them inlined, plus each as a PNG.
Every student-controlled string was sanitised on its way into the gradebook
and is again on its way out (`sanitize`); the page escapes every text and
loads nothing (no script, no external resource).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import gradebook as gbook
from . import mistakes as kinds
from . import notebooks as nbs
from .course import Course
from .outcome import STATUSES, Status
from .statuses import Facts

BANDS = ("full marks", "partial", "zero", "awaiting a person", "not submitted")
NEEDS_A_PERSON = (
    Status.FLAGGED.value,
    Status.GRADER_ERROR.value,
    Status.INTERRUPTED.value,
)
TOP_MISTAKES = 5
SLOWEST = 10


@dataclass(frozen=True)
class Question:
    """A graded cell of the set: a test cell (auto-graded) or a manual answer."""

    notebook: str
    grade_id: str
    max_points: float
    manual: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return self.notebook, self.grade_id


@dataclass
class Distribution:
    """One question's scores over the class.

    points: settled score → students; awaiting: submitted, no settled score
    (a person grades it); not_submitted: the student's status is "missing".
    """

    question: Question
    points: dict[float, int] = field(default_factory=dict)
    awaiting: int = 0
    not_submitted: int = 0

    def bands(self) -> dict[str, int]:
        """Students per band of `BANDS`."""
        top = self.question.max_points
        full = sum(n for p, n in self.points.items() if p >= top - 1e-9)
        zero = sum(n for p, n in self.points.items() if p <= 0)
        scored = sum(self.points.values())
        return dict(
            zip(
                BANDS,
                (full, scored - full - zero, zero, self.awaiting, self.not_submitted),
            )
        )

    @property
    def mean(self) -> float | None:
        """Mean settled score (None when nobody has one)."""
        scored = sum(self.points.values())
        total = sum(p * n for p, n in self.points.items())
        return total / scored if scored else None


@dataclass(frozen=True)
class Mistake:
    """One kind of mistake on one question: how many students, how many cases."""

    category: str
    students: int
    cases: int

    @property
    def words(self) -> str:
        return kinds.words(self.category)


@dataclass(frozen=True)
class Attention:
    """A row a person must look at, and why."""

    student: str
    status: str
    reasons: tuple[str, ...]


@dataclass
class ClassReport:
    """Everything the report shows; see the module docstring."""

    set_id: str
    students: int
    counts: dict[str, int]
    questions: list[Question]
    distributions: list[Distribution]
    mistakes: dict[tuple[str, str], list[Mistake]]
    lost_points: dict[tuple[str, str], int]
    slowest: list[tuple[str, float, str]]
    attention: list[Attention]
    to_grade: dict[tuple[str, str], int]
    missing: list[str]

    def label(self, key: tuple[str, str]) -> str:
        """A question's name: its grade id, or NOTEBOOK:ID where ids repeat."""
        ids = [q.grade_id for q in self.questions]
        nb, gid = key
        return gid if ids.count(gid) <= 1 else f"{nb}:{gid}"


def summarize(
    set_id: str,
    questions: list[Question],
    rows: list[gbook.Row],
    facts: dict[str, Facts],
    top: int = TOP_MISTAKES,
    slowest: int = SLOWEST,
) -> ClassReport:
    """The class report from the gradebook's rows and the runs' facts (pure).

    Args:
        set_id: the problem set.
        questions: its graded cells, in notebook order.
        rows: one per student (`gradebook.read_rows`: sanitised ids, statuses,
            scores, the cells awaiting a person).
        facts: student → grading time and mistakes (`statuses.read_facts`).
        top: mistakes listed per question (most students first).
        slowest: submissions listed by grading time (slowest first).
    Raises:
        ValueError: top or slowest is not an int ≥ 1.
    """
    for name, value in (("top", top), ("slowest", slowest)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an int ≥ 1, got {value!r}")
    counts = {s: 0 for s in STATUSES}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    missing = [r.student for r in rows if r.status == Status.MISSING.value]
    return ClassReport(
        set_id,
        len(rows),
        counts,
        list(questions),
        [_distribution(q, rows) for q in questions],
        _mistakes(questions, rows, facts, top),
        {q.key: _lost(q, rows) for q in questions if not q.manual},
        _slowest(rows, facts, slowest),
        _attention(questions, rows),
        {
            q.key: sum(q.key in r.pending for r in rows if r.status != "missing")
            for q in questions
            if q.manual
        },
        missing,
    )


def _distribution(q: Question, rows: list[gbook.Row]) -> Distribution:
    out = Distribution(q)
    for row in rows:
        score = row.scores.get(q.key)
        if row.status == Status.MISSING.value:
            out.not_submitted += 1
        elif score is None or q.key in row.pending:
            out.awaiting += 1
        else:
            value = round(float(score), 2)
            out.points[value] = out.points.get(value, 0) + 1
    out.points = dict(sorted(out.points.items()))
    return out


def _lost(q: Question, rows: list[gbook.Row]) -> int:
    """Submitted students whose settled score on q is below its maximum."""
    return sum(
        1
        for r in rows
        if r.status != Status.MISSING.value
        and q.key not in r.pending
        and r.scores.get(q.key) is not None
        and r.scores[q.key] < q.max_points - 1e-9
    )


def _mistakes(
    questions: list[Question],
    rows: list[gbook.Row],
    facts: dict[str, Facts],
    top: int,
) -> dict[tuple[str, str], list[Mistake]]:
    """Per test question, its most frequent mistakes (run failures left out)."""
    out = {}
    present = {r.student for r in rows}
    for q in questions:
        if q.manual:
            continue
        students: dict[str, int] = {}
        cases: dict[str, int] = {}
        for student, fact in facts.items():
            if student not in present:
                continue
            for category, n in fact.mistakes.get(q.key, {}).items():
                if category in kinds.RUN_FAILURES or n <= 0:
                    continue
                students[category] = students.get(category, 0) + 1
                cases[category] = cases.get(category, 0) + n
        order = list(kinds.CATEGORIES)
        ranked = sorted(
            students, key=lambda c: (-students[c], -cases[c], order.index(c))
        )
        out[q.key] = [Mistake(c, students[c], cases[c]) for c in ranked[:top]]
    return out


def _slowest(
    rows: list[gbook.Row], facts: dict[str, Facts], n: int
) -> list[tuple[str, float, str]]:
    timed = [
        (r.student, facts[r.student].seconds, r.status)
        for r in rows
        if r.student in facts and facts[r.student].seconds is not None
    ]
    return sorted(timed, key=lambda t: (-t[1], t[0]))[:n]


def _attention(questions: list[Question], rows: list[gbook.Row]) -> list[Attention]:
    """Rows a person must look at: a status that says so, or tests to review."""
    tests = {q.key for q in questions if not q.manual}
    out = []
    for row in rows:
        reasons = []
        if row.status in NEEDS_A_PERSON:
            reasons.append(
                f"{row.status}: {row.details}" if row.details else row.status
            )
        review = [gid for nb, gid in row.pending if (nb, gid) in tests]
        if review and row.status != Status.MISSING.value:
            reasons.append("tests awaiting review: " + ", ".join(review))
        if reasons:
            out.append(Attention(row.student, row.status, tuple(reasons)))
    return out


# ------------------------------------------------------------ from a course


def questions_of(course: Course, set_id: str) -> list[Question]:
    """The set's graded cells, in the order of its notebooks and cells."""
    out = []
    for path in course.source_notebooks(set_id):
        for cell in nbs.graded_cells(nbs.read_notebook(path)):
            out.append(
                Question(
                    path.stem, nbs.grade_id(cell), nbs.points(cell), nbs.is_manual(cell)
                )
            )
    return out


def load_report(course: Course, set_id: str, **kwargs) -> ClassReport:
    """The class report of a set, from the course's gradebook.

    Raises:
        ValueError: an unknown set, or a set nobody was graded in yet.
    """
    from .publish import load_statuses
    from .statuses import read_facts

    set_id = course.check_set(set_id)
    questions = questions_of(course, set_id)
    if not course.gradebook.exists():
        raise ValueError(
            f"SET {set_id!r} has no gradebook yet ({course.gradebook}); run "
            f"`course grade {set_id}` first"
        )
    rows = gbook.read_rows(
        course.gradebook,
        set_id,
        [q.key for q in questions],
        load_statuses(course, set_id),
    )
    return summarize(
        set_id, questions, rows, read_facts(course.gradebook, set_id), **kwargs
    )


def format_summary(report: ClassReport) -> str:
    """A few lines for the terminal: counts, each question's top mistake."""
    lines = [
        f"{report.set_id}: {report.students} student(s): "
        + ", ".join(f"{k} {v}" for k, v in report.counts.items() if v)
    ]
    for key, found in report.mistakes.items():
        if found:
            m = found[0]
            lines.append(
                f"  {report.label(key)}: most frequent mistake: {m.words} "
                f"({m.students} student(s), {m.cases} case(s))"
            )
    if report.attention:
        lines.append(f"  {len(report.attention)} row(s) need a person")
    return "\n".join(lines)
