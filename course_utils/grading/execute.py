"""Run a notebook's cells in a kernel, one at a time, each with a deadline.

`run` holds the one sequence every kernel goes through (`kernels.Kernel`):
start it, connect, execute the notebook's code cells in order with nbclient —
skipping the test cells — then the grader's harness cells, copy the records
the harness wrote, clean up. `run_isolated` (grading) runs it in a fresh OS
sandbox (`kernels.SandboxKernel`); `run_notebook` and `run_notebook_launched`
(`course check`, on a student's own machine) in a kernel forked from the
`ForkServer` or launched as a child process. Each cell gets min(cell deadline,
what is left of the notebook deadline). A cell that passes its deadline is
interrupted (SIGINT, as Jupyter's stop button); if the kernel does not answer
within the grace period — a loop that catches KeyboardInterrupt, a C call that
ignores signals — the kernel and everything it started are killed and the
remaining cells are reported as not run. A kernel that dies (``os._exit``, a
segfault, the CPU limit) is reported as crashed, with its exit code or signal.
The grader never waits on the student for longer than the deadlines.

What the cells record for grading (see `checks`) is copied out of the kernel's
records folder into the grader's private directory: regular files only, named
as records are, within a size budget, opened without following links.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from . import outbox, sockets
from .cells import (
    CellResult,
    CellStatus,
    RunSettings,
    RunStatus,
    describe_exit,
    not_run,
    run_cells,
)
from .forkserver import ForkServer
from .kernels import (  # noqa: F401 — KERNEL_BOOT, the envs: public here too
    KERNEL_BOOT,
    ForkKernel,
    HarnessKernel,
    Kernel,
    LaunchedKernel,
    PlainKernel,
    SandboxKernel,
    clean_user_files,
    isolated_env,
    kernel_env,
)
from .outbox import (  # noqa: F401 — public here too
    CASES_FILE_RE,
    NO_SPACE,
    RECORD_FILE_RE,
    copy_records,
    tmp_space,
)

_Client = sockets.Client  # the grader's kernel client


@dataclass
class RunResult:
    """The outcome of one notebook run.

    status: a `RunStatus`. `timeouts` counts interrupted cells, `memory_error`
    tells whether the kernel ran out of memory: a memory cap killed one of its
    processes, or a cell raised MemoryError (an allocation the address-space
    limit refused). `disk_full`: the kernel's /tmp was full at the end, or the
    harness found no space in it; `tmp_bytes`: that /tmp's size (0: unknown).
    """

    status: RunStatus
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
    disk_full: bool = False
    tmp_bytes: int = 0


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


def _log_tail(path: Path, limit: int = 2000) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def is_memory_error(ename: str | None, evalue: str | None = None) -> bool:
    """Whether a cell raised Python's MemoryError: an allocation the kernel's
    address-space limit refused. The exception's class decides; its message
    (`evalue`) is not read."""
    return ename == "MemoryError"


def _result(
    status, detail, cells, records, start, log_path, timeouts, problems, oom
) -> RunResult:
    memory = oom or any(is_memory_error(c.ename) for c in cells)
    return RunResult(
        status,
        detail,
        cells,
        records,
        time.monotonic() - start,
        _log_tail(log_path),
        timeouts,
        memory,
        problems,
    )


async def _connect(
    conn, kernel: Kernel, settings: RunSettings
) -> tuple[_Client, str | None]:
    """A client on the kernel's connection file `conn`, its channels started
    and the kernel asked to be ready within `settings.startup_timeout`.

    A kernel with a /tmp of its own (`open_dir`: the grading kernels) has its
    sockets pinned first (`sockets.pin`): held before any student code runs,
    connected through the held files, never re-dialled. Returns (client,
    None) when it answered, else (client, why it did not start: the error and
    how the kernel exited). The caller stops the client's channels; when this
    raises instead, it has stopped them itself.
    """
    kc = _Client(connection_file=str(conn))
    kc.load_connection_file()
    kc.alive_check = kernel.alive
    kc.watch = sockets.Watch()
    try:
        if hasattr(kernel, "open_dir"):
            names = sockets.socket_names(kc)
            try:
                kc.pinned = await sockets.pin(
                    lambda: kernel.open_dir("/tmp"), os.path.dirname(kc.ip),
                    names, kernel.alive, settings.startup_timeout,
                )  # fmt: skip
            except (OSError, TimeoutError) as exc:
                return kc, f"the kernel did not start: {exc}; " + describe_exit(
                    kernel.exit_code()
                )
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=settings.startup_timeout)
        except RuntimeError as exc:
            why = (
                f"the kernel did not start: {exc}; {describe_exit(kernel.exit_code())}"
            )
            return kc, why
    except BaseException:
        kc.stop_channels()
        raise
    return kc, None


def _watched(kc: _Client, kernel: Kernel):
    """A check for `run_cells`: (CRASHED, why) once a channel's connection
    closed while the kernel lives (an oversized message, or the kernel closed
    it), else None (a kernel that died is told by its exit)."""

    def check():
        closed = kc.watch.poll() if kc.watch is not None else []
        if closed and kernel.exit_code(0.5) is None:
            return RunStatus.CRASHED, sockets.why_closed(closed[0], kc.pinned)
        return None

    return check


def _space(kc: _Client | None) -> outbox.Space | None:
    """How full the kernel's /tmp is (read from the held descriptor)."""
    if kc is None or kc.pinned is None:
        return None
    try:
        return tmp_space(kc.pinned.dir_fd)
    except OSError:
        return None


