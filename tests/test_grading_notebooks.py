"""A submission is graded as the instructor's notebook plus the student's answers."""

import copy
import sys
from pathlib import Path

import nbformat
import pytest

from course_utils.grading import notebooks as nbs
from course_utils.grading.course import Course, generate

CASES = Path(__file__).parent / "grading_cases"
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(CASES))
import build


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    source_path = CASES / "course" / "solutions" / "tiny" / "tiny.ipynb"
    out = tmp_path_factory.mktemp("release")
    (released_path,) = generate(Course.load(CASES / "course"), "tiny", out)
    return nbs.read_notebook(source_path), nbs.read_notebook(released_path)


def by_id(nb):
    return {nbs.grade_id(c): c for c in nb.cells if nbs.grade_id(c)}


def test_answers_come_from_the_student_and_tests_from_the_source(tiny):
    source, released = tiny
    sub = build.build(released, (CASES / "correct.cells").read_text(), {})
    tests = by_id(sub)["q1_tests"]
    tests.source = "pass  # the student 'fixed' the tests"
    tests.outputs = [nbformat.v4.new_output("stream", name="stdout", text="✓ all good")]
    merged = nbs.merge(source, released, sub)
    cells = by_id(merged.nb)
    assert (
        "BEGIN HIDDEN TESTS" in cells["q1_tests"].source
    )  # restored, with hidden tests
    assert "torch.autograd.grad" in cells["q1_answer"].source
    assert all(c.get("outputs", []) == [] for c in merged.nb.cells)
    assert [w for w, _ in merged.untrusted] == ["cell 'q1_answer'", "cell 'q2_answer'"]
    assert merged.unanswered == []


def test_deleted_and_added_cells(tiny):
    source, released = tiny
    case = "# %% -q1_tests\n# %% -q2_answer\n# %% +code\nprint('scratch')\n"
    merged = nbs.merge(source, released, build.build(released, case, {}))
    order = [nbs.grade_id(c) or "added" for c in merged.nb.cells]
    assert [g for g in order if g != "added"] == [nbs.grade_id(c) for c in source.cells]
    assert order.count("added") == 1  # deleted cells restored in place, scratch kept
    assert ("added cell 1", "print('scratch')") in merged.untrusted
    assert "q2_answer" in merged.unanswered and "q3_answer" in merged.unanswered
    assert any("q2_answer" in note for note in merged.notes)


@pytest.mark.parametrize("where", [1, -1], ids=["before the original", "after it"])
def test_a_copied_test_cell_never_runs_as_trusted_code(tiny, where):
    source, released = tiny
    sub = copy.deepcopy(released)
    dup = copy.deepcopy(by_id(sub)["q1_tests"])
    dup.source = "torch.allclose = lambda *a: True"
    sub.cells.insert(where if where > 0 else len(sub.cells), dup)
    merged = nbs.merge(source, released, sub)
    trusted_ids = [nbs.grade_id(c) for c in merged.nb.cells]
    assert trusted_ids.count("q1_tests") == 1
    assert by_id(merged.nb)["q1_tests"].source == by_id(source)["q1_tests"].source
    ran = [c.source for c in merged.nb.cells]
    if "torch.allclose = lambda *a: True" in ran:  # kept only as student code
        assert ("added cell 1", "torch.allclose = lambda *a: True") in merged.untrusted


def test_unreadable_notebooks_are_reported(tmp_path):
    bad = tmp_path / "bad.ipynb"
    bad.write_text("{ not json")
    with pytest.raises(ValueError, match="not a readable notebook"):
        nbs.read_notebook(bad)
    huge = tmp_path / "huge.ipynb"
    huge.write_bytes(b" " * 100)
    with pytest.raises(ValueError, match="more than"):
        nbs.read_notebook(huge, max_bytes=10)


def _nested_notebook(depth, size=2 * 2**20):
    """About `size` bytes of code cells whose metadata nests `depth` objects."""
    meta = '{"a":' * depth + "1" + "}" * depth
    cell = (
        '{"cell_type":"code","execution_count":null,"id":"c%d",'
        '"metadata":{"x":%s},"outputs":[],"source":"x = 1"}'
    )
    cells, total = [], 0
    while total < size:
        cells.append(cell % (len(cells), meta))
        total += len(cells[-1])
    return (
        '{"cells":[' + ",".join(cells) + '],"metadata":{},'
        '"nbformat":4,"nbformat_minor":5}'
    )


def test_json_limits_are_checked_before_parsing():
    nbs.check_json_limits(b"[" * 64 + b"]" * 64)
    with pytest.raises(ValueError, match="nested deeper than 64 levels"):
        nbs.check_json_limits(b"[" * 65 + b"]" * 65)
    # brackets inside strings (escaped quotes too) are text, not nesting
    nbs.check_json_limits(b'["' + b'[{\\"' * 100 + b'"]')
    with pytest.raises(ValueError, match="more than 3 JSON values"):
        nbs.check_json_limits(b'[[],"a",{}]', max_values=3)
    with pytest.raises(ValueError, match="string longer than 4 bytes"):
        nbs.check_json_limits(b'["abcde"]', max_string=4)
    nbs.check_json_limits(b"{ not json")  # json.loads says why next


