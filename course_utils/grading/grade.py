"""`course grade SET [SUBMISSIONS_DIR]`: grade a class, trusting no submission.

For every entry of SUBMISSIONS_DIR (default ``submitted/``; a student's
notebooks sit in ``STUDENT/SET/`` or directly in ``STUDENT/``) — every
student gets a row, whatever their folder holds:

1. the submission is rebuilt from the instructor's notebook (`notebooks.merge`):
   only answer cells and added cells come from the student; answer cells
   whose metadata an editor lost are matched by position and content and
   marked for review;
2. it runs in an operating-system sandbox of its own (`sandbox`): bubblewrap
   namespaces (no network, own pids, a read-only root holding only the
   environment and the course package *without the modules that compute the
   set's answers*, a size-capped private tmpfs as the only writable place)
   and a cgroup for the whole process tree (memory, processes, one CPU), with
   a deadline per cell and per notebook. Solutions, the gradebook and other
   students' folders are not mounted at all;
3. the test cells are not run in the student's namespace; after the student's
   last cell the grader's harness (`harness`) feeds the hidden cases — inputs
   built by the instructor's solution in the reference run, delivered into a
   directory the student's cells never saw — to the student's functions and
   records what they return;
4. the verdict is computed in this process (`verify`): only hidden cases carry
   points, visible cases give feedback, and `outcome` turns typed results into
   one `Status`;
5. `publish_run`: the graded notebook (outputs reduced to text and images,
   markdown answers sanitised) and ``grading.json`` are staged for
   ``autograded/STUDENT/SET/`` (a failure is that student's alone); the
   gradebook commit stores grades and statuses together; the CSV follows from
   the gradebook at once; then the staged files are moved into place.

Statuses (`Status`): "graded"; "timed out" (a cell or the notebook hit its
deadline); "crashed" (the kernel died, ran out of memory or of space in its
/tmp, or the notebook was unreadable); "flagged for review" (what a person must look at: a
symlinked folder or notebook, a folder that is the solutions' or a
classmate's, answer cells matched without their metadata); "grader error" (a
bug of ours on this submission, with the exception); "missing" (on the
roster, no submission; or a folder without this set's notebook). A crash or timeout never reads as a plain zero.

This module only orchestrates; each step has its own module, in the order a
submission meets them: `discover` (folders, links), `plan` (the reference
run), `execute` (the sandboxed kernel), `verify` (the verdict), `outcome`
(the status), `score` (the points), `formgrader` (the graded notebook),
`publish` (gradebook, reports, CSV).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from . import gradebook as gbook
from . import notebooks as nbs
from . import sandbox
from .course import Course
from .cpus import _spread_over_cores, worker_cpusets
from .discover import Entry, Unusable, discover, read_submission, read_timestamp
from .execute import RunResult, RunSettings, run_isolated
from .formgrader import SAFE_MIME, annotate, sanitize_for_formgrader
from .outcome import (
    SEVERITY,
    STATUSES,
    UNSAFE_NOTE,
    GradeOptions,
    NotebookOutcome,
    Status,
    StudentResult,
    Summary,
    outcome,
    worst_status,
)
from .plan import (
    NotebookSpec,
    load_specs,
    make_full_view,
    make_views,
    reference_settings,
    run_reference,
    run_references,
)
from .publish import (
    REPORT_NAME,
    RUNS_NAME,
    Commit,
    columns_of,
    export,
    load_statuses,
    print_summary,
    publish_run,
    remove_stale,
    report,
)
from .sandbox import GiB, MiB, SandboxLimits
from .score import QuestionScores, score
from .static import review
from .verify import RecordError, verify

__all__ = [
    "REPORT_NAME",
    "RUNS_NAME",
    "SAFE_MIME",
    "SEVERITY",
    "STATUSES",
    "UNSAFE_NOTE",
    "Entry",
    "GradeOptions",
    "NotebookOutcome",
    "NotebookSpec",
    "QuestionScores",
    "Status",
    "StudentResult",
    "Summary",
    "_spread_over_cores",
    "check_isolation",
    "columns_of",
    "discover",
    "export",
    "grade",
    "grade_student",
    "load_specs",
    "load_statuses",
    "make_full_view",
    "make_views",
    "outcome",
    "print_summary",
    "read_timestamp",
    "run_reference",
    "sandbox_uids",
    "sanitize_for_formgrader",
    "score",
    "worker_cpusets",
    "worst_status",
]


# ------------------------------------------------------------ the whole run


def grade(
    course: Course,
    set_id: str,
    submissions: Path | None = None,
    options: GradeOptions | None = None,
) -> Summary:
    """Grade every submission of a set; see the module docstring.

    Args:
        course: the course (solutions, gradebook, autograded/ are found from it).
        set_id: the problem set (a folder of solutions/).
        submissions: folder of student folders (default course.submitted).
        options: workers, deadlines, limits, CSV path, ….
    Raises:
        ValueError: bad arguments (named in the message).
        RuntimeError: no sandbox (without --unsafe-no-sandbox), the solution
            fails in reference mode, or the gradebook is locked or changed.
    """
    options = options or GradeOptions()
    options.validate()
    clock = _Phases()
    set_id = course.check_set(set_id)
    submissions = Path(submissions or course.submitted).resolve()
    if not submissions.is_dir():
        raise ValueError(f"SUBMISSIONS_DIR {submissions} is not a directory")
    isolation = check_isolation(options)
    unsafe = isolation is None
    students, skipped = discover(
        submissions, set_id, options.students, [course.source, course.autograded]
    )
    csv_path = Path(options.csv_path or course.root / f"grades-{set_id}.csv").resolve()
    uids = _worker_uids(options, len(students), unsafe)
    course.autograded.mkdir(exist_ok=True)
    limits = sandbox_limits(options)
    work = Path(tempfile.mkdtemp(prefix="course-grade-"))
    os.chmod(work, 0o700)
    run = _Run(course, set_id, options, limits, uids, unsafe, work)
    try:
        results, backup = _grade_under_lock(run, students, csv_path, clock)
    except RecordError as exc:
        raise RuntimeError(f"the reference records are unusable: {exc}") from None
    finally:
        if not options.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    return Summary(
        set_id,
        sorted(results, key=lambda r: r.student),
        csv_path,
        backup,
        clock.total(),
        skipped,
        isolation.describe() if isolation else UNSAFE_NOTE,
        clock.phases,
        unsafe,
    )


@dataclass
class _Run:
    """What a grading run decided before it took the gradebook's lock."""

    course: Course
    set_id: str
    options: GradeOptions
    limits: SandboxLimits
    uids: list[int | None]
    unsafe: bool
    work: Path


