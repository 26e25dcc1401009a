"""Run a notebook's cells in a kernel, one at a time, each with a deadline.

`run_isolated` (grading) starts a kernel in a fresh OS sandbox (`sandbox`),
executes the notebook's code cells in order with nbclient — skipping the test
cells — then the grader's harness cells, and returns what happened to each
cell and the records the harness wrote. `run_notebook` (`course check`, on a
student's own machine) forks a kernel from the `ForkServer` instead. Both
share the cell loop (`_run_cells`): each cell gets min(cell deadline, what is
left of the notebook deadline). A cell that passes its deadline is interrupted (SIGINT,
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

import ast
import asyncio
import contextlib
import copy
import json
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty

import nbformat
from jupyter_client.asynchronous import AsyncKernelClient
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

from .forkserver import ForkServer, Identity, Limits
from .records import MODE_ENV, RECORD_DIR_ENV

RECORD_FILE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}\.npz")
CASES_FILE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}\.cases\.pt")
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
    notebook_timeout: float = 600.0
    sandbox: object = None

    def __post_init__(self):
        if self.sandbox is None:
            from .sandbox import SandboxLimits

            object.__setattr__(self, "sandbox", SandboxLimits())


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
    startup_seconds: float = 0.0
    extra: list = field(default_factory=list)


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
        MODE_ENV: mode,
        RECORD_DIR_ENV: str(record_dir),
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
        if not (RECORD_FILE_RE.fullmatch(name) or CASES_FILE_RE.fullmatch(name)):
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
        copied[name.removesuffix(".npz")] = target
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


class _ForkHandle:
    """A kernel forked by the `ForkServer` (self-check on a student's machine)."""

    def __init__(self, server: ForkServer, pid: int, identity: Identity):
        self.server, self.pid, self.identity = server, pid, identity

    def alive(self) -> bool:
        return self.server.exit_code(self.pid) is None

    def exit_code(self, wait: float = 0.0) -> int | None:
        return (
            self.server.wait(self.pid, wait)
            if wait
            else self.server.exit_code(self.pid)
        )

    def interrupt(self) -> None:
        self.server.interrupt(self.pid)

    def kill(self) -> None:
        self.server.kill(self.pid, self.identity)

    def oom_killed(self) -> bool:
        return False


class _SandboxHandle:
    """A kernel in an `sandbox.Sandbox` (or run plainly with --unsafe-no-sandbox)."""

    def __init__(self, box):
        self.box = box

    def alive(self) -> bool:
        return self.box.alive()

    def exit_code(self, wait: float = 0.0) -> int | None:
        deadline = time.monotonic() + wait
        while self.box.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        code = self.box.exit_code()
        return None if code is None else _bwrap_code(code)

    def interrupt(self) -> None:
        self.box.interrupt()

    def kill(self) -> None:
        self.box.kill()

    def oom_killed(self) -> bool:
        return self.box.oom_killed()


def _bwrap_code(code: int) -> int:
    """bubblewrap exits 128+N when its child died of signal N: report -N."""
    return -(code - 128) if 128 < code < 160 else code


@dataclass
class Harness:
    """Cells the grader runs after every cell of the submission.

    files: name → bytes, written into a fresh /tmp/h-NONCE/ of the kernel
    just before the first harness cell (the student's cells never saw it);
    cells: (label, source) to execute, with ``{HARNESS_DIR}`` replaced by that
    directory. Records are read only from its records/ sub-directory.
    """

    files: dict[str, bytes]
    cells: list[tuple[str, str]]


async def _run_cells(
    nb: nbformat.NotebookNode,
    kc: AsyncKernelClient,
    handle,
    settings: RunSettings,
    skip: set[int],
    extra: list[nbformat.NotebookNode],
    before_extra=None,
) -> tuple[str, str, int, list[CellResult], list[CellResult]]:
    """Execute the code cells of nb (except `skip`) and then `extra` cells.

    Each cell gets min(cell deadline, what is left of the notebook deadline);
    a cell past its deadline is interrupted, and the kernel killed when it
    does not answer within the grace period. Returns (status, detail,
    timeouts, results of nb's cells, results of the extra cells).
    """
    cells = [
        CellResult(i, "not run")
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code"
    ]
    extra_results = [CellResult(-1 - k, "not run") for k in range(len(extra))]
    by_index = {c.index: c for c in cells}
    status, detail, timeouts = "completed", "", 0
    deadline = time.monotonic() + settings.notebook_timeout
    all_nb = copy.copy(nb)
    all_nb.cells = [*nb.cells, *extra]
    client = _LimitedNotebookClient(
        all_nb,
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
    order = [
        (i, c, by_index[i])
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and i not in skip
    ]
    order += [(len(nb.cells) + k, c, extra_results[k]) for k, c in enumerate(extra)]
    for index, cell, result in order:
        if index == len(nb.cells) and before_extra is not None:
            before_extra()
        left = deadline - time.monotonic()
        if left <= 0:
            status = "timed out"
            detail = (
                f"the notebook ran past its deadline of "
                f"{settings.notebook_timeout:g} s; the kernel was killed"
            )
            handle.kill()
            break
        limit = min(settings.cell_timeout, left)
        t0 = time.monotonic()
        task = asyncio.ensure_future(client.async_execute_cell(cell, index))
        done, _ = await asyncio.wait({task}, timeout=limit)
        if done:
            try:
                task.result()
            except DeadKernelError:
                code = handle.exit_code(5.0)
                result.status = "error"
                result.ename, result.evalue = "DeadKernelError", _describe_exit(code)
                status, detail = "crashed", f"{_describe_exit(code)} in cell {index}"
                result.seconds = time.monotonic() - t0
                break
            error = _cell_error(cell)
            result.status = "error" if error else "ok"
            if error:
                result.ename, result.evalue = error
            result.seconds = time.monotonic() - t0
            if _asked_to_exit(replies.get(index, {})):
                # IPython's exit()/quit(): the front end shuts the kernel down
                # (JupyterLab does), so the notebook ends here, every time.
                status = "crashed"
                detail = (
                    f"cell {index} called exit(); the kernel was shut down "
                    "(exited with code 0)"
                )
                break
            continue
        task.cancel()
        with contextlib.suppress(
            asyncio.CancelledError, DeadKernelError, CellTimeoutError, Empty
        ):
            await task
        timeouts += 1
        whole = limit < settings.cell_timeout
        result.status = "timed out"
        result.ename = "TimeoutError"
        result.evalue = (
            f"the notebook's deadline ({settings.notebook_timeout:g} s) passed"
            if whole
            else f"cell ran longer than {settings.cell_timeout:g} s"
        )
        cell.outputs.append(
            nbformat.v4.new_output(
                "error",
                ename="TimeoutError",
                evalue=f"[grader] cell interrupted after {limit:.3g} s",
                traceback=[],
            )
        )
        result.seconds = time.monotonic() - t0
        if whole:
            handle.kill()
            status = "timed out"
            detail = (
                f"the notebook ran past its deadline of "
                f"{settings.notebook_timeout:g} s; the kernel was killed"
            )
            break
        handle.interrupt()
        if not handle.alive() or not await _responsive(kc, settings.interrupt_grace):
            handle.kill()
            status = "timed out"
            detail = (
                f"cell {index} ignored the interrupt after "
                f"{settings.cell_timeout:g} s; the kernel was killed"
            )
            break
    if status == "completed" and timeouts:
        detail = f"{timeouts} cell(s) interrupted after {settings.cell_timeout:g} s"
    return status, detail, timeouts, cells, extra_results


def _result(
    status, detail, cells, records, start, log_path, timeouts, problems, oom
) -> RunResult:
    memory = oom or any(is_memory_error(c.ename, c.evalue) for c in cells)
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


async def _connect(conn, handle, settings: RunSettings) -> tuple[_Client, str | None]:
    """A client on the kernel's connection file `conn`, its channels started
    and the kernel asked to be ready within `settings.startup_timeout`.

    Returns (client, None) when it answered, else (client, why it did not
    start: the error and how the kernel exited). The caller stops the client's
    channels; when this raises instead, it has stopped them itself.
    """
    kc = _Client(connection_file=str(conn))
    kc.load_connection_file()
    kc.alive_check = handle.alive
    try:
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=settings.startup_timeout)
        except RuntimeError as exc:
            why = f"the kernel did not start: {exc}; {_describe_exit(handle.exit_code())}"
            return kc, why
    except BaseException:
        kc.stop_channels()
        raise
    return kc, None


async def run_notebook(
    nb: nbformat.NotebookNode,
    server: ForkServer,
    settings: RunSettings,
    private_dir: Path,
    scratch_parent: Path | None = None,
) -> RunResult:
    """Execute `nb`'s code cells in place in a forked kernel (`course check`).

    This runs on a student's own machine: limits and deadlines, no sandbox.
    Grading uses `run_isolated`.

    Args:
        nb: the notebook to run; its cells get their outputs.
        server: the fork server that makes kernels.
        settings: mode, deadlines, limits and user.
        private_dir: the caller's directory for this run (kernel log, records).
        scratch_parent: where the kernel's scratch directory is made.
    """
    start = time.monotonic()
    identity = settings.identity
    private_dir.mkdir(parents=True, exist_ok=True)
    log_path = private_dir / "kernel.log"
    log_path.unlink(missing_ok=True)
    shutil.rmtree(private_dir / "records", ignore_errors=True)
    scratch = _make_scratch(scratch_parent, identity)
    record_dir = scratch / "records"
    records_fd = os.open(record_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    status, detail, timeouts = "crashed", "", 0
    cells = [
        CellResult(i, "not run")
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code"
    ]
    handle = None
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
        handle = _ForkHandle(server, pid, identity)
        kc, failed = await _connect(conn, handle, settings)
        if failed:
            detail = failed
        else:
            status, detail, timeouts, cells, _ = await _run_cells(
                nb, kc, handle, settings, set(), []
            )
    finally:
        if kc is not None:
            kc.stop_channels()
        if handle is not None:
            handle.kill()
        records, problems = copy_records(
            records_fd, private_dir / "records", settings.max_record_bytes
        )
        os.close(records_fd)
        shutil.rmtree(scratch, ignore_errors=True)
        if identity.uid is not None:
            clean_user_files(identity.uid)
    return _result(
        status, detail, cells, records, start, log_path, timeouts, problems, False
    )


class _LaunchedHandle:
    """A kernel started as a plain child process by jupyter_client's launcher
    (self-check where there is no fork: Windows)."""

    def __init__(self, proc):
        self.proc = proc

    def alive(self) -> bool:
        return self.proc.poll() is None

    def exit_code(self, wait: float = 0.0) -> int | None:
        try:
            return self.proc.wait(wait) if wait else self.proc.poll()
        except subprocess.TimeoutExpired:
            return None

    def interrupt(self) -> None:
        if not self.alive():
            return
        if os.name == "nt":
            from jupyter_client.win_interrupt import send_interrupt

            send_interrupt(self.proc.win32_interrupt_event)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGINT)

    def kill(self) -> None:
        if os.name == "nt":
            with contextlib.suppress(OSError):
                self.proc.kill()
        else:  # its whole session: whatever the notebook started, too
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)

    def oom_killed(self) -> bool:
        return False


