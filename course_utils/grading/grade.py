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
5. the graded notebook (outputs reduced to text and images, markdown answers
   sanitised) goes to ``autograded/STUDENT/SET/`` for formgrader, with
   ``grading.json``, written only after the gradebook commit.

Statuses (`Status`): "graded"; "timed out" (a cell or the notebook hit its
deadline); "crashed" (the kernel died, ran out of memory, or the notebook was
missing or unreadable); "flagged for review" (what a person must look at: a
symlinked folder or notebook, a folder that is the solutions' or a
classmate's, answer cells matched without their metadata); "grader error" (a
bug of ours on this submission, with the exception); "missing" (on the
roster, no submission). A crash or timeout never reads as a plain zero.
"""

from __future__ import annotations

import asyncio
import copy
import enum
import html
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from . import gradebook as gbook
from . import harness, sandbox
from . import notebooks as nbs
from .atomic import atomic_write
from .course import Course, generate
from .execute import Harness, RunResult, RunSettings, run_isolated
from .sandbox import DEFAULT_SANDBOX_UID, GiB, SandboxLimits, SandboxView
from .static import Finding, Policy, scan_sources
from .verify import Check, RecordError, Verdict, reference_checks, verify


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
    Status.GRADED,
)
REPORT_NAME = "grading.json"
RUNS_NAME = ".course-grade-runs.json"
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
    """Grading of one notebook of one submission."""

    name: str
    status: Status
    details: list[str]
    flags: list[str]
    scores: dict[str, float | None]
    seconds: float = 0.0
    startup_seconds: float = 0.0


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
    """grader error > flagged for review > timed out > crashed > graded."""
    for status in SEVERITY:
        if status in statuses:
            return status
    return Status.GRADED


def outcome(run: RunResult | None, verdict: Verdict | None, flags: list[str]) -> Status:
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
    if run.status == "crashed" or run.memory_error:
        return Status.CRASHED
    return Status.GRADED


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


# ------------------------------------------------------------ the reference


@dataclass
class NotebookSpec:
    """One notebook of the set: source, student version, reference checks."""

    name: str
    source: nbformat.NotebookNode
    released: nbformat.NotebookNode
    policy: Policy
    absent: list[str] = field(default_factory=list)
    checks: dict[str, Check] = field(default_factory=dict)
    plan: dict[str, dict] = field(default_factory=dict)
    cases: dict[str, bytes] = field(default_factory=dict)
    view: SandboxView | None = None

    def test_points(self) -> dict[str, float]:
        return {
            nbs.grade_id(c): nbs.points(c)
            for c in self.source.cells
            if nbs.is_autograded_test(c)
        }

    def harness(self) -> Harness:
        """The files and cells the grader feeds after the student's cells."""
        files = {"plan.json": json.dumps(self.plan).encode(), **self.cases}
        cells = [(name, harness.cell_source(name)) for name in self.plan]
        return Harness(files, cells)


