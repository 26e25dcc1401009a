"""Run a notebook's cells in a sandboxed kernel, one at a time, each with a deadline.

`run_notebook` forks a kernel from the `ForkServer` into a fresh scratch
directory, executes the code cells in order with nbclient and returns what
happened to each cell. A cell that passes its deadline is interrupted (SIGINT,
as Jupyter's stop button); if the kernel does not answer within the grace
period — a loop that catches KeyboardInterrupt, a C call that ignores signals —
the kernel and everything it started are killed and the remaining cells are
reported as not run. A kernel that dies (``os._exit``, a segfault, the CPU
limit) is reported as crashed, with its exit code or signal. The grader never
waits on the student for longer than the deadlines.

What the cells record for grading (see `checks`) is copied out of the scratch
directory into the grader's private directory: regular files only, named as
records are, within a size budget, opened without following links.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty

import nbformat
from jupyter_client.asynchronous import AsyncKernelClient
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

from . import checks
from .sandbox import ForkServer, Identity, Limits

RECORD_FILE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}\.npz")
MEMORY_MARKERS = (
    "MemoryError",
    "can't allocate memory",
    "Cannot allocate memory",
    "out of memory",
    "std::bad_alloc",
)


@dataclass(frozen=True)
class RunSettings:
    """How one notebook runs.

    Args:
        mode: COURSE_GRADING_MODE for the kernel ("record", "reference", "").
        cell_timeout: seconds a cell may run before it is interrupted.
        interrupt_grace: seconds the kernel gets to recover from the interrupt
            before it is killed.
        startup_timeout: seconds the kernel gets to answer its first request.
        limits: resource limits (memory, CPU, files, processes).
        identity: the user the kernel runs as (None: the grader's).
        max_output_chars: output kept per cell; the rest is dropped with a note.
        max_record_bytes: total size of the records copied out.
    """

    mode: str = "record"
    cell_timeout: float = 60.0
    interrupt_grace: float = 5.0
    startup_timeout: float = 60.0
    limits: Limits = field(default_factory=Limits)
    identity: Identity = field(default_factory=Identity)
    max_output_chars: int = 20_000
    max_record_bytes: int = 64 * 2**20


@dataclass
class CellResult:
    """What happened to one code cell: status "ok", "error", "timed out" or "not run"."""

    index: int
    status: str
    ename: str | None = None
    evalue: str | None = None
    seconds: float = 0.0
    records: list[str] = field(default_factory=list)


@dataclass
class RunResult:
    """The outcome of one notebook run.

    status: "completed" (every cell ran, possibly with errors or interrupted
    cells), "crashed" (the kernel died or never started) or "timed out" (a
    cell ignored its interrupt and the kernel was killed). `timeouts` counts
    interrupted cells, `memory_error` tells whether any cell ran out of memory.
    """

    status: str
    detail: str
    cells: list[CellResult]
    records: dict[str, Path]
    seconds: float
    log_tail: str = ""
    timeouts: int = 0
    memory_error: bool = False
    record_problems: list[str] = field(default_factory=list)


class _Client(AsyncKernelClient):
    """A kernel client that asks the fork server whether the kernel lives."""

    alive_check = None

    async def _async_is_alive(self) -> bool:
        return bool(self.alive_check and self.alive_check())

    is_alive = _async_is_alive


class _LimitedNotebookClient(NotebookClient):
    """nbclient that keeps at most `max_output_chars` of output per cell and
    no widget state."""

    def __init__(self, nb, max_output_chars: int, **kw):
        super().__init__(nb, **kw)
        self._budget: dict[int, int] = {}
        self._max_chars = max_output_chars

    def handle_comm_msg(self, outs, msg, cell_index):
        """Ignore widget messages: grading needs no widget state, and a kernel
        must not make the grader keep arbitrary amounts of it."""

    def output(self, outs, msg, display_id, cell_index):
        used = self._budget.get(cell_index, 0)
        if used >= self._max_chars:
            return None
        size = len(json.dumps(msg.get("content", {})))
        self._budget[cell_index] = used + size
        if used + size > self._max_chars:
            outs.append(
                nbformat.v4.new_output(
                    "stream",
                    name="stderr",
                    text=f"[grader: output beyond {self._max_chars} characters dropped]\n",
                )
            )
            return None
        return super().output(outs, msg, display_id, cell_index)


def kernel_env(scratch: Path, mode: str, record_dir: Path) -> dict[str, str]:
    """The kernel's whole environment: nothing inherited from the grader."""
    home = scratch / "home"
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(home),
        "TMPDIR": str(scratch / "tmp"),
        "IPYTHONDIR": str(home / ".ipython"),
        "MPLCONFIGDIR": str(home / ".matplotlib"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MALLOC_ARENA_MAX": "2",
        "PYTHONDONTWRITEBYTECODE": "1",
        checks.MODE_ENV: mode,
        checks.RECORD_DIR_ENV: str(record_dir),
    }


def _make_scratch(parent: Path | None, identity: Identity) -> Path:
    scratch = Path(tempfile.mkdtemp(prefix="cg-", dir=parent))
    for sub in ("home", "tmp", "records"):
        (scratch / sub).mkdir(mode=0o700)
    if identity.uid is not None:
        for path in (scratch, scratch / "home", scratch / "tmp", scratch / "records"):
            os.chown(path, identity.uid, identity.gid)
    return scratch


def _write_connection_file(scratch: Path, identity: Identity) -> Path:
    info = {
        "transport": "ipc",
        "ip": str(scratch / "k"),
        "shell_port": 1,
        "iopub_port": 2,
        "stdin_port": 3,
        "control_port": 4,
        "hb_port": 5,
        "key": secrets.token_hex(32),
        "signature_scheme": "hmac-sha256",
        "kernel_name": "",
    }
    path = scratch / "kernel.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(info, fh)
    if identity.uid is not None:
        os.chown(path, identity.uid, identity.gid)
    return path


def _new_records(record_dir: Path | int, before: set[str]) -> list[str]:
    return sorted(
        n[: -len(".npz")]
        for n in set(os.listdir(record_dir)) - before
        if RECORD_FILE_RE.fullmatch(n)
    )


def _asked_to_exit(reply: dict) -> bool:
    """Whether an execute_reply carries IPython's exit request (exit(), quit())."""
    payload = reply.get("content", {}).get("payload") or []
    return any(
        isinstance(p, dict)
        and p.get("source") == "ask_exit"
        and not p.get("keepkernel")
        for p in payload
    )


def _cell_error(cell) -> tuple[str, str] | None:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return out.get("ename", ""), out.get("evalue", "")
    return None


def is_memory_error(ename: str | None, evalue: str | None) -> bool:
    text = f"{ename or ''} {evalue or ''}"
    return any(marker in text for marker in MEMORY_MARKERS)


async def _responsive(kc: AsyncKernelClient, seconds: float) -> bool:
    """Whether the kernel answers a trivial request within `seconds`."""
    msg_id = kc.execute("", silent=True, store_history=False)
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        try:
            msg = await kc.get_shell_msg(timeout=left)
        except Empty:
            return False
        if msg["parent_header"].get("msg_id") == msg_id:
            return True


def copy_records(
    source: Path | int, dest: Path, max_bytes: int
) -> tuple[dict[str, Path], list[str]]:
    """Copy record files out of a kernel's scratch dir, trusting nothing about them.

    `source` is the records directory, best given as a file descriptor opened
    before the kernel ran: the student owns the scratch directory and could
    swap paths for links, but not the directory an fd already points to. Only
    regular files named like records are copied, opened relative to it with
    O_NOFOLLOW and O_NONBLOCK (no links, no FIFOs), within `max_bytes` in
    total. Returns ({name: copied path}, problems noticed).
    """
    dest.mkdir(parents=True, exist_ok=True)
    copied: dict[str, Path] = {}
    problems: list[str] = []
    total = 0
    try:
        names = sorted(os.listdir(source))
    except OSError as exc:
        return copied, [f"records unreadable: {exc}"]
    for name in names:
        if name.startswith(".") and name.endswith(".tmp"):
            continue
        if not RECORD_FILE_RE.fullmatch(name):
            problems.append(f"unexpected file {name!r} among the records")
            continue
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
        try:
            if isinstance(source, int):
                fd = os.open(name, flags, dir_fd=source)
            else:
                fd = os.open(Path(source) / name, flags)
        except OSError as exc:
            problems.append(f"record {name} could not be opened: {exc.strerror}")
            continue
        with os.fdopen(fd, "rb") as fh:
            info = os.fstat(fh.fileno())
            if not stat.S_ISREG(info.st_mode):
                problems.append(f"record {name} is not a regular file")
                continue
            if total + info.st_size > max_bytes:
                problems.append(f"records exceed {max_bytes} bytes; {name} dropped")
                continue
            data = fh.read(max_bytes - total + 1)
        total += len(data)
        target = dest / name
        target.write_bytes(data)
        copied[name[: -len(".npz")]] = target
    return copied, problems


def clean_user_files(
    uid: int, roots: tuple[str, ...] = ("/tmp", "/var/tmp", "/dev/shm")
) -> None:
    """Remove what a sandbox user left in the shared temp directories."""
    for root in roots:
        try:
            entries = list(os.scandir(root))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
            except OSError:
                continue


def _log_tail(path: Path, limit: int = 2000) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "the kernel stopped answering"
    if code < 0:
        import signal

        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the kernel was killed by {name}"
    return f"the kernel exited with code {code}"


async def run_notebook(
    nb: nbformat.NotebookNode,
    server: ForkServer,
    settings: RunSettings,
    private_dir: Path,
    scratch_parent: Path | None = None,
) -> RunResult:
    """Execute `nb`'s code cells in place (outputs land in `nb`) in a sandboxed kernel.

    Args:
        nb: the notebook to run; its cells get their outputs.
        server: the fork server that makes kernels.
        settings: mode, deadlines, limits and user.
        private_dir: the grader's directory for this run (kernel log, records);
            the kernel cannot read it.
        scratch_parent: where the kernel's scratch directory is made (default:
            the system temp dir); it must be reachable by the sandbox user.
    """
    start = time.monotonic()
    identity = settings.identity
    private_dir.mkdir(parents=True, exist_ok=True)
    log_path = private_dir / "kernel.log"
    log_path.unlink(missing_ok=True)
    shutil.rmtree(private_dir / "records", ignore_errors=True)
    scratch = _make_scratch(scratch_parent, identity)
    record_dir = scratch / "records"
    # Held from before the kernel starts: the student owns the scratch directory
    # and may swap its paths for links, but not what this fd refers to.
    records_fd = os.open(record_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    cells = [
        CellResult(i, "not run")
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code"
    ]
    by_index = {c.index: c for c in cells}
    status, detail, timeouts = "completed", "", 0
    pid = None
    kc = None
    try:
        conn = _write_connection_file(scratch, identity)
        pid = server.spawn(
            connection_file=conn,
            cwd=scratch,
            env=kernel_env(scratch, settings.mode, record_dir),
            log=log_path,
            limits=settings.limits,
            identity=identity,
        )
        kc = _Client(connection_file=str(conn))
        kc.load_connection_file()
        kc.alive_check = lambda: server.exit_code(pid) is None
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=settings.startup_timeout)
        except RuntimeError as exc:
            return RunResult(
                "crashed",
                f"the kernel did not start: {exc}; "
                f"{_describe_exit(server.exit_code(pid))}",
                cells,
                {},
                time.monotonic() - start,
                _log_tail(log_path),
            )
        client = _LimitedNotebookClient(
            nb,
            settings.max_output_chars,
            timeout=None,
            allow_errors=True,
            record_timing=False,
            iopub_timeout=10,
            raise_on_iopub_timeout=False,
        )
        client.kc = kc
        replies: dict[int, dict] = {}
        client.on_cell_executed = lambda cell, cell_index, execute_reply: (
            replies.__setitem__(cell_index, execute_reply or {})
        )
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            result = by_index[index]
            before = set(os.listdir(records_fd))
            t0 = time.monotonic()
            task = asyncio.ensure_future(client.async_execute_cell(cell, index))
            done, _ = await asyncio.wait({task}, timeout=settings.cell_timeout)
            if done:
                try:
                    task.result()
                except DeadKernelError:
                    code = server.wait(pid, 5.0)
                    result.status = "error"
                    result.ename, result.evalue = (
                        "DeadKernelError",
                        _describe_exit(code),
                    )
                    status, detail = (
                        "crashed",
                        f"{_describe_exit(code)} in cell {index}",
                    )
                    result.seconds = time.monotonic() - t0
                    break
                error = _cell_error(cell)
                result.status = "error" if error else "ok"
                if error:
                    result.ename, result.evalue = error
                if _asked_to_exit(replies.get(index, {})):
                    # IPython's exit()/quit(): the front end shuts the kernel down
                    # (JupyterLab does), so the notebook ends here, every time.
                    status = "crashed"
                    detail = (
                        f"cell {index} called exit(); the kernel was shut down "
                        "(exited with code 0)"
                    )
                    result.seconds = time.monotonic() - t0
                    result.records = _new_records(records_fd, before)
                    break
            else:
                task.cancel()
                with contextlib.suppress(
                    asyncio.CancelledError, DeadKernelError, CellTimeoutError, Empty
                ):
                    await task
                timeouts += 1
                result.status = "timed out"
                result.ename = "TimeoutError"
                result.evalue = f"cell ran longer than {settings.cell_timeout:g} s"
                cell.outputs.append(
                    nbformat.v4.new_output(
                        "error",
                        ename="TimeoutError",
                        evalue=f"[grader] cell interrupted after {settings.cell_timeout:g} s",
                        traceback=[],
                    )
                )
                server.interrupt(pid)
                if server.exit_code(pid) is not None or not await _responsive(
                    kc, settings.interrupt_grace
                ):
                    server.kill(pid, identity)
                    status = "timed out"
                    detail = (
                        f"cell {index} ignored the interrupt after "
                        f"{settings.cell_timeout:g} s; the kernel was killed"
                    )
                    result.seconds = time.monotonic() - t0
                    break
            result.seconds = time.monotonic() - t0
            result.records = _new_records(records_fd, before)
        if status == "completed" and timeouts:
            detail = f"{timeouts} cell(s) interrupted after {settings.cell_timeout:g} s"
    finally:
        if kc is not None:
            kc.stop_channels()
        if pid is not None:
            server.kill(pid, identity)
        records, problems = copy_records(
            records_fd, private_dir / "records", settings.max_record_bytes
        )
        os.close(records_fd)
        shutil.rmtree(scratch, ignore_errors=True)
        if identity.uid is not None:
            clean_user_files(identity.uid)
    memory = any(is_memory_error(c.ename, c.evalue) for c in cells)
    log = _log_tail(log_path)
    if status == "crashed" and "MemoryError" in log:
        memory = True
    return RunResult(
        status,
        detail,
        cells,
        records,
        time.monotonic() - start,
        log,
        timeouts,
        memory,
        problems,
    )