def _launch(conn: str, env: dict[str, str], cwd: Path, log_path: Path):
    """ipykernel on `conn` as a child process (its own session or process
    group, so it can be interrupted), output to `log_path`."""
    from jupyter_client.launcher import launch_kernel

    with open(log_path, "wb") as log:  # the child keeps its own copy
        return launch_kernel(
            [sys.executable, "-m", "ipykernel_launcher", "-f", conn,
             "--HistoryManager.enabled=False"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            cwd=str(cwd),
        )  # fmt: skip


async def run_notebook_launched(
    nb: nbformat.NotebookNode, settings: RunSettings, private_dir: Path
) -> RunResult:
    """Execute `nb`'s code cells in place in a kernel launched as a child process.

    `course check` on a machine without `fork` (Windows): the same cells, the
    same per-cell and per-notebook deadlines and the same report as
    `run_notebook`, but the kernel pays its imports, has no resource limits and
    runs as the student (it is the student's own machine and code). It talks
    TCP on loopback and keeps the student's environment, with HOME, TMPDIR
    (TEMP, TMP) and the Jupyter/IPython folders in a scratch directory. At the
    end the kernel is killed; on POSIX with its whole session, on Windows the
    kernel process alone (what it started itself may outlive it there).
    """
    from jupyter_client.connect import write_connection_file

    start = time.monotonic()
    private_dir.mkdir(parents=True, exist_ok=True)
    log_path = private_dir / "kernel.log"
    scratch = Path(tempfile.mkdtemp(prefix="cg-", dir=private_dir))
    for sub in ("home", "tmp", "records", "home/.ipython", "home/runtime"):
        (scratch / sub).mkdir(exist_ok=True)
    status, detail, timeouts = "crashed", "", 0
    cells = [
        CellResult(i, "not run") for i, c in enumerate(nb.cells) if c.cell_type == "code"
    ]
    conn, _ = write_connection_file(
        str(scratch / "kernel.json"), ip="127.0.0.1", key=secrets.token_hex(32).encode()
    )
    env = {**os.environ, **kernel_env(scratch, settings.mode, scratch / "records")}
    env["PATH"] = os.environ.get("PATH", "")  # the student's own PATH (Windows too)
    env["TEMP"] = env["TMP"] = env["TMPDIR"]  # what Windows' tempfile reads
    env.pop("PYTHONSTARTUP", None)
    handle = kc = None
    try:
        handle = _LaunchedHandle(_launch(conn, env, scratch / "tmp", log_path))
        kc, failed = await _connect(conn, handle, settings)
        if failed:
            detail = failed
        else:
            status, detail, timeouts, cells, _ = await _run_cells(
                nb, kc, handle, settings, set(), []
            )
    finally:
        if kc is not None:
            kc.stop_channels()
        if handle is not None:
            handle.kill()
        shutil.rmtree(scratch, ignore_errors=True)
    return _result(status, detail, cells, [], start, log_path, timeouts, [], False)


KERNEL_BOOT = """\
import os, sys
for d in ("{tmp}/home/.ipython", "{tmp}/home/runtime", "{tmp}/home/.matplotlib",
          "{tmp}/records"):
    os.makedirs(d, exist_ok=True)
conn = sys.argv[1]
# What the kernel and this notebook import, before the clock of its first cell
# runs (`boot_modules`): torch's import alone is most of a cold start.
import importlib
for name in {modules!r}:
    try:
        importlib.import_module(name)
    except Exception:  # absent from this sandbox, or not a module: the cell says
        pass
try:
    import torch
    torch.set_num_threads(1)
    if "course_utils.data" in sys.modules:
        from course_utils import data
        data.load_split("train"), data.load_split("test")
except Exception:
    pass
sys.argv = ["ipykernel", "-f", conn, "--HistoryManager.enabled=False"]
from ipykernel.kernelapp import launch_new_instance
launch_new_instance()
"""


# Every kernel: the grading helpers and what ipykernel itself needs.
BOOT_MODULES = (
    "torch",
    "numpy",
    "IPython",
    "ipykernel.ipkernel",
    "course_utils.grading.checks",
    "course_utils.grading.harness",
)


def boot_modules(nb: nbformat.NotebookNode) -> list[str]:
    """What a sandboxed kernel imports before the notebook's first cell: the
    `BOOT_MODULES` and every module the instructor's code cells import
    (``import a.b`` → a.b; ``from a import b`` → a and a.b, when b is a module).
    Answer cells and cells without nbgrader metadata are the student's, and
    test cells never run in the kernel (the harness does their work): none of
    them is read, so the boot command names nothing of the hidden tests. Only
    these: importing the course's whole stack
    (scipy.stats, matplotlib.pyplot: 1.4 s) for a set that does not use it
    would cost every submission."""
    from . import notebooks as nbs
    from .static import _parse

    names = list(BOOT_MODULES)
    for cell in nb.cells:
        if (
            cell.cell_type != "code"
            or nbs.is_answer(cell)
            or not nbs.meta(cell)
            or nbs.is_autograded_test(cell)
        ):
            continue
        tree = _parse(cell.source)
        for node in ast.walk(tree) if tree is not None else ():
            if isinstance(node, ast.Import):
                names += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.append(node.module)
                names += [f"{node.module}.{a.name}" for a in node.names if a.name != "*"]
    valid = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
    return list(dict.fromkeys(n for n in names if valid.fullmatch(n)))


def isolated_env(tmp: str, mode: str, pythonpath: str) -> dict[str, str]:
    """The sandboxed kernel's whole environment (paths as the kernel sees them)."""
    home = f"{tmp}/home"
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": home,
        "TMPDIR": tmp,
        "IPYTHONDIR": f"{home}/.ipython",
        "MPLCONFIGDIR": f"{home}/.matplotlib",
        "JUPYTER_RUNTIME_DIR": f"{home}/runtime",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MALLOC_ARENA_MAX": "2",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": pythonpath,
        MODE_ENV: mode,
        RECORD_DIR_ENV: f"{tmp}/records",
    }


