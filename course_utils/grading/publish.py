"""What a grading run leaves behind: gradebook, graded notebooks, reports, CSV."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import nbformat

from . import gradebook as gbook
from . import notebooks as nbs
from . import sanitize
from .atomic import atomic_write
from .course import Course, generate
from .outcome import STATUSES, Status, StudentResult, Summary
from .plan import NotebookSpec

REPORT_NAME = "grading.json"
RUNS_NAME = ".course-grade-runs.json"
_INTERRUPTED = (
    Status.INTERRUPTED.value,
    "the last grading run did not finish for this student; grade again",
)


def report(result: StudentResult, set_id: str, unsafe: bool) -> dict:
    """The student's grading.json (without the run id, added when published)."""
    return {
        "student": result.student,
        "set": set_id,
        "status": result.status.value,
        "details": result.details,
        "total": result.total,
        "sandbox": not unsafe,
        "graded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "notebooks": {
            name: {
                "status": o.status.value,
                "details": o.details,
                "flags": o.flags,
                "scores": o.scores,
                "seconds": round(o.seconds, 2),
                "sandbox_startup_seconds": round(o.startup_seconds, 2),
            }
            for name, o in result.notebooks.items()
        },
    }


def commit_grades(
    course: Course,
    set_id: str,
    results: list[StudentResult],
    candidate: Path,
    fingerprint: tuple[int, int] | None,
    work: Path,
) -> Path | None:
    """Write the grades into the candidate gradebook and put it in place.

    Returns the backup of the previous gradebook. If formgrader wrote
    meanwhile, the write is redone once on a fresh copy.
    """
    try:
        gbook.write_grades(candidate, set_id, [r.grades for r in results])
        return gbook.commit(course.gradebook, candidate, fingerprint)
    except gbook.GradebookChanged:
        fingerprint = gbook.snapshot(course.gradebook, candidate)
        generate(course, set_id, work / "release2", candidate)
        gbook.write_grades(candidate, set_id, [r.grades for r in results])
        return gbook.commit(course.gradebook, candidate, fingerprint)


def publish(
    course: Course, set_id: str, results: list[StudentResult], run_id: str
) -> None:
    """After the gradebook commit: graded notebooks and reports, then the run
    marker that makes them current (`load_statuses` trusts nothing else)."""
    for r in results:
        out_dir = course.autograded / r.student / set_id
        for name, nb in r.graded.items():
            _write_notebook(out_dir / f"{name}.ipynb", nb)
        _write_json(out_dir / REPORT_NAME, {**r.report, "run": run_id})
    marker = course.autograded / RUNS_NAME
    try:
        runs = json.loads(marker.read_text())
    except (OSError, ValueError):
        runs = {}
    if not isinstance(runs, dict):
        runs = {}
    runs.setdefault(set_id, {}).update({r.student: run_id for r in results})
    _write_json(marker, runs)


def _write_json(path: Path, payload: dict) -> None:
    with atomic_write(path) as fh:
        json.dump(payload, fh, indent=1, ensure_ascii=False)


def _write_notebook(path: Path, nb: nbformat.NotebookNode) -> None:
    with atomic_write(path) as fh:
        nbformat.write(nb, fh)


def columns_of(specs_or_sources) -> tuple[list[tuple[str, str]], float]:
    """(notebook, grade id) of every graded cell in order, and the total points."""
    columns, total = [], 0.0
    for name, source in specs_or_sources:
        for cell in nbs.graded_cells(source):
            columns.append((name, nbs.grade_id(cell)))
            total += nbs.points(cell)
    return columns, total


def load_statuses(course: Course, set_id: str) -> dict[str, tuple[str, str]]:
    """Student → (status, details) from each autograded/STUDENT/SET/grading.json.

    A report counts only when its run id is the one the run marker records
    for that student — written after the gradebook commit — so a run killed
    midway never pairs new reports with the old gradebook or the reverse;
    such a student reads "interrupted".
    """
    out: dict[str, tuple[str, str]] = {}
    if not course.autograded.is_dir():
        return out
    try:
        runs = json.loads((course.autograded / RUNS_NAME).read_text()).get(set_id, {})
    except (OSError, ValueError, AttributeError):
        runs = None
    for folder in course.autograded.iterdir():
        report = folder / set_id / REPORT_NAME
        if folder.is_symlink() or not report.is_file():
            continue
        try:
            data = json.loads(report.read_text())
        except (OSError, ValueError):
            data = {}
        status = data.get("status")
        if (
            status not in STATUSES
            or not isinstance(data, dict)
            or (runs is not None and runs.get(folder.name) != data.get("run"))
        ):
            out[folder.name] = _INTERRUPTED
            continue
        out[folder.name] = (status, "; ".join(map(str, data.get("details", []))))
    if runs is not None:
        for student in runs:
            out.setdefault(student, _INTERRUPTED)
    return out


def export(
    course: Course,
    set_id: str,
    csv_path: Path | None = None,
    specs: list[NotebookSpec] | None = None,
) -> Path:
    """Write the set's CSV from the gradebook (manual scores included)."""
    set_id = course.check_set(set_id)
    if specs is None:
        sources = [
            (p.stem, nbs.read_notebook(p)) for p in course.source_notebooks(set_id)
        ]
    else:
        sources = [(s.name, s.source) for s in specs]
    columns, max_total = columns_of(sources)
    csv_path = Path(csv_path or course.root / f"grades-{set_id}.csv")
    rows = gbook.read_rows(
        course.gradebook, set_id, columns, load_statuses(course, set_id)
    )
    gbook.write_csv(rows, columns, max_total, csv_path)
    return csv_path


def print_summary(summary: Summary, out=None) -> None:
    """The end-of-run report: counts per status, who needs attention, where things are."""
    out = out or sys.stdout
    counts = summary.counts()
    n = len(summary.results)
    print(
        f"\nGraded {n} submission(s) of {summary.set_id} in {summary.seconds:.1f} s"
        f" ({summary.seconds / max(n, 1):.1f} s each)",
        file=out,
    )
    print(
        "  " + ", ".join(f"{k}: {v}" for k, v in counts.items() if v or k == "graded"),
        file=out,
    )
    if summary.phases:
        print(
            "  time: " + ", ".join(f"{k} {v:.1f} s" for k, v in summary.phases.items()),
            file=out,
        )
    print(f"  sandbox: {summary.sandbox}", file=out)
    for r in summary.results:
        if r.status is not Status.GRADED:
            print(
                f"  {sanitize.student_id(r.student)}: {r.status.value} — "
                + sanitize.line("; ".join(r.details), 300),
                file=out,
            )
    for s in summary.skipped:
        print(f"  skipped {sanitize.line(s)}", file=out)
    print(f"  grades: {summary.csv_path}", file=out)
    if summary.backup:
        print(f"  previous gradebook saved as {summary.backup}", file=out)
