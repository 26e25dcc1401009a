"""`course similarity SET`: answers that look copied, in a page a person reads.

Reads a set's answers (``submitted/<student>/<set>/<notebook>.ipynb``, the
answer cells by grade id), the course's own implementation of each question
(every function of the course modules the set leaves out of its grading
sandbox, every function of the lecture notebooks, and the model answer), and
lists the pairs `similarity.compare_answers` finds, with a side-by-side view:

* ``similarity-SET/similarity.html`` — offline, no script, no external
  resource (a Content-Security-Policy forbids both), every student string
  through `sanitize.html`;
* ``similarity-SET/similarity.csv`` — one row per pair, spreadsheet-safe
  (`sanitize.csv_field`).

It never touches the gradebook or a score: a listed pair is for a person to
judge. The class report (`course report`) embeds the same table with
`html_section(check_set(course, set_id))`.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import notebooks as nbs
from . import sanitize
from .atomic import atomic_write
from .course import Course
from .similarity import THRESHOLD, Comparison, Pair, Unit, compare_answers

_SOLUTION = re.compile(
    r"^([ \t]*)### BEGIN SOLUTION[^\n]*\n.*?^[ \t]*### END SOLUTION[^\n]*$",
    re.DOTALL | re.MULTILINE,
)
SIDE_BY_SIDE_LIMIT = 200  # pairs shown in full on the page; the CSV has them all


@dataclass
class SetComparison:
    """A set's comparison and where its inputs came from."""

    set_id: str
    comparison: Comparison
    students: int = 0
    unreadable: dict[str, str] = field(default_factory=dict)  # student → why
    references: int = 0


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def stub_of(model_answer: str) -> str:
    """The released cell of an answer: each solution block → NotImplementedError."""
    return _SOLUTION.sub(r"\1raise NotImplementedError()", model_answer)


def _functions(text: str, where: str) -> list[Unit]:
    """Every function of a trusted (course) source, as a reference unit."""
    import ast

    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    return [
        Unit("course", f"{where}: {node.name}", ast.get_source_segment(text, node) or "")
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    ]


def _module_files(root: Path, module: str) -> list[Path]:
    path = root.joinpath(*module.split("."))
    if path.is_dir():
        return sorted(path.rglob("*.py"))
    return [path.with_suffix(".py")] if path.with_suffix(".py").is_file() else []


def course_units(course: Course, set_id: str) -> list[Unit]:
    """The course's code a student of SET could copy: the functions of the course
    modules the set leaves out of its sandbox, and of the lecture notebooks."""
    from .static import python_source

    modules: set[str] = set()
    for path in course.source_notebooks(set_id):
        modules.update(
            m for m in nbs.absent_modules(nbs.read_notebook(path)) if m.startswith("course_utils")
        )
    units = []
    for module in sorted(modules):
        for path in _module_files(course.root, module):
            rel = path.relative_to(course.root).as_posix()
            units += _functions(path.read_text(errors="replace"), rel)
    for path in sorted((course.root / "notebooks").glob("*.ipynb")):
        nb = nbs.read_notebook(path)
        code = "\n\n".join(
            python_source(_source(c)) for c in nb.cells if c.cell_type == "code"
        )
        units += _functions(code, f"notebooks/{path.name}")
    return units


def _answers_of(nb, released, ids: set[str]) -> dict[str, str]:
    found = {nbs.grade_id(c): _source(c) for c in nb.cells if nbs.grade_id(c) in ids}
    if released is not None and ids - set(found):
        for k, gid in nbs.match_lost_metadata(released, nb).items():
            if gid in ids and gid not in found:
                found[gid] = _source(nb.cells[k])
    return found


def check_set(
    course: Course,
    set_id: str,
    submissions: Path | None = None,
    threshold: float | None = None,
) -> SetComparison:
    """Compare every answer of SET with the course's code and with each other.

    Raises:
        ValueError: an unknown set, a missing submissions folder, a bad threshold.
    """
    from .discover import discover, read_submission

    set_id = course.check_set(set_id)
    submissions = Path(submissions or course.submitted)
    if not submissions.is_dir():
        raise ValueError(f"SUBMISSIONS_DIR {submissions} is not a folder")
    shared = course_units(course, set_id)
    references: dict[str, list[Unit]] = {}
    stubs: dict[str, str] = {}
    answers: dict[str, dict[str, str]] = {}
    unreadable: dict[str, str] = {}
    notebooks = course.source_notebooks(set_id)
    private = [course.source, course.autograded, course.feedback]
    entries, _ = discover(submissions, set_id, None, private)
    for path in notebooks:
        source = nbs.read_notebook(path)
        prefix = "" if len(notebooks) == 1 else f"{path.stem}/"
        ids = set()
        for cell in source.cells:
            if nbs.is_answer(cell) and cell.cell_type == "code":
                gid = nbs.grade_id(cell)
                ids.add(gid)
                model = Unit("course", f"model answer ({path.name} {gid})", _source(cell))
                references[prefix + gid] = [*shared, model]
                stubs[prefix + gid] = stub_of(_source(cell))
        released_path = course.release / set_id / path.name
        released = nbs.read_notebook(released_path) if released_path.is_file() else None
        for student, entry in entries.items():
            nb = read_submission(entry, path.stem)
            if not hasattr(nb, "cells"):
                unreadable[student] = nb.reason or "; ".join(nb.flags)
                continue
            for gid, text in _answers_of(nb, released, ids).items():
                answers.setdefault(student, {})[prefix + gid] = text
    comparison = compare_answers(answers, references, stubs, threshold or THRESHOLD)
    return SetComparison(set_id, comparison, len(entries), unreadable, len(shared))


