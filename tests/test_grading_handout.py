"""`course handout DIR`: the student repository.

By default every lecture notebook and all of `course_utils` ship from week one
(copying is detected by `course similarity`); no solutions/, no grading
fixtures or grading tests, no hidden test anywhere, no model answer outside
the course modules. With --withhold: no module a set declares absent from its
grading sandbox (nor what imports one), and no line of any solution block or
hidden test anywhere, until the set's deadline.
"""

from pathlib import Path

import pytest

from course_utils import cli
from course_utils.grading import notebooks as nbs
from course_utils.grading.course import Course
from course_utils.grading.handout import handout, scan, secrets_of

ROOT = Path(__file__).resolve().parents[1]
COURSE = Course.load(ROOT)


@pytest.fixture(scope="module")
def full_repo(tmp_path_factory):
    dest = tmp_path_factory.mktemp("handout") / "full"
    return handout(COURSE, dest), dest


@pytest.fixture(scope="module")
def student_repo(tmp_path_factory):
    dest = tmp_path_factory.mktemp("handout") / "repo"
    return handout(COURSE, dest, withhold=True), dest


def _no_instructor_files(report, dest):
    assert report.written and (dest / "README.md").is_file()
    assert (dest / "exercises").is_dir()
    for gone in (
        "solutions",
        "tests/grading_cases",
        "tests/test_exercises.py",
        "tests/test_exercise_bug_bank.py",
        "gradebook.db",
    ):
        assert not (dest / gone).exists(), gone
    assert not list(dest.glob("tests/test_grading_*.py"))


def test_by_default_every_notebook_and_course_module_ships(full_repo):
    report, dest = full_repo
    _no_instructor_files(report, dest)
    assert report.absent_modules == []
    every = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert sorted(p.name for p in (dest / "notebooks").glob("*.ipynb")) == every
    for module in ("saliency", "sanity", "shapley", "grading/closed_form.py", "reference.py"):
        assert (dest / "course_utils" / module).exists(), module
    assert not any(why.startswith("imports ") for why in report.left_out.values())


def test_the_full_handout_holds_no_hidden_test_and_no_model_answer_outside_the_modules(
    full_repo, tmp_path
):
    _, dest = full_repo
    assert scan(COURSE, dest) == []
    # a model answer pasted into a notebook is found; inside course_utils it is by design
    where, block = next(
        (w, t) for w, t in secrets_of(COURSE, solution_lines=False)
        if "gradients.ipynb q1_answer" in w
    )
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "copied.py").write_text(block)
    assert f"notebooks/copied.py: {where}: {block[:60]}" in scan(COURSE, tmp_path)
    hidden = [t for w, t in secrets_of(COURSE, solutions=False) if "\n" not in t]
    (tmp_path / "course_utils").mkdir()
    (tmp_path / "course_utils" / "leak.py").write_text(hidden[0])
    assert any(f.startswith("course_utils/leak.py") for f in scan(COURSE, tmp_path))


def test_after_deadline_without_withhold_is_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match="--withhold"):
        handout(COURSE, tmp_path / "x", after_deadline=["ps1_gradients"])
    code = cli.main(
        ["handout", str(tmp_path / "y"), "--after-deadline", "ps1_gradients",
         "--root", str(ROOT)]
    )
    assert code == 2 and "--withhold" in capsys.readouterr().err


def test_the_withholding_handout_has_no_instructor_files(student_repo):
    report, dest = student_repo
    _no_instructor_files(report, dest)
    for gone in ("course_utils/saliency", "course_utils/reference.py"):
        assert not (dest / gone).exists(), gone


