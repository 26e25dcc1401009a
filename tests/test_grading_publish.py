"""A run's failures stay per student, and the CSV always follows the gradebook."""

import csv
import io
import json
import shutil
from pathlib import Path

import nbformat
import pytest

from course_utils.grading import gradebook as gbook
from course_utils.grading import outcome, publish, statuses
from course_utils.grading import sanitize as san
from course_utils.grading.course import Course, generate
from course_utils.grading.outcome import (
    NotebookOutcome,
    Status,
    StudentResult,
    Summary,
)

TINY = Path(__file__).parent / "grading_cases" / "course"
STATUSES = {
    "ada": Status.GRADED,
    "bob": Status.TIMED_OUT,
    "cy": Status.CRASHED,
    "dee": Status.MISSING,
}


@pytest.fixture(scope="module")
def graded_db(tmp_path_factory):
    """A gradebook holding the tiny set (as `course grade` syncs it)."""
    folder = tmp_path_factory.mktemp("gb")
    db = folder / "gradebook.db"
    generate(Course.load(TINY), "tiny", folder / "release", db)
    return db


@pytest.fixture
def course(graded_db, tmp_path):
    root = tmp_path / "course"
    shutil.copytree(TINY, root)
    shutil.copyfile(graded_db, root / "gradebook.db")
    return Course.load(root)


def result(student, status=Status.GRADED, details=(), q1=2.0):
    grades = gbook.NotebookGrades(
        {"q1_tests": q1, "q2_tests": 1.0, "q3_answer": None},
        comments={"q1_answer": "q1_visible: 1/1"},
    )
    out = NotebookOutcome("tiny", status, list(details), [], {"q1_tests": q1})
    r = StudentResult(
        student,
        status,
        list(details),
        {"tiny": out},
        gbook.SubmissionGrades(student, {"tiny": grades}),
        graded={"tiny": nbformat.v4.new_notebook()},
    )
    r.report = publish.report(r, "tiny", False)
    return r


def results():
    return [result(s, st, [f"{st.value} detail"]) for s, st in STATUSES.items()]


def run(course, rs, run_id="run-1"):
    """What `grade` does once the kernels are done: snapshot, publish_run."""
    work = course.root / "work"
    candidate = work / "gradebook.db"
    work.mkdir(exist_ok=True)
    fingerprint = gbook.snapshot(course.gradebook, candidate)
    csv_path = course.root / "grades-tiny.csv"
    commit = publish.Commit(run_id, candidate, fingerprint, work, csv_path)
    publish.publish_run(course, "tiny", rs, commit)
    return csv_path


