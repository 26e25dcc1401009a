"""A grading run's typed vocabulary: its options in, statuses and outcomes out."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from . import gradebook as gbook
from .execute import RunResult
from .sandbox import DEFAULT_SANDBOX_UID
from .verify import Marking


class Status(str, enum.Enum):
    """A submission's status, worst first in `SEVERITY`."""

    GRADED = "graded"
    TIMED_OUT = "timed out"
    CRASHED = "crashed"
    FLAGGED = "flagged for review"
    GRADER_ERROR = "grader error"
    MISSING = "missing"
    INTERRUPTED = "interrupted"


STATUSES = tuple(s.value for s in Status)
SEVERITY = (
    Status.GRADER_ERROR,
    Status.FLAGGED,
    Status.TIMED_OUT,
    Status.CRASHED,
    Status.MISSING,
    Status.GRADED,
)
UNSAFE_NOTE = "UNSAFE: graded without a sandbox (--unsafe-no-sandbox)"


@dataclass
class GradeOptions:
    """Settings of a grading run (the `course grade` flags).

    Args:
        workers: kernels run at once (default: the number of CPU cores).
        cell_timeout: seconds per cell before it is interrupted.
        notebook_timeout: seconds for a whole notebook (its kernel is killed).
        interrupt_grace: seconds a kernel gets to recover from an interrupt.
        memory_gib: memory cap of a submission's whole process tree (GiB).
        address_space_gib: address space each of its processes may reserve
            (RLIMIT_AS, GiB; default: memory_gib). Past it, an allocation
            raises MemoryError in the kernel instead of killing a process.
        pids: processes and threads a submission may have at once.
        cpus: CPU cores a submission may use (cgroup quota).
        sandbox_uid: first uid of the sandbox users (one per worker) when the
            grader runs as root; they must not belong to real accounts.
        csv_path: where the CSV goes (default ROOT/grades-SET.csv).
        students: grade only these students (default: every folder).
        progress: show a progress bar.
        keep_work: keep the private work directory (for debugging).
        unsafe_no_sandbox: grade without an OS sandbox where none is available
            (every row then says so).
    """

    workers: int | None = None
    cell_timeout: float = 60.0
    notebook_timeout: float = 600.0
    interrupt_grace: float = 5.0
    memory_gib: float = 6.0
    address_space_gib: float | None = None
    pids: int = 128
    cpus: float = 1.0
    sandbox_uid: int = DEFAULT_SANDBOX_UID
    csv_path: Path | None = None
    students: list[str] | None = None
    progress: bool = True
    keep_work: bool = False
    unsafe_no_sandbox: bool = False

    def validate(self) -> None:
        if self.workers is not None and (
            not isinstance(self.workers, int) or self.workers < 1
        ):
            raise ValueError(f"workers must be an int ≥ 1, got {self.workers!r}")
        for name in (
            "cell_timeout",
            "notebook_timeout",
            "interrupt_grace",
            "memory_gib",
            "cpus",
        ):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a number > 0, got {value!r}")
        space = self.address_space_gib
        if space is not None and (not isinstance(space, (int, float)) or not space > 0):
            raise ValueError(
                f"address_space_gib must be a number > 0 or None, got {space!r}"
            )
        if not isinstance(self.pids, int) or self.pids < 16:
            raise ValueError(f"pids must be an int ≥ 16, got {self.pids!r}")
        if (
            not isinstance(self.sandbox_uid, int)
            or not 1000 <= self.sandbox_uid < 2**31
        ):
            raise ValueError(
                f"sandbox_uid must be an int in 1000 … 2³¹, got {self.sandbox_uid!r}"
            )


@dataclass
class NotebookOutcome:
    """Grading of one notebook of one submission.

    mistakes: test cell grade id → {`mistakes` category: hidden cases that
    did not pass and show it} (empty for a flagged notebook: its points and
    its mistakes wait for a person).
    """

    name: str
    status: Status
    details: list[str]
    flags: list[str]
    scores: dict[str, float | None]
    seconds: float = 0.0
    startup_seconds: float = 0.0
    mistakes: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass
class StudentResult:
    """Grading of one student's submission."""

    student: str
    status: Status
    details: list[str]
    notebooks: dict[str, NotebookOutcome]
    grades: gbook.SubmissionGrades
    seconds: float = 0.0
    report: dict = field(default_factory=dict)
    graded: dict[str, nbformat.NotebookNode] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return round(
            sum(v or 0.0 for nb in self.notebooks.values() for v in nb.scores.values()),
            2,
        )


@dataclass
class Summary:
    """What `grade` did: results per student, the CSV and the gradebook backup."""

    set_id: str
    results: list[StudentResult]
    csv_path: Path
    backup: Path | None
    seconds: float
    skipped: list[str] = field(default_factory=list)
    sandbox: str = ""
    phases: dict[str, float] = field(default_factory=dict)
    unsafe: bool = False

    @property
    def sandbox_user(self) -> bool:
        return "sandbox user" in self.sandbox

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in STATUSES}
        for r in self.results:
            out[Status(r.status).value] += 1
        return out


def worst_status(statuses: list[Status]) -> Status:
    """grader error > flagged for review > timed out > crashed > missing > graded."""
    for status in SEVERITY:
        if status in statuses:
            return status
    return Status.GRADED


def outcome(run: RunResult | None, verdict: Marking | None, flags: list[str]) -> Status:
    """The one place a notebook's status is decided, from typed facts only.

    Args:
        run: the sandbox run (None: nothing ran, e.g. no notebook).
        verdict: the comparison of the harness's records.
        flags: what a person must review (folder links, lost metadata …).
    """
    if flags:
        return Status.FLAGGED
    if run is None:
        return Status.CRASHED
    if run.status == "timed out" or run.timeouts:
        return Status.TIMED_OUT
    # The submission's doing, not ours: the kernel died, ran out of memory, or
    # filled its private /tmp (execute's typed `disk_full`; absent on older runs).
    if run.status == "crashed" or run.memory_error or getattr(run, "disk_full", False):
        return Status.CRASHED
    return Status.GRADED
