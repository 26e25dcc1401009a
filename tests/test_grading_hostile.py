"""Attacks on the grader's own process, with honest classmates in the same run (issue 22).

The sandbox holds what runs inside it; these submissions aim at what comes out of
it: the records, the executed notebook, the kernel's messages and sockets, file
names, exception text, student ids. One real `course grade` (as a subprocess, so
its own peak memory and its terminal output can be read) grades them all beside
honest work, in the real sandbox. Each row gets the status and points EXPECTED
states; the honest rows are exactly those of a class without attackers; nothing
reaches the instructor's terminal, CSV or formgrader page as live markup or
escapes; no host socket is ever connected to; the grader's peak memory stays
within 0.5 GB of an honest run.
"""

import csv
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import nbformat
import pytest

from course_utils.grading import sandbox
from course_utils.grading.course import Course
from course_utils.grading.release import release

CASES = Path(__file__).parent / "grading_cases"
HOSTILE = CASES / "hostile"
sys.path.insert(0, str(CASES))
import build

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not sandbox.detect().usable, reason=f"{sandbox.detect().describe()}"
    ),
]

HTML_ID = "<img src=x onerror=alert(1)>"
FORMULA_ID = '=HYPERLINK("evil.example";"x")'  # a folder name holds no "/"
HONEST = ("honest_a", "honest_b")
# folder name → (status, q1_tests points, q2_tests points); q1: 2 points, q2: 1.
EXPECTED = {
    "honest_a": ("graded", 2, 1),
    "honest_b": ("graded", 2, 1),
    # names and text meant for the instructor's tools
    HTML_ID: ("graded", 2, 1),
    FORMULA_ID: ("graded", 2, 1),
    "surrogate_markdown": ("graded", 2, 1),
    "surrogate_exception": ("graded", 0, 1),
    "terminal_escape": ("graded", 0, 1),
    "bidi_answer": ("graded", 2, 1),
    # what the grader reads, parses and follows
    "record_names": ("graded", 2, 1),
    "record_dir": ("graded", 2, 1),
    # its planted q2 record is malformed, if it lands before the grader copies
    "record_bomb": ("graded", 2, {0, 1}),
    "nested_metadata": ("crashed", 0, 0),  # not a notebook the grader will parse
    "many_outputs": ("graded", 2, 1),
    # the grader drops the channel that carries them; whether the cell's deadline
    # or the closed channel ends the run first depends on the machine's speed
    "iopub_flood": ({"crashed", "timed out"}, 0, 0),
    "socket_swap": ({"crashed", "timed out"}, 0, 0),
    "static_chain": ("graded", 2, 1),
    # the sandbox's own limits
    "fill_tmp": ("crashed", 0, 0),
    "keyring": ("graded", 2, 1),
    "missing_set": ("missing", 0, 0),
}
OPTIONS = [
    "--workers", "2", "--timeout", "8", "--notebook-timeout", "40", "--grace", "2",
    "--memory", "2.5", "--address-space", "6", "--no-progress",
    "--sandbox-uid", "64400",
]  # fmt: skip
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


