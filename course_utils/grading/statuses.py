"""What a grading run stores beside nbgrader's grades, in the gradebook file itself.

nbgrader's gradebook knows scores, comments and flags. A run also decides, for
each student, a status ("graded", "timed out", …) with its details, how long
their notebooks took, and what kind of mistake each failed hidden case showed
(`mistakes`). Those go into two tables of our own in the same SQLite file
(nbgrader ignores tables it does not know):

* ``course_grading_status`` — one row per (set, student): status, details,
  run id, time stamp, seconds (`write_statuses`, `read_statuses`);
* ``course_grading_mistakes`` — per (set, student, notebook, test cell,
  category): how many hidden cases showed that mistake (`read_facts`).

They are written into the candidate gradebook before `gradebook.commit`, so
grades, statuses and mistakes are replaced by one rename, and the CSV and the
class report are derived from the gradebook alone. Everything read back is
read as hostile (a person may have edited the file): ids pass
`sanitize.student_id`, texts `sanitize.text`/`sanitize.line`, a category must
be one of `mistakes.CATEGORIES` (else it counts as "other"), counts and times
must be numbers in range.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import sanitize
from .gradebook import COMMENT_LIMIT
from .mistakes import MAX_CASES_COUNTED, known

STATUS_TABLE = "course_grading_status"  # ours; nbgrader ignores unknown tables
_STATUS_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {STATUS_TABLE} ("
    "assignment TEXT NOT NULL, student TEXT NOT NULL, status TEXT NOT NULL, "
    "details TEXT NOT NULL, run_id TEXT NOT NULL, graded_at TEXT NOT NULL, "
    "seconds REAL, PRIMARY KEY (assignment, student))"
)
MISTAKE_TABLE = "course_grading_mistakes"
_MISTAKE_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {MISTAKE_TABLE} ("
    "assignment TEXT NOT NULL, student TEXT NOT NULL, notebook TEXT NOT NULL, "
    "grade_id TEXT NOT NULL, category TEXT NOT NULL, cases INTEGER NOT NULL, "
    "PRIMARY KEY (assignment, student, notebook, grade_id, category))"
)
NAME_LIMIT = 200  # characters of a stored notebook name or grade id


@dataclass
class StoredStatus:
    """A student's status for a set as a grading run stored it in the gradebook.

    seconds: how long their notebooks took to grade; mistakes: (notebook,
    test cell grade id) → {`mistakes` category: hidden cases showing it}.
    """

    student: str
    status: str
    details: list[str]
    seconds: float | None = None
    mistakes: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)


def _create_tables(con: sqlite3.Connection) -> None:
    """Our tables, brought up to date (a table from before `seconds` gains it)."""
    con.execute(_STATUS_SCHEMA)
    columns = {row[1] for row in con.execute(f"PRAGMA table_info({STATUS_TABLE})")}
    if "seconds" not in columns:
        con.execute(f"ALTER TABLE {STATUS_TABLE} ADD COLUMN seconds REAL")
    con.execute(_MISTAKE_SCHEMA)


def _mistake_rows(set_id: str, student: str, s: StoredStatus) -> list[tuple]:
    """The rows of one student's mistakes: known categories, bounded counts."""
    totals: dict[tuple[str, str, str], int] = {}
    for (nb, gid), kinds in s.mistakes.items():
        for category, cases in kinds.items():
            key = (
                sanitize.line(nb, NAME_LIMIT),
                sanitize.line(gid, NAME_LIMIT),
                known(category),
            )
            totals[key] = min(totals.get(key, 0) + int(cases), MAX_CASES_COUNTED)
    return [(set_id, student, *key, n) for key, n in totals.items() if n > 0]


def _stored_details(details: list[str]) -> str:
    return sanitize.text("; ".join(map(str, details)), COMMENT_LIMIT)


