"""What a grading run leaves behind: gradebook, graded notebooks, reports, CSV."""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat

from . import gradebook as gbook
from . import notebooks as nbs
from . import sanitize, statuses
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
    """The student's grading.json (without the run id, added when published).

    Its texts pass `sanitize.text`: valid UTF-8 whatever an exception said.
    """
    return {
        "student": sanitize.student_id(result.student),
        "set": set_id,
        "status": result.status.value,
        "details": _texts(result.details),
        "total": result.total,
        "sandbox": not unsafe,
        "graded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "notebooks": {
            name: {
                "status": o.status.value,
                "details": _texts(o.details),
                "flags": _texts(o.flags),
                "scores": o.scores,
                "seconds": round(o.seconds, 2),
                "sandbox_startup_seconds": round(o.startup_seconds, 2),
                "mistakes": o.mistakes,
            }
            for name, o in result.notebooks.items()
        },
    }


def _texts(items: list) -> list[str]:
    return [sanitize.text(x) for x in items]


def commit_grades(
    course: Course,
    set_id: str,
    results: list[StudentResult],
    candidate: Path,
    fingerprint: tuple[int, int] | None,
    work: Path,
    run_id: str = "",
) -> Path | None:
    """Write the grades and statuses into the candidate gradebook, put it in place.

    Returns the backup of the previous gradebook. If formgrader wrote
    meanwhile, the write is redone once on a fresh copy.
    """

    def write() -> None:
        gbook.write_grades(candidate, set_id, [r.grades for r in results])
        statuses.write_statuses(candidate, set_id, _stored(results), run_id)

    try:
        write()
        return gbook.commit(course.gradebook, candidate, fingerprint)
    except gbook.GradebookChanged:
        fingerprint = gbook.snapshot(course.gradebook, candidate)
        generate(course, set_id, work / "release2", candidate)
        write()
        return gbook.commit(course.gradebook, candidate, fingerprint)


def _stored(results: list[StudentResult]) -> list[statuses.StoredStatus]:
    return [
        statuses.StoredStatus(
            r.student,
            r.status.value,
            r.details,
            r.seconds,
            {
                (nb, gid): kinds
                for nb, o in r.notebooks.items()
                for gid, kinds in o.mistakes.items()
            },
        )
        for r in results
    ]


def publish_run(
    course: Course,
    set_id: str,
    results: list[StudentResult],
    run: Commit,
) -> Path | None:
    """Everything a finished run leaves behind, in the order that keeps it honest.

    1. Each student's graded notebooks and report are written to temporary
       files in autograded/ (`stage`); a failure there is that student's
       alone, and goes into their details.
    2. The gradebook commit: grades and statuses in one rename.
    3. The CSV, from the gradebook, at once.
    4. The staged files are renamed into place (`install`); a failure there
       is added to that student's stored details and the CSV written again.

    A failed commit discards the staged files. A run killed (SIGKILL) before
    2 leaves the old gradebook and CSV, and temporary files the next run
    removes (`remove_stale`); killed after 2, the CSV may be stale but
    `course export` (or the next run) rebuilds it from the gradebook alone.
    Returns the previous gradebook's backup.
    """
    staged = stage(course, set_id, results, run.run_id)
    try:
        backup = commit_grades(
            course,
            set_id,
            results,
            run.candidate,
            run.fingerprint,
            run.work,
            run.run_id,
        )
    except BaseException:
        discard(staged)  # the gradebook is as it was: so is autograded/
        raise
    try:
        export(course, set_id, run.csv_path, specs=run.specs)
    finally:  # the gradebook is new: autograded/ follows it even if the CSV failed
        failed = install(staged)
    if failed:
        for r in results:
            r.details.extend(failed.get(r.student, []))
        statuses.add_details(course.gradebook, set_id, failed)
        export(course, set_id, run.csv_path, specs=run.specs)
    return backup


@dataclass
class Commit:
    """What `publish_run` needs of the run: its id, the candidate gradebook,
    the snapshot's fingerprint, the work folder, the CSV and the specs."""

    run_id: str
    candidate: Path
    fingerprint: tuple[int, int] | None
    work: Path
    csv_path: Path
    specs: list[NotebookSpec] | None = None