def _connection(ip: str, key: str) -> dict:
    return {
        "transport": "ipc",
        "ip": ip,
        "shell_port": 1,
        "iopub_port": 2,
        "stdin_port": 3,
        "control_port": 4,
        "hb_port": 5,
        "key": key,
        "signature_scheme": "hmac-sha256",
        "kernel_name": "",
    }


class _Plain:
    """--unsafe-no-sandbox: the kernel runs as a plain process of the grader's
    user, with rlimits and deadlines only; its "/tmp" is a private temp dir."""

    def __init__(self, command, limits, env, files, log, tmp: Path):
        self.tmp = tmp
        self.started = time.monotonic()
        for inside, content in files.items():
            path = tmp / Path(inside).name
            path.write_bytes(content)
        import resource

        def limit():  # runs in the child before exec
            for which, value in (
                (resource.RLIMIT_AS, limits.address_space),
                (resource.RLIMIT_FSIZE, limits.file_bytes),
                (resource.RLIMIT_CORE, 0),
            ):
                resource.setrlimit(which, (value, value))

        self._log = open(log, "ab")  # noqa: SIM115 — closed in close()
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            env=env,
            cwd=tmp,
            start_new_session=True,
            preexec_fn=limit,  # noqa: PLW1509 — only setrlimit, before exec
        )
        self.startup_seconds = time.monotonic() - self.started

    def alive(self) -> bool:
        return self.proc.poll() is None

    def exit_code(self) -> int | None:
        return self.proc.poll()

    def interrupt(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGINT)

    def oom_killed(self) -> bool:
        return False

    def host_path(self, inside: str) -> str:
        return str(self.tmp / Path(inside).relative_to("/tmp"))

    def open_dir(self, inside: str) -> int:
        return os.open(
            self.host_path(inside), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
        )

    def kill(self) -> None:
        if self.proc.poll() is None:  # once reaped, its pid may be reused
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)

    def close(self) -> None:
        self.kill()
        self._log.close()


