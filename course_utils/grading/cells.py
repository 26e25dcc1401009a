"""The cell loop: a notebook's code cells, one at a time in a connected kernel,
each with a deadline (see `execute` for what the deadlines do)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import enum
import json
import signal
import time
from dataclasses import dataclass, field
from queue import Empty
from typing import TYPE_CHECKING

import nbformat
from jupyter_client.asynchronous import AsyncKernelClient
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

from .forkserver import Identity, Limits

if TYPE_CHECKING:
    from .kernels import Kernel


class RunStatus(enum.StrEnum):
    """How a notebook run ended (compares equal to its text)."""

    COMPLETED = "completed"  # every cell ran, possibly with errors or interrupts
    CRASHED = "crashed"  # the kernel died or never started
    TIMED_OUT = "timed out"  # a cell ignored its interrupt: the kernel was killed


class CellStatus(enum.StrEnum):
    """What happened to one code cell (compares equal to its text)."""

    OK = "ok"
    ERROR = "error"
    TIMED_OUT = "timed out"
    NOT_RUN = "not run"


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
        max_notebook_output_chars: output kept over all cells (images by their
            size); past it, every output is dropped, with one note.
        max_record_bytes: total size of the records copied out.
    """

    mode: str = "record"
    cell_timeout: float = 60.0
    interrupt_grace: float = 5.0
    startup_timeout: float = 60.0
    limits: Limits = field(default_factory=Limits)
    identity: Identity = field(default_factory=Identity)
    max_output_chars: int = 20_000
    max_notebook_output_chars: int = 8 * 2**20
    max_record_bytes: int = 64 * 2**20
    notebook_timeout: float = 600.0
    sandbox: object = None

    def __post_init__(self):
        if self.sandbox is None:
            from .sandbox import SandboxLimits

            object.__setattr__(self, "sandbox", SandboxLimits())


@dataclass
class CellResult:
    """What happened to one code cell (`CellStatus`)."""

    index: int
    status: CellStatus
    ename: str | None = None
    evalue: str | None = None
    seconds: float = 0.0
    records: list[str] = field(default_factory=list)


class _LimitedNotebookClient(NotebookClient):
    """nbclient that keeps at most `max_output_chars` of output per cell and
    `max_notebook_chars` over the notebook, and no widget state."""

    def __init__(self, nb, max_output_chars: int, max_notebook_chars: int, **kw):
        super().__init__(nb, **kw)
        self._budget: dict[int, int] = {}
        self._max_chars = max_output_chars
        self._max_total = max_notebook_chars
        self._total = 0

    def handle_comm_msg(self, outs, msg, cell_index):
        """Ignore widget messages: grading needs no widget state, and a kernel
        must not make the grader keep arbitrary amounts of it."""

    def _over_notebook(self, outs, size: int) -> bool:
        """Count `size` against the notebook's budget; whether it is over
        (the first time, a note is added to `outs`)."""
        if self._total > self._max_total:
            return True
        self._total += size
        if self._total <= self._max_total:
            return False
        outs.append(_note(f"the notebook's output beyond {self._max_total} "
                          "characters dropped"))  # fmt: skip
        return True

    def output(self, outs, msg, display_id, cell_index):
        used = self._budget.get(cell_index, 0)
        if used >= self._max_chars or self._total > self._max_total:
            return None
        size = len(json.dumps(msg.get("content", {})))
        self._budget[cell_index] = used + size
        if used + size > self._max_chars:
            outs.append(_note(f"output beyond {self._max_chars} characters dropped"))
            return None
        if self._over_notebook(outs, size):
            return None
        return super().output(outs, msg, display_id, cell_index)

    def _update_display_id(self, display_id, msg):
        """An update of an earlier output counts against the notebook's budget
        (it may replace a small output by a large one)."""
        if self._total > self._max_total:
            return None
        size = len(json.dumps(msg.get("content", {})))
        if size > self._max_chars or self._over_notebook([], size):
            return None
        return super()._update_display_id(display_id, msg)


def _note(text: str):
    """A stream output in which the grader says what it did."""
    return nbformat.v4.new_output("stream", name="stderr", text=f"[grader: {text}]\n")


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


def describe_exit(code: int | None) -> str:
    """How a kernel ended, in words (negative codes: the signal's name)."""
    if code is None:
        return "the kernel stopped answering"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the kernel was killed by {name}"
    return f"the kernel exited with code {code}"


def not_run(nb: nbformat.NotebookNode) -> list[CellResult]:
    """One "not run" result per code cell of nb."""
    return [
        CellResult(i, CellStatus.NOT_RUN)
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code"
    ]


def _past_deadline(settings: RunSettings) -> str:
    """The detail of a run stopped by the notebook's deadline."""
    return (
        f"the notebook ran past its deadline of "
        f"{settings.notebook_timeout:g} s; the kernel was killed"
    )


