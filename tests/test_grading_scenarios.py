"""Real `course grade` runs over submissions that try everything a student might.

One small problem set (tests/grading_cases/course: a function, a number, a free
answer) is graded with a short per-cell deadline, two kernels in parallel,
over the cases in tests/grading_cases/*.cells — correct, wrong, raising,
looping, ignoring the interrupt, exiting, eating memory, patching torch and
numpy, reading the solutions and the gradebook, writing the gradebook, calling
the reference implementation — plus an unreadable notebook and an empty
folder. Each gets its expected status and score; nobody else's grade moves.
"""

import csv
import json
import os
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest

from course_utils.grading import gradebook as gbook
from course_utils.grading.course import Course
from course_utils.grading.grade import GradeOptions, grade, server_env
from course_utils.grading.release import release
from course_utils.grading.sandbox import ForkServer, can_switch_user
from course_utils.grading.selfcheck import self_check

CASES = Path(__file__).parent / "grading_cases"
sys.path.insert(0, str(CASES))
import build

pytestmark = pytest.mark.slow

# student → (status, q1_tests points, q2_tests points)
EXPECTED = {
    "correct": ("graded", 2, 1),
    "wrong": ("graded", 0, 0),
    "exception": ("graded", 0, 1),
    "infinite_loop": ("timed out", 0, 1),
    "ignore_interrupt": ("timed out", 0, 0),
    "os_exit": ("flagged for review", 0, 0),
    "ipython_exit": ("crashed", 2, 0),
    "memory_bomb": ("crashed", 2, 1),
    "patch_allclose": ("flagged for review", 0, 0),
    "patch_numpy_testing": ("flagged for review", 0, 0),
    "read_solutions": ("flagged for review", 0, 0),
    "read_solutions_quietly": ("graded", 2, 1),
    "write_gradebook": ("flagged for review", 0, 0),
    "call_reference": ("flagged for review", 0, 0),
    "call_reference_quietly": ("flagged for review", 0, 0),
    "unreadable": ("crashed", 0, 0),
    "no_notebook": ("crashed", 0, 0),
}
OPTIONS = {"workers": 2, "cell_timeout": 5.0, "interrupt_grace": 2.0, "progress": False}


def read_csv(path):
    return {row["student"]: row for row in csv.DictReader(open(path))}


def outputs(course, student):
    nb = nbformat.read(
        course.autograded / student / "tiny" / "tiny.ipynb", as_version=4
    )
    return "".join(
        o.get("text", "") + o.get("evalue", "")
        for c in nb.cells
        for o in c.get("outputs", [])
    )


@pytest.fixture(scope="module")
def course():
    # Outside pytest's private (0700) temp tree, so the course is world-readable
    # like a real checkout and the sandbox has something to protect.
    root = Path(tempfile.mkdtemp(prefix="course-scenarios-"))
    os.chmod(root, 0o755)
    shutil.copytree(CASES / "course" / "solutions", root / "solutions")
    yield Course.load(root)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("forkserver")
    with ForkServer(server_env(work), work / "forkserver.log") as srv:
        yield srv


@pytest.fixture(scope="module")
def first_run(course, server):
    report = release(course)
    assert not report.leaks and report.changed
    gb = gbook.open_gradebook(course.gradebook)  # exists (so reads hit permissions)
    try:
        gb.update_or_create_student("absent")  # on the roster, never submits
    finally:
        gb.close()
    cases = [s for s in EXPECTED if (CASES / f"{s}.cells").exists()]
    build.write_submissions(
        course.release / "tiny" / "tiny.ipynb",
        course.submitted,
        "tiny",
        {s: s for s in cases},
        {"COURSE_ROOT": str(course.root), "GRADEBOOK": str(course.gradebook)},
    )
    (course.submitted / "unreadable" / "tiny").mkdir(parents=True)
    (course.submitted / "unreadable" / "tiny" / "tiny.ipynb").write_text("{ not json")
    (course.submitted / "no_notebook" / "tiny").mkdir(parents=True)
    summary = grade(course, "tiny", options=GradeOptions(**OPTIONS), server=server)
    return summary, read_csv(summary.csv_path)


@pytest.mark.parametrize("student", EXPECTED)
def test_each_submission_gets_its_status_and_score(first_run, student):
    _, rows = first_run
    status, q1, q2 = EXPECTED[student]
    row = rows[student]
    assert (row["status"], float(row["q1_tests"]), float(row["q2_tests"])) == (
        status,
        q1,
        q2,
    ), row["details"]


def test_every_student_has_a_row(first_run):
    _, rows = first_run
    assert set(rows) == set(EXPECTED) | {"absent"}
    assert rows["absent"]["status"] == "missing"
    assert all(row["max_total"] == "4" for row in rows.values())


