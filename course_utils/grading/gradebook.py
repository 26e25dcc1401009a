"""Writing grades into nbgrader's gradebook without ever leaving it half-written.

A grading run holds the gradebook's lock file (`locked`) from start to end, so
two runs cannot interleave. It works on a private copy (`snapshot`) and
`commit`s it at the end: the copy must pass SQLite's integrity check, the
gradebook must not have changed since the snapshot (formgrader saving a manual
grade meanwhile makes the commit refuse instead of losing that grade), the
current gradebook is copied to ``gradebook.db.bak-YYYYmmdd-HHMMSS-…``, and the
new one is renamed over it — an atomic step on POSIX. A failure at any point
leaves the gradebook exactly as it was.

Manual scores given in formgrader are kept when a submission is graded again:
only auto scores, auto comments, the review marks and the flag are written.

Each student's status, details, time and mistakes go into tables of our own
in the same file (`statuses`), written into the candidate before `commit`, so
the CSV (`read_rows`, `write_csv`) is derived from the gradebook alone.

Every student-controlled string passes `sanitize` on its way in and out: ids
(`sanitize.student_id`), comments (`sanitize.text`, capped) and every CSV
field (`sanitize.csv_field` of `sanitize.line`, capped at CSV_FIELD_LIMIT);
the scores the grader computes stay numbers.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import sanitize
from .atomic import atomic_write
from .course import venv_on_path

COMMENT_LIMIT = 20_000  # characters of one auto comment in formgrader
CSV_FIELD_LIMIT = 2_000  # characters of one CSV field (the details, mostly)


class GradebookChanged(RuntimeError):
    """The gradebook was modified by someone else while we prepared our write."""


def _fingerprint(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return info.st_mtime_ns, info.st_size


def _integrity_ok(path: Path) -> bool:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        con.close()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def locked(gradebook: Path) -> Iterator[None]:
    """Hold the gradebook's lock file for a whole grading run.

    Raises:
        RuntimeError: another `course grade` holds it.
    """
    import fcntl  # POSIX only; grading runs on Linux, `course check` does not lock

    gradebook = Path(gradebook)
    gradebook.parent.mkdir(parents=True, exist_ok=True)
    lock_fd = os.open(
        gradebook.with_name(gradebook.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600
    )
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(
                f"{gradebook} is locked by another `course grade`; wait for it to finish"
            ) from None
        yield
    finally:
        os.close(lock_fd)


def snapshot(gradebook: Path, dest: Path) -> tuple[int, int] | None:
    """Copy the gradebook to `dest` (nothing if it does not exist yet).

    Returns its fingerprint (mtime, size), for `commit` to notice later changes.
    """
    fingerprint = _fingerprint(gradebook)
    dest.unlink(missing_ok=True)
    if fingerprint is not None:
        shutil.copyfile(gradebook, dest)
        if _fingerprint(gradebook) != fingerprint:
            raise GradebookChanged(f"{gradebook} changed while being copied; try again")
    return fingerprint


def commit(
    gradebook: Path,
    candidate: Path,
    fingerprint: tuple[int, int] | None,
    keep_backup: bool = True,
) -> Path | None:
    """Replace the gradebook by `candidate` atomically; returns the backup's path.

    The candidate must pass SQLite's integrity check, and the gradebook must
    still be what `snapshot` copied; then the current gradebook is copied to
    gradebook.db.bak-TIMESTAMP, the candidate is moved next to it and renamed
    over it. A failure at any step leaves the gradebook untouched.

    Raises:
        GradebookChanged: someone wrote the gradebook since the snapshot.
        RuntimeError: the candidate is corrupt.
    """
    gradebook = Path(gradebook)
    if not _integrity_ok(candidate):
        raise RuntimeError(
            f"{candidate} failed SQLite's integrity check; not committed"
        )
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{gradebook.name}.tmp-", dir=gradebook.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    backup = None
    try:
        shutil.copyfile(candidate, tmp)
        os.chmod(tmp, 0o600)
        _fsync(tmp)
        if _fingerprint(gradebook) != fingerprint:
            raise GradebookChanged(
                f"{gradebook} changed while grading (formgrader?); nothing was written "
                "— run the command again"
            )
        if fingerprint is not None and keep_backup:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            backup = gradebook.with_name(
                f"{gradebook.name}.bak-{stamp}-{time.time_ns() % 10**6:06d}"
            )
            shutil.copy2(gradebook, backup)
            os.chmod(backup, 0o600)
        os.replace(tmp, gradebook)
    finally:
        tmp.unlink(missing_ok=True)
    return backup


@dataclass
class NotebookGrades:
    """What grading decided for one notebook of one submission.

    auto_scores: grade id → auto score (None: to be graded by hand).
    needs_review: grade ids a person should look at (crash, flag, timeout).
    comments: answer-cell grade id → comment shown in formgrader.
    flagged: mark the notebook as flagged in formgrader.
    """

    auto_scores: dict[str, float | None] = field(default_factory=dict)
    needs_review: set[str] = field(default_factory=set)
    comments: dict[str, str] = field(default_factory=dict)
    flagged: bool = False


@dataclass
class SubmissionGrades:
    """A student's grades for a set: notebook name → NotebookGrades."""

    student: str
    notebooks: dict[str, NotebookGrades]
    timestamp: str | None = None


