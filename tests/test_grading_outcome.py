"""The grader's own decisions, without kernels: discovery, outcome, formgrader output."""

import os

import nbformat

from course_utils.grading import grade
from course_utils.grading.discover import (
    Unusable,
    discover,
    read_submission,
    read_timestamp,
)
from course_utils.grading.execute import RunResult
from course_utils.grading.formgrader import sanitize_for_formgrader
from course_utils.grading.outcome import Status, outcome, worst_status
from course_utils.grading.sandbox import SandboxLimits


def test_every_folder_is_a_student_and_links_are_flagged_not_followed(tmp_path):
    subs = tmp_path / "submitted"
    solutions = tmp_path / "solutions" / "tiny"
    solutions.mkdir(parents=True)
    for name in ("ada", "José Núñez", "with space"):
        (subs / name / "tiny").mkdir(parents=True)
    os.symlink(subs / "ada", subs / "mirror")
    (subs / "copycat").mkdir()
    os.symlink("../ada/tiny", subs / "copycat" / "tiny")
    (subs / "insider").mkdir()
    os.symlink(solutions, subs / "insider" / "tiny")
    (subs / "notes.txt").write_text("not a student")
    found, skipped = discover(subs, "tiny", None, [tmp_path / "solutions"])
    assert set(found) == {
        "ada",
        "José Núñez",
        "with space",
        "mirror",
        "copycat",
        "insider",
    }
    assert found["José Núñez"].folder == subs / "José Núñez" / "tiny"
    for name in ("mirror", "copycat", "insider"):
        assert found[name].folder is None and "symbolic link" in found[name].flags[0]
    assert (
        "inside" in found["insider"].flags[0]
        and str(solutions) in found["insider"].flags[0]
    )
    assert skipped == ["notes.txt: not a folder"]


def test_a_bad_timestamp_is_that_students_note_only(tmp_path):
    (tmp_path / "timestamp.txt").write_text("the 31st of Smarch")
    stamp, why = read_timestamp(tmp_path)
    assert stamp is None and why.startswith("timestamp.txt ignored")
    (tmp_path / "timestamp.txt").write_text("2026-12-01 10:00:00.000000 UTC")
    assert read_timestamp(tmp_path) == ("2026-12-01 10:00:00.000000 UTC", "")


def _run(status="completed", timeouts=0, memory=False):
    return RunResult(status, "", [], {}, 1.0, "", timeouts, memory)


def test_one_outcome_function_decides_from_typed_facts():
    assert outcome(_run(), None, []) is Status.GRADED
    assert outcome(_run(), None, ["a link"]) is Status.FLAGGED
    assert outcome(_run(timeouts=1), None, []) is Status.TIMED_OUT
    assert outcome(_run("timed out"), None, []) is Status.TIMED_OUT
    assert outcome(_run("crashed"), None, []) is Status.CRASHED
    assert outcome(_run(memory=True), None, []) is Status.CRASHED
    assert outcome(None, None, []) is Status.CRASHED
    assert (
        worst_status([Status.GRADED, Status.GRADER_ERROR, Status.FLAGGED])
        is Status.GRADER_ERROR
    )
    assert worst_status([Status.MISSING]) is Status.MISSING
    assert worst_status([Status.GRADED, Status.MISSING]) is Status.MISSING
    assert worst_status([Status.CRASHED, Status.MISSING]) is Status.CRASHED


def test_a_full_tmp_is_the_submissions_crash_not_a_grader_error():
    """execute's typed `disk_full` (absent from older RunResults) means "crashed"."""
    full = _run()
    full.disk_full = True  # what execute sets when the sandbox's /tmp is full
    assert outcome(full, None, []) is Status.CRASHED
    assert outcome(full, None, ["a link"]) is Status.FLAGGED
    assert not hasattr(_run(), "disk_full") or not _run().disk_full
    assert outcome(_run(), None, []) is Status.GRADED
    limits = SandboxLimits(tmpfs_bytes=256 * 2**20)
    assert grade.out_of_space(limits) == "ran out of space in /tmp (256 MiB)"


def test_formgrader_gets_text_and_images_only():
    code = nbformat.v4.new_code_cell("x")
    code.outputs = [
        nbformat.v4.new_output(
            "display_data",
            data={
                "text/html": "<script>alert(1)</script>",
                "application/javascript": "alert(2)",
                "image/svg+xml": "<svg onload=alert(3)>",
                "text/plain": "<Evil>",
            },
        ),
        nbformat.v4.new_output("display_data", data={"text/html": "<b>only</b>"}),
        nbformat.v4.new_output("stream", name="stdout", text="hello"),
    ]
    answer = nbformat.v4.new_markdown_cell(
        "<img src=x onerror=alert(4)> [a](javascript:x)"
    )
    answer.metadata["nbgrader"] = {"grade_id": "q", "solution": True}
    text = nbformat.v4.new_markdown_cell("<b>the instructor's</b>")
    text.metadata["nbgrader"] = {"grade_id": "t", "locked": True}
    nb = nbformat.v4.new_notebook(cells=[code, answer, text])
    sanitize_for_formgrader(nb)
    assert [o.get("data", {}) for o in code.outputs] == [{"text/plain": "<Evil>"}, {}]
    assert "<img" not in answer.source and "javascript:" not in answer.source
    assert text.source == "<b>the instructor's</b>"


def test_a_notebook_link_is_flagged_a_missing_one_is_missing(tmp_path):
    (tmp_path / "ada").mkdir()
    found, _ = discover(tmp_path, "tiny", None)
    folder = tmp_path / "ada"
    nbformat.write(nbformat.v4.new_notebook(), folder / "real.ipynb")
    os.symlink(folder / "real.ipynb", folder / "linked.ipynb")
    os.link(folder / "real.ipynb", folder / "shared.ipynb")
    (folder / "broken.ipynb").write_text("{not json")
    entry = found["ada"]
    linked = read_submission(entry, "linked")
    assert linked.status is Status.FLAGGED and "symbolic link" in linked.flags[0]
    shared = read_submission(entry, "shared")
    assert shared.status is Status.FLAGGED and "hard link" in shared.flags[0]
    absent = read_submission(entry, "gone")
    where = f"{tmp_path.name}/ada"
    assert absent == Unusable(Status.MISSING, f"no gone.ipynb in {where}/")
    assert read_submission(entry, "broken").status is Status.CRASHED
    os.unlink(folder / "shared.ipynb")
    assert isinstance(read_submission(entry, "real"), nbformat.NotebookNode)


def test_every_public_name_is_still_importable_from_grade():
    for name in grade.__all__:
        assert getattr(grade, name) is not None, name
    assert grade.Status is Status and grade.discover is discover
