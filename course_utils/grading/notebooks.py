"""Exercise notebooks as nbgrader sees them, and the notebook a submission is graded as.

nbgrader marks cells in their metadata (``metadata.nbgrader``): answer cells
(``solution: true``), test cells (``grade: true`` with ``points``), and locked
cells. A submission is never executed as the student left it: `merge` rebuilds
it from the instructor's source notebook, taking only the answer cells and the
cells the student added from the submission. Every test, setup and locked cell
comes from the source (with its hidden tests), so editing or deleting them
changes nothing; a missing answer cell gets the released stub.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

MAX_NOTEBOOK_BYTES = 20 * 2**20


def meta(cell) -> dict:
    """A cell's nbgrader metadata ({} for a plain cell)."""
    value = cell.get("metadata", {}).get("nbgrader", {})
    return value if isinstance(value, dict) else {}


def grade_id(cell) -> str | None:
    gid = meta(cell).get("grade_id")
    return gid if isinstance(gid, str) and gid else None


def is_answer(cell) -> bool:
    """A cell the student writes in (nbgrader "solution" cell)."""
    return bool(meta(cell).get("solution"))


def is_graded(cell) -> bool:
    """A cell with points: an auto-graded test cell or a manually graded answer."""
    return bool(meta(cell).get("grade")) or bool(meta(cell).get("task"))


def is_autograded_test(cell) -> bool:
    """A code cell whose points are earned by passing the checks it runs."""
    return (
        cell.cell_type == "code"
        and bool(meta(cell).get("grade"))
        and not is_answer(cell)
    )


def is_manual(cell) -> bool:
    """A graded cell a person scores: a graded answer or a task."""
    return is_graded(cell) and (is_answer(cell) or bool(meta(cell).get("task")))


def points(cell) -> float:
    return float(meta(cell).get("points", 0) or 0)


def graded_cells(nb) -> list:
    """The notebook's graded cells in order."""
    return [c for c in nb.cells if is_graded(c) and grade_id(c)]


# Limits of a notebook's JSON, checked on the raw bytes before it is parsed: a
# real notebook is < 10 deep, a few thousand cells, well under 10⁶ values.
MAX_JSON_DEPTH = 64
MAX_JSON_VALUES = 1_000_000  # strings, arrays and objects
MAX_CELLS = 5_000
# A string, or one of the brackets that open and close arrays and objects.
_JSON_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
_OPEN, _CLOSE = frozenset(b"[{"), frozenset(b"]}")


def check_json_limits(
    raw: bytes,
    max_depth: int = MAX_JSON_DEPTH,
    max_values: int = MAX_JSON_VALUES,
    max_string: int = MAX_NOTEBOOK_BYTES,
) -> None:
    """Refuse JSON that would cost far more to parse than its size says.

    One linear pass over the bytes (strings skipped whole, so a bracket in a
    string is no bracket): nesting deeper than `max_depth`, more than
    `max_values` strings, arrays and objects, or a string longer than
    `max_string` bytes. Malformed JSON passes: `json.loads` refuses it next.

    Raises:
        ValueError: which limit was passed.
    """
    depth = values = 0
    for match in _JSON_TOKEN.finditer(raw):
        first = raw[match.start()]
        if first in _CLOSE:
            depth -= 1
            continue
        values += 1
        if values > max_values:
            raise ValueError(f"more than {max_values} JSON values")
        if first in _OPEN:
            depth += 1
            if depth > max_depth:
                raise ValueError(f"JSON nested deeper than {max_depth} levels")
        elif match.end() - match.start() - 2 > max_string:
            raise ValueError(f"a JSON string longer than {max_string} bytes")


def read_notebook(
    path: Path, max_bytes: int = MAX_NOTEBOOK_BYTES, *, student: bool = False
) -> nbformat.NotebookNode:
    """Read a notebook (v4) within limits; ValueError with the reason if it is
    too big, too deep, has too many cells or values, or is invalid.

    The bytes are read with a size cap and pass `check_json_limits` before
    `json.loads`, and the cell count is checked before nbformat builds and
    validates the notebook. With `student`, everything the merge does not
    need is dropped before anything copies it (`keep_for_merge`).
    """
    with open(path, "rb") as fh:
        raw = fh.read(max_bytes + 1)
    if len(raw) > max_bytes:
        size = max(path.stat().st_size, len(raw))
        raise ValueError(f"{path.name} is {size} bytes, more than {max_bytes}")
    try:
        nb = _parse(raw, student)
    except Exception as exc:  # noqa: BLE001 — json and nbformat raise many kinds
        raise ValueError(f"{path.name} is not a readable notebook: {exc}") from None
    if not isinstance(nb.get("cells"), list):
        raise ValueError(f"{path.name} has no cell list")  # noqa: TRY004 — bad file
    return nb


