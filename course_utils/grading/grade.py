"""`course grade SET [SUBMISSIONS_DIR]`: grade a class, trusting no submission.

For every student folder in SUBMISSIONS_DIR (default ``submitted/``; a
student's notebooks sit in ``STUDENT/SET/`` or directly in ``STUDENT/``):

1. the submission is rebuilt from the instructor's notebook (`notebooks.merge`):
   only answer cells and added cells come from the student;
2. the student's code is reviewed statically (`static`);
3. it runs in a sandboxed kernel (`sandbox`, `execute`): as its own
   unprivileged user when the grader is root, with a memory cap, a deadline per
   cell and a hard kill, in a scratch directory, with the course's private
   files (solutions/, the gradebook, other submissions, autograded/) made
   unreadable to that user first;
4. its recorded outputs are compared with the reference outputs of the
   instructor's solution in this process, which never runs student code
   (`verify`);
5. the graded notebook goes to ``autograded/STUDENT/SET/`` for formgrader, with
   ``grading.json`` (status and reasons);

submissions are graded in parallel (one kernel per core), then the gradebook
is updated in one atomic commit (`gradebook`) and the CSV is exported.

Statuses: "graded"; "timed out" (a cell hit its deadline; it was interrupted
or the kernel killed); "crashed" (the kernel died, ran out of memory, or the
notebook was missing or unreadable); "flagged for review" (the static review
or the runtime evidence found tampering or a call into a reference
implementation: its auto-graded points are withheld until a person looks);
"missing" (in the gradebook's roster but no submission). A crash or timeout
never reads as a plain zero: the status column says what happened, and the
cells it cost are marked for manual review in formgrader.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import pwd
import re
import shutil
import stat
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from . import gradebook as gbook
from . import notebooks as nbs
from .course import Course, generate
from .execute import RunSettings, is_memory_error, run_notebook
from .sandbox import ForkServer, GiB, Identity, Limits, can_switch_user
from .static import Finding, Policy, scan_sources
from .verify import Check, RecordError, reference_checks, verify

STATUSES = ("graded", "timed out", "crashed", "flagged for review", "missing")
STUDENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}")
DEFAULT_SANDBOX_UID = 61000
REPORT_NAME = "grading.json"


@dataclass
class GradeOptions:
    """Settings of a grading run (the `course grade` flags).

    Args:
        workers: kernels run at once (default: the number of CPU cores).
        cell_timeout: seconds per cell before it is interrupted.
        interrupt_grace: seconds a kernel gets to recover from an interrupt.
        memory_gib: address-space cap per kernel (GiB).
        sandbox_uid: first uid of the sandbox users (one per worker) when the
            grader runs as root; they must not belong to real accounts.
        csv_path: where the CSV goes (default ROOT/grades-SET.csv).
        students: grade only these students (default: every folder).
        progress: show a progress bar.
        keep_work: keep the private work directory (for debugging).
    """

    workers: int | None = None
    cell_timeout: float = 60.0
    interrupt_grace: float = 5.0
    memory_gib: float = 6.0
    sandbox_uid: int = DEFAULT_SANDBOX_UID
    csv_path: Path | None = None
    students: list[str] | None = None
    progress: bool = True
    keep_work: bool = False

    def validate(self) -> None:
        if self.workers is not None and (
            not isinstance(self.workers, int) or self.workers < 1
        ):
            raise ValueError(f"workers must be an int ≥ 1, got {self.workers!r}")
        for name in ("cell_timeout", "interrupt_grace", "memory_gib"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a number > 0, got {value!r}")
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
    status: str
    details: list[str]
    flags: list[str]
    scores: dict[str, float | None]
    seconds: float = 0.0


@dataclass
class StudentResult:
    """Grading of one student's submission."""

    student: str
    status: str
    details: list[str]
    notebooks: dict[str, NotebookOutcome]
    grades: gbook.SubmissionGrades
    seconds: float = 0.0

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
    sandbox_user: bool = False
    phases: dict[str, float] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in STATUSES}
        for r in self.results:
            out[r.status] += 1
        return out


def worst_status(statuses: list[str]) -> str:
    """flagged for review > timed out > crashed > graded."""
    for status in ("flagged for review", "timed out", "crashed"):
        if status in statuses:
            return status
    return "graded"