def _copy_out(kernel: Kernel, dest: Path, max_bytes: int):
    """The records in the kernel's records folder, copied to `dest`:
    ({name: path}, problems)."""
    try:
        fd = kernel.records_dir()
    except OSError as exc:
        return {}, [f"records unreadable: {exc}"]
    if fd is None:
        return {}, []
    try:
        return copy_records(fd, dest, max_bytes)
    finally:
        os.close(fd)


async def run(
    nb: nbformat.NotebookNode,
    kernel: Kernel | HarnessKernel,
    settings: RunSettings,
    private_dir: Path,
    *,
    skip: set[int] | None = None,
    harness: Harness | None = None,
) -> RunResult:
    """Execute nb's code cells (except `skip`) in `kernel`, then the harness.

    Args:
        nb: the notebook; its cells get their outputs.
        kernel: a kernel not yet started (`kernels`); it is closed at the end.
        settings: mode, deadlines and limits.
        private_dir: the grader's directory for this run (kernel log, records).
        skip: indices of code cells not to execute (test cells: the grader's).
        harness: cells run after all of nb's, whose records are the only ones
            read (the kernel must be a `HarnessKernel`). Without a harness: the
            records of the kernel's records folder.
    """
    start = time.monotonic()
    private_dir.mkdir(parents=True, exist_ok=True)
    log_path = private_dir / "kernel.log"
    log_path.unlink(missing_ok=True)
    shutil.rmtree(private_dir / "records", ignore_errors=True)
    cells, records, problems = not_run(nb), {}, []
    status, detail, timeouts = RunStatus.CRASHED, "", 0
    extra = (
        [nbformat.v4.new_code_cell(src) for _, src in harness.cells] if harness else []
    )
    kc, oom, ready, space, no_space = None, False, 0.0, None, False
    try:
        kc, failed = await _connect(kernel.start(private_dir), kernel, settings)
        if failed:
            detail = failed
        else:
            ready = time.monotonic() - start
            out = await _execute(nb, kc, kernel, settings, skip, harness, extra)
            status, detail, timeouts, cells, done, delivered, no_space = out
            bad = [r for r in done if r.status != CellStatus.OK]
            if harness and status is RunStatus.COMPLETED and bad:
                problems.append(
                    "the grading harness failed: "
                    + "; ".join(f"{r.ename}: {str(r.evalue)[:200]}" for r in bad)
                )
            if harness is None or delivered:
                records, more = _copy_out(
                    kernel, private_dir / "records", settings.max_record_bytes
                )
                problems += more
    finally:
        space = _space(kc)
        if kc is not None:
            kc.stop_channels()
        oom = kernel.out_of_memory()
        kernel.close()
    result = _result(
        status, detail, cells, records, start, log_path, timeouts, problems, oom
    )
    result.startup_seconds = ready
    result.extra = extra
    if space is not None:
        result.tmp_bytes = space.size
    result.disk_full = no_space or bool(space and space.full)
    return result


async def _execute(nb, kc, kernel, settings, skip, harness, extra):
    """run_cells with the harness delivered before `extra` and the client's
    channels watched; returns run_cells' answer and whether the delivery
    found no space left in the kernel's /tmp."""
    no_space: list[OSError] = []
    delivered: list[str] = []

    def before_extra():
        try:
            folder = kernel.deliver(harness.files)
        except OSError as exc:
            if exc.errno not in NO_SPACE:
                raise
            no_space.append(exc)
            kernel.kill()
            return RunStatus.CRASHED, "no space left in the kernel's /tmp"
        delivered.append(folder)
        for cell in extra:
            cell.source = cell.source.replace("{HARNESS_DIR}", folder)
        return None

    out = await run_cells(
        nb, kc, kernel, settings, skip or set(), extra,
        before_extra if harness else None, _watched(kc, kernel),
    )  # fmt: skip
    return (*out, bool(delivered), bool(no_space))


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
    kernel = ForkKernel(
        server, settings.mode, settings.limits, settings.identity, scratch_parent
    )
    return await run(nb, kernel, settings, private_dir)


async def run_notebook_launched(
    nb: nbformat.NotebookNode, settings: RunSettings, private_dir: Path
) -> RunResult:
    """Execute `nb`'s code cells in place in a kernel launched as a child process.

    `course check` on a machine without `fork` (Windows): the same cells, the
    same per-cell and per-notebook deadlines and the same report as
    `run_notebook`, but the kernel pays its imports, has no resource limits and
    runs as the student (it is the student's own machine and code); see
    `kernels.LaunchedKernel`.
    """
    return await run(nb, LaunchedKernel(settings.mode), settings, private_dir)


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
    modules = boot_modules(nb)
    if unsafe:
        kernel = PlainKernel(settings.mode, modules, settings.sandbox)
    else:
        kernel = SandboxKernel(
            settings.mode, modules, view, settings.sandbox, name, uid, cpuset
        )
    return await run(nb, kernel, settings, private_dir, skip=skip, harness=harness)


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
                names += [
                    f"{node.module}.{a.name}" for a in node.names if a.name != "*"
                ]
    valid = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
    return list(dict.fromkeys(n for n in names if valid.fullmatch(n)))