def _parse(raw: bytes, student: bool) -> nbformat.NotebookNode:
    """Bounded bytes → a v4 notebook, as `nbformat.reads` builds it."""
    from nbformat import ValidationError, convert, reader, validate, versions

    check_json_limits(raw)
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")  # noqa: TRY004 — bad file
    cells = data.get("cells")
    if isinstance(cells, list) and len(cells) > MAX_CELLS:
        raise ValueError(f"more than {MAX_CELLS} cells")
    major, minor = reader.get_version(data)
    if major not in versions:
        raise ValueError(f"unsupported nbformat version {major}")
    if student and major == 4:
        keep_for_merge(data)  # before nbformat builds nodes of what goes
    nb = convert(versions[major].to_notebook_json(data, minor=minor), 4)
    if student:
        keep_for_merge(nb)
    with contextlib.suppress(ValidationError):  # nbformat.read only logs these
        validate(nb)
    return nb


def keep_for_merge(nb: dict) -> None:
    """Drop in place what `merge` never uses from a submission (a notebook or
    its v4 JSON).

    The notebook's metadata, the cells' outputs, execution counts and
    metadata go, except the scalar values of ``metadata.nbgrader`` (grade
    id, solution, …) that tell which cell is which.
    """
    nb["metadata"] = nbformat.NotebookNode()
    if not isinstance(nb.get("cells"), list):
        return
    for cell in nb["cells"]:
        if not isinstance(cell, dict):
            continue
        old = cell.get("metadata")
        marks = old.get("nbgrader") if isinstance(old, dict) else None
        cell["metadata"] = nbformat.NotebookNode()
        if isinstance(marks, dict):
            cell["metadata"]["nbgrader"] = nbformat.NotebookNode(
                {k: v for k, v in marks.items() if isinstance(v, (str, int, float))}
            )
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None