async def run_reference(
    spec: NotebookSpec,
    settings: RunSettings,
    work: Path,
    *,
    uid: int | None = None,
    unsafe: bool = False,
    view: SandboxView | None = None,
) -> None:
    """Run the instructor's notebook in "reference" mode; fill spec.checks/plan.

    It runs in a sandbox too (with the whole course package): trusted code,
    but it must see the same environment as the students' kernels.

    Raises:
        RuntimeError: a cell of the solution failed (the grader cannot be
            trusted with a broken reference), a test cell records nothing, or
            a graded test cell has no hidden check.
    """
    nb = nbs.clean(copy.deepcopy(spec.source))
    run = await run_isolated(
        nb,
        settings,
        work / "reference" / spec.name,
        view=view,
        uid=uid,
        unsafe=unsafe,
        name=f"ref-{spec.name}",
    )
    failed = [c for c in run.cells if c.status not in ("ok", "not run")]
    if run.status != "completed" or failed:
        where = (
            f"cell {failed[0].index}: {failed[0].ename}: {failed[0].evalue}"
            if failed and run.status == "completed"
            else run.detail
        )
        raise RuntimeError(
            f"the solution notebook {spec.name}.ipynb failed in reference mode "
            f"({where}); fix it before grading.\n{run.log_tail}"
        )
    planned: dict[str, nbs.PlannedCheck] = {}
    cell_records: dict[str, list[str]] = {}
    for cell in spec.source.cells:
        if not nbs.is_autograded_test(cell):
            continue
        gid = nbs.grade_id(cell)
        found = nbs.planned_checks(cell)
        if not any(p.hidden for p in found):
            raise RuntimeError(
                f"test cell {gid!r} of {spec.name}.ipynb has no hidden check; only "
                "hidden checks carry points — add a checks.check / "
                "checks.check_value between the hidden-test markers"
            )
        for p in found:
            if p.name in planned:
                raise RuntimeError(f"{spec.name}.ipynb: check {p.name!r} is used twice")
            if p.name not in run.records:
                raise RuntimeError(
                    f"{spec.name}.ipynb: check {p.name!r} of {gid!r} recorded nothing"
                )
            planned[p.name] = p
        cell_records[gid] = [p.name for p in found]
    spec.checks = reference_checks(
        cell_records, run.records, {n: p.hidden for n, p in planned.items()}
    )
    spec.plan, spec.cases = {}, {}
    for name, check in spec.checks.items():
        p = planned[name]
        entry = {"kind": p.kind, "expr": p.expr}
        if p.kind == "value":
            entry["value_kind"] = check.record.meta.get("value_kind", "choice")
        else:
            entry["cases"] = f"{name}.cases.pt"
            entry["transform"] = check.record.meta.get("transform")
            entry["labels"] = check.labels()
            spec.cases[entry["cases"]] = run.records[entry["cases"]].read_bytes()
        spec.plan[name] = entry


# ------------------------------------------------------------ one student


@dataclass
class Entry:
    """A student's folder as found: where the notebooks are, what is wrong."""

    folder: Path | None
    flags: list[str] = field(default_factory=list)


def _inside(path: Path, roots: list[Path]) -> Path | None:
    for root in roots:
        try:
            if path.resolve().is_relative_to(root.resolve()):
                return root
        except OSError:
            continue
    return None


def discover(
    submissions: Path,
    set_id: str,
    only: list[str] | None,
    private: list[Path] | None = None,
) -> tuple[dict[str, Entry], list[str]]:
    """Student → Entry for every folder of SUBMISSIONS_DIR, and what was skipped.

    Any printable name is a student id (spaces and non-ASCII letters too). A
    symlinked student or set folder is never followed: the student gets a
    flagged row saying where it points. A folder inside `private` (the
    solutions, …) or another student's folder is flagged the same way.
    """
    found: dict[str, Entry] = {}
    skipped: list[str] = []
    private = private or []
    entries = sorted(submissions.iterdir(), key=lambda p: p.name)
    for entry in entries:
        name = entry.name
        if name.startswith("."):
            continue
        if not name.isprintable() or len(name) > 128:
            skipped.append(f"{name!r}: not a usable student id (control characters)")
            continue
        if entry.is_symlink():
            link = os.readlink(entry)
            found[name] = Entry(
                None,
                [f"the student folder is a symbolic link to {link!r} (not followed)"],
            )
            continue
        if not entry.is_dir():
            skipped.append(f"{name}: not a folder")
            continue
        nested = entry / set_id
        if nested.is_symlink():
            target = os.readlink(nested)
            where = _inside(nested, [*private, *(e for e in entries if e != entry)])
            what = f" — inside {where}" if where else ""
            found[name] = Entry(
                None,
                [
                    f"the set folder is a symbolic link to {target!r}{what} (not followed)"
                ],
            )
            continue
        folder = nested if nested.is_dir() else entry
        found[name] = Entry(folder)
    if only is not None:
        unknown = sorted(set(only) - set(found))
        if unknown:
            raise ValueError(f"students {unknown} have no folder in {submissions}")
        found = {s: found[s] for s in only}
    return found, skipped