def _side(unit: Unit, marked: set[int]) -> str:
    rows = []
    for n, text in enumerate(sanitize.text(unit.source).splitlines(), start=1):
        cls = ' class="same"' if n in marked else ""
        rows.append(f"<span{cls}><i>{n:>3}</i> {sanitize.html(text, None)}</span>")
    who = sanitize.html(unit.who, 200)
    where = sanitize.html(unit.where, 300)
    return f"<td><b>{who}</b> · {where}<pre>{chr(10).join(rows)}</pre></td>"


def _row(p: Pair, n: int) -> str:
    b = "the course" if p.kind == "reference" else sanitize.html(p.b.who, 200)
    return (
        f"<tr><td>{sanitize.html(p.question, 200)}</td><td>{sanitize.html(p.a.who, 200)}</td>"
        f"<td>{b}</td><td>{p.score:.0%}</td><td><a href=\"#pair{n}\">view</a></td></tr>"
    )


def html_section(result: SetComparison) -> str:
    """The comparison as an HTML fragment (no <html>, no script): a summary, a
    table of pairs and their side-by-side views. Safe to embed in any page of
    ours; `course report` calls it."""
    from .similarity import MIN_GRAMS, K

    c = result.comparison
    short = sum("too short" in why for why in c.skipped.values())
    parts = [
        f"<h2>Answers that look copied: {sanitize.html(result.set_id, 200)}</h2>",
        (f"<p>{c.compared} answer(s) of {result.students} student folder(s) compared "
        f"with {result.references} function(s) of the course, each question's model "
        f"answer and each other; {short} too short to tell apart (under {MIN_GRAMS} "
        f"{K}-token grams) and {len(c.skipped) - short} unreadable not compared. "
        f"Listed: similarity ≥ {c.threshold:.0%}. <b>For a person to judge: no score "
        "was changed.</b></p>"),
    ]
    if not c.pairs:
        parts.append("<p>No pair at or above the threshold.</p>")
        return "\n".join(parts)
    parts.append(
        "<table class=\"pairs\"><tr><th>question</th><th>student</th><th>like</th>"
        "<th>similarity</th><th></th></tr>"
        + "".join(_row(p, n) for n, p in enumerate(c.pairs))
        + "</table>"
    )
    for n, p in enumerate(c.pairs[:SIDE_BY_SIDE_LIMIT]):
        parts.append(
            f"<h3 id=\"pair{n}\">{sanitize.html(p.question, 200)}: {p.score:.0%}</h3>"
            f"<table class=\"side\"><tr>{_side(p.a, p.a_lines)}{_side(p.b, p.b_lines)}"
            "</tr></table>"
        )
    if len(c.pairs) > SIDE_BY_SIDE_LIMIT:
        parts.append(f"<p>{len(c.pairs) - SIDE_BY_SIDE_LIMIT} more pair(s): see the CSV.</p>")
    return "\n".join(parts)


SECTION_STYLE = (  # what html_section needs; `course report` embeds it
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px;"
    "vertical-align:top}table.side{width:100%;table-layout:fixed}"
    "pre{white-space:pre-wrap;overflow-wrap:anywhere;font-size:12px}"
    ".same{background:#ffe08a;display:block}pre span{display:block}i{color:#888}"
)
STYLE = "body{font-family:sans-serif;max-width:1200px;margin:1em auto}" + SECTION_STYLE


def write(result: SetComparison, out_dir: Path) -> tuple[Path, Path]:
    """similarity.html and similarity.csv in out_dir (written atomically)."""
    out_dir = Path(out_dir)
    page = out_dir / "similarity.html"
    table = out_dir / "similarity.csv"
    with atomic_write(page, chmod=0o600) as fh:
        fh.write(
            "<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
            "style-src 'unsafe-inline'\">"
            f"<title>similarity {sanitize.html(result.set_id, 200)}</title>"
            f"<style>{STYLE}</style></head><body>{html_section(result)}</body></html>\n"
        )
    with atomic_write(table, newline="", chmod=0o600) as fh:
        out = csv.writer(fh)
        out.writerow(["set", "question", "kind", "student", "like", "where", "similarity"])
        for p in result.comparison.pairs:
            like = p.b.who if p.kind == "classmate" else "course"
            row = [result.set_id, p.question, p.kind, p.a.who, like, p.b.where, f"{p.score:.3f}"]
            out.writerow([sanitize.csv_field(sanitize.line(v, 300)) for v in row])
    return page, table


def format_summary(result: SetComparison, page: Path) -> str:
    c = result.comparison
    lines = [
        (f"{result.set_id}: {c.compared} answer(s) compared, {len(c.pairs)} pair(s) "
         f"at or above {c.threshold:.0%} (for a person to judge; no score changed)")
    ]
    for p in c.pairs[:20]:
        like = "the course: " + p.b.where if p.kind == "reference" else p.b.who
        lines.append(
            f"  {sanitize.line(p.question, 100)}  {sanitize.line(p.a.who, 100)} ~ "
            f"{sanitize.line(like, 200)}  {p.score:.0%}"
        )
    lines.append(f"  side by side: {page}")
    return "\n".join(lines)