def test_no_course_module_a_set_keeps_out_of_its_sandbox_ships(student_repo):
    report, dest = student_repo
    absent, withheld = set(), set()
    for set_id in COURSE.sets():
        for path in COURSE.source_notebooks(set_id):
            nb = nbs.read_notebook(path)
            absent.update(nbs.absent_modules(nb))
            withheld.update(nbs.handout_withholds(nb))
    # Captum is a public library students install; the course's own modules stay
    # out, and with every set open that is each one any set leaves out.
    assert set(report.absent_modules) == withheld == {m for m in absent if m != "captum"}
    for module in absent:
        if module.startswith("course_utils."):
            rel = Path(*module.split("."))
            assert not (dest / rel).exists() and not (dest / f"{rel}.py").exists()
    for rel, why in report.left_out.items():
        if why.startswith("imports "):
            assert not (dest / rel).exists()


def test_no_solution_line_or_hidden_test_is_in_the_handout(student_repo):
    _, dest = student_repo
    assert len(secrets_of(COURSE)) > 20
    assert scan(COURSE, dest, withhold=True) == []


def test_the_scan_finds_a_planted_answer(tmp_path):
    hidden = [(w, t) for w, t in secrets_of(COURSE) if "hidden" in t and "\n" not in t]
    where, line = hidden[0]
    (tmp_path / "notes.txt").write_text(f"copied:\n    {line}\n")
    for withhold in (True, False):
        found = scan(COURSE, tmp_path, withhold=withhold)
        assert f"notes.txt: {where}: {line[:60]}" in found


def test_handout_command_refuses_an_existing_folder(tmp_path, capsys):
    code = cli.main(["handout", str(tmp_path), "--root", str(ROOT)])
    assert code == 2 and "already exists" in capsys.readouterr().err


def test_after_the_deadline_a_sets_modules_ship(tmp_path):
    report = handout(COURSE, tmp_path / "late", after_deadline=COURSE.sets(), withhold=True)
    assert report.absent_modules == []
    assert (tmp_path / "late" / "course_utils" / "saliency").is_dir()


def test_modules_and_notebooks_ship_in_lecture_order_after_deadlines(tmp_path):
    """After ps1–ps3 the saliency notebooks ship, after every set all of them;
    answers of closed sets are not reported as leaks, open sets' still are."""
    sets = COURSE.sets()
    early = sets[:3]
    dest = tmp_path / "early"
    report = handout(COURSE, dest, early, withhold=True)
    shipped = {p.name[:2] for p in (dest / "notebooks").glob("*.ipynb")}
    assert {"00", "01", "02", "03"} <= shipped and "10" not in shipped
    assert "course_utils.saliency" not in report.absent_modules
    assert (dest / "course_utils" / "saliency").is_dir()
    assert scan(COURSE, dest, early, withhold=True) == []
    # ps1–ps3 answers are in course_utils.saliency
    assert scan(COURSE, dest, (), withhold=True) != []
    handout(COURSE, tmp_path / "late", sets, withhold=True)
    every = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert sorted(
        p.name for p in (tmp_path / "late" / "notebooks").glob("*.ipynb")
    ) == (every)
    assert scan(COURSE, tmp_path / "late", sets, withhold=True) == []


def test_a_set_whose_references_shipped_earlier_holds_nothing_back(tmp_path):
    """ps6 grades Grad-CAM against course_utils.saliency and leaves it (and sanity)
    out of its sandbox, but they ship after ps1–ps4: ps6 open does not hold them back."""
    (ps6,) = COURSE.source_notebooks("ps6_photos")
    nb = nbs.read_notebook(ps6)
    assert {"course_utils.saliency", "course_utils.sanity"} <= set(nbs.absent_modules(nb))
    assert nbs.handout_withholds(nb) == []
    sets = COURSE.sets()
    report = handout(COURSE, tmp_path / "ps6-open", sets[:5], withhold=True)
    assert sets[5] == "ps6_photos" and report.absent_modules == []
    assert (tmp_path / "ps6-open" / "course_utils" / "saliency" / "grad_cam.py").is_file()
    assert (tmp_path / "ps6-open" / "notebooks" / "11_real_photos.ipynb").is_file()
    # ps6's open answers are still scanned for: none of them is in what ships
    assert any("photos.ipynb" in where for where, _ in secrets_of(COURSE, sets[:5]))
    assert scan(COURSE, tmp_path / "ps6-open", sets[:5], withhold=True) == []