def rows(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return {r["student"]: r for r in csv.DictReader(fh)}


def test_a_failed_autograded_write_is_that_students_alone(course, monkeypatch):
    real = publish._notebook_writer

    def writer(nb):
        def write(fh):
            fh.write("{")  # half a notebook, then the disk is full
            raise OSError(28, "No space left on device")

        return write if nb.metadata.get("who") == "ada" else real(nb)

    monkeypatch.setattr(publish, "_notebook_writer", writer)
    rs = results()
    rs[0].graded["tiny"].metadata["who"] = "ada"
    table = rows(run(course, rs))
    assert {s: table[s]["status"] for s in STATUSES} == {
        s: st.value for s, st in STATUSES.items()
    }
    assert table["ada"]["q1_tests"] == "2" and table["bob"]["q1_tests"] == "2"
    assert table["ada"]["details"].startswith(
        "graded detail; autograded/ not updated (OSError: [Errno 28]"
    )
    assert "autograded/ not updated" not in table["bob"]["details"]
    # stored with the grades: `course export` says the same
    assert rows(publish.export(course, "tiny"))["ada"] == table["ada"]
    for s in STATUSES:
        names = sorted(p.name for p in (course.autograded / s / "tiny").iterdir())
        assert names == ([] if s == "ada" else ["grading.json", "tiny.ipynb"]), s
    report = json.loads(
        (course.autograded / "bob" / "tiny" / "grading.json").read_text()
    )
    assert report["run"] == "run-1" and report["status"] == "timed out"
    out = io.StringIO()
    summary = Summary("tiny", rs, course.root / "grades-tiny.csv", None, 1.0)
    publish.print_summary(summary, out)  # said at the end of the run, too
    assert "  ada: graded — graded detail; autograded/ not updated" in out.getvalue()


def test_a_failed_rename_is_added_to_the_stored_details(course, monkeypatch):
    real = publish.os.replace

    def replace(src, dst):
        if "/bob/" in str(dst):
            raise PermissionError(13, "Permission denied", str(dst))
        return real(src, dst)

    monkeypatch.setattr(publish.os, "replace", replace)
    table = rows(run(course, results()))
    assert table["bob"]["status"] == "timed out"
    assert table["bob"]["details"].startswith("timed out detail; autograded/ not")
    assert rows(publish.export(course, "tiny"))["bob"] == table["bob"]
    assert not list((course.autograded / "bob" / "tiny").iterdir())


@pytest.mark.parametrize("kill", [KeyboardInterrupt, SystemExit])
def test_killed_between_commit_and_csv_export_tells_every_true_status(
    course, monkeypatch, kill
):
    run(course, [result(s) for s in STATUSES], run_id="run-0")  # all graded once
    # an older run's marker that no report of the next run matches
    (course.autograded / publish.RUNS_NAME).write_text(
        json.dumps({"tiny": {s: "run-0" for s in STATUSES}})
    )

    def killed(*args, **kwargs):
        raise kill()

    monkeypatch.setattr(gbook, "write_csv", killed)
    with pytest.raises(kill):
        run(course, results(), run_id="run-1")
    monkeypatch.undo()
    table = rows(publish.export(course, "tiny"))
    assert {s: table[s]["status"] for s in STATUSES} == {
        s: st.value for s, st in STATUSES.items()
    }
    assert table["bob"]["details"] == "timed out detail"
    # autograded/ follows the new gradebook; nothing half-written is left
    for s in STATUSES:
        report = course.autograded / s / "tiny" / "grading.json"
        assert json.loads(report.read_text())["run"] == "run-1", s
    assert not list(course.autograded.glob("*/tiny/.*.tmp-*"))


def test_a_failed_commit_leaves_autograded_as_it_was(course, monkeypatch):
    run(course, [result(s) for s in STATUSES], run_id="run-0")

    def changed(*args, **kwargs):
        raise gbook.GradebookChanged("formgrader wrote meanwhile")

    monkeypatch.setattr(gbook, "commit", changed)
    with pytest.raises(gbook.GradebookChanged):
        run(course, results(), run_id="run-1")
    for s in STATUSES:
        report = course.autograded / s / "tiny" / "grading.json"
        assert json.loads(report.read_text())["run"] == "run-0", s
    assert not list(course.autograded.glob("*/tiny/.*.tmp-*"))


def test_stored_statuses_round_trip_through_sanitize(course):
    hostile = "x\ud800 \x1b]52;c;aGk=\x07 \u202eevil =cmd\r\n" * 3
    sid = "caf\udce9\x1b[31m"  # `discover` gives every student their shown id
    run(course, [result("ada"), result(san.student_id(sid), Status.CRASHED, [hostile])])
    stored = statuses.read_statuses(course.gradebook, "tiny", outcome.STATUSES)
    assert set(stored) == {"ada", san.student_id(sid)}
    status, details = stored[san.student_id(sid)]
    assert status == "crashed" and details == san.text(hostile, gbook.COMMENT_LIMIT)
    assert not set(details) & set("\ud800\x1b\x07\u202e")
    table = rows(course.root / "grades-tiny.csv")
    row = table[gbook.csv_text(san.student_id(sid))]
    assert row["details"] == gbook.csv_text(hostile)
    assert row["status"] == "crashed" and table["ada"]["status"] == "graded"
    report = course.autograded / san.student_id(sid) / "tiny" / "grading.json"
    assert json.loads(report.read_text(encoding="utf-8"))["details"] == [details]


def test_nbgrader_still_opens_a_gradebook_with_statuses(course):
    run(course, results())
    gb = gbook.open_gradebook(course.gradebook)  # formgrader opens it the same way
    try:
        assert {s["student"] for s in gb.submission_dicts("tiny")} == set(STATUSES)
        assert gb.find_grade("q1_tests", "tiny", "tiny", "ada").auto_score == 2.0
    finally:
        gb.close()


def test_a_gradebook_without_statuses_falls_back_to_the_reports(course):
    folder = course.autograded / "ada" / "tiny"
    folder.mkdir(parents=True)
    (folder / "grading.json").write_text(
        json.dumps({"status": "crashed", "details": ["old"], "run": "r"})
    )
    (course.autograded / publish.RUNS_NAME).write_text(
        json.dumps({"tiny": {"ada": "r", "bob": "gone"}})
    )
    assert statuses.read_statuses(course.gradebook, "tiny", outcome.STATUSES) == {}
    assert publish.load_statuses(course, "tiny") == {
        "ada": ("crashed", "old"),
        "bob": publish._INTERRUPTED,
    }


def test_stale_temporary_files_are_removed(course, tmp_path):
    csv_dir = tmp_path / "out"
    stale = [
        course.autograded / "ada" / "tiny" / ".tiny.ipynb.tmp-ab12_x",
        course.root / ".gradebook.db.tmp-k3j4",
        csv_dir / ".grades-tiny.csv.tmp-zz9",
    ]
    kept = [
        course.root / ".notes.txt.tmp-k3j4",  # not ours: another tool may be writing
        course.autograded / "ada" / "tiny" / "tiny.ipynb",
        course.autograded / "ada" / "tiny" / ".tiny.ipynb.tmp-",
        csv_dir / "grades-tiny.csv",
    ]
    for path in stale + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    removed = publish.remove_stale(course, csv_dir / "grades-tiny.csv")
    assert sorted(removed) == sorted(stale)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in stale)