def read_timestamp(folder: Path | None) -> tuple[str | None, str]:
    """The submission's timestamp.txt as nbgrader will parse it, or (None, why)."""
    if folder is None:
        return None, ""
    path = folder / "timestamp.txt"
    if not path.exists():
        return None, ""
    try:
        if path.is_symlink() or not path.is_file():
            raise ValueError("not a regular file")
        text = path.read_bytes()[:200].decode("utf-8").strip()
        if not text:
            raise ValueError("empty")
        from dateutil.parser import parse

        parse(text)
    except (OSError, ValueError, OverflowError, UnicodeDecodeError) as exc:
        return None, f"timestamp.txt ignored ({type(exc).__name__}: {str(exc)[:80]})"
    return text, ""


def _finding_cell(finding: Finding) -> str | None:
    match = re.fullmatch(r"cell '(.+)'", finding.where)
    return match.group(1) if match else None


def _answer_for_tests(source: nbformat.NotebookNode) -> dict[str, str]:
    """Each test cell's nearest preceding answer cell (where comments go)."""
    out, last = {}, None
    for cell in source.cells:
        if nbs.is_answer(cell) and nbs.grade_id(cell):
            last = nbs.grade_id(cell)
        elif nbs.is_autograded_test(cell) and last:
            out[nbs.grade_id(cell)] = last
    return out


SAFE_MIME = ("text/plain", "image/png", "image/jpeg", "image/gif")
_JS_URL = re.compile(r"(?i)(java|vb)script\s*:")


def sanitize_for_formgrader(nb: nbformat.NotebookNode) -> None:
    """What formgrader may render of a graded notebook, in place.

    Outputs keep text streams, error text and only the text/plain and image
    (png/jpeg/gif) data of rich outputs — no HTML, JavaScript, SVG, Markdown
    or widget output from the student's kernel. Markdown cells the student
    wrote or added are escaped, so no tag of theirs reaches the page.
    """
    for cell in nb.cells:
        if cell.cell_type == "code":
            kept = []
            for out in cell.get("outputs", []):
                kind = out.get("output_type")
                if kind in ("display_data", "execute_result"):
                    data = {
                        k: v for k, v in out.get("data", {}).items() if k in SAFE_MIME
                    }
                    if not data:
                        continue
                    out["data"] = data
                    out["metadata"] = {}
                kept.append(out)
            cell.outputs = kept
        elif cell.cell_type == "markdown" and (
            nbs.is_answer(cell) or not nbs.grade_id(cell)
        ):
            text = cell.source if isinstance(cell.source, str) else "".join(cell.source)
            cell.source = _JS_URL.sub("blocked:", html.escape(text, quote=False))
            cell.pop("attachments", None)
        elif cell.cell_type == "raw":
            cell.source = html.escape(cell.source, quote=False)


def _annotate(
    nb: nbformat.NotebookNode,
    verdict: Verdict,
    scores: dict[str, float | None],
    max_points: dict[str, float],
    flags: list[str],
) -> None:
    """Add the grader's verdict to the graded notebook (what formgrader shows)."""
    for cell in nb.cells:
        gid = nbs.grade_id(cell)
        if cell.cell_type != "code" or gid not in max_points:
            continue
        cell.outputs = []
        text = [
            (
                f"[grader] {gid}: {scores.get(gid, 0) or 0:g} / {max_points[gid]:g} "
                "points from the hidden tests, run by the grader after your last "
                "cell and verified outside your kernel"
            )
        ]
        text += [f"  {line}" for line in verdict.cells[gid].lines]
        cell.outputs.append(
            nbformat.v4.new_output("stream", name="stdout", text="\n".join(text) + "\n")
        )
    if flags and nb.cells:
        first = next((c for c in nb.cells if c.cell_type == "code"), None)
        if first is not None:
            first.outputs.insert(
                0,
                nbformat.v4.new_output(
                    "stream",
                    name="stderr",
                    text="[grader] FLAGGED FOR REVIEW — auto-graded points withheld:\n"
                    + "".join(f"  - {f}\n" for f in flags),
                ),
            )


def _write_json(path: Path, payload: dict) -> None:
    with atomic_write(path) as fh:
        json.dump(payload, fh, indent=1, ensure_ascii=False)


def _write_notebook(path: Path, nb: nbformat.NotebookNode) -> None:
    with atomic_write(path) as fh:
        nbformat.write(nb, fh)