def _cell_client(nb, extra, settings: RunSettings, kc) -> _LimitedNotebookClient:
    """nbclient on nb's cells and then `extra`; `client.replies` collects
    each cell's execute_reply by index."""
    all_nb = copy.copy(nb)
    all_nb.cells = [*nb.cells, *extra]
    client = _LimitedNotebookClient(
        all_nb,
        settings.max_output_chars,
        settings.max_notebook_output_chars,
        timeout=None,
        allow_errors=True,
        record_timing=False,
        iopub_timeout=10,
        raise_on_iopub_timeout=False,
    )
    client.kc = kc
    client.replies = {}
    client.on_cell_executed = lambda cell, cell_index, execute_reply: (
        client.replies.__setitem__(cell_index, execute_reply or {})
    )
    return client


async def run_cells(
    nb: nbformat.NotebookNode,
    kc: AsyncKernelClient,
    kernel: Kernel,
    settings: RunSettings,
    skip: set[int],
    extra: list[nbformat.NotebookNode],
    before_extra=None,
    watch=None,
) -> tuple[RunStatus, str, int, list[CellResult], list[CellResult]]:
    """Execute the code cells of nb (except `skip`) and then `extra` cells.

    Each cell gets min(cell deadline, what is left of the notebook deadline);
    a cell past its deadline is interrupted, and the kernel killed when it
    does not answer within the grace period. `before_extra()` runs before
    the first extra cell, `watch()` after every cell: either may return
    (status, detail) to stop the run there (the kernel is killed). Returns
    (status, detail, timeouts, results of nb's cells, results of the extra
    cells).
    """
    cells = not_run(nb)
    extra_results = [CellResult(-1 - k, CellStatus.NOT_RUN) for k in range(len(extra))]
    by_index = {c.index: c for c in cells}
    status, detail, timeouts = RunStatus.COMPLETED, "", 0
    deadline = time.monotonic() + settings.notebook_timeout
    client = _cell_client(nb, extra, settings, kc)
    order = [
        (i, c, by_index[i])
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and i not in skip
    ]
    order += [(len(nb.cells) + k, c, extra_results[k]) for k, c in enumerate(extra)]
    for index, cell, result in order:
        if index == len(nb.cells) and before_extra is not None:
            stop = before_extra()
            if stop is not None:
                status, detail = stop
                break
        left = deadline - time.monotonic()
        if left <= 0:
            status, detail = RunStatus.TIMED_OUT, _past_deadline(settings)
            kernel.kill()
            break
        limit = min(settings.cell_timeout, left)
        stop = await _run_cell(client, kernel, settings, index, cell, result, limit)
        timeouts += result.status is CellStatus.TIMED_OUT
        if stop is None and watch is not None and (stop := watch()) is not None:
            kernel.kill()
        if stop is not None:
            status, detail = stop
            break
    if status is RunStatus.COMPLETED and timeouts:
        detail = f"{timeouts} cell(s) interrupted after {settings.cell_timeout:g} s"
    return status, detail, timeouts, cells, extra_results


async def _run_cell(
    client, kernel: Kernel, settings: RunSettings, index, cell, result, limit
) -> tuple[RunStatus, str] | None:
    """Execute one cell within `limit` seconds, filling `result`; returns
    (status, detail) when the run must stop here, else None."""
    t0 = time.monotonic()
    task = asyncio.ensure_future(client.async_execute_cell(cell, index))
    done, _ = await asyncio.wait({task}, timeout=limit)
    if not done:
        task.cancel()
        with contextlib.suppress(
            asyncio.CancelledError, DeadKernelError, CellTimeoutError, Empty
        ):
            await task
        return await _interrupted(
            client.kc, kernel, settings, index, cell, result, limit, t0
        )
    try:
        task.result()
    except DeadKernelError:
        code = kernel.exit_code(5.0)
        result.status = CellStatus.ERROR
        result.ename, result.evalue = "DeadKernelError", describe_exit(code)
        result.seconds = time.monotonic() - t0
        return RunStatus.CRASHED, f"{describe_exit(code)} in cell {index}"
    error = _cell_error(cell)
    result.status = CellStatus.ERROR if error else CellStatus.OK
    if error:
        result.ename, result.evalue = error
    result.seconds = time.monotonic() - t0
    if _asked_to_exit(client.replies.get(index, {})):
        # IPython's exit()/quit(): the front end shuts the kernel down
        # (JupyterLab does), so the notebook ends here, every time.
        return (
            RunStatus.CRASHED,
            (
                f"cell {index} called exit(); the kernel was shut down "
                "(exited with code 0)"
            ),
        )
    return None


async def _interrupted(
    kc, kernel: Kernel, settings: RunSettings, index, cell, result, limit, t0
) -> tuple[RunStatus, str] | None:
    """A cell past its deadline: interrupt it (kill the kernel when it does
    not recover, or when the notebook's own deadline has passed)."""
    whole = limit < settings.cell_timeout
    result.status = CellStatus.TIMED_OUT
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
        kernel.kill()
        return RunStatus.TIMED_OUT, _past_deadline(settings)
    kernel.interrupt()
    if not kernel.alive() or not await _responsive(kc, settings.interrupt_grace):
        kernel.kill()
        return (
            RunStatus.TIMED_OUT,
            (
                f"cell {index} ignored the interrupt after "
                f"{settings.cell_timeout:g} s; the kernel was killed"
            ),
        )
    return None