def open_gradebook(path: Path):
    """nbgrader's Gradebook on `path` (created if missing)."""
    from nbgrader.api import Gradebook

    with venv_on_path():
        return Gradebook(f"sqlite:///{path}")


def write_grades(path: Path, set_id: str, results: list[SubmissionGrades]) -> None:
    """Write auto scores, comments and flags; keep every manual score.

    Each student is recorded under `sanitize.student_id` of their id (an honest
    id is unchanged), each comment as `sanitize.text` capped at COMMENT_LIMIT:
    nothing SQLite cannot encode, nothing a page or a terminal would obey.
    """
    import warnings

    from nbgrader.api import MissingEntry
    from sqlalchemy.exc import SAWarning

    gb = open_gradebook(path)
    try:
        # nbgrader's add_submission triggers SQLAlchemy autoflush warnings; harmless
        warnings.filterwarnings("ignore", category=SAWarning)
        for result in results:
            student = sanitize.student_id(result.student)
            gb.update_or_create_student(student)
            kwargs = {"timestamp": result.timestamp} if result.timestamp else {}
            gb.update_or_create_submission(set_id, student, **kwargs)
            for nb_name, grades in result.notebooks.items():
                for gid, score in grades.auto_scores.items():
                    grade = gb.find_grade(gid, nb_name, set_id, student)
                    grade.auto_score = score
                    # A person's score settles the cell: re-grading never asks
                    # for it again (formgrader and the CSV agree).
                    grade.needs_manual_grade = grade.manual_score is None and (
                        score is None or gid in grades.needs_review
                    )
                for gid, text in grades.comments.items():
                    try:
                        comment = gb.find_comment(gid, nb_name, set_id, student)
                    except MissingEntry:  # not an answer cell: no comment to write
                        continue
                    comment.auto_comment = (
                        sanitize.text(text, COMMENT_LIMIT) if text else None
                    )
                notebook = gb.find_submission_notebook(nb_name, set_id, student)
                notebook.flagged = grades.flagged
            gb.db.commit()
    finally:
        gb.close()


@dataclass
class Row:
    """One CSV row: a student's status and scores for a set.

    pending: (notebook, grade id) of each cell awaiting a person.
    """

    student: str
    status: str
    details: str
    scores: dict[tuple[str, str], float | None]
    total: float
    needs_manual: int
    pending: list[tuple[str, str]] = field(default_factory=list)