@dataclass
class _Context:
    course: Course
    set_id: str
    specs: list[NotebookSpec]
    settings: RunSettings
    work: Path
    unsafe: bool = False
    cpusets: dict[int, str] = field(default_factory=dict)  # sandbox uid → its CPUs


def _failed(
    spec: NotebookSpec, status: Status, reason: str, flags: list[str], start: float
) -> tuple[NotebookOutcome, gbook.NotebookGrades, None]:
    """A notebook that could not be graded: zero, every point awaits a person."""
    tests = spec.test_points()
    manual = [
        nbs.grade_id(c) for c in nbs.graded_cells(spec.source) if nbs.is_manual(c)
    ]
    grades = gbook.NotebookGrades(flagged=bool(flags))
    for gid in tests:
        grades.auto_scores[gid] = 0.0
        grades.needs_review.add(gid)
    for gid in manual:
        grades.auto_scores[gid] = 0.0
    scores = {gid: 0.0 for gid in [*tests, *manual]}
    out = NotebookOutcome(
        spec.name,
        status,
        [reason] if reason else [],
        flags,
        scores,
        time.monotonic() - start,
    )
    return out, grades, None


async def _grade_notebook(
    ctx: _Context, spec: NotebookSpec, entry: Entry, student: str, uid: int | None
) -> tuple[NotebookOutcome, gbook.NotebookGrades, nbformat.NotebookNode | None]:
    graded = nbs.graded_cells(spec.source)
    tests = spec.test_points()
    manual = [nbs.grade_id(c) for c in graded if nbs.is_manual(c)]
    start = time.monotonic()
    if entry.folder is None:
        return _failed(spec, Status.FLAGGED, "", list(entry.flags), start)
    path = entry.folder / f"{spec.name}.ipynb"
    if path.is_symlink():
        return _failed(
            spec,
            Status.FLAGGED,
            "",
            [f"{spec.name}.ipynb is a symbolic link (not followed)"],
            start,
        )
    if not path.is_file():
        return _failed(
            spec,
            Status.CRASHED,
            f"{spec.name}.ipynb not found in the submission",
            [],
            start,
        )
    if path.stat().st_nlink > 1:
        return _failed(
            spec,
            Status.FLAGGED,
            "",
            [f"{spec.name}.ipynb is a hard link shared with another file"],
            start,
        )
    try:
        submission = nbs.read_notebook(path)
    except (ValueError, OSError) as exc:
        return _failed(spec, Status.CRASHED, str(exc), [], start)
    merged = nbs.merge(spec.source, spec.released, submission)
    findings = scan_sources(merged.untrusted, merged.trusted, spec.policy)
    flags = list(entry.flags) + list(merged.review)
    skip = {
        i
        for i, c in enumerate(merged.nb.cells)
        if c.cell_type == "code" and nbs.is_autograded_test(c)
    }
    run = await run_isolated(
        merged.nb,
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
    result = verify(spec.checks, run.records, tests)
    details = list(merged.notes)
    if run.detail:
        details.append(run.detail)
    details += [f"records: {p}" for p in run.record_problems]
    details += result.notes
    details += [f"note (not scored): {f}" for f in findings]
    if run.memory_error:
        box = ctx.settings.sandbox
        space = f"{box.address_space / GiB:g} GiB of address space per process"
        if ctx.unsafe or not sandbox.detect().cgroup:
            limit = f"limit {space}; no cgroup here"
        else:
            limit = f"limit {box.memory_bytes / GiB:g} GiB for all its processes"
            if box.address_space != box.memory_bytes:
                limit += f", {space}"
        details.append(f"ran out of memory ({limit})")
    status = outcome(run, result, flags)
    grades = gbook.NotebookGrades(flagged=bool(flags))
    scores: dict[str, float | None] = {}
    for gid in tests:
        cell = result.cells[gid]
        scores[gid] = 0.0 if flags else cell.score
        if flags or (status is not Status.GRADED and not cell.complete):
            grades.needs_review.add(gid)
        if merged.matched_by_position:
            grades.needs_review.add(gid)
    for gid in manual:
        scores[gid] = 0.0 if gid in merged.unanswered else None
    grades.auto_scores = dict(scores)
    comments: dict[str, list[str]] = {}
    for gid, answer in _answer_for_tests(spec.source).items():
        comments.setdefault(answer, []).extend(result.cells[gid].lines)
    for gid in merged.unanswered:
        comments.setdefault(gid, []).insert(0, "No response.")
    for gid in merged.matched_by_position:
        comments.setdefault(gid, []).insert(
            0, "matched without its cell metadata (by position/content): review"
        )
    grades.comments = {gid: "\n".join(lines) for gid, lines in comments.items()}
    _annotate(merged.nb, result, scores, tests, flags)
    sanitize_for_formgrader(merged.nb)
    out = NotebookOutcome(
        spec.name,
        status,
        details,
        flags,
        scores,
        time.monotonic() - start,
        run.startup_seconds,
    )
    return out, grades, merged.nb


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
    result.report = {
        "student": student,
        "set": ctx.set_id,
        "status": status.value,
        "details": details,
        "total": result.total,
        "sandbox": not ctx.unsafe,
        "graded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "notebooks": {
            name: {
                "status": o.status.value,
                "details": o.details,
                "flags": o.flags,
                "scores": o.scores,
                "seconds": round(o.seconds, 2),
                "sandbox_startup_seconds": round(o.startup_seconds, 2),
            }
            for name, o in outcomes.items()
        },
    }
    return result


