"""Scoring one notebook is a pure function: points from a verdict, no kernel."""

import nbformat
import pytest

from course_utils.grading import notebooks as nbs
from course_utils.grading.outcome import Status
from course_utils.grading.plan import NotebookSpec
from course_utils.grading.score import score
from course_utils.grading.static import Policy
from course_utils.grading.verify import CaseResult, CaseStatus, CellMarking, Marking

PASSED, FAILED, MISSING = CaseStatus.PASSED, CaseStatus.FAILED, CaseStatus.MISSING


def _cell(kind, gid, **nbgrader):
    new = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
    cell = new("")
    cell.metadata["nbgrader"] = {"grade_id": gid, **nbgrader}
    return cell


@pytest.fixture
def spec():
    """Answer a1 → test t1 (2 points); answer a2 → test t2 (3 points); a free
    answer m1 scored by hand (1 point)."""
    source = nbformat.v4.new_notebook(
        cells=[
            _cell("code", "a1", solution=True),
            _cell("code", "t1", grade=True, points=2),
            _cell("code", "a2", solution=True),
            _cell("code", "t2", grade=True, points=3),
            _cell("markdown", "m1", solution=True, grade=True, points=1),
        ]
    )
    return NotebookSpec("tiny", source, source, Policy())


def _verdict(t1=(PASSED, PASSED), t2=(PASSED, PASSED, PASSED), visible=()):
    def cell(gid, points, statuses):
        cases = [
            CaseResult(f"{gid}_check", f"case {i}", s) for i, s in enumerate(statuses)
        ]
        cases += [CaseResult(f"{gid}_form", "form", s, "wrong", False) for s in visible]
        return CellMarking(gid, points, cases)

    return Marking({"t1": cell("t1", 2.0, t1), "t2": cell("t2", 3.0, t2)})


def _merged(spec, unanswered=(), by_position=()):
    return nbs.Merged(
        spec.source, unanswered=list(unanswered), matched_by_position=list(by_position)
    )


def test_full_marks_leave_the_free_answer_to_a_person(spec):
    scores = score(spec, _merged(spec), _verdict(), Status.GRADED, [])
    assert scores.points == {"t1": 2.0, "t2": 3.0, "m1": None}
    assert scores.needs_review == set() and not scores.flagged
    assert scores.comments == {
        "a1": "hidden tests: 2/2 cases pass",
        "a2": "hidden tests: 3/3 cases pass",
    }


def test_a_failed_hidden_case_costs_its_share_a_failed_visible_one_nothing(spec):
    verdict = _verdict(
        t1=(PASSED, PASSED), t2=(PASSED, FAILED, PASSED), visible=[FAILED]
    )
    scores = score(spec, _merged(spec), verdict, Status.GRADED, [])
    assert scores.points == {"t1": 2.0, "t2": 2.0, "m1": None}
    assert scores.needs_review == set()
    assert scores.comments["a1"].startswith("✗ visible t1_form: form — wrong")
    assert "✗ t2_check: case 1" in scores.comments["a2"]


def test_flagged_withholds_every_auto_graded_point(spec):
    flags = ["the set folder is a symbolic link"]
    scores = score(spec, _merged(spec), _verdict(), Status.FLAGGED, flags)
    assert scores.points == {"t1": 0.0, "t2": 0.0, "m1": None}
    assert scores.needs_review == {"t1", "t2"} and scores.flagged
    grades = scores.grades()
    assert grades.flagged and grades.auto_scores == scores.points
    assert grades.needs_review == {"t1", "t2"}


@pytest.mark.parametrize("status", [Status.CRASHED, Status.TIMED_OUT])
def test_a_test_the_harness_never_reached_awaits_a_person(spec, status):
    verdict = _verdict(t2=(PASSED, MISSING, MISSING))
    scores = score(spec, _merged(spec), verdict, status, [])
    assert scores.points == {"t1": 2.0, "t2": 1.0, "m1": None}
    assert scores.needs_review == {"t2"}


def test_a_graded_run_with_a_missing_record_is_not_sent_to_review(spec):
    verdict = _verdict(t2=(PASSED, MISSING, MISSING))
    scores = score(spec, _merged(spec), verdict, Status.GRADED, [])
    assert scores.points["t2"] == 1.0 and scores.needs_review == set()


def test_an_empty_free_answer_scores_zero_with_a_comment(spec):
    scores = score(
        spec, _merged(spec, unanswered=["m1"]), _verdict(), Status.GRADED, []
    )
    assert scores.points == {"t1": 2.0, "t2": 3.0, "m1": 0.0}
    assert scores.comments["m1"] == "No response."


def test_an_answer_matched_by_position_sends_every_test_to_review(spec):
    merged = _merged(spec, by_position=["a2"])
    scores = score(spec, merged, _verdict(), Status.GRADED, [])
    assert scores.points == {"t1": 2.0, "t2": 3.0, "m1": None}
    assert scores.needs_review == {"t1", "t2"}
    assert scores.comments["a2"].startswith("matched without its cell metadata")
    assert scores.comments["a2"].endswith("hidden tests: 3/3 cases pass")


@pytest.mark.parametrize(
    "status, flags",
    [(Status.CRASHED, []), (Status.FLAGGED, ["a link"]), (Status.GRADER_ERROR, [])],
)
def test_a_notebook_that_did_not_run_scores_zero_every_test_to_review(
    spec, status, flags
):
    scores = score(spec, None, None, status, flags)
    assert scores.points == {"t1": 0.0, "t2": 0.0, "m1": 0.0}
    assert scores.needs_review == {"t1", "t2"}
    assert scores.flagged is bool(flags) and scores.comments == {}


def test_the_gradebook_gets_a_copy(spec):
    scores = score(spec, _merged(spec), _verdict(), Status.GRADED, [])
    grades = scores.grades()
    grades.auto_scores["t1"] = 0.0
    grades.needs_review.add("t2")
    assert scores.points["t1"] == 2.0 and scores.needs_review == set()
