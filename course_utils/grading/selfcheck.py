"""`course check NOTEBOOK`: a student's self-check before submitting.

Runs a copy of the notebook top to bottom in a fresh kernel (with a deadline per
cell; the notebook file itself is never modified), then prints, for each
graded question, whether its visible tests passed and — when not — the hint
the test gave. It also runs the grader's static review on the student's cells,
so what will not work in the grading sandbox (an import of the reference
implementation, reading files…) is pointed out now, not after grading. Hidden tests are not in the student's notebook; they run only when
the instructor grades.
"""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

from . import notebooks as nbs
from .execute import (
    CellResult,
    CellStatus,
    RunResult,
    RunSettings,
    run_notebook,
    run_notebook_launched,
)
from .forkserver import ForkServer, Limits, server_env
from .static import Policy, scan_sources
from .withheld import SHORT_ANSWERS, SHORT_ANSWERS_WHY


def _first_lines(text: str, n: int = 12) -> str:
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return "\n".join(lines[:n])


def _form_only(source: str) -> bool:
    """A test cell whose visible part only checks an answer's form (`validate`)."""
    visible = source.split("### BEGIN HIDDEN TESTS")[0]
    return "checks.validate(" in visible and "checks.check(" not in visible


KERNELS = ("auto", "fork", "process")


def self_check(
    path: str | Path,
    cell_timeout: float = 120.0,
    out=None,
    server: ForkServer | None = None,
    kernel: str = "auto",
) -> int:
    """Run the notebook's visible tests and report; returns the exit code.

    Args:
        path: the student's notebook.
        cell_timeout: seconds per cell.
        out: where the report goes (default sys.stdout).
        server: a running fork server to reuse (tests); default: start one.
        kernel: "fork" (a kernel forked from a warm helper, with limits: fast),
            "process" (a kernel launched as a child process: Windows, where
            there is no fork) or "auto" (fork where the OS has it).
    Returns:
        0 when every visible test passes and nothing would be flagged, else 1.
    """
    out = out or sys.stdout
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if kernel == "auto":
        kernel = "fork" if hasattr(os, "fork") else "process"
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"NOTEBOOK {path} does not exist")
    if path.suffix != ".ipynb":
        raise ValueError(f"NOTEBOOK must be a .ipynb file, got {path.name}")
    nb = nbs.read_notebook(path)
    findings = _static_findings(nb)
    run_nb = nbs.clean(copy.deepcopy(nb))
    print(f"Checking {path} (a copy runs; your file is not changed) …", file=out)
    run = _run_copy(run_nb, cell_timeout, server, kernel)
    passed, failed = _report_cells(run_nb, run, out)
    if run.status != "completed":
        print(f"! {run.detail}", file=out)
    for f in findings:
        print(
            f"⚑ {f} — not available when your work is graded in the sandbox; "
            "your instructor sees this note",
            file=out,
        )
    print(
        f"\n{passed} of {passed + failed} auto-graded question(s) pass their visible "
        "tests; hidden tests run when your instructor grades.",
        file=out,
    )
    if any(nbs.is_autograded_test(c) and _form_only(c.source) for c in run_nb.cells):
        print(f"○ short answers: {SHORT_ANSWERS}: {SHORT_ANSWERS_WHY}.", file=out)
    return 0 if failed == 0 and run.status == "completed" else 1


def _static_findings(nb) -> list:
    """The grader's static review of the student's cells (answers and cells
    without nbgrader metadata), the instructor's cells trusted."""
    untrusted = [
        (f"cell {nbs.grade_id(c)!r}" if nbs.grade_id(c) else f"cell {i + 1}", c.source)
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and (nbs.is_answer(c) or not nbs.meta(c))
    ]
    trusted = [
        c.source
        for c in nb.cells
        if c.cell_type == "code" and nbs.meta(c) and not nbs.is_answer(c)
    ]
    return scan_sources(untrusted, trusted, Policy.from_metadata(nb.metadata))


