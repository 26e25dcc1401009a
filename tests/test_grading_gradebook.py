"""The gradebook is written atomically, backed up, and keeps manual grades."""

import csv
import io
import shutil
import sqlite3
from pathlib import Path

import pytest

from course_utils.grading import gradebook as gbook
from course_utils.grading import sanitize as san
from course_utils.grading.course import Course, generate

TINY = Path(__file__).parent / "grading_cases" / "course"


@pytest.fixture(scope="module")
def assignment_db(tmp_path_factory):
    """A gradebook holding the tiny set (as `course grade` syncs it)."""
    folder = tmp_path_factory.mktemp("gb")
    db = folder / "gradebook.db"
    generate(Course.load(TINY), "tiny", folder / "release", db)
    return db


@pytest.fixture
def db(assignment_db, tmp_path):
    path = tmp_path / "gradebook.db"
    shutil.copyfile(assignment_db, path)
    return path


def grades(student, q1=2.0, q2=1.0, flagged=False, review=()):
    nb = gbook.NotebookGrades(
        {"q1_tests": q1, "q2_tests": q2, "q3_answer": None},
        set(review),
        {"q1_answer": "q1_visible: 1/1"},
        flagged,
    )
    return gbook.SubmissionGrades(student, {"tiny": nb})


def scores(db, student):
    gb = gbook.open_gradebook(db)
    try:
        out = {}
        for gid in ("q1_tests", "q2_tests", "q3_answer"):
            g = gb.find_grade(gid, "tiny", "tiny", student)
            out[gid] = (g.auto_score, g.manual_score, g.needs_manual_grade)
        return out
    finally:
        gb.close()


def test_write_grades_keeps_manual_scores_and_marks_reviews(db):
    gbook.write_grades(
        db, "tiny", [grades("ada"), grades("bob", 0.0, 0.0, True, ["q1_tests"])]
    )
    gb = gbook.open_gradebook(db)
    try:
        gb.find_grade("q3_answer", "tiny", "tiny", "ada").manual_score = 1.0
        gb.db.commit()
        assert gb.find_submission_notebook("tiny", "tiny", "bob").flagged
        assert gb.find_comment("q1_answer", "tiny", "tiny", "ada").auto_comment
    finally:
        gb.close()
    gbook.write_grades(db, "tiny", [grades("ada", 1.5)])  # graded again
    ada = scores(db, "ada")
    assert ada["q1_tests"] == (1.5, None, False)
    # the manual grade survived, and is not asked for again
    assert ada["q3_answer"] == (None, 1.0, False)
    assert scores(db, "bob")["q1_tests"] == (0.0, None, True)


def test_commit_replaces_atomically_and_keeps_a_backup(db, tmp_path):
    candidate = tmp_path / "candidate.db"
    fingerprint = gbook.snapshot(db, candidate)
    before = db.read_bytes()
    gbook.write_grades(candidate, "tiny", [grades("ada")])
    backup = gbook.commit(db, candidate, fingerprint)
    assert backup.read_bytes() == before
    assert scores(db, "ada")["q1_tests"][0] == 2.0
    assert not list(tmp_path.glob(".gradebook.db.tmp-*"))


def test_commit_refuses_when_the_gradebook_changed_meanwhile(db, tmp_path):
    candidate = tmp_path / "candidate.db"
    fingerprint = gbook.snapshot(db, candidate)
    gbook.write_grades(candidate, "tiny", [grades("ada")])
    gbook.write_grades(db, "tiny", [grades("formgrader-user")])  # someone else wrote
    after_other_write = db.read_bytes()
    with pytest.raises(gbook.GradebookChanged, match="run the command again"):
        gbook.commit(db, candidate, fingerprint)
    assert db.read_bytes() == after_other_write


def test_a_corrupt_candidate_is_never_committed(db, tmp_path):
    candidate = tmp_path / "candidate.db"
    fingerprint = gbook.snapshot(db, candidate)
    before = db.read_bytes()
    with open(candidate, "r+b") as fh:  # scribble over the first pages
        fh.seek(100)
        fh.write(b"\xff" * 8000)
    with pytest.raises((RuntimeError, sqlite3.DatabaseError)):
        gbook.commit(db, candidate, fingerprint)
    assert db.read_bytes() == before