def test_a_notebook_past_a_limit_is_unreadable_and_says_which(tmp_path):
    deep = tmp_path / "deep.ipynb"
    deep.write_text(_nested_notebook(100, size=10_000))
    with pytest.raises(ValueError, match="not a readable notebook: JSON nested"):
        nbs.read_notebook(deep, student=True)
    many = tmp_path / "many.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x") for _ in range(nbs.MAX_CELLS + 1)]
    nbformat.write(nb, many)
    with pytest.raises(ValueError, match=f"more than {nbs.MAX_CELLS} cells"):
        nbs.read_notebook(many)
    nb.cells = nb.cells[: nbs.MAX_CELLS]
    nbformat.write(nb, many)
    assert len(nbs.read_notebook(many).cells) == nbs.MAX_CELLS


def test_a_submission_keeps_only_what_the_merge_needs(tmp_path, tiny):
    source, released = tiny
    sub = build.build(released, (CASES / "correct.cells").read_text(), {})
    sub.metadata["huge"] = {"a": [1, 2, 3]}
    for cell in sub.cells:
        cell.metadata["x"] = {"deep": {"er": [1]}}
        if cell.cell_type == "code":
            cell.outputs = [nbformat.v4.new_output("stream", text="out")]
        if nbs.grade_id(cell):
            cell.metadata.nbgrader["extra"] = {"nested": True}
    path = tmp_path / "sub.ipynb"
    nbformat.write(sub, path)
    read = nbs.read_notebook(path, student=True)
    assert read.metadata == {}
    for before, after in zip(sub.cells, read.cells, strict=True):
        assert after.source == before.source
        kept = {k: v for k, v in nbs.meta(before).items() if k != "extra"}
        assert after.metadata == ({"nbgrader": kept} if kept else {})
        if after.cell_type == "code":
            assert after.outputs == [] and after.execution_count is None
    plain = nbs.merge(source, released, sub).nb
    assert nbs.merge(source, released, read).nb == plain  # the same graded notebook
    assert nbs.read_notebook(path).cells[0].metadata["x"]  # the instructor's: all


def test_a_deeply_nested_submission_costs_the_grader_no_memory(tmp_path):
    """2 MiB of nested cell metadata: refused before parsing, in a child whose
    peak RSS is measured (before this limit, the same read, merge and write
    peaked at about 1.2 GB)."""
    path = tmp_path / "tiny.ipynb"
    path.write_text(_nested_notebook(300))
    honest = tmp_path / "honest.ipynb"
    nbformat.write(
        nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")]), honest
    )
    source = CASES / "course" / "solutions" / "tiny" / "tiny.ipynb"
    script = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "import nbformat\n"
        "from course_utils.grading import notebooks as nbs\n"
        "src = nbs.read_notebook(Path(sys.argv[2]))\n"
        "try:\n"
        "    sub = nbs.read_notebook(Path(sys.argv[1]), student=True)\n"
        "    nbformat.writes(nbs.merge(src, src, sub).nb)\n"
        "    print('read')\n"
        "except ValueError as exc:\n"
        "    print('refused:', exc)\n"
        # ru_maxrss survives exec (it would be pytest's): the peak of this
        # process's own memory is VmHWM
        "hwm = [x for x in open('/proc/self/status') if x.startswith('VmHWM')]\n"
        "print(int(hwm[0].split()[1]) // 1024 if hwm else\n"
        "      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n"
    )

    def child(nb_path):
        import subprocess

        out = subprocess.run(
            [sys.executable, "-c", script, str(nb_path), str(source)],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
        ).stdout.splitlines()
        return out[0], int(out[-1])

    verdict, peak = child(path)
    assert verdict == (
        "refused: tiny.ipynb is not a readable notebook: "
        f"JSON nested deeper than {nbs.MAX_JSON_DEPTH} levels"
    )
    baseline = child(honest)
    assert baseline[0] == "read"
    print(f"peak RSS: honest {baseline[1]} MiB, nested metadata {peak} MiB")
    assert peak < baseline[1] + 100  # MiB; the same path took ~1,100 MiB more


def test_answers_whose_metadata_was_lost_are_matched_and_marked(tiny):
    source, released = tiny
    sub = build.build(released, (CASES / "correct.cells").read_text(), {})
    answers = {g: c.source for g, c in by_id(sub).items() if g.endswith("_answer")}
    for cell in sub.cells:
        cell.metadata = {}
    merged = nbs.merge(source, released, sub)
    cells = by_id(merged.nb)
    assert sorted(merged.matched_by_position) == sorted(answers)
    for gid, text in answers.items():
        assert cells[gid].source == text  # the student's work, never the stub
    assert merged.unanswered == []
    assert any("lost its metadata" in note for note in merged.notes)