def read_rows(
    path: Path,
    set_id: str,
    columns: list[tuple[str, str]],
    statuses: dict[str, tuple[str, str]],
) -> list[Row]:
    """Rows for every student in the gradebook, submitted or not.

    Ids, statuses and details come back sanitised (`sanitize.student_id`,
    `sanitize.line` capped at CSV_FIELD_LIMIT), whatever an older run or a
    person left in the gradebook.

    Args:
        path: the gradebook.
        set_id: the problem set.
        columns: (notebook, grade id) of every graded cell, in order.
        statuses: student → (status, details) from the last grading run.
    """
    rows = []
    if not path.exists():
        return rows
    known = {sanitize.student_id(k): v for k, v in statuses.items()}
    gb = open_gradebook(path)
    try:
        for stored in sorted(s.id for s in gb.students):
            student = sanitize.student_id(stored)
            rows.append(_row(gb, set_id, stored, student, columns, known))
    finally:
        gb.close()
    return rows


def _row(gb, set_id, stored, student, columns, statuses) -> Row:
    """The row of one student (`stored`: the id as the gradebook holds it)."""
    from nbgrader.api import MissingEntry

    try:
        submission = gb.find_submission(set_id, stored)
    except MissingEntry:
        return Row(
            student, "missing", "no submission", {col: None for col in columns}, 0.0, 0
        )
    scores: dict[tuple[str, str], float | None] = {}
    pending: list[tuple[str, str]] = []
    for nb_name, gid in columns:
        try:
            grade = gb.find_grade(gid, nb_name, set_id, stored)
        except MissingEntry:
            scores[nb_name, gid] = None
            continue
        score = (
            grade.manual_score if grade.manual_score is not None else grade.auto_score
        )
        scores[nb_name, gid] = score
        if grade.needs_manual_grade:
            pending.append((nb_name, gid))
    status, details = statuses.get(student, ("graded", ""))
    status = sanitize.line(status, CSV_FIELD_LIMIT)
    details = sanitize.line(details, CSV_FIELD_LIMIT)
    if status == "graded" and any(nb.flagged for nb in submission.notebooks):
        # the gradebook says flagged: the CSV never says otherwise
        status, details = "flagged for review", details or "flagged"
    total = round(sum(v for v in scores.values() if v is not None), 2)
    return Row(student, status, details, scores, total, len(pending), pending)


def write_csv(
    rows: list[Row], columns: list[tuple[str, str]], max_total: float, dest: Path
) -> None:
    """Write the rows as CSV, atomically (temp file, then rename).

    Columns: student, status, one per graded cell (its grade id, or
    NOTEBOOK:ID when ids repeat across notebooks; empty = not graded yet),
    total, max_total, needs_manual_grading (cells awaiting a person), details.
    Every text field is one visible line of at most CSV_FIELD_LIMIT characters
    that no spreadsheet reads as a formula (`csv_text`); scores stay numbers.
    """
    unique = len({gid for _, gid in columns}) == len(columns)
    headers = [gid if unique else f"{nb}:{gid}" for nb, gid in columns]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(
        [
            "student",
            "status",
            *map(csv_text, headers),
            "total",
            "max_total",
            "needs_manual_grading",
            "details",
        ]
    )
    for row in rows:
        writer.writerow(
            [
                csv_text(row.student),
                csv_text(row.status),
                *[
                    "" if row.scores.get(col) is None else f"{row.scores[col]:g}"
                    for col in columns
                ],
                f"{row.total:g}",
                f"{max_total:g}",
                row.needs_manual,
                csv_text(row.details),
            ]
        )
    with atomic_write(dest, newline="", chmod=0o600) as fh:
        fh.write(buf.getvalue())


def csv_text(value: object) -> str:
    """A text field of the CSV: one visible, capped line read as text (OWASP)."""
    return sanitize.csv_field(sanitize.line(value, CSV_FIELD_LIMIT))