def test_a_failure_while_writing_leaves_the_gradebook_untouched(
    db, tmp_path, monkeypatch
):
    candidate = tmp_path / "candidate.db"
    fingerprint = gbook.snapshot(db, candidate)
    before = db.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(gbook.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        gbook.commit(db, candidate, fingerprint)
    assert db.read_bytes() == before
    assert not list(db.parent.glob(".gradebook.db.tmp-*"))


def test_only_one_grading_run_at_a_time(db):
    with gbook.locked(db):
        blocked = pytest.raises(RuntimeError, match="locked by another")
        with blocked, gbook.locked(db):
            pass


def test_csv_has_a_row_for_every_student(db, tmp_path):
    gbook.write_grades(db, "tiny", [grades("ada"), grades("bob", 0.5, 0.0)])
    gb = gbook.open_gradebook(db)
    try:
        gb.update_or_create_student("cy")  # on the roster, never submitted
    finally:
        gb.close()
    columns = [("tiny", "q1_tests"), ("tiny", "q2_tests"), ("tiny", "q3_answer")]
    rows = gbook.read_rows(db, "tiny", columns, {"bob": ("timed out", "cell 3")})
    dest = tmp_path / "grades.csv"
    gbook.write_csv(rows, columns, 4.0, dest)
    table = {r["student"]: r for r in csv.DictReader(dest.open())}
    assert set(table) == {"ada", "bob", "cy"}
    assert table["ada"]["q1_tests"] == "2" and table["ada"]["q3_answer"] == ""
    assert table["ada"]["total"] == "3" and table["ada"]["needs_manual_grading"] == "1"
    assert table["bob"]["status"] == "timed out" and table["bob"]["details"] == "cell 3"
    assert table["cy"]["status"] == "missing" and table["cy"]["total"] == "0"


HOSTILE_IDS = [
    "caf\udce9",  # a folder name that is not UTF-8
    '=HYPERLINK("http://x","click")',
    "<img src=x onerror=alert(1)>",
    "\x1b]52;c;aGk=\x07",  # OSC 52: write the terminal's clipboard
    "ev\u202eil",  # right-to-left override
    "-2+3",
]
HOSTILE_TEXT = (
    "x\ud800 \x1b]0;title\x07 \u202e =cmd|' /C calc'!A0\r\n" + "/records/" + "a" * 200
) * 1000  # ~220,000 characters, like 150,000 file names in one message


def test_hostile_ids_and_comments_commit_and_give_a_safe_csv(db, tmp_path):
    candidate = tmp_path / "candidate.db"
    fingerprint = gbook.snapshot(db, candidate)
    results = [grades("ada")]
    for sid in HOSTILE_IDS:
        result = grades(sid, 0.0, 0.0)
        result.notebooks["tiny"].comments = {"q1_answer": HOSTILE_TEXT}
        results.append(result)
    gbook.write_grades(candidate, "tiny", results)
    gbook.commit(db, candidate, fingerprint)  # SQLite encoded every string

    gb = gbook.open_gradebook(db)
    try:
        stored = {s.id for s in gb.students}
        comment = gb.find_comment(
            "q1_answer", "tiny", "tiny", san.student_id(HOSTILE_IDS[0])
        ).auto_comment
    finally:
        gb.close()
    assert stored == {"ada", *map(san.student_id, HOSTILE_IDS)}
    assert len(comment) <= gbook.COMMENT_LIMIT and comment.endswith("characters]")
    assert not set(comment) & set("\x1b\x07\u202e\ud800")

    columns = [("tiny", "q1_tests"), ("tiny", "q2_tests"), ("tiny", "q3_answer")]
    statuses = {sid: ("crashed", HOSTILE_TEXT) for sid in HOSTILE_IDS}
    statuses["ada"] = ("graded", "")
    dest = tmp_path / "grades.csv"
    gbook.write_csv(gbook.read_rows(db, "tiny", columns, statuses), columns, 4.0, dest)
    raw = dest.read_bytes()
    lines = raw.split(b"\r\n")  # the csv module's record terminator
    assert lines.pop() == b"" and len(lines) == 1 + len(HOSTILE_IDS) + 1
    for byte in (b"\x1b", b"\x07", b"\r", b"\n", "\u202e".encode()):
        assert all(byte not in record for record in lines)
    records = list(csv.reader(io.StringIO(raw.decode("utf-8"), newline="")))
    assert len(records) == len(lines)
    for record in records:
        for value in record:
            assert len(value) <= gbook.CSV_FIELD_LIMIT + 1
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), value
    table = {r["student"]: r for r in csv.DictReader(io.StringIO(raw.decode()))}
    assert set(table) == {
        "ada",
        *(gbook.csv_text(san.student_id(s)) for s in HOSTILE_IDS),
    }
    assert table["'-2+3"]["status"] == "crashed"  # statuses found by the shown id
    assert table["'-2+3"]["details"].endswith("more characters]")
    assert table["ada"]["total"] == "3" and table["ada"]["details"] == ""
    assert table["'-2+3"]["total"] == "0"  # scores stay numbers


def test_an_honest_csv_is_unchanged(db, tmp_path):
    gbook.write_grades(db, "tiny", [grades("ada"), grades("bob", 0.5, -1.0)])
    columns = [("tiny", "q1_tests"), ("tiny", "q2_tests"), ("tiny", "q3_answer")]
    rows = gbook.read_rows(db, "tiny", columns, {"bob": ("timed out", "cell 3; x")})
    dest = tmp_path / "grades.csv"
    gbook.write_csv(rows, columns, 4.0, dest)
    assert dest.read_bytes().decode() == (
        "student,status,q1_tests,q2_tests,q3_answer,total,max_total,"
        "needs_manual_grading,details\r\n"
        "ada,graded,2,1,,3,4,1,\r\n"
        "bob,timed out,0.5,-1,,-0.5,4,1,cell 3; x\r\n"
    )