def test_crashes_and_timeouts_say_what_happened(first_run):
    _, rows = first_run
    assert "ignored the interrupt" in rows["ignore_interrupt"]["details"]
    assert "interrupted after 5 s" in rows["infinite_loop"]["details"]
    assert "exited with code 0" in rows["ipython_exit"]["details"]
    assert "exited with code 1" in rows["os_exit"]["details"]
    assert "ran out of memory" in rows["memory_bomb"]["details"]
    assert "not a readable notebook" in rows["unreadable"]["details"]
    assert "not found" in rows["no_notebook"]["details"]
    for student in ("ignore_interrupt", "unreadable", "no_notebook"):
        # the points it could not earn wait for a person in formgrader
        assert int(rows[student]["needs_manual_grading"]) >= 2


def test_tampering_is_flagged_with_the_reason(first_run):
    _, rows = first_run
    reasons = {
        "patch_allclose": "torch.allclose",
        "patch_numpy_testing": "numpy.testing.assert_allclose",
        "read_solutions": "uses open",
        "write_gradebook": "sqlite3",
        "call_reference": "imports course_utils.saliency",
        "call_reference_quietly": "called a reference implementation",
    }
    for student, reason in reasons.items():
        assert reason in rows[student]["details"], student


def test_flags_reach_formgrader(first_run, course):
    gb = gbook.open_gradebook(course.gradebook)
    try:
        flagged = {s for s in EXPECTED if EXPECTED[s][0] == "flagged for review"}
        for student in EXPECTED:
            if student in ("unreadable", "no_notebook"):
                continue
            nb = gb.find_submission_notebook("tiny", "tiny", student)
            assert nb.flagged == (student in flagged), student
    finally:
        gb.close()


@pytest.mark.skipif(
    not can_switch_user(), reason="needs root to run kernels as another user"
)
def test_the_sandbox_keeps_solutions_and_gradebook_private(first_run, course):
    text = outputs(course, "read_solutions_quietly")
    assert text.count("blocked PermissionError") == 2 and "leaked" not in text
    assert "wrote the gradebook" not in outputs(course, "write_gradebook")
    con = sqlite3.connect(course.gradebook)
    try:
        assert con.execute(
            "SELECT count(*) FROM grade WHERE manual_score IS NOT NULL"
        ).fetchone() == (0,)
    finally:
        con.close()


def test_no_student_process_outlives_grading(first_run):
    summary, _ = first_run
    if not summary.sandbox_user:
        pytest.skip("no sandbox users without root")
    uids = {61000, 61001}
    alive = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status") as fh:
                uid = next(
                    int(line.split()[1]) for line in fh if line.startswith("Uid:")
                )
        except (OSError, StopIteration):
            continue
        if uid in uids:
            alive.append(pid)
    assert alive == []


def test_graded_notebooks_show_the_verdict(first_run, course):
    text = outputs(course, "correct")
    assert "[grader] q1_tests: 2 / 2 points" in text
    report = json.loads(
        (course.autograded / "correct" / "tiny" / "grading.json").read_text()
    )
    assert report["status"] == "graded" and report["total"] == 3.0


def test_regrading_is_idempotent_and_keeps_manual_grades(first_run, course, server):
    _, rows = first_run
    gb = gbook.open_gradebook(course.gradebook)
    try:
        gb.find_grade("q3_answer", "tiny", "tiny", "correct").manual_score = 1.0
        gb.db.commit()
    finally:
        gb.close()
    again = grade(
        course,
        "tiny",
        options=GradeOptions(
            **OPTIONS, students=["correct", "infinite_loop", "patch_allclose"]
        ),
        server=server,
    )
    new = read_csv(again.csv_path)
    assert again.backup is not None and again.backup.exists()
    for student, row in rows.items():
        if student == "correct":
            assert new[student]["q3_answer"] == "1" and new[student]["total"] == "4"
            row = {
                **row,
                "q3_answer": "1",
                "total": "4",
                "needs_manual_grading": new[student]["needs_manual_grading"],
            }
        assert new[student] == row, student


def test_self_check_shows_hints_and_would_be_flags(course, server, tmp_path, capsys):
    released = nbformat.read(course.release / "tiny" / "tiny.ipynb", as_version=4)
    case = (
        "# %% q1_answer\ntorch.allclose = lambda *a, **k: True\n\n\n"
        "def gradient_saliency(model, x, target):\n    return x\n"
        "# %% q2_answer\nn_passes = 5\n"
    )
    path = tmp_path / "mine.ipynb"
    nbformat.write(build.build(released, case, {}), path)
    before = path.read_bytes()
    code = self_check(path, cell_timeout=30, server=server)
    out = capsys.readouterr().out
    assert code == 1
    assert "✗ q1_tests" in out and "Hint: Differentiate the target logit" in out
    # q2 is a short answer the visible cell only checks for form: not a ✓
    assert "○ q2_tests (1 pt): form ok, graded after submission" in out
    assert "✓ q2_tests" not in out and "✎ q3_answer" in out
    assert "⚑" in out and "torch.allclose" in out
    assert path.read_bytes() == before  # the student's file is never modified