def write_statuses(
    path: Path, set_id: str, statuses: list[StoredStatus], run_id: str
) -> None:
    """Store each student's status, details, time and mistakes in the gradebook file.

    Written into the candidate before `commit`, so grades and statuses are
    replaced by the same rename and a killed run never pairs one with the
    other's predecessor. Ids and details pass `sanitize` like the grades';
    a category outside `mistakes.CATEGORIES` is stored as "other". A
    student's mistakes are replaced by this run's, never added to.
    """
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    rows, mistakes = [], []
    for s in statuses:
        student = sanitize.student_id(s.student)
        rows.append(
            (
                set_id,
                student,
                s.status,
                _stored_details(s.details),
                run_id,
                stamp,
                _seconds(s.seconds),
            )
        )
        mistakes += _mistake_rows(set_id, student, s)
    con = sqlite3.connect(path, timeout=30)
    try:
        with con:
            _create_tables(con)
            con.executemany(
                f"INSERT OR REPLACE INTO {STATUS_TABLE} (assignment, student, status, "
                "details, run_id, graded_at, seconds) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            con.executemany(
                f"DELETE FROM {MISTAKE_TABLE} WHERE assignment = ? AND student = ?",
                [(set_id, row[1]) for row in rows],
            )
            con.executemany(
                f"INSERT OR REPLACE INTO {MISTAKE_TABLE} VALUES (?, ?, ?, ?, ?, ?)",
                mistakes,
            )
    finally:
        con.close()


def _seconds(value: object) -> float | None:
    """A stored duration: a finite number ≥ 0, else None."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return round(float(value), 2) if ok and 0 <= value < float("inf") else None


def add_details(path: Path, set_id: str, details: dict[str, list[str]]) -> None:
    """Append details to stored statuses (a failure found after the commit).

    One SQLite transaction on the gradebook in place: it touches only our
    table, so formgrader's grades and the commit's atomicity are unaffected.
    """
    con = sqlite3.connect(path, timeout=30)
    try:
        with con:
            for student, more in details.items():
                sid = sanitize.student_id(student)
                found = con.execute(
                    f"SELECT details FROM {STATUS_TABLE} "
                    "WHERE assignment = ? AND student = ?",
                    (set_id, sid),
                ).fetchone()
                if found is None:
                    continue
                joined = _stored_details([d for d in (found[0], *more) if d])
                con.execute(
                    f"UPDATE {STATUS_TABLE} SET details = ? "
                    "WHERE assignment = ? AND student = ?",
                    (joined, set_id, sid),
                )
    finally:
        con.close()


def read_statuses(
    path: Path, set_id: str, statuses: tuple[str, ...]
) -> dict[str, tuple[str, str]]:
    """Student → (status, details) stored with the grades ({} before this table).

    A status that is not one of `statuses` (`outcome.STATUSES`; a hand-edited
    row) is left out, so the caller's fallback decides it.
    """
    if not Path(path).exists():
        return {}
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        rows = con.execute(
            f"SELECT student, status, details FROM {STATUS_TABLE} WHERE assignment = ?",
            (set_id,),
        ).fetchall()
    except sqlite3.OperationalError:  # no such table: graded before it existed
        return {}
    finally:
        con.close()
    return {
        sanitize.student_id(student): (status, sanitize.text(details, COMMENT_LIMIT))
        for student, status, details in rows
        if status in statuses and isinstance(details, str)
    }


@dataclass
class Facts:
    """What a grading run stored of one student besides status and grades."""

    seconds: float | None = None
    mistakes: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)


def read_facts(path: Path, set_id: str) -> dict[str, Facts]:
    """Student → their grading time and mistakes ({} before these tables).

    What a person or an older version left is read as hostile: ids pass
    `sanitize.student_id`, names `sanitize.line`, a category that is not one of
    `mistakes.CATEGORIES` counts as "other", a count must be an int > 0
    (capped), a time a finite number ≥ 0.
    """
    out: dict[str, Facts] = {}
    if not Path(path).exists():
        return out
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        times = _select(con, f"SELECT student, seconds FROM {STATUS_TABLE}", set_id)
        found = _select(
            con,
            f"SELECT student, notebook, grade_id, category, cases FROM {MISTAKE_TABLE}",
            set_id,
        )
    finally:
        con.close()
    for student, seconds in times:
        out.setdefault(sanitize.student_id(student), Facts()).seconds = _seconds(
            seconds
        )
    for student, nb, gid, category, cases in found:
        if type(cases) is not int or cases <= 0:
            continue
        facts = out.setdefault(sanitize.student_id(student), Facts())
        where = (sanitize.line(nb, NAME_LIMIT), sanitize.line(gid, NAME_LIMIT))
        kinds = facts.mistakes.setdefault(where, {})
        key = known(category)
        kinds[key] = min(kinds.get(key, 0) + cases, MAX_CASES_COUNTED)
    return out


def _select(con: sqlite3.Connection, query: str, set_id: str) -> list[tuple]:
    """The set's rows of `query` ([] where the table or column does not exist)."""
    try:
        return con.execute(f"{query} WHERE assignment = ?", (set_id,)).fetchall()
    except sqlite3.OperationalError:  # graded before the table or column existed
        return []