class _Phases:
    """Seconds spent in each phase of the run, in order."""

    def __init__(self) -> None:
        self.start = self.last = time.monotonic()
        self.phases: dict[str, float] = {}

    def mark(self, phase: str) -> None:
        now = time.monotonic()
        self.phases[phase] = round(now - self.last, 2)
        self.last = now

    def total(self) -> float:
        return time.monotonic() - self.start


def _grade_under_lock(
    run: _Run, students: dict[str, Entry], csv_path: Path, clock: _Phases
) -> tuple[list[StudentResult], Path | None]:
    """Reference, grading and publishing, all while the gradebook is locked."""
    course, set_id, work = run.course, run.set_id, run.work
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{os.urandom(4).hex()}"
    with gbook.locked(course.gradebook):
        remove_stale(course, csv_path)  # what a killed run left half-written
        candidate = work / "gradebook.db"
        fingerprint = gbook.snapshot(course.gradebook, candidate)
        specs = load_specs(course, set_id, work / "release", candidate)
        make_views(specs, work, run.limits)
        clock.mark("prepare")
        run_references(
            specs,
            reference_settings(run.options, run.limits),
            work,
            run.limits,
            uid=run.uids[0],
            unsafe=run.unsafe,
        )
        clock.mark("reference")
        ctx = _Context(
            course,
            set_id,
            specs,
            student_settings(run.options, run.limits),
            work,
            run.unsafe,
            cpusets=worker_cpusets(run.uids, run.options.cpus)
            if not run.unsafe
            else {},
        )
        results = asyncio.run(_grade_all(ctx, students, run.uids, run.options.progress))
        clock.mark("grading")
        commit = Commit(run_id, candidate, fingerprint, work, csv_path, specs)
        backup = publish_run(course, set_id, results, commit)
        clock.mark("gradebook and CSV")
    return results, backup


def check_isolation(options: GradeOptions) -> sandbox.Isolation | None:
    """The sandbox to grade in; None with --unsafe-no-sandbox where there is none.

    Raises:
        RuntimeError: no sandbox here and --unsafe-no-sandbox not given.
    """
    found = sandbox.detect()
    if found.usable:
        return found
    if options.unsafe_no_sandbox:
        return None
    raise RuntimeError(
        f"refusing to grade: {found.describe()}. Student code must run in an "
        "operating-system sandbox (Linux with bubblewrap; as root, or with user "
        "namespaces). Run on such a machine, or pass --unsafe-no-sandbox to grade "
        "anyway (every row is then marked as graded without a sandbox)."
    )


