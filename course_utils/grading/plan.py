"""The reference plan: what the solution records, for the harness to feed students."""

from __future__ import annotations

import asyncio
import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from . import harness, sandbox
from . import notebooks as nbs
from .course import Course, generate
from .execute import Harness, RunResult, RunSettings, run_isolated
from .outcome import GradeOptions
from .sandbox import GiB, SandboxLimits, SandboxView
from .static import Policy
from .verify import Check, reference_checks


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


def reference_settings(options: GradeOptions, limits: SandboxLimits) -> RunSettings:
    """The reference run's settings: trusted code, so generous deadlines."""
    return RunSettings(
        mode="reference",
        cell_timeout=max(options.cell_timeout, 120.0),
        notebook_timeout=max(options.notebook_timeout, 1200.0),
        sandbox=SandboxLimits(
            memory_bytes=max(limits.memory_bytes, 4 * GiB),
            address_space_bytes=max(limits.address_space, 6 * GiB),
        ),
    )


def run_references(
    specs: list[NotebookSpec],
    settings: RunSettings,
    work: Path,
    limits: SandboxLimits,
    *,
    uid: int | None,
    unsafe: bool,
) -> None:
    """Run every solution notebook in reference mode, one after the other."""
    full_view = make_full_view(work, limits)
    for spec in specs:
        asyncio.run(
            run_reference(spec, settings, work, uid=uid, unsafe=unsafe, view=full_view)
        )


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
    _require_completed(spec, run)
    planned, cell_records = _planned_checks(spec, run.records)
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


def _require_completed(spec: NotebookSpec, run: RunResult) -> None:
    """Raise unless every cell of the solution ran without an error."""
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


def _planned_checks(
    spec: NotebookSpec, records: dict[str, Path]
) -> tuple[dict[str, nbs.PlannedCheck], dict[str, list[str]]]:
    """Each check of the solution's test cells by name, and each cell's checks.

    Raises:
        RuntimeError: a graded test cell has no hidden check, a check name is
            used twice, or a check recorded nothing.
    """
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
            if p.name not in records:
                raise RuntimeError(
                    f"{spec.name}.ipynb: check {p.name!r} of {gid!r} recorded nothing"
                )
            planned[p.name] = p
        cell_records[gid] = [p.name for p in found]
    return planned, cell_records
