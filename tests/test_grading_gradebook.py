"""The gradebook is written atomically, backed up, and keeps manual grades."""

import csv
import shutil
import sqlite3
from pathlib import Path

import pytest

from course_utils.grading import gradebook as gbook
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