# ------------------------------------------------------------- protection


def protected_paths(course: Course, submissions: Path, csv_path: Path) -> list[Path]:
    """What the sandbox user must not read: solutions, submissions, grades, git."""
    paths = [
        course.source,
        submissions,
        course.autograded,
        course.feedback,
        course.gradebook,
        course.root / ".git",
        csv_path,
    ]
    paths += sorted(course.gradebook.parent.glob(course.gradebook.name + ".*"))
    return [p for p in paths if p.exists()]


def tighten(paths: list[Path]) -> list[Path]:
    """Remove group/other permissions on each path; returns those changed.

    Directories become at most 0700 and files 0600; only the top of each path
    changes (a closed directory hides everything below it).
    """
    changed = []
    for path in paths:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if path.is_symlink() or not mode & 0o077:
            continue
        os.chmod(path, mode & 0o700)
        changed.append(path)
    return changed


def probe_access(paths: list[Path], identity: Identity) -> list[Path]:
    """Which of `paths` the sandbox user could read (forks a child that becomes it)."""
    if identity.uid is None or not paths:
        return []
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: become the sandbox user and try each path
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(identity.gid)
            os.setuid(identity.uid)
            hits = []
            for i, path in enumerate(paths):
                try:
                    if os.path.isdir(path):
                        os.listdir(path)
                    else:
                        os.close(os.open(path, os.O_RDONLY))
                    hits.append(i)
                except OSError:
                    pass
            os.write(write_fd, json.dumps(hits).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as fh:
        raw = fh.read()
    os.waitpid(pid, 0)
    return [paths[i] for i in json.loads(raw or b"[]")]


def sandbox_identities(options: GradeOptions, workers: int) -> list[Identity]:
    """One sandbox user per worker when root; the grader's own user otherwise."""
    if not can_switch_user():
        return [Identity()] * workers
    out = []
    for k in range(workers):
        uid = options.sandbox_uid + k
        try:
            owner = pwd.getpwuid(uid).pw_name
        except KeyError:
            out.append(Identity(uid, uid))
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
    checks: dict[str, Check] = field(default_factory=dict)

    def test_points(self) -> dict[str, float]:
        return {
            nbs.grade_id(c): nbs.points(c)
            for c in self.source.cells
            if nbs.is_autograded_test(c)
        }


async def run_reference(
    spec: NotebookSpec, server: ForkServer, settings: RunSettings, work: Path
) -> None:
    """Run the instructor's notebook in "reference" mode; fill spec.checks.

    Raises:
        RuntimeError: a cell of the solution failed (the grader cannot be
            trusted with a broken reference) or a test cell records nothing.
    """
    nb = nbs.clean(copy.deepcopy(spec.source))
    run = await run_notebook(nb, server, settings, work / "reference" / spec.name)
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
    cell_records: dict[str, list[str]] = {}
    for result in run.cells:
        cell = nb.cells[result.index]
        if nbs.is_autograded_test(cell):
            if not result.records:
                raise RuntimeError(
                    f"test cell {nbs.grade_id(cell)!r} of {spec.name}.ipynb records "
                    "no checks; call checks.check / checks.check_value in it"
                )
            cell_records[nbs.grade_id(cell)] = result.records
        elif result.records:
            raise RuntimeError(
                f"cell {result.index} of {spec.name}.ipynb records checks but is not "
                "a graded test cell"
            )
    spec.checks = reference_checks(cell_records, run.records)


# ------------------------------------------------------------ one student


def discover(
    submissions: Path, set_id: str, only: list[str] | None
) -> tuple[dict[str, Path], list[str]]:
    """Student → folder holding their notebooks, and what was skipped (and why)."""
    found: dict[str, Path] = {}
    skipped: list[str] = []
    for entry in sorted(submissions.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir() or entry.is_symlink():
            skipped.append(f"{entry.name}: not a student folder")
            continue
        if not STUDENT_RE.fullmatch(entry.name):
            skipped.append(
                f"{entry.name!r}: student ids may use letters, digits and _.@+-"
            )
            continue
        nested = entry / set_id
        found[entry.name] = nested if nested.is_dir() else entry
    if only is not None:
        unknown = sorted(set(only) - set(found))
        if unknown:
            raise ValueError(f"students {unknown} have no folder in {submissions}")
        found = {s: found[s] for s in only}
    return found, skipped


def _read_timestamp(folder: Path) -> str | None:
    path = folder / "timestamp.txt"
    try:
        text = path.read_text()[:100].strip()
    except OSError:
        return None
    return text or None


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


def _annotate(
    nb: nbformat.NotebookNode,
    verdict_lines: dict[str, list[str]],
    scores: dict[str, float | None],
    max_points: dict[str, float],
    findings: list[Finding],
    flags: list[str],
) -> None:
    """Add the grader's verdict to the graded notebook (what formgrader shows)."""
    for cell in nb.cells:
        gid = nbs.grade_id(cell)
        if cell.cell_type != "code":
            continue
        text = []
        if gid in max_points:
            text.append(
                f"[grader] {gid}: {scores.get(gid, 0) or 0:g} / "
                f"{max_points[gid]:g} points, verified outside the "
                "student's kernel"
            )
            text += [f"  {line}" for line in verdict_lines.get(gid, [])]
        text += [f"[grader] flagged: {f}" for f in findings if _finding_cell(f) == gid]
        if text:
            cell.outputs.append(
                nbformat.v4.new_output(
                    "stream", name="stdout", text="\n".join(text) + "\n"
                )
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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh, indent=1)
    os.replace(tmp, path)


def _write_notebook(path: Path, nb: nbformat.NotebookNode) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        nbformat.write(nb, fh)
    os.replace(tmp, path)


@dataclass
class _Context:
    course: Course
    set_id: str
    specs: list[NotebookSpec]
    server: ForkServer
    settings: RunSettings
    work: Path


async def _grade_notebook(
    ctx: _Context, spec: NotebookSpec, folder: Path, student: str, identity: Identity
) -> tuple[NotebookOutcome, gbook.NotebookGrades, nbformat.NotebookNode | None]:
    graded = nbs.graded_cells(spec.source)
    tests = spec.test_points()
    manual = [nbs.grade_id(c) for c in graded if nbs.is_manual(c)]
    grades = gbook.NotebookGrades()
    path = folder / f"{spec.name}.ipynb"
    start = time.monotonic()

    def failed(reason: str) -> tuple[NotebookOutcome, gbook.NotebookGrades, None]:
        for gid in tests:
            grades.auto_scores[gid] = 0.0
            grades.needs_review.add(gid)
        for gid in manual:
            grades.auto_scores[gid] = 0.0
        scores = {gid: 0.0 for gid in [*tests, *manual]}
        return (
            NotebookOutcome(
                spec.name, "crashed", [reason], [], scores, time.monotonic() - start
            ),
            grades,
            None,
        )

    if not path.is_file() or path.is_symlink():
        return failed(f"{spec.name}.ipynb not found in the submission")
    try:
        submission = nbs.read_notebook(path)
    except (ValueError, OSError) as exc:
        return failed(str(exc))
    merged = nbs.merge(spec.source, spec.released, submission)
    findings = scan_sources(merged.untrusted, merged.trusted, spec.policy)
    settings = RunSettings(**{**ctx.settings.__dict__, "identity": identity})
    run = await run_notebook(
        merged.nb, ctx.server, settings, ctx.work / "students" / student / spec.name
    )
    result = verify(spec.checks, run.records, tests)
    memory = run.memory_error or any(
        is_memory_error(None, line)
        for cell in result.cells.values()
        for line in cell.lines
    )
    flags = [str(f) for f in findings] + result.flags
    flags += [f"records: {p}" for p in run.record_problems]
    details = list(merged.notes)
    if run.detail:
        details.append(run.detail)
    if memory:
        details.append(
            f"ran out of memory (limit {settings.limits.memory_bytes / GiB:g} GiB)"
        )
    if flags:
        status = "flagged for review"
    elif run.status == "timed out" or run.timeouts:
        status = "timed out"
    elif run.status == "crashed" or memory:
        status = "crashed"
    else:
        status = "graded"
    scores: dict[str, float | None] = {}
    for gid in tests:
        cell = result.cells[gid]
        complete = not any("no result" in line for line in cell.lines)
        scores[gid] = 0.0 if flags else cell.score
        if flags or (status != "graded" and not complete):
            grades.needs_review.add(gid)
    for gid in manual:
        scores[gid] = 0.0 if gid in merged.unanswered else None
    grades.auto_scores = dict(scores)
    grades.flagged = bool(flags)
    comments: dict[str, list[str]] = {}
    for gid, answer in _answer_for_tests(spec.source).items():
        comments.setdefault(answer, []).extend(result.cells[gid].lines)
    for f in findings:
        if _finding_cell(f):
            comments.setdefault(_finding_cell(f), []).append(f"flagged: {f.message}")
    for gid in merged.unanswered:
        comments.setdefault(gid, []).insert(0, "No response.")
    grades.comments = {gid: "\n".join(lines) for gid, lines in comments.items()}
    verdict_lines = {gid: c.lines for gid, c in result.cells.items()}
    _annotate(merged.nb, verdict_lines, scores, tests, findings, flags)
    outcome = NotebookOutcome(
        spec.name, status, details, flags, scores, time.monotonic() - start
    )
    return outcome, grades, merged.nb


async def grade_student(
    ctx: _Context, student: str, folder: Path, identity: Identity
) -> StudentResult:
    """Grade one student's notebooks; never raises (a grader error is a status)."""
    start = time.monotonic()
    outcomes: dict[str, NotebookOutcome] = {}
    grades: dict[str, gbook.NotebookGrades] = {}
    out_dir = ctx.course.autograded / student / ctx.set_id
    for spec in ctx.specs:
        try:
            outcome, nb_grades, nb = await _grade_notebook(
                ctx, spec, folder, student, identity
            )
        except Exception as exc:  # noqa: BLE001 — a bug of ours must not cost others
            traceback.print_exc(file=sys.stderr)
            tests = spec.test_points()
            nb_grades = gbook.NotebookGrades(
                {gid: 0.0 for gid in tests}, set(tests), {}, False
            )
            outcome = NotebookOutcome(
                spec.name,
                "crashed",
                [f"grader error: {type(exc).__name__}: {exc}"],
                [],
                {gid: 0.0 for gid in tests},
            )
            nb = None
        outcomes[spec.name] = outcome
        grades[spec.name] = nb_grades
        if nb is not None:
            _write_notebook(out_dir / f"{spec.name}.ipynb", nb)
    status = worst_status([o.status for o in outcomes.values()])
    details = [
        f"{o.name}: {d}" if len(outcomes) > 1 else d
        for o in outcomes.values()
        for d in [*o.flags, *o.details]
    ]
    result = StudentResult(
        student,
        status,
        details,
        outcomes,
        gbook.SubmissionGrades(student, grades, _read_timestamp(folder)),
        time.monotonic() - start,
    )
    _write_json(
        out_dir / REPORT_NAME,
        {
            "student": student,
            "set": ctx.set_id,
            "status": status,
            "details": details,
            "total": result.total,
            "graded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "notebooks": {
                name: {
                    "status": o.status,
                    "details": o.details,
                    "flags": o.flags,
                    "scores": o.scores,
                    "seconds": round(o.seconds, 2),
                }
                for name, o in outcomes.items()
            },
        },
    )
    return result


# ------------------------------------------------------------ the whole run


def server_env(work: Path) -> dict[str, str]:
    """The fork server's environment: threads pinned, nothing else inherited."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(work),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MALLOC_ARENA_MAX": "2",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "MPLCONFIGDIR": str(work / "mpl"),
    }


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
            )
        )
    return specs


async def _grade_all(
    ctx: _Context, students: dict[str, Path], identities: list[Identity], progress: bool
) -> list[StudentResult]:
    from tqdm.auto import tqdm

    free: asyncio.Queue[Identity] = asyncio.Queue()
    for identity in identities:
        free.put_nowait(identity)
    bar = tqdm(
        total=len(students),
        desc=f"grading {ctx.set_id}",
        unit="submission",
        disable=not progress,
        file=sys.stderr,
    )

    async def one(student: str, folder: Path) -> StudentResult:
        identity = await free.get()
        try:
            return await grade_student(ctx, student, folder, identity)
        finally:
            free.put_nowait(identity)
            bar.update(1)
            bar.set_postfix_str(student)

    try:
        return list(await asyncio.gather(*(one(s, f) for s, f in students.items())))
    finally:
        bar.close()


def grade(
    course: Course,
    set_id: str,
    submissions: Path | None = None,
    options: GradeOptions | None = None,
    server: ForkServer | None = None,
) -> Summary:
    """Grade every submission of a set; see the module docstring.

    Args:
        course: the course (solutions, gradebook, autograded/ are found from it).
        set_id: the problem set (a folder of solutions/).
        submissions: folder of student folders (default course.submitted).
        options: workers, deadlines, memory cap, CSV path, ….
        server: a running fork server to reuse (tests and benchmarks grade
            several times without paying its start-up again); default: start one.
    Raises:
        ValueError: bad arguments (named in the message).
        RuntimeError: the solution fails in reference mode, the sandbox user
            could read private files, or the gradebook is locked or changed.
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
    students, skipped = discover(submissions, set_id, options.students)
    csv_path = Path(options.csv_path or course.root / f"grades-{set_id}.csv").resolve()
    workers = options.workers or os.cpu_count() or 1
    workers = max(1, min(workers, len(students) or 1))
    identities = sandbox_identities(options, workers)
    course.autograded.mkdir(exist_ok=True)
    tighten(protected_paths(course, submissions, csv_path))
    readable = probe_access(
        protected_paths(course, submissions, csv_path), identities[0]
    )
    if readable:
        raise RuntimeError(
            "the sandbox user could read private files: "
            f"{[str(p) for p in readable]}; make them (or a parent directory) "
            "inaccessible to other users and run again"
        )
    work = Path(tempfile.mkdtemp(prefix="course-grade-"))
    try:
        with gbook.locked(course.gradebook):
            candidate = work / "gradebook.db"
            fingerprint = gbook.snapshot(course.gradebook, candidate)
            specs = load_specs(course, set_id, work / "release", candidate)
            mark("prepare")
            limits = Limits(memory_bytes=int(options.memory_gib * GiB))
            settings = RunSettings(
                mode="record",
                cell_timeout=options.cell_timeout,
                interrupt_grace=options.interrupt_grace,
                limits=limits,
            )
            own_server = server is None
            if own_server:
                server = ForkServer(server_env(work), work / "forkserver.log")
                mark("start kernels")
            try:
                for identity in identities:
                    if identity.uid is not None:
                        server.kill_user(identity.uid)
                ref_settings = RunSettings(  # trusted code: the default limits
                    mode="reference",
                    cell_timeout=max(options.cell_timeout, 120.0),
                    limits=Limits(),
                )
                for spec in specs:
                    asyncio.run(run_reference(spec, server, ref_settings, work))
                mark("reference")
                ctx = _Context(course, set_id, specs, server, settings, work)
                results = asyncio.run(
                    _grade_all(ctx, students, identities, options.progress)
                )
                mark("grading")
            finally:
                if own_server:
                    server.close()
            try:
                gbook.write_grades(candidate, set_id, [r.grades for r in results])
                backup = gbook.commit(course.gradebook, candidate, fingerprint)
            except gbook.GradebookChanged:
                # formgrader wrote meanwhile: redo the write on a fresh copy
                fingerprint = gbook.snapshot(course.gradebook, candidate)
                generate(course, set_id, work / "release2", candidate)
                gbook.write_grades(candidate, set_id, [r.grades for r in results])
                backup = gbook.commit(course.gradebook, candidate, fingerprint)
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
        identities[0].uid is not None,
        phases,
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
    """Student → (status, details) from each autograded/STUDENT/SET/grading.json."""
    out = {}
    if not course.autograded.is_dir():
        return out
    for folder in course.autograded.iterdir():
        report = folder / set_id / REPORT_NAME
        try:
            data = json.loads(report.read_text())
        except (OSError, ValueError):
            continue
        status = data.get("status") if data.get("status") in STATUSES else "graded"
        out[folder.name] = (status, "; ".join(map(str, data.get("details", []))))
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
    if not summary.sandbox_user:
        print(
            "  note: not running as root, so student code ran as your own user "
            "(limits and deadlines applied, no separate user)",
            file=out,
        )
    for r in summary.results:
        if r.status != "graded":
            print(f"  {r.student}: {r.status} — {'; '.join(r.details)[:300]}", file=out)
    for s in summary.skipped:
        print(f"  skipped {s}", file=out)
    print(f"  grades: {summary.csv_path}", file=out)
    if summary.backup:
        print(f"  previous gradebook saved as {summary.backup}", file=out)