def _open_inside(box, inside: str) -> int:
    """A directory of the kernel's file system, opened without following links."""
    if isinstance(box, _Plain):
        return box.open_dir(inside)
    fd = box.root_fd()
    for part in Path(inside).relative_to("/").parts:
        new = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        if fd != box.root_fd():
            os.close(fd)
        fd = new
    return fd if fd != box.root_fd() else os.dup(fd)


def _deliver(box, harness: Harness, uid: int | None) -> str:
    """Write the harness files into a fresh /tmp/h-NONCE of the kernel."""
    inside = f"/tmp/h-{secrets.token_hex(8)}"
    tmp_fd = _open_inside(box, "/tmp")
    try:
        name = inside.rsplit("/", 1)[1]
        os.mkdir(name, 0o755, dir_fd=tmp_fd)
        dir_fd = os.open(
            name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=tmp_fd
        )
        try:
            for fname, content in harness.files.items():
                fd = os.open(
                    fname,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                    0o644,
                    dir_fd=dir_fd,
                )
                with os.fdopen(fd, "wb") as fh:
                    fh.write(content)
            os.mkdir("records", 0o700, dir_fd=dir_fd)
            if uid is not None:
                os.chown("records", uid, uid, dir_fd=dir_fd, follow_symlinks=False)
        finally:
            os.close(dir_fd)
    finally:
        os.close(tmp_fd)
    return inside if not isinstance(box, _Plain) else box.host_path(inside)