class HostSocket:
    """A UNIX socket of the host that counts who connects to it."""

    def __init__(self, path: Path):
        self.path = path
        self.connections = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        os.chmod(path, 0o777)
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            conn.close()

    def close(self):
        self.stop.set()
        self.thread.join()
        self.sock.close()
        self.path.unlink(missing_ok=True)


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def course_grade(course: Course, students: list[str] | None = None):
    """`course grade` in a child process: (exit code, stdout+stderr, its peak RSS
    in bytes, read from its own /proc/self/status before it exits)."""
    repo = str(Path(__file__).resolve().parents[1])
    argv = ["grade", "tiny", *OPTIONS, "--root", str(course.root)]
    for s in students or []:
        argv += ["--student", s]
    script = (
        f"import sys; sys.path[:0] = [{repo!r}]\n"
        "from course_utils.cli import main\n"
        f"code = main({argv!r})\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "print('PEAK-KB', hwm.split()[1], file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=1200, check=False
    )
    out = proc.stdout + proc.stderr
    found = re.search(rb"PEAK-KB (\d+)", out)
    assert found, f"course grade exited {proc.returncode}:\n{out[-4000:].decode(errors='replace')}"
    peak = int(found[1]) * 1024
    return proc.returncode, out, peak


def _nested_metadata_notebook(path: Path) -> None:
    """2 MiB of nesting in one cell's metadata (3 GB in the grader, once)."""
    text = path.read_text(encoding="utf-8")
    nb = json.loads(text)
    nb["cells"][0]["metadata"]["deep"] = "@@DEEP@@"
    depth = 2**20
    raw = json.dumps(nb).replace('"@@DEEP@@"', "[" * depth + "]" * depth)
    path.write_text(raw, encoding="utf-8")


def _surrogate_markdown(path: Path) -> None:
    nb = json.loads(path.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["metadata"].get("nbgrader", {}).get("grade_id") == "q3_answer":
            cell["source"] = "**Q3.** half a character \ud800 in my answer"
    path.write_text(json.dumps(nb, ensure_ascii=True), encoding="utf-8")


@pytest.fixture(scope="module")
def course():
    root = Path(tempfile.mkdtemp(prefix="course-hostile-"))
    os.chmod(root, 0o755)
    shutil.copytree(CASES / "course" / "solutions", root / "solutions")
    yield Course.load(root)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def runs(course):
    report = release(course)
    assert not report.leaks
    host = HostSocket(Path(f"/run/course-h22-{os.getpid()}.sock"))
    cases = {s: "correct" for s in (*HONEST, HTML_ID, FORMULA_ID)}
    cases["surrogate_markdown"] = "correct"
    cases["nested_metadata"] = "correct"
    cases |= {p.stem: f"hostile/{p.stem}" for p in HOSTILE.glob("*.cells")}
    assert set(cases) | {"missing_set"} == set(EXPECTED)
    try:
        build.write_submissions(
            course.release / "tiny" / "tiny.ipynb",
            course.submitted,
            "tiny",
            cases,
            {"HOST_SOCKET": str(host.path)},
        )
        sub = course.submitted
        _surrogate_markdown(sub / "surrogate_markdown" / "tiny" / "tiny.ipynb")
        _nested_metadata_notebook(sub / "nested_metadata" / "tiny" / "tiny.ipynb")
        (sub / "missing_set" / "another_set").mkdir(parents=True)
        # the honest classmates alone first: their rows, and the grader's memory
        code, _, honest_peak = course_grade(course, list(HONEST))
        assert code == 0
        honest_rows = {
            r["student"]: r for r in read_csv(course.root / "grades-tiny.csv")
        }
        code, out, peak = course_grade(course)
    finally:
        host.close()
    rows = {r["student"]: r for r in read_csv(course.root / "grades-tiny.csv")}
    return {
        "code": code,
        "out": out,
        "peak": peak,
        "honest_peak": honest_peak,
        "honest_rows": honest_rows,
        "rows": rows,
        "host_connections": host.connections,
    }


def row_of(runs, folder):
    from course_utils.grading.sanitize import student_id

    return runs["rows"][student_id(folder)]


@pytest.mark.parametrize("student", EXPECTED)
def test_each_submission_gets_its_status_and_points(runs, student):
    status, q1, q2 = EXPECTED[student]
    row = row_of(runs, student)
    got = (row["status"], float(row["q1_tests"] or 0), float(row["q2_tests"] or 0))
    if isinstance(q2, set):  # never more than the answer earns
        q2 = got[2] if got[2] in q2 else q2
    if isinstance(status, set):
        status = got[0] if got[0] in status else status
    assert got == (status, q1, q2), row["details"]


def test_the_run_finishes_and_nobody_is_a_grader_error(runs):
    assert runs["code"] == 0, runs["out"][-3000:]
    assert all(r["status"] != "grader error" for r in runs["rows"].values())


def test_honest_classmates_are_unaffected(runs):
    for student in HONEST:
        assert runs["rows"][student] == runs["honest_rows"][student], student


def test_the_graders_memory_stays_near_an_honest_run(runs):
    grown = runs["peak"] - runs["honest_peak"]
    assert grown < 0.5 * 2**30, (
        f"peak {runs['peak'] / 2**30:.2f} GiB, "
        f"honest {runs['honest_peak'] / 2**30:.2f} GiB"
    )


def test_no_host_socket_is_reached(runs):
    assert runs["host_connections"] == 0


def test_nothing_live_reaches_the_terminal_or_the_csv(runs, course):
    text = runs["out"].decode("utf-8")  # valid UTF-8: surrogates were replaced
    assert not CONTROL.search(text.replace("\n", "").replace("\t", "")), text[-2000:]
    raw = (course.root / "grades-tiny.csv").read_bytes().decode("utf-8")
    assert not CONTROL.search(raw.replace("\r\n", "").replace("\n", ""))
    for row in runs["rows"].values():
        for value in row.values():
            assert not value.startswith(("=", "+", "@", "\t", "\r")), value
            assert len(value) <= 4000, len(value)


def test_ids_are_shown_not_run(runs, course):
    students = set(runs["rows"])
    assert HTML_ID not in students and FORMULA_ID not in students
    assert not any("<" in s or s.startswith("=") for s in students)
    # formgrader finds each notebook under the id the gradebook holds
    for folder in (HTML_ID, FORMULA_ID):
        sid = row_of(runs, folder)["student"]
        assert (course.autograded / sid / "tiny" / "tiny.ipynb").is_file()


def test_formgrader_sees_visible_characters_and_bounded_notebooks(runs, course):
    def notebook(folder):
        path = (
            course.autograded / row_of(runs, folder)["student"] / "tiny" / "tiny.ipynb"
        )
        return path, nbformat.read(path, as_version=4)

    path, nb = notebook("bidi_answer")
    sources = "".join(c.source for c in nb.cells)
    assert "\u202e" not in sources and "U+202E" in sources
    path, nb = notebook("many_outputs")
    assert path.stat().st_size < 12 * 2**20  # the whole notebook's output is capped
    path, nb = notebook("surrogate_markdown")
    assert "half a character" in "".join(c.source for c in nb.cells)


def test_the_sandbox_keeps_keys_out(runs, course):
    path = course.autograded / "keyring" / "tiny" / "tiny.ipynb"
    nb = nbformat.read(path, as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "add_key blocked" in text and "planted" not in text
    assert "keyctl blocked" in text


def test_what_happened_is_said(runs):
    assert "space" in row_of(runs, "fill_tmp")["details"]
    assert "closed its iopub channel" in row_of(runs, "socket_swap")["details"]
    assert (
        "no tiny.ipynb" in row_of(runs, "missing_set")["details"]
        or "not found" in (row_of(runs, "missing_set")["details"])
    )