def _publish(ctx: _Context, results: list[StudentResult], run_id: str) -> None:
    """After the gradebook commit: graded notebooks and reports, then the run
    marker that makes them current (`load_statuses` trusts nothing else)."""
    for r in results:
        out_dir = ctx.course.autograded / r.student / ctx.set_id
        for name, nb in r.graded.items():
            _write_notebook(out_dir / f"{name}.ipynb", nb)
        _write_json(out_dir / REPORT_NAME, {**r.report, "run": run_id})
    marker = ctx.course.autograded / RUNS_NAME
    try:
        runs = json.loads(marker.read_text())
    except (OSError, ValueError):
        runs = {}
    if not isinstance(runs, dict):
        runs = {}
    runs.setdefault(ctx.set_id, {}).update({r.student: run_id for r in results})
    _write_json(marker, runs)


# ------------------------------------------------------------ the whole run


def load_specs(
    course: Course, set_id: str, release_dir: Path, db_path: Path | None
) -> list[NotebookSpec]:
    """Generate the student version (syncing the gradebook copy) and pair notebooks."""
    released = {p.stem: p for p in generate(course, set_id, release_dir, db_path)}
    specs = []
    for path in course.source_notebooks(set_id):
        source = nbs.read_notebook(path)
        missing = [i for i, c in enumerate(source.cells) if not nbs.grade_id(c)]
        if missing:
            raise ValueError(
                f"{path}: cells {missing} have no nbgrader grade_id; make every cell "
                "of a solution notebook an nbgrader cell (read-only if nothing else)"
            )
        specs.append(
            NotebookSpec(
                path.stem,
                source,
                nbs.read_notebook(released[path.stem]),
                Policy.from_metadata(source.metadata),
                nbs.absent_modules(source),
            )
        )
    return specs


def make_views(specs: list[NotebookSpec], work: Path, limits: SandboxLimits) -> None:
    """A filtered copy of the course package per distinct set of absent modules."""
    import course_utils

    package = Path(course_utils.__file__).resolve().parent
    copies: dict[tuple[str, ...], Path] = {}
    for spec in specs:
        key = tuple(sorted(spec.absent))
        if key not in copies:
            dest = work / f"view-{len(copies)}"
            dest.mkdir(parents=True)
            copies[key] = sandbox.filtered_package(package, dest, list(key))
        spec.view = SandboxView(copies[key], list(key), limits.tmpfs_bytes)


def make_full_view(work: Path, limits: SandboxLimits) -> SandboxView:
    """The reference run's view: the whole course package (trusted code)."""
    import course_utils

    package = Path(course_utils.__file__).resolve().parent
    dest = work / "view-full"
    dest.mkdir(parents=True, exist_ok=True)
    return SandboxView(
        sandbox.filtered_package(package, dest, []), [], limits.tmpfs_bytes
    )


async def _grade_all(
    ctx: _Context, students: dict[str, Entry], uids: list[int | None], progress: bool
) -> list[StudentResult]:
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


