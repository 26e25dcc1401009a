"""The kernel I/O boundary: what crosses from a kernel to the grader is bounded.

Records are copied from a held folder without following links, whatever it
holds (a directory named as a record, a FIFO, a link, thousands of names);
the notebook's whole output has a budget; a real sandbox kernel cannot make
the grader connect to a socket of the host, cannot fill the grader's memory
with large messages, and a full /tmp ends the run with a flag, not an error;
a course root under /tmp grades.
"""

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import nbformat
import pytest

from course_utils.grading import execute, kernels, mounts, outbox, sandbox
from course_utils.grading.execute import Harness, RunSettings, RunStatus

ROOT = Path(__file__).resolve().parents[1]


def _notebook(*sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    return nb


# ------------------------------------------------------------ records


def test_a_folder_named_as_a_record_is_a_problem_not_an_error(tmp_path):
    src = tmp_path / "records"
    src.mkdir()
    (src / "q1.npz").mkdir()
    os.mkfifo(src / "q2.npz")
    (src / "q3.npz").symlink_to("/etc/passwd")
    (src / "q4.npz").write_bytes(b"good")
    fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    try:
        copied, problems = execute.copy_records(fd, tmp_path / "out", 2**20)
    finally:
        os.close(fd)
    assert set(copied) == {"q4"} and copied["q4"].read_bytes() == b"good"
    assert "record 'q1.npz' is not a regular file" in problems
    assert "record 'q2.npz' is not a regular file" in problems
    assert any(p.startswith("record 'q3.npz' could not be opened") for p in problems)
    assert len(problems) == 3


def test_thousands_of_long_names_give_a_short_bounded_report(tmp_path):
    src = tmp_path / "records"
    src.mkdir()
    for i in range(20_000):
        (src / f"{i:05d}{'x' * 200}").touch()
    (src / "q1.npz").write_bytes(b"r")
    copied, problems = execute.copy_records(src, tmp_path / "out", 2**20)
    assert len(problems) == outbox.MAX_PROBLEMS + 1
    assert problems[-1].startswith("and ") and "more problem" in problems[-1]
    assert sum(map(len, problems)) < 1000
    assert all(len(p) < 150 for p in problems)
    # the listing itself stops at its cap (q1.npz may lie beyond it)
    assert set(copied) <= {"q1"}


def test_a_listing_past_its_cap_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(outbox, "MAX_ENTRIES", 3)
    monkeypatch.setattr(outbox, "MAX_PROBLEMS", 10)
    src = tmp_path / "records"
    src.mkdir()
    for name in ("a.npz", "b.npz", "c.npz", "d.npz", "e.npz"):
        (src / name).write_bytes(b"1")
    copied, problems = execute.copy_records(src, tmp_path / "out", 2**20)
    assert len(copied) == 3
    assert problems == [
        "the records folder holds over 3 entries; the rest were not read"
    ]


# ------------------------------------------------- the notebook's output


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX rlimits")
def test_the_whole_notebooks_output_has_a_budget(tmp_path):
    """Cells each under the per-cell budget: past the notebook's, their
    outputs are dropped, with one note."""
    nb = _notebook(*["print('y' * 19_000)"] * 30)
    settings = RunSettings(
        cell_timeout=60, startup_timeout=120, max_notebook_output_chars=200_000
    )
    kernel = kernels.PlainKernel("record", [], settings.sandbox)
    result = asyncio.run(execute.run(nb, kernel, settings, tmp_path))
    assert result.status is RunStatus.COMPLETED, result.detail
    kept = sum(len(json.dumps(o)) for c in nb.cells for o in c.get("outputs", []))
    assert kept <= 200_000 + 20_000
    notes = [
        o
        for c in nb.cells
        for o in c.get("outputs", [])
        if "the notebook's output beyond 200000 characters dropped" in o.get("text", "")
    ]
    assert len(notes) == 1
    assert nb.cells[-1].get("outputs") == []


# ---------------------------------------------------------- real sandbox

needs_sandbox = pytest.mark.skipif(
    not sandbox.detect().usable or not sandbox.detect().cgroup or os.geteuid() != 0,
    reason="needs the sandbox as root with a cgroup",
)


class _HostSocket:
    """A listening UNIX socket of the host that counts its connections."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.path)
        os.chmod(self.path, 0o777)
        self.server.listen(64)
        self.server.settimeout(0.2)
        self.count = 0
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while not self._stop:
            try:
                conn, _ = self.server.accept()
            except OSError:
                continue
            self.count += 1
            conn.close()

    def close(self):
        self._stop = True
        self._thread.join()
        self.server.close()


SWAP = """\
import os, time
for n in range(1, 6):
    os.unlink(f"/tmp/k-{{n}}")
    os.symlink({host!r}, f"/tmp/k-{{n}}")
thread = get_ipython().kernel.iopub_thread
thread.io_loop.add_callback(lambda: thread.socket.close(linger=0))
time.sleep(2)
"""


@needs_sandbox
def test_the_grader_never_follows_a_socket_the_kernel_replaced(tmp_path):
    host_dir = Path(tempfile.mkdtemp(prefix="hostsock-"))
    host = _HostSocket(host_dir / "host.sock")
    try:
        nb = _notebook("x = 1", SWAP.format(host=host.path), "print('after')")
        settings = RunSettings(cell_timeout=30, startup_timeout=120)
        result = asyncio.run(
            execute.run_isolated(
                nb, settings, tmp_path, uid=64393, name=f"sock{os.getpid()}"
            )
        )
        time.sleep(1)
    finally:
        host.close()
        shutil.rmtree(host_dir, ignore_errors=True)
    assert host.count == 0
    assert result.status is RunStatus.CRASHED, result.detail
    assert result.detail == (
        "the kernel closed its iopub channel; the run was stopped"
    ), result.detail
    assert result.cells[0].status == "ok" and result.cells[2].status == "not run"


RSS_SCRIPT = """\
import asyncio, json, os, sys
from pathlib import Path
import nbformat
from course_utils.grading import execute, sockets
from course_utils.grading.execute import RunSettings
if sys.argv[2] == "uncapped":
    sockets.MAX_MESSAGE_BYTES = -1
nb = nbformat.v4.new_notebook()
nb.cells = [nbformat.v4.new_code_cell(s) for s in json.loads(sys.argv[3])]
settings = RunSettings(cell_timeout=120, startup_timeout=120)
run = asyncio.run(execute.run_isolated(
    nb, settings, Path(sys.argv[1]), uid=64394, name=f"rss{os.getpid()}"))
status = dict(l.split(":", 1) for l in open("/proc/self/status"))
print(json.dumps({"status": str(run.status), "detail": run.detail,
                  "hwm_kib": int(status["VmHWM"].split()[0])}))
"""

BIG_OUTPUT = (
    "import sys\n"
    "s = 'x' * (64 * 2**20)\n"
    "for _ in range(10):\n"
    "    sys.stdout.write(s); sys.stdout.flush()\n"
)


def grader_rss(tmp_path: Path, cells: list[str], mode: str = "capped") -> dict:
    """Run `cells` in a sandbox from a fresh grader process: its status,
    detail and peak RSS."""
    script = tmp_path / "rss.py"
    script.write_text(RSS_SCRIPT)
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "run"), mode, json.dumps(cells)],
        check=False,
        capture_output=True,
        text=True,
        timeout=400,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@needs_sandbox
def test_large_kernel_messages_are_refused_at_the_socket(tmp_path):
    honest = grader_rss(tmp_path, ["x = 1", "print(x)"])
    hostile = grader_rss(tmp_path, ["x = 1", BIG_OUTPUT, "print(x)"])
    assert honest["status"] == "completed", honest
    assert hostile["status"] == "crashed", hostile
    assert hostile["detail"] == (
        "the kernel sent a message over the grader's limit of 16 MiB on its "
        "iopub channel (its output exceeded the limit); the connection was closed"
    ), hostile
    # 640 MiB went to the kernel's iopub: the grader holds none of it
    assert hostile["hwm_kib"] - honest["hwm_kib"] < 64 * 1024, (honest, hostile)


FILL = """\
try:
    with open("/tmp/fill", "wb") as fh:
        while True:
            fh.write(b"\\0" * 2**20)
except OSError as exc:
    print(exc.errno)
"""


@needs_sandbox
def test_a_full_tmp_ends_the_run_with_a_flag_not_an_error(tmp_path):
    harness = Harness(files={"h.txt": b"x" * 100_000}, cells=[("h", "print(1)")])
    settings = RunSettings(cell_timeout=60, startup_timeout=120)
    view = sandbox.SandboxView(tmpfs_bytes=32 * mounts.MiB)
    result = asyncio.run(
        execute.run_isolated(
            _notebook("x = 1", FILL),
            settings,
            tmp_path,
            view=view,
            uid=64395,
            harness=harness,
            name=f"full{os.getpid()}",
        )
    )
    assert result.disk_full, (result.status, result.detail)
    assert result.tmp_bytes == 32 * mounts.MiB
    assert result.status is RunStatus.CRASHED, result.detail
    assert result.detail == "no space left in the kernel's /tmp"
    assert [c.status for c in result.cells] == ["ok", "ok"]


def test_an_honest_run_has_room_in_tmp(tmp_path):
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        space = outbox.tmp_space(fd)
    finally:
        os.close(fd)
    assert space.size > 0 and not space.full


# ------------------------------------------------------- mounts under /tmp


def test_parents_of_a_symlinked_prefix_are_made_traversable(monkeypatch, tmp_path):
    real = tmp_path / "real-venv"
    real.mkdir()
    link = tmp_path / "a" / "b" / ".venv"
    link.parent.mkdir(parents=True)
    link.symlink_to(real)
    monkeypatch.setattr(sys, "prefix", str(link))
    args = sandbox.SandboxView().mounts()
    k = args.index("--symlink", args.index(str(real)))
    assert args[k + 1 : k + 3] == [str(real), str(link)]
    before = args[:k]
    for parent in (tmp_path / "a", tmp_path / "a" / "b"):
        i = len(before) - 1 - before[::-1].index(str(parent))
        assert before[i - 3 : i] == ["--perms", "0755", "--dir"], parent


COURSE_UNDER_TMP = """\
import os, sys, time
from pathlib import Path
import course_utils
from course_utils.grading import sandbox
pkg = Path(course_utils.__file__).resolve().parent
log = Path(sys.argv[1])
box = sandbox.Sandbox(
    [sys.executable, "-c", "import course_utils; print(course_utils.__file__)"],
    sandbox.SandboxView(package=pkg), sandbox.SandboxLimits(),
    {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(pkg.parent)}, {}, log,
    f"tmproot{os.getpid()}", uid=64396)
try:
    while box.alive():
        time.sleep(0.05)
    print(box.exit_code())
finally:
    box.close()
"""


@pytest.mark.skipif(
    not sandbox.detect().usable or os.geteuid() != 0, reason="needs the sandbox"
)
def test_a_course_root_under_tmp_is_visible_in_the_sandbox(tmp_path):
    root = Path(tempfile.mkdtemp(prefix="course-root-", dir="/tmp"))
    try:
        shutil.copytree(
            ROOT / "course_utils",
            root / "course_utils",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        for path in [root, *root.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        script = tmp_path / "box.py"
        script.write_text(COURSE_UNDER_TMP)
        log = tmp_path / "box.log"
        out = subprocess.run(
            [sys.executable, str(script), str(log)],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(root)},
        )
        assert out.stdout.strip().splitlines()[-1] == "0", (out.stderr, log.read_text())
        assert log.read_text().strip() == str(root / "course_utils" / "__init__.py")
    finally:
        shutil.rmtree(root, ignore_errors=True)
