"""The problem sets: well formed, released faithfully, and graded right by their hidden tests.

* exercises/ is exactly what `course release` makes from solutions/ today, and
  holds no solution code and no hidden test;
* every solution notebook is an nbgrader notebook whose cells all have ids,
  with points in the metadata, and each set asks coding questions, short
  answers (a number, TRUE/FALSE, a letter) and a free answer;
* graded for real (reference run, sandboxed kernel, clean verdict), each
  solution earns every auto-graded point and the untouched exercise none.

The solution notebooks themselves run under nbval in `make test` (plain mode:
visible and hidden tests against course_utils).
"""

import re
import shutil
from pathlib import Path

import nbformat
import pytest

from course_utils import cli
from course_utils.grading import notebooks as nbs
from course_utils.grading import sandbox
from course_utils.grading.course import Course
from course_utils.grading.grade import GradeOptions, Status, grade
from course_utils.grading.release import leaks

ROOT = Path(__file__).resolve().parents[1]
COURSE = Course.load(ROOT)
SETS = COURSE.sets()
SOURCES = [p for s in SETS for p in COURSE.source_notebooks(s)]


def test_there_are_six_problem_sets_following_the_lecture():
    assert SETS == [
        "ps1_gradients",
        "ps2_integrated_gradients",
        "ps3_smoothgrad_occlusion",
        "ps4_sanity_checks",
        "ps5_shapley",
        "ps6_photos",
    ]


def test_committed_exercises_are_a_fresh_release(capsys):
    code = cli.main(["release", "--check", "--root", str(ROOT)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"exercises up to date ({len(SOURCES)} file(s))" in out


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.parent.name)
def test_no_solution_or_hidden_test_in_the_exercise(source):
    released = COURSE.release / source.parent.name / source.name
    text = released.read_text()
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "_hidden"):
        assert marker not in text
    assert leaks(nbs.read_notebook(source), nbs.read_notebook(released)) == []


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.parent.name)
def test_solution_notebooks_are_nbgrader_notebooks(source):
    nb = nbs.read_notebook(source)
    ids = [nbs.grade_id(c) for c in nb.cells]
    assert None not in ids and len(set(ids)) == len(ids)
    for cell in nb.cells:
        meta = nbs.meta(cell)
        assert meta.get("schema_version") == 3
        if not nbs.is_answer(cell):
            assert meta.get("locked"), f"{meta['grade_id']} should be read-only"
        if nbs.is_graded(cell):
            assert nbs.points(cell) > 0
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    tests = [c for c in nb.cells if nbs.is_autograded_test(c)]
    assert all(re.search(r"checks\.check(_value)?\(", c.source) for c in tests)
    assert all("BEGIN HIDDEN TESTS" in c.source for c in tests)


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.parent.name)
def test_each_set_has_every_kind_of_question(source):
    nb = nbs.read_notebook(source)
    text = "\n".join(c.source for c in nb.cells if nbs.is_autograded_test(c))
    assert re.search(r"checks\.check\(\s*\"\w+_hidden\"", text), "a coding question"
    for kind in ("number", "bool", "choice"):
        assert f'"{kind}"' in text, f"a {kind} short answer"
    assert any(nbs.is_manual(c) and c.cell_type == "markdown" for c in nb.cells), (
        "a free answer graded by hand"
    )


@pytest.mark.slow
@pytest.mark.skipif(not sandbox.detect().usable, reason="no OS sandbox here")
@pytest.mark.parametrize("set_id", SETS)
def test_hidden_tests_give_the_solution_full_marks(set_id, tmp_path):
    root = tmp_path / "course"
    shutil.copytree(COURSE.source / set_id, root / "solutions" / set_id)
    course = Course.load(root)
    (source,) = course.source_notebooks(set_id)
    submissions = tmp_path / "submitted"
    for student, notebook in [
        ("perfect", source),
        ("blank", COURSE.release / set_id / source.name),
    ]:
        folder = submissions / student / set_id
        folder.mkdir(parents=True)
        (folder / notebook.name).write_bytes(notebook.read_bytes())
    summary = grade(
        course,
        set_id,
        submissions,
        GradeOptions(workers=2, progress=False, sandbox_uid=64400),
    )
    perfect, blank = sorted(summary.results, key=lambda r: r.student != "perfect")
    tests = {
        nbs.grade_id(c): nbs.points(c)
        for c in nbs.read_notebook(source).cells
        if nbs.is_autograded_test(c)
    }
    (scores,) = [nb.scores for nb in perfect.notebooks.values()]
    assert perfect.status is Status.GRADED, perfect.details
    assert {g: v for g, v in scores.items() if g in tests} == tests
    assert blank.status is Status.GRADED, blank.details
    (blank_scores,) = [nb.scores for nb in blank.notebooks.values()]
    assert all(v == 0 for v in blank_scores.values())
    graded = nbformat.read(
        course.autograded / "perfect" / set_id / source.name, as_version=4
    )
    assert "verified outside your kernel" in str(graded.cells)


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.parent.name)
def test_header_gives_the_readme_self_check_command(source):
    """The exercise header and the README tell a student the same command."""
    readme = (ROOT / "README.md").read_text()
    assert "`course check exercises/ps1_gradients/gradients.ipynb`" in readme
    header = nbs.read_notebook(source).cells[0].source
    command = f"`course check exercises/{source.parent.name}/{source.name}`"
    assert command in header, f"{source.parent.name}: header lacks {command}"


