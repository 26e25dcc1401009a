"""What formgrader may show of a graded notebook: the verdict, no student script."""

from __future__ import annotations

import html
import re

import nbformat

from . import notebooks as nbs
from . import sanitize
from .verify import Marking

SAFE_MIME = ("text/plain", "image/png", "image/jpeg", "image/gif")
_JS_URL = re.compile(r"(?i)(java|vb)script\s*:")


def sanitize_for_formgrader(nb: nbformat.NotebookNode) -> None:
    """What formgrader may render of a graded notebook, in place.

    Outputs keep text streams, error text and only the text/plain and image
    (png/jpeg/gif) data of rich outputs — no HTML, JavaScript, SVG, Markdown
    or widget output from the student's kernel. Markdown cells the student
    wrote or added are escaped, so no tag of theirs reaches the page. Every
    string first passes `sanitize.notebook` (valid UTF-8; control, escape and
    bidi characters shown where they are).
    """
    sanitize.notebook(nb)
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


def annotate(
    nb: nbformat.NotebookNode,
    verdict: Marking,
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