def clean(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop outputs and execution counts in place; returns nb."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return nb


@dataclass
class Merged:
    """The notebook to grade and what the static review needs to know.

    untrusted: (where, source) of code the student wrote (answer cells and
    added cells); trusted: sources of the instructor's code cells; notes:
    what was restored or ignored.
    """

    nb: nbformat.NotebookNode
    untrusted: list[tuple[str, str]] = field(default_factory=list)
    trusted: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unanswered: list[str] = field(default_factory=list)
    review: list[str] = field(default_factory=list)
    matched_by_position: list[str] = field(default_factory=list)


def _student_cell(cell, number: int):
    new = copy.deepcopy(cell)
    new.get("metadata", {}).pop("nbgrader", None)
    if new.cell_type == "code":
        new.outputs = []
        new.execution_count = None
    return new


def _text(cell) -> str:
    src = cell.get("source", "")
    return ("".join(src) if isinstance(src, list) else src).strip()


def match_lost_metadata(
    released: nbformat.NotebookNode, submission: nbformat.NotebookNode
) -> dict[int, str]:
    """Submission cell index → grade id, for cells an editor stripped of metadata.

    Locked cells are recognised by their unchanged source (anchors); an answer
    cell whose id is missing from the submission takes the first cell of its
    type without metadata that lies between the anchors around it in the
    released notebook.
    """
    have = {grade_id(c) for c in submission.cells if grade_id(c)}
    rel = [c for c in released.cells if grade_id(c)]
    by_text: dict[tuple[str, str], str] = {}
    for c in rel:
        if not is_answer(c) and _text(c):
            by_text.setdefault((c.cell_type, _text(c)), grade_id(c))
    assigned: dict[int, str] = {}
    where: dict[str, int] = {}
    for k, c in enumerate(submission.cells):
        gid = grade_id(c)
        if gid:
            where.setdefault(gid, k)
            continue
        found = by_text.get((c.cell_type, _text(c)))
        if found and found not in have and found not in where:
            assigned[k] = found
            where[found] = k
    for j, c in enumerate(rel):
        gid = grade_id(c)
        if not is_answer(c) or gid in where:
            continue
        before = next(
            (where[grade_id(p)] for p in reversed(rel[:j]) if grade_id(p) in where), -1
        )
        after = next(
            (where[grade_id(n)] for n in rel[j + 1 :] if grade_id(n) in where),
            len(submission.cells),
        )
        for k in range(before + 1, after):
            cand = submission.cells[k]
            if (
                k not in assigned
                and not grade_id(cand)
                and cand.cell_type == c.cell_type
            ):
                assigned[k] = gid
                where[gid] = k
                break
    return assigned


def merge(
    source: nbformat.NotebookNode,
    released: nbformat.NotebookNode,
    submission: nbformat.NotebookNode,
) -> Merged:
    """The notebook a submission is graded as (see the module docstring).

    Args:
        source: the instructor's notebook (solutions/, with hidden tests).
        released: the student version of it (for the stubs of missing answers).
        submission: what the student handed in.
    """
    src_cells = list(source.cells)
    position = {grade_id(c): i for i, c in enumerate(src_cells) if grade_id(c)}
    stubs = {grade_id(c): c for c in released.cells if grade_id(c)}
    out = copy.deepcopy(source)
    out.cells = []
    merged = Merged(out)
    emitted: set[int] = set()

    def emit_source(i: int, student=None) -> None:
        cell = src_cells[i]
        gid = grade_id(cell)
        emitted.add(i)
        if is_answer(cell):
            given = student if student is not None else stubs.get(gid, cell)
            if student is None:
                merged.notes.append(
                    f"answer cell {gid!r} missing; graded as unanswered"
                )
            new = copy.deepcopy(cell)
            new.source = given.get("source", "")
            if isinstance(new.source, list):
                new.source = "".join(new.source)
            stub = stubs.get(gid)
            if stub is not None and new.source == stub.source:
                merged.unanswered.append(gid)
            if new.cell_type == "code":
                merged.untrusted.append((f"cell {gid!r}", new.source))
        else:
            new = copy.deepcopy(cell)
            if new.cell_type == "code":
                merged.trusted.append(new.source)
        if new.cell_type == "code":
            new.outputs = []
            new.execution_count = None
        out.cells.append(new)

    def emit_missing_before(limit: int) -> None:
        for i in range(limit):
            if i not in emitted:
                if grade_id(src_cells[i]) is not None and not is_answer(src_cells[i]):
                    merged.notes.append(f"cell {grade_id(src_cells[i])!r} restored")
                emit_source(i)

    assigned = match_lost_metadata(released, submission)
    for gid in sorted(set(assigned.values())):
        if is_answer(src_cells[position[gid]]):
            merged.matched_by_position.append(gid)
            merged.notes.append(
                f"answer cell {gid!r} had lost its metadata; matched by position "
                "and content — marked for review"
            )
    added = 0
    for k, cell in enumerate(submission.cells):
        gid = grade_id(cell) or assigned.get(k)
        i = position.get(gid) if gid else None
        if i is not None and i not in emitted:
            emit_missing_before(i)
            emit_source(i, student=cell if is_answer(src_cells[i]) else None)
            continue
        if i is not None:
            merged.notes.append(f"duplicate of cell {gid!r} treated as an added cell")
        added += 1
        new = _student_cell(cell, added)
        out.cells.append(new)
        if new.cell_type == "code":
            merged.untrusted.append((f"added cell {added}", new.source))
    emit_missing_before(len(src_cells))
    return merged


HIDDEN_BEGIN = "### BEGIN HIDDEN TESTS"
HIDDEN_END = "### END HIDDEN TESTS"


@dataclass(frozen=True)
class PlannedCheck:
    """A `checks.check`/`checks.check_value` call found in a test cell.

    name: the check's record name; expr: the source of its second argument
    (the student's function or answer, evaluated in their namespace by the
    harness); kind: "arrays" or "value"; hidden: inside a hidden-tests block
    (only those carry points); grade_id: the test cell.
    """

    name: str
    expr: str
    kind: str
    hidden: bool
    grade_id: str


def _hidden_spans(source: str) -> list[tuple[int, int]]:
    """Line ranges (1-based, inclusive) inside hidden-test blocks."""
    spans, start = [], None
    for number, line in enumerate(source.splitlines(), 1):
        if line.strip() == HIDDEN_BEGIN:
            start = number
        elif line.strip() == HIDDEN_END and start is not None:
            spans.append((start, number))
            start = None
    return spans


def planned_checks(cell) -> list[PlannedCheck]:
    """The checks a test cell's source calls, in order (read with `ast`, not run).

    Raises:
        ValueError: a check whose name is not a string literal, or without the
            function/answer argument.
    """
    import ast

    source = cell.source if isinstance(cell.source, str) else "".join(cell.source)
    gid = grade_id(cell) or "?"
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ValueError(f"test cell {gid!r} does not parse: {exc}") from None
    spans = _hidden_spans(source)
    out = []
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("check", "check_value")
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "checks"
        ):
            continue
        args = node.args
        if len(args) < 2 or not (
            isinstance(args[0], ast.Constant) and isinstance(args[0].value, str)
        ):
            raise ValueError(
                f"test cell {gid!r}: checks.{node.func.attr} needs a literal name "
                "and the function or answer as its first two arguments"
            )
        hidden = any(a <= node.lineno <= b for a, b in spans)
        kind = "arrays" if node.func.attr == "check" else "value"
        out.append(PlannedCheck(args[0].value, ast.unparse(args[1]), kind, hidden, gid))
    return sorted(out, key=lambda c: (c.hidden, c.name))