def stage(
    course: Course, set_id: str, results: list[StudentResult], run_id: str
) -> dict[str, list[tuple[Path, Path]]]:
    """Write every student's autograded files beside their place, not yet in it.

    Returns student → [(temporary file, destination)]. A student whose files
    cannot be written (a full disk, a string no encoder takes …) keeps their
    grades; what failed is added to their details (stored in the gradebook
    by the commit that follows), nothing of theirs is staged, and every
    other student is unaffected.
    """
    staged: dict[str, list[tuple[Path, Path]]] = {}
    for r in results:
        out_dir = course.autograded / r.student / set_id
        files: list[tuple[Path, Path]] = []
        try:
            for name, nb in r.graded.items():
                files.append(
                    _stage_file(out_dir / f"{name}.ipynb", _notebook_writer(nb))
                )
            payload = {**r.report, "run": run_id}
            files.append(_stage_file(out_dir / REPORT_NAME, _json_writer(payload)))
        except Exception as exc:  # noqa: BLE001 — one student's files, never the run
            for tmp, _ in files:
                tmp.unlink(missing_ok=True)
            r.details.append(_not_written(exc))
            continue
        staged[r.student] = files
    return staged


def install(staged: dict[str, list[tuple[Path, Path]]]) -> dict[str, list[str]]:
    """Rename the staged files into place; student → what failed (if anything)."""
    failed: dict[str, list[str]] = {}
    for student, files in staged.items():
        for k, (tmp, dest) in enumerate(files):
            try:
                os.replace(tmp, dest)
            except OSError as exc:
                for left, _ in files[k:]:
                    left.unlink(missing_ok=True)
                failed[student] = [_not_written(exc)]
                break
    return failed


def discard(staged: dict[str, list[tuple[Path, Path]]]) -> None:
    """Remove the staged files of a run whose commit failed."""
    for files in staged.values():
        for tmp, _ in files:
            tmp.unlink(missing_ok=True)


_NOT_WRITTEN = "autograded/ not updated"


def _not_written(exc: BaseException) -> str:
    return f"{_NOT_WRITTEN} ({type(exc).__name__}: {exc})"


def _stage_file(dest: Path, write) -> tuple[Path, Path]:
    """`write(fh)` into a temporary file beside `dest` (named as `atomic_write`
    names its own, so `remove_stale` finds a leftover)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.tmp-", dir=dest.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            write(fh)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, dest


def _notebook_writer(nb: nbformat.NotebookNode):
    return lambda fh: nbformat.write(nb, fh)


def _json_writer(payload: dict):
    return lambda fh: json.dump(payload, fh, indent=1, ensure_ascii=False)


_TMP_SUFFIX = r"\.tmp-[A-Za-z0-9_]+"


def remove_stale(course: Course, csv_path: Path) -> list[Path]:
    """Remove the temporary files an interrupted run left (`.NAME.tmp-XXXX`).

    Any in autograded/ (every folder, links not followed), and those of the
    gradebook and of the CSV beside them. Call it holding the gradebook's
    lock: no other run is writing them. Returns what was removed.
    """
    csv_path = Path(csv_path)
    own = re.compile(r"\..+" + _TMP_SUFFIX)
    places = [
        (
            course.gradebook.parent,
            re.compile(re.escape(f".{course.gradebook.name}") + _TMP_SUFFIX),
        ),
        (csv_path.parent, re.compile(re.escape(f".{csv_path.name}") + _TMP_SUFFIX)),
    ]
    if course.autograded.is_dir() and not course.autograded.is_symlink():
        places += [(Path(d), own) for d, _, _ in os.walk(course.autograded)]
    removed: list[Path] = []
    for folder, pattern in places:
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            path = folder / name
            if pattern.fullmatch(name) and path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def columns_of(specs_or_sources) -> tuple[list[tuple[str, str]], float]:
    """(notebook, grade id) of every graded cell in order, and the total points."""
    columns, total = [], 0.0
    for name, source in specs_or_sources:
        for cell in nbs.graded_cells(source):
            columns.append((name, nbs.grade_id(cell)))
            total += nbs.points(cell)
    return columns, total


def load_statuses(course: Course, set_id: str) -> dict[str, tuple[str, str]]:
    """Student → (status, details) of the set, as the gradebook stores them.

    Each student's status is stored with their grades, in the same commit
    (`statuses.write_statuses`). A student graded before that table existed
    falls back to the reports of autograded/ (`legacy_statuses`).
    """
    out = {
        sanitize.student_id(k): v for k, v in legacy_statuses(course, set_id).items()
    }
    out.update(statuses.read_statuses(course.gradebook, set_id, STATUSES))
    return out


def legacy_statuses(course: Course, set_id: str) -> dict[str, tuple[str, str]]:
    """Student → (status, details) from each autograded/STUDENT/SET/grading.json.

    Only for gradebooks graded before statuses were stored in them. A report
    counts only when its run id is the one the run marker records for that
    student — written after the gradebook commit by those older runs — so a
    run killed midway never pairs new reports with the old gradebook or the
    reverse; such a student reads "interrupted".
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
        if r.status is not Status.GRADED or any(
            d.startswith(_NOT_WRITTEN) for d in r.details
        ):
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