async def run_isolated(
    nb: nbformat.NotebookNode,
    settings: RunSettings,
    private_dir: Path,
    *,
    view=None,
    uid: int | None = None,
    unsafe: bool = False,
    skip: set[int] | None = None,
    harness: Harness | None = None,
    name: str = "kernel",
    cpuset: str | None = None,
) -> RunResult:
    """Execute nb's code cells (except `skip`) in a fresh OS sandbox, then the harness.

    Args:
        nb: the notebook; its cells get their outputs.
        settings: mode, deadlines and limits (`settings.sandbox`).
        private_dir: the grader's directory for this run (kernel log, records).
        view: `sandbox.SandboxView` (what the kernel sees).
        uid: the sandbox user (root only).
        unsafe: run without a sandbox (`--unsafe-no-sandbox`).
        skip: indices of code cells not to execute (test cells: the grader's).
        harness: cells run after all of nb's, whose records are the only ones
            read (without a harness: the records under /tmp/records, for the
            instructor's reference run).
        name: a unique name (the cgroup's).
        cpuset: the CPUs the sandbox may use (its worker's), None: any.
    """
    from . import sandbox

    start = time.monotonic()
    private_dir.mkdir(parents=True, exist_ok=True)
    log_path = private_dir / "kernel.log"
    log_path.unlink(missing_ok=True)
    shutil.rmtree(private_dir / "records", ignore_errors=True)
    key = secrets.token_hex(32)
    plain_tmp = None
    if unsafe:
        plain_tmp = Path(tempfile.mkdtemp(prefix="cg-unsafe-"))
        tmp = str(plain_tmp)
        import course_utils

        pythonpath = str(Path(course_utils.__file__).resolve().parents[1])
    else:
        tmp = "/tmp"
        import course_utils

        pythonpath = str(Path(course_utils.__file__).resolve().parents[1])
    inside_conn = "/run/course/kernel.json" if not unsafe else f"{tmp}/kernel.json"
    env = isolated_env(tmp, settings.mode, pythonpath)
    boot = KERNEL_BOOT.format(tmp=tmp, modules=tuple(boot_modules(nb)))
    command = [sys.executable, "-c", boot, inside_conn]
    conn = json.dumps(_connection(f"{tmp}/k", key)).encode()
    cells = [
        CellResult(i, "not run")
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code"
    ]
    status, detail, timeouts = "crashed", "", 0
    records: dict[str, Path] = {}
    problems: list[str] = []
    box = handle = kc = None
    oom = False
    ready = 0.0  # seconds until the kernel answered (sandbox + interpreter start-up)
    extra = [
        nbformat.v4.new_code_cell(src) for _, src in (harness.cells if harness else [])
    ]
    try:
        if unsafe:
            box = _Plain(
                command,
                settings.sandbox,
                env,
                {"kernel.json": conn},
                log_path,
                plain_tmp,
            )
        else:
            box = sandbox.Sandbox(
                command,
                view or sandbox.SandboxView(),
                settings.sandbox,
                env,
                {inside_conn: conn},
                log_path,
                name,
                uid=uid,
                cpuset=cpuset,
            )
        handle = _SandboxHandle(box)
        host_conn = private_dir / "kernel.json"
        host_conn.write_text(json.dumps(_connection(box.host_path("/tmp/k"), key)))
        kc, failed = await _connect(host_conn, handle, settings)
        if failed:
            detail = failed
        else:
            ready = time.monotonic() - start
            delivered = {}

            def before_extra():
                if hasattr(box, "kill_others"):
                    box.kill_others()
                delivered["dir"] = _deliver(box, harness, uid)
                for cell in extra:
                    cell.source = cell.source.replace("{HARNESS_DIR}", delivered["dir"])

            status, detail, timeouts, cells, extra_results = await _run_cells(
                nb,
                kc,
                handle,
                settings,
                skip or set(),
                extra,
                before_extra if harness else None,
            )
            if harness and status == "completed":
                bad = [r for r in extra_results if r.status != "ok"]
                if bad:
                    problems.append(
                        "the grading harness failed: "
                        + "; ".join(f"{r.ename}: {str(r.evalue)[:200]}" for r in bad)
                    )
            if handle.alive():
                where = (
                    "/tmp/records"
                    if harness is None
                    else (
                        delivered.get("dir", "").replace(tmp, "/tmp", 1)
                        if unsafe
                        else delivered.get("dir", "")
                    )
                    + ("/records" if harness else "")
                )
                if harness is None or delivered:
                    try:
                        fd = _open_inside(box, where)
                    except OSError as exc:
                        problems.append(f"records unreadable: {exc}")
                    else:
                        try:
                            records, more = copy_records(
                                fd, private_dir / "records", settings.max_record_bytes
                            )
                            problems += more
                        finally:
                            os.close(fd)
        oom = handle.oom_killed()
    finally:
        if kc is not None:
            kc.stop_channels()
        if box is not None:
            if not oom:
                oom = box.oom_killed()
            box.close()
        if plain_tmp is not None:
            shutil.rmtree(plain_tmp, ignore_errors=True)
    result = _result(
        status, detail, cells, records, start, log_path, timeouts, problems, oom
    )
    result.startup_seconds = ready
    result.extra = extra if harness else []
    return result
