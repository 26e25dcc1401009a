"""The self-check's report, decided without a kernel: a reference counts as
withheld only where this hand-out really lacks it, whatever the kernel says."""

import importlib.util
import io

import nbformat
import pytest

from course_utils.grading import selfcheck
from course_utils.grading.cells import CellResult, CellStatus


def notebook(absent):
    nb = nbformat.v4.new_notebook()
    nb.metadata["course_grading"] = {"absent_modules": absent}
    cell = nbformat.v4.new_code_cell("checks.check('q1', f, cases, reference=ref)")
    cell.metadata["nbgrader"] = {
        "grade": True, "grade_id": "q1_tests", "points": 2, "solution": False,
        "locked": True,
    }  # fmt: skip
    nb.cells.append(cell)
    return nb


def report(cell, withheld):
    out = io.StringIO()
    result = CellResult(0, CellStatus.ERROR, "ReferenceWithheld", "ships later")
    ok = selfcheck._report_test(cell, result, out, withheld)
    return ok, out.getvalue()


def test_installed_reference_is_not_withheld():
    assert not selfcheck.withheld_here(notebook(["course_utils.saliency"]))


def test_absent_reference_is_withheld(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "course_utils.saliency" else real(name, *a),
    )
    assert selfcheck.withheld_here(notebook(["course_utils.saliency"]))


@pytest.mark.parametrize("withheld", [True, False])
def test_a_forged_exception_name_gets_no_circle(withheld):
    cell = notebook(["course_utils.saliency"]).cells[0]
    ok, text = report(cell, withheld)
    if withheld:
        assert ok and text.startswith("○ q1_tests") and "after the deadline" in text
    else:  # the reference is here: a kernel that raises the name gets ✗
        assert not ok and text.startswith("✗ q1_tests (2 pt): ReferenceWithheld")


def test_a_short_answer_gets_a_circle_and_the_reason_not_a_verdict():
    nb = notebook(["course_utils.saliency"])
    cell = nb.cells[0]
    cell.source = 'checks.validate(q3, "bool")\n### BEGIN HIDDEN TESTS\n### END HIDDEN TESTS'
    out = io.StringIO()
    ok = selfcheck._report_test(cell, CellResult(0, CellStatus.OK, "", ""), out, False)
    assert ok and out.getvalue() == (
        "○ q1_tests (2 pt): form ok; right or wrong is shown only after grading\n"
    )