def _run_copy(run_nb, cell_timeout: float, server, kernel: str) -> RunResult:
    """Run `run_nb` in a forked ("fork") or launched ("process") kernel, in a
    scratch folder removed afterwards (with the fork server it started)."""
    work = Path(tempfile.mkdtemp(prefix="course-check-"))
    own_server = server is None and kernel == "fork"
    try:
        settings = RunSettings(
            mode="", cell_timeout=cell_timeout, interrupt_grace=5.0, limits=Limits()
        )
        if kernel == "process":
            return asyncio.run(run_notebook_launched(run_nb, settings, work / "run"))
        if own_server:
            server = ForkServer(server_env(work), work / "forkserver.log")
        return asyncio.run(run_notebook(run_nb, server, settings, work / "run"))
    finally:
        if own_server and server is not None:
            server.close()
        shutil.rmtree(work, ignore_errors=True)


def withheld_here(nb) -> bool:
    """Whether this hand-out lacks a module the notebook's set withholds until its
    deadline: decided in this process from what is installed, never from what
    the kernel reports (a student can raise an exception of any name)."""
    try:
        modules = nbs.absent_modules(nb)
    except ValueError:
        return False
    for name in modules:
        try:
            if importlib.util.find_spec(name) is None:
                return True
        except (ImportError, ValueError):
            return True
    return False


def _report_cells(run_nb, run: RunResult, out) -> tuple[int, int]:
    """One line per graded question (and per failing answer or cell); returns
    (questions passed, questions failed)."""
    by_index = {c.index: c for c in run.cells}
    withheld = withheld_here(run_nb)
    passed = failed = 0
    for i, cell in enumerate(run_nb.cells):
        result = by_index.get(i)
        if nbs.is_autograded_test(cell):
            ok = _report_test(cell, result, out, withheld)
            passed, failed = passed + ok, failed + (not ok)
        elif nbs.is_manual(cell):
            stub = "YOUR ANSWER HERE" in cell.source
            print(
                f"✎ {nbs.grade_id(cell)} ({nbs.points(cell):g} pt): graded by hand"
                + (" — not answered yet" if stub else ""),
                file=out,
            )
        elif result is not None and result.status != "ok" and nbs.is_answer(cell):
            reason = (
                "not answered yet"
                if result.ename == "NotImplementedError"
                else f"{result.ename}: {_first_lines(result.evalue, 3)}"
            )
            print(f"✗ {nbs.grade_id(cell)}: {reason}", file=out)
        elif result is not None and result.status not in ("ok", "not run"):
            print(
                f"! cell {i + 1}: {result.ename}: {_first_lines(result.evalue, 3)}",
                file=out,
            )
    return passed, failed


def _report_test(cell, result: CellResult | None, out, withheld: bool) -> bool:
    """The line of one auto-graded test cell; whether it counts as passed.

    A cell that stopped at the withheld reference (`checks.ReferenceWithheld`)
    counts as "graded after submission" only where `withheld_here` found the
    reference really absent from this hand-out."""
    gid, pts = nbs.grade_id(cell), nbs.points(cell)
    if result is None or result.status == CellStatus.NOT_RUN:
        print(
            f"✗ {gid} ({pts:g} pt): not run — an earlier cell stopped the kernel",
            file=out,
        )
        return False
    if result.status == CellStatus.OK and _form_only(cell.source):
        print(f"○ {gid} ({pts:g} pt): form ok; {SHORT_ANSWERS}", file=out)
        return True
    if result.status == CellStatus.OK:
        print(f"✓ {gid} ({pts:g} pt): visible tests pass", file=out)
        return True
    if withheld and result.ename == "ReferenceWithheld":
        print(
            f"○ {gid} ({pts:g} pt): your function runs; its reference ships "
            "after the deadline, graded after submission",
            file=out,
        )
        return True
    print(f"✗ {gid} ({pts:g} pt): {result.ename}", file=out)
    for line in _first_lines(result.evalue).splitlines():
        print(f"    {line}", file=out)
    return False
