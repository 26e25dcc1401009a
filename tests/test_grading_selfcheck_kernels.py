"""`course check` without fork (Windows): a kernel launched as a child process.

The self-check forks its kernels from a warm helper where the OS can fork.
Windows cannot, so there it launches the kernel as a plain child process
(jupyter_client's launcher: a Win32 event interrupts it there, SIGINT here).
Both kernels must give a student the same report, the same deadlines and the
same untouched notebook; this runs the launched one on Linux so it cannot rot.
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest

from course_utils.grading.course import Course
from course_utils.grading.release import release
from course_utils.grading.selfcheck import self_check

CASES = Path(__file__).parent / "grading_cases"
sys.path.insert(0, str(CASES))
import build

WRONG = (
    "# %% q1_answer\n"
    "def gradient_saliency(model, x, target):\n    return x\n"
    "# %% q2_answer\nn_passes = 5\n"
)
LOOP = (
    "# %% q1_answer\n"
    "def gradient_saliency(model, x, target):\n    return x\n\n\n"
    "while True:\n    pass\n"
    "# %% q2_answer\nn_passes = 5\n"
)


@pytest.fixture(scope="module")
def released():
    root = Path(tempfile.mkdtemp(prefix="course-selfcheck-"))
    shutil.copytree(CASES / "course" / "solutions", root / "solutions")
    course = Course.load(root)
    release(course)
    yield nbformat.read(course.release / "tiny" / "tiny.ipynb", as_version=4)
    shutil.rmtree(root, ignore_errors=True)


def check(released, case, tmp_path, capsys, kernel, timeout=60):
    path = tmp_path / f"mine-{kernel}.ipynb"
    nbformat.write(build.build(released, case, {}), path)
    before = path.read_bytes()
    code = self_check(path, cell_timeout=timeout, kernel=kernel)
    out = capsys.readouterr().out
    assert path.read_bytes() == before  # the student's file is never modified
    return code, out.replace(str(path), "NOTEBOOK")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="compares with the fork kernel")
def test_launched_kernel_reports_as_the_forked_one(released, tmp_path, capsys):
    forked = check(released, WRONG, tmp_path, capsys, "fork")
    launched = check(released, WRONG, tmp_path, capsys, "process")
    assert launched == forked
    code, out = launched
    assert code == 1 and "✗ q1_tests" in out and "Hint:" in out
    assert "○ q2_tests (1 pt): form ok" in out


def test_launched_kernel_interrupts_a_cell_past_its_deadline(released, tmp_path, capsys):
    code, out = check(released, LOOP, tmp_path, capsys, "process", timeout=4)
    assert code == 1
    assert "✗ q1_answer: TimeoutError: cell ran longer than 4 s" in out, out
    # the kernel survived the interrupt: the later answer still ran its test
    assert "○ q2_tests (1 pt): form ok" in out, out


def test_unknown_kernel_is_refused(tmp_path):
    with pytest.raises(ValueError, match="kernel must be one of"):
        self_check(tmp_path / "x.ipynb", kernel="thread")


def test_course_check_starts_where_posix_modules_are_missing(released, tmp_path):
    """Windows has no fork, pwd, grp, fcntl or resource: `course check` must
    import and run without them (the kernel is launched, not forked)."""
    import subprocess

    path = tmp_path / "mine.ipynb"
    nbformat.write(build.build(released, WRONG, {}), path)
    script = (
        "import os, sys\n"
        "for name in ('pwd', 'grp', 'fcntl', 'resource'):\n"
        "    sys.modules[name] = None  # import fails, as on Windows\n"
        "del os.fork\n"
        "from course_utils.cli import main\n"
        f"sys.exit(main(['check', {str(path)!r}]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 1, out.stderr[-2000:]  # a wrong answer: exit code 1
    assert "✗ q1_tests" in out.stdout and "○ q2_tests (1 pt): form ok" in out.stdout