FIXED_LAYER_GRAD_CAM = '''
def grad_cam(model, x, target, layer):
    recorded = {}
    handle = model._relu_head.register_forward_hook(
        lambda module, inputs, output: recorded.update(A=output))
    try:
        logits = model(x.detach().clone().requires_grad_(True))
        score = logits.gather(1, torch.as_tensor(target).expand(len(x))[:, None]).sum()
        (dA,) = torch.autograd.grad(score, recorded["A"])
    finally:
        handle.remove()
    cam = (dA.mean(dim=(2, 3), keepdim=True) * recorded["A"]).sum(dim=1, keepdim=True)
    return torch.relu(cam).detach()
'''


@pytest.mark.slow
@pytest.mark.skipif(not sandbox.detect().usable, reason="no OS sandbox here")
def test_ps6_hidden_tests_on_other_layers_and_a_wrong_number_cost_points(tmp_path):
    """Graded in the sandbox (the photo model's weights come from the environment):
    a Grad-CAM that ignores `layer` passes only the hidden cases at `_relu_head`
    (2 of 5) and makes Q3 (computed with it at `_blocks.10`) come out TRUE, and a
    wrong cascade number scores nothing."""
    set_id = "ps6_photos"
    root = tmp_path / "course"
    shutil.copytree(COURSE.source / set_id, root / "solutions" / set_id)
    course = Course.load(root)
    (source,) = course.source_notebooks(set_id)
    nb = nbformat.read(source, as_version=4)
    for cell in nb.cells:
        if nbs.grade_id(cell) == "q1_answer":
            cell.source = FIXED_LAYER_GRAD_CAM.strip()
        elif nbs.grade_id(cell) == "q2_answer":
            cell.source = "q2 = 0.5"
    folder = tmp_path / "submitted" / "wrong" / set_id
    folder.mkdir(parents=True)
    nbformat.write(nb, folder / source.name)
    summary = grade(
        course,
        set_id,
        tmp_path / "submitted",
        GradeOptions(workers=1, progress=False, sandbox_uid=64400),
    )
    (result,) = summary.results
    assert result.status is Status.GRADED, result.details
    (scores,) = [n.scores for n in result.notebooks.values()]
    assert {k: scores[k] for k in ("q1_tests", "q2_tests", "q3_tests", "q4_tests")} == {
        "q1_tests": 1.6, "q2_tests": 0, "q3_tests": 0, "q4_tests": 1}


def test_ps6_answers_may_import_the_photos_but_not_the_references():
    """The header allows the photo model and the photos; the review agrees."""
    from course_utils.grading.static import Policy, scan_sources

    (source,) = COURSE.source_notebooks("ps6_photos")
    nb = nbs.read_notebook(source)
    policy = Policy.from_metadata(nb.metadata)
    ok = "from course_utils import photos, photo_model\nimport course_utils.photos as ph\n"
    assert scan_sources([("answer", ok)], [], policy) == []
    for module in ("saliency", "sanity"):
        (finding,) = scan_sources([("answer", f"from course_utils import {module}\n")],
                                  [], policy)
        assert finding.category == "reference"
    assert "`photo_model`, `photos`" in nb.cells[0].source


SHORT_ANSWER_RULE = (
    "**Short answers** (a number, TRUE/FALSE, a letter) are checked now only for their form\n"
    "(○ form ok), never for right or wrong"
)


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.parent.name)
def test_header_and_readme_say_why_short_answers_are_not_judged(source):
    """One rule for every set: no right/wrong before grading, and why (README)."""
    readme = " ".join((ROOT / "README.md").read_text().split())
    rule = " ".join(SHORT_ANSWER_RULE.split())
    assert rule in readme and "would have to carry the answer" in readme
    header = nbs.read_notebook(source).cells[0].source
    assert SHORT_ANSWER_RULE in header, f"{source.parent.name}: header lacks the rule"
    assert "would have to carry the" in header