def test_planned_checks_are_read_from_the_test_cells(tiny):
    source, _ = tiny
    cells = by_id(source)
    planned = nbs.planned_checks(cells["q1_tests"])
    assert [(p.name, p.expr, p.kind, p.hidden) for p in planned] == [
        ("q1_visible", "gradient_saliency", "arrays", False),
        ("q1_hidden", "gradient_saliency", "arrays", True),
    ]
    (value,) = nbs.planned_checks(cells["q2_tests"])
    assert (value.name, value.expr, value.kind, value.hidden) == (
        "q2_passes",
        "n_passes",
        "value",
        True,
    )


def test_a_set_declares_what_its_sandbox_leaves_out(tiny):
    source, _ = tiny
    assert "course_utils.saliency" in nbs.absent_modules(source)
    bad = copy.deepcopy(source)
    bad.metadata["course_grading"] = {"absent_modules": "captum"}
    with pytest.raises(ValueError, match="absent_modules must be a list"):
        nbs.absent_modules(bad)
    bad.metadata["course_grading"] = {"absent_modules": ["course_utils.models"]}
    with pytest.raises(ValueError, match="only modules that compute answers"):
        nbs.absent_modules(bad)


def test_a_set_declares_what_the_handout_holds_back(tiny):
    source, _ = tiny
    absent = [m for m in nbs.absent_modules(source) if m.startswith("course_utils.")]
    assert absent and nbs.handout_withholds(source) == absent  # the default
    nb = copy.deepcopy(source)
    nb.metadata["course_grading"] = {
        "absent_modules": ["course_utils.saliency", "captum"], "handout_withholds": []}
    assert nbs.handout_withholds(nb) == []
    nb.metadata["course_grading"]["handout_withholds"] = "course_utils.saliency"
    with pytest.raises(ValueError, match="handout_withholds must be a list"):
        nbs.handout_withholds(nb)
    nb.metadata["course_grading"]["handout_withholds"] = ["course_utils.sanity"]
    with pytest.raises(ValueError, match="only course modules of absent_modules"):
        nbs.handout_withholds(nb)
    nb.metadata["course_grading"]["handout_withholds"] = ["captum"]
    with pytest.raises(ValueError, match="only course modules of absent_modules"):
        nbs.handout_withholds(nb)


def test_one_list_of_the_modules_that_compute_answers():
    from course_utils.grading import checks, static, withheld

    assert checks.DEFAULT_FORBID is withheld.REFERENCE_MODULES
    for module in withheld.REFERENCE_MODULES:
        assert static.FORBIDDEN_IMPORTS[module] == "reference"
        assert checks._withheld(ModuleNotFoundError(name=module + ".x"))
    assert not checks._withheld(ModuleNotFoundError(name="course_utils.models"))
    blank = nbformat.v4.new_notebook()
    assert nbs.absent_modules(blank) == list(withheld.REFERENCE_MODULES)
    # every set withholds a part of that list, checked when its metadata is read
    for path in sorted((ROOT / "solutions").glob("*/*.ipynb")):
        assert set(nbs.absent_modules(nbs.read_notebook(path))) <= set(
            withheld.REFERENCE_MODULES
        ), path


def test_the_kernel_boots_with_what_the_instructors_cells_import():
    from course_utils.grading.execute import BOOT_MODULES, boot_modules

    locked = nbformat.v4.new_code_cell(
        "%matplotlib inline\nimport torch.nn as nn\nfrom course_utils import data, models"
    )
    locked.metadata["nbgrader"] = {"grade_id": "setup", "locked": True}
    answer = nbformat.v4.new_code_cell("import scipy.stats\nfrom pandas import *")
    answer.metadata["nbgrader"] = {"grade_id": "a1", "solution": True}
    lost = nbformat.v4.new_code_cell(
        "import antigravity"
    )  # metadata lost: the student's
    test = nbformat.v4.new_code_cell(
        "checks.check('q', f, cases, None)\n### BEGIN HIDDEN TESTS\n"
        "from course_utils.shapley import exact\n### END HIDDEN TESTS"
    )
    test.metadata["nbgrader"] = {"grade_id": "t1", "grade": True, "points": 1}
    nb = nbformat.v4.new_notebook(cells=[locked, answer, lost, test])
    names = boot_modules(nb)
    assert names[: len(BOOT_MODULES)] == list(BOOT_MODULES)
    assert {
        "torch.nn",
        "course_utils",
        "course_utils.data",
        "course_utils.models",
    } <= set(names)
    assert not {"scipy.stats", "pandas", "antigravity", "matplotlib.pyplot"} & set(
        names
    )
    # the hidden tests never run in the kernel: nothing of them is named at boot
    assert not [n for n in names if "shapley" in n]
    assert len(names) == len(set(names))