def _spread_over_cores(cpus: list[int]) -> list[int]:
    """`cpus` ordered first threads of each physical core first, then second
    threads (Linux topology), so workers pinned to the first ones do not share
    a core with hyper-threading."""

    def rank(cpu: int) -> tuple[int, int]:
        path = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            text = path.read_text().strip()
        except OSError:
            return (0, cpu)
        siblings: list[int] = []
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            siblings += range(int(lo), int(hi or lo) + 1)
        return (siblings.index(cpu) if cpu in siblings else 0, cpu)

    return sorted(cpus, key=rank)


def worker_cpusets(uids: list[int | None], cpus: float) -> dict[int, str]:
    """Each worker's own CPUs (sandbox uid → "2" or "2,3"), when the workers,
    each given ceil(cpus) CPUs, fit on the CPUs this process may use; else {}
    (no pinning: the quota alone shares the CPUs)."""
    try:
        allowed = _spread_over_cores(sorted(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return {}
    per = max(1, math.ceil(cpus))
    real = [u for u in uids if u is not None]
    if not real or len(real) * per > len(allowed):
        return {}
    out = {}
    for k, uid in enumerate(real):
        mine = allowed[k * per : (k + 1) * per]
        out[uid] = ",".join(str(c) for c in mine)
    return out


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
    start = time.monotonic()
    phases: dict[str, float] = {}
    last = [start]

    def mark(phase: str) -> None:
        now = time.monotonic()
        phases[phase] = round(now - last[0], 2)
        last[0] = now

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
    workers = options.workers or os.cpu_count() or 1
    workers = max(1, min(workers, len(students) or 1))
    uids = sandbox_uids(options, workers) if not unsafe else [None] * workers
    course.autograded.mkdir(exist_ok=True)
    limits = SandboxLimits(
        memory_bytes=int(options.memory_gib * GiB),
        address_space_bytes=(
            int(options.address_space_gib * GiB) if options.address_space_gib else None
        ),
        pids=options.pids,
        cpus=options.cpus,
    )
    work = Path(tempfile.mkdtemp(prefix="course-grade-"))
    os.chmod(work, 0o700)
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        with gbook.locked(course.gradebook):
            candidate = work / "gradebook.db"
            fingerprint = gbook.snapshot(course.gradebook, candidate)
            specs = load_specs(course, set_id, work / "release", candidate)
            make_views(specs, work, limits)
            mark("prepare")
            ref_settings = RunSettings(  # trusted code: generous deadlines
                mode="reference",
                cell_timeout=max(options.cell_timeout, 120.0),
                notebook_timeout=max(options.notebook_timeout, 1200.0),
                sandbox=SandboxLimits(
                    memory_bytes=max(limits.memory_bytes, 4 * GiB),
                    address_space_bytes=max(limits.address_space, 6 * GiB),
                ),
            )
            full_view = make_full_view(work, limits)
            for spec in specs:
                asyncio.run(
                    run_reference(
                        spec,
                        ref_settings,
                        work,
                        uid=uids[0],
                        unsafe=unsafe,
                        view=full_view,
                    )
                )
            mark("reference")
            settings = RunSettings(
                mode="record",
                cell_timeout=options.cell_timeout,
                notebook_timeout=options.notebook_timeout,
                interrupt_grace=options.interrupt_grace,
                sandbox=limits,
            )
            ctx = _Context(
                course,
                set_id,
                specs,
                settings,
                work,
                unsafe,
                cpusets=worker_cpusets(uids, options.cpus) if not unsafe else {},
            )
            results = asyncio.run(_grade_all(ctx, students, uids, options.progress))
            mark("grading")
            try:
                gbook.write_grades(candidate, set_id, [r.grades for r in results])
                backup = gbook.commit(course.gradebook, candidate, fingerprint)
            except gbook.GradebookChanged:
                # formgrader wrote meanwhile: redo the write on a fresh copy
                fingerprint = gbook.snapshot(course.gradebook, candidate)
                generate(course, set_id, work / "release2", candidate)
                gbook.write_grades(candidate, set_id, [r.grades for r in results])
                backup = gbook.commit(course.gradebook, candidate, fingerprint)
            _publish(ctx, results, run_id)
            export(course, set_id, csv_path, specs=specs)
            mark("gradebook and CSV")
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
        time.monotonic() - start,
        skipped,
        isolation.describe() if isolation else UNSAFE_NOTE,
        phases,
        unsafe,
    )


def columns_of(specs_or_sources) -> tuple[list[tuple[str, str]], float]:
    """(notebook, grade id) of every graded cell in order, and the total points."""
    columns, total = [], 0.0
    for name, source in specs_or_sources:
        for cell in nbs.graded_cells(source):
            columns.append((name, nbs.grade_id(cell)))
            total += nbs.points(cell)
    return columns, total


def load_statuses(course: Course, set_id: str) -> dict[str, tuple[str, str]]:
    """Student → (status, details) from each autograded/STUDENT/SET/grading.json.

    A report counts only when its run id is the one the run marker records
    for that student — written after the gradebook commit — so a run killed
    midway never pairs new reports with the old gradebook or the reverse;
    such a student reads "interrupted".
    """
    out: dict[str, tuple[str, str]] = {}
    if not course.autograded.is_dir():
        return out
    try:
        runs = json.loads((course.autograded / RUNS_NAME).read_text()).get(set_id, {})
    except (OSError, ValueError, AttributeError):
        runs = None
    for folder in course.autograded.iterdir():
        report = folder / set_id / REPORT_NAME
        if folder.is_symlink() or not report.is_file():
            continue
        try:
            data = json.loads(report.read_text())
        except (OSError, ValueError):
            data = {}
        status = data.get("status")
        if (
            status not in STATUSES
            or not isinstance(data, dict)
            or (runs is not None and runs.get(folder.name) != data.get("run"))
        ):
            out[folder.name] = (
                Status.INTERRUPTED.value,
                "the last grading run did not finish for this student; grade again",
            )
            continue
        out[folder.name] = (status, "; ".join(map(str, data.get("details", []))))
    if runs is not None:
        for student in runs:
            out.setdefault(
                student,
                (
                    Status.INTERRUPTED.value,
                    "the last grading run did not finish for this student; grade again",
                ),
            )
    return out


def export(
    course: Course,
    set_id: str,
    csv_path: Path | None = None,
    specs: list[NotebookSpec] | None = None,
) -> Path:
    """Write the set's CSV from the gradebook (manual scores included)."""
    set_id = course.check_set(set_id)
    if specs is None:
        sources = [
            (p.stem, nbs.read_notebook(p)) for p in course.source_notebooks(set_id)
        ]
    else:
        sources = [(s.name, s.source) for s in specs]
    columns, max_total = columns_of(sources)
    csv_path = Path(csv_path or course.root / f"grades-{set_id}.csv")
    rows = gbook.read_rows(
        course.gradebook, set_id, columns, load_statuses(course, set_id)
    )
    gbook.write_csv(rows, columns, max_total, csv_path)
    return csv_path


def print_summary(summary: Summary, out=None) -> None:
    """The end-of-run report: counts per status, who needs attention, where things are."""
    out = out or sys.stdout
    counts = summary.counts()
    n = len(summary.results)
    print(
        f"\nGraded {n} submission(s) of {summary.set_id} in {summary.seconds:.1f} s"
        f" ({summary.seconds / max(n, 1):.1f} s each)",
        file=out,
    )
    print(
        "  " + ", ".join(f"{k}: {v}" for k, v in counts.items() if v or k == "graded"),
        file=out,
    )
    if summary.phases:
        print(
            "  time: " + ", ".join(f"{k} {v:.1f} s" for k, v in summary.phases.items()),
            file=out,
        )
    print(f"  sandbox: {summary.sandbox}", file=out)
    for r in summary.results:
        if r.status is not Status.GRADED:
            print(
                f"  {r.student}: {r.status.value} — {'; '.join(r.details)[:300]}",
                file=out,
            )
    for s in summary.skipped:
        print(f"  skipped {s}", file=out)
    print(f"  grades: {summary.csv_path}", file=out)
    if summary.backup:
        print(f"  previous gradebook saved as {summary.backup}", file=out)
