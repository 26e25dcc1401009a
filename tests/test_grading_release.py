"""`course release`: faithful, leak-free, and never overwrites a student's work."""

import shutil
from pathlib import Path

import nbformat
import pytest

from course_utils.grading import notebooks as nbs
from course_utils.grading.course import Course
from course_utils.grading.release import leaks, looks_edited, release

TINY = Path(__file__).parent / "grading_cases" / "course"


@pytest.fixture
def course(tmp_path):
    shutil.copytree(TINY / "solutions", tmp_path / "solutions")
    return Course.load(tmp_path)


def test_release_writes_then_reports_up_to_date(course):
    first = release(course)
    assert [p.name for p in first.changed] == ["tiny.ipynb"] and not first.leaks
    again = release(course, check=True)
    assert again.up_to_date and again.changed == []


def test_check_reports_a_stale_release_without_writing(course):
    release(course)
    source = course.source / "tiny" / "tiny.ipynb"
    nb = nbformat.read(source, as_version=4)
    nb.cells[0].source += "\n\nA new sentence."
    nbformat.write(nb, source)
    target = course.release / "tiny" / "tiny.ipynb"
    before = target.read_bytes()
    report = release(course, check=True)
    assert report.changed == [target] and target.read_bytes() == before
    assert release(course).changed == [target] and target.read_bytes() != before


def test_a_notebook_a_student_worked_in_is_not_overwritten(course):
    release(course)
    target = course.release / "tiny" / "tiny.ipynb"
    nb = nbformat.read(target, as_version=4)
    answer = next(c for c in nb.cells if nbs.grade_id(c) == "q2_answer")
    answer.source = "n_passes = 5  # my work"
    nbformat.write(nb, target)
    assert looks_edited(target)
    source = course.source / "tiny" / "tiny.ipynb"
    src = nbformat.read(source, as_version=4)
    src.cells[0].source += "\n\nUpdated."
    nbformat.write(src, source)
    report = release(course)
    assert report.refused == [target]
    assert "my work" in target.read_text()
    forced = release(course, force=True)
    assert forced.changed == [target] and len(forced.backups) == 1
    assert "my work" in forced.backups[0].read_text()
    assert "my work" not in target.read_text()


def test_leaks_are_found():
    source = nbs.read_notebook(TINY / "solutions" / "tiny" / "tiny.ipynb")
    found = leaks(source, source)  # "releasing" the instructor's notebook as is
    assert any("BEGIN SOLUTION" in f for f in found)
    assert any("torch.autograd.grad(logits" in f for f in found)
    assert any("q1_hidden" in f for f in found)


def test_unknown_sets_are_named(course):
    with pytest.raises(ValueError, match=r"SET must be one of \['tiny'\]"):
        release(course, ["nope"])