def _worker_uids(
    options: GradeOptions, n_students: int, unsafe: bool
) -> list[int | None]:
    """One entry per worker: its sandbox uid, or None."""
    workers = options.workers or os.cpu_count() or 1
    workers = max(1, min(workers, n_students or 1))
    return sandbox_uids(options, workers) if not unsafe else [None] * workers


def sandbox_uids(options: GradeOptions, workers: int) -> list[int | None]:
    """One sandbox user per worker when root; None (user namespaces) otherwise."""
    if os.name != "posix" or os.geteuid() != 0:
        return [None] * workers
    import pwd  # POSIX only: `course check` imports this module's CLI on Windows

    out = []
    for k in range(workers):
        uid = options.sandbox_uid + k
        try:
            owner = pwd.getpwuid(uid).pw_name
        except KeyError:
            out.append(uid)
            continue
        raise ValueError(
            f"sandbox uid {uid} belongs to the account {owner!r}; pick another "
            "range with --sandbox-uid"
        )
    return out


def sandbox_limits(options: GradeOptions) -> SandboxLimits:
    """The sandbox limits of one submission (the --memory, --pids, … flags)."""
    return SandboxLimits(
        memory_bytes=int(options.memory_gib * GiB),
        address_space_bytes=(
            int(options.address_space_gib * GiB) if options.address_space_gib else None
        ),
        pids=options.pids,
        cpus=options.cpus,
    )


def student_settings(options: GradeOptions, limits: SandboxLimits) -> RunSettings:
    """How a submission runs: recording mode, the deadlines of the flags."""
    return RunSettings(
        mode="record",
        cell_timeout=options.cell_timeout,
        notebook_timeout=options.notebook_timeout,
        interrupt_grace=options.interrupt_grace,
        sandbox=limits,
    )


# ------------------------------------------------------------ every student


@dataclass
class _Context:
    course: Course
    set_id: str
    specs: list[NotebookSpec]
    settings: RunSettings
    work: Path
    unsafe: bool = False
    cpusets: dict[int, str] = field(default_factory=dict)  # sandbox uid → its CPUs


async def _grade_all(
    ctx: _Context, students: dict[str, Entry], uids: list[int | None], progress: bool
) -> list[StudentResult]:
    """Every student, as many at once as there are workers (one uid each)."""
    from tqdm.auto import tqdm

    free: asyncio.Queue = asyncio.Queue()
    for uid in uids:
        free.put_nowait(uid)
    bar = tqdm(
        total=len(students),
        desc=f"grading {ctx.set_id}",
        unit="submission",
        disable=not progress,
        file=sys.stderr,
    )

    async def one(student: str, entry: Entry) -> StudentResult:
        uid = await free.get()
        try:
            return await grade_student(ctx, student, entry, uid)
        finally:
            free.put_nowait(uid)
            bar.update(1)
            bar.set_postfix_str(student)

    try:
        return list(await asyncio.gather(*(one(s, e) for s, e in students.items())))
    finally:
        bar.close()


async def grade_student(
    ctx: _Context, student: str, entry: Entry, uid: int | None
) -> StudentResult:
    """Grade one student's notebooks; never raises (a grader error is a status)."""
    start = time.monotonic()
    outcomes: dict[str, NotebookOutcome] = {}
    grades: dict[str, gbook.NotebookGrades] = {}
    graded: dict[str, nbformat.NotebookNode] = {}
    for spec in ctx.specs:
        try:
            outcome_, nb_grades, nb = await _grade_notebook(
                ctx, spec, entry, student, uid
            )
        except Exception as exc:  # noqa: BLE001 — a bug of ours must not cost others
            traceback.print_exc(file=sys.stderr)
            outcome_, nb_grades, nb = _failed(
                spec,
                Status.GRADER_ERROR,
                f"grader error: {type(exc).__name__}: {exc}",
                [],
                start,
            )
        outcomes[spec.name] = outcome_
        grades[spec.name] = nb_grades
        if nb is not None:
            graded[spec.name] = nb
    status = worst_status([o.status for o in outcomes.values()])
    timestamp, why = read_timestamp(entry.folder)
    details = [
        f"{o.name}: {d}" if len(outcomes) > 1 else d
        for o in outcomes.values()
        for d in [*o.flags, *o.details]
    ]
    if why:
        details.append(why)
    if ctx.unsafe:
        details.insert(0, UNSAFE_NOTE)
    result = StudentResult(
        student,
        status,
        details,
        outcomes,
        gbook.SubmissionGrades(student, grades, timestamp),
        time.monotonic() - start,
        graded=graded,
    )
    result.report = report(result, ctx.set_id, ctx.unsafe)
    return result