def absent_modules(nb) -> list[str]:
    """The modules the grading sandbox leaves out for this notebook.

    Declared in the solution notebook's metadata::

        "course_grading": {"absent_modules": ["course_utils.saliency", ...]}

    Default: every module of `withheld.REFERENCE_MODULES` except those the
    older ``allow_imports`` key allows.
    """
    from .withheld import REFERENCE_MODULES, matching

    settings = nb.metadata.get("course_grading", {}) or {}
    declared = settings.get("absent_modules")
    if declared is not None:
        if not isinstance(declared, list) or not all(
            isinstance(m, str) and m for m in declared
        ):
            raise ValueError(
                "metadata course_grading.absent_modules must be a list of module "
                f"names, got {declared!r}"
            )
        unknown = [m for m in declared if matching(m) is None]
        if unknown:
            raise ValueError(
                "metadata course_grading.absent_modules may name only modules that "
                f"compute answers ({', '.join(REFERENCE_MODULES)}, or modules inside "
                f"them), got {unknown}"
            )
        return list(declared)
    allowed = set(settings.get("allow_imports", []) or [])
    return [m for m in REFERENCE_MODULES if m not in allowed]


def handout_withholds(nb) -> list[str]:
    """The course modules the hand-out keeps back until this set's deadline.

    Default: the course's own modules among `absent_modules` (Captum is a public
    library). A set whose references were handed out with an earlier set
    declares less in its metadata, a subset of its absent modules::

        "course_grading": {"absent_modules": ["course_utils.saliency", ...],
                           "handout_withholds": []}

    ps6 grades Grad-CAM against `course_utils.saliency`, which ships after
    ps1–ps3 with the lecture notebooks that use it: its sandbox still leaves
    the module out, but holding it back from the hand-out until ps6's
    deadline would hold back notebooks 01–11 with it.

    Raises:
        ValueError: not a list of module names, or a module that is not among
            the set's absent course modules.
    """
    absent = [m for m in absent_modules(nb) if m.split(".")[0] == "course_utils"]
    settings = nb.metadata.get("course_grading", {}) or {}
    declared = settings.get("handout_withholds")
    if declared is None:
        return absent
    if not isinstance(declared, list) or not all(
        isinstance(m, str) and m for m in declared
    ):
        raise ValueError(
            "metadata course_grading.handout_withholds must be a list of module "
            f"names, got {declared!r}"
        )
    stray = [m for m in declared if m not in absent]
    if stray:
        raise ValueError(
            "metadata course_grading.handout_withholds may name only course modules "
            f"of absent_modules ({', '.join(absent) or 'none'}), got {stray}"
        )
    return list(declared)