# ------------------------------------------------------------ one notebook


async def _grade_notebook(
    ctx: _Context, spec: NotebookSpec, entry: Entry, student: str, uid: int | None
) -> tuple[NotebookOutcome, gbook.NotebookGrades, nbformat.NotebookNode | None]:
    """One notebook of one student: merge, review, run, verify, score."""
    start = time.monotonic()
    submission = read_submission(entry, spec.name)
    if isinstance(submission, Unusable):
        return _failed(
            spec, submission.status, submission.reason, submission.flags, start
        )
    merged = nbs.merge(spec.source, spec.released, submission)
    # Off the event loop and bounded in time: no answer delays another's deadline.
    findings = await review(merged.untrusted, merged.trusted, spec.policy)
    flags = list(entry.flags) + list(merged.review)
    # An answer too large, too deep or too slow to review waits for a person.
    flags += [f"static review: {f}" for f in findings if f.category == "review"]
    run = await _run_submission(ctx, spec, merged.nb, student, uid)
    tests = spec.test_points()
    verdict = verify(spec.checks, run.records, tests)
    status = outcome(run, verdict, flags)
    scores = score(spec, merged, verdict, status, flags)
    annotate(merged.nb, verdict, scores.points, tests, flags)  # what formgrader shows
    sanitize_for_formgrader(merged.nb)
    details = [
        *merged.notes,
        *([run.detail] if run.detail else []),
        *(f"records: {p}" for p in run.record_problems),
        *verdict.notes,
        *(f"note (not scored): {f}" for f in findings),
    ]
    if run.memory_error:
        details.append(_out_of_memory(ctx))
    if getattr(run, "disk_full", False):
        details.append(out_of_space(ctx.settings.sandbox))
    found = {} if flags else {g: c.mistakes() for g, c in verdict.cells.items()}
    out = NotebookOutcome(
        spec.name,
        status,
        details,
        flags,
        scores.points,
        time.monotonic() - start,
        run.startup_seconds,
        {gid: kinds for gid, kinds in found.items() if kinds},
    )
    return out, scores.grades(), merged.nb


async def _run_submission(
    ctx: _Context,
    spec: NotebookSpec,
    nb: nbformat.NotebookNode,
    student: str,
    uid: int | None,
) -> RunResult:
    """The merged notebook in its sandbox: the student's cells, then the harness."""
    skip = {
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and nbs.is_autograded_test(c)
    }
    return await run_isolated(
        nb,
        ctx.settings,
        ctx.work / "students" / student / spec.name,
        view=spec.view,
        uid=uid,
        unsafe=ctx.unsafe,
        skip=skip,
        harness=spec.harness(),
        name=f"s{abs(hash((student, spec.name))) % 10**12}-{os.getpid()}",
        cpuset=ctx.cpusets.get(uid) if uid is not None else None,
    )


def _out_of_memory(ctx: _Context) -> str:
    """The detail line of a kernel that ran out of memory: which limit it hit."""
    box = ctx.settings.sandbox
    space = f"{box.address_space / GiB:g} GiB of address space per process"
    if ctx.unsafe or not sandbox.detect().cgroup:
        limit = f"limit {space}; no cgroup here"
    else:
        limit = f"limit {box.memory_bytes / GiB:g} GiB for all its processes"
        if box.address_space != box.memory_bytes:
            limit += f", {space}"
    return f"ran out of memory ({limit})"


def out_of_space(box: SandboxLimits) -> str:
    """The detail line of a submission that filled its private /tmp."""
    return f"ran out of space in /tmp ({box.tmpfs_bytes / MiB:g} MiB)"


def _failed(
    spec: NotebookSpec, status: Status, reason: str, flags: list[str], start: float
) -> tuple[NotebookOutcome, gbook.NotebookGrades, None]:
    """A notebook that could not be graded: zero, every test awaits a person."""
    scores = score(spec, None, None, status, flags)
    out = NotebookOutcome(
        spec.name,
        status,
        [reason] if reason else [],
        flags,
        scores.points,
        time.monotonic() - start,
    )
    return out, scores.grades(), None
