"""Every code snippet a notebook gives a student in its text runs.

A snippet is a fenced ```python block in a markdown cell (a question's "train
it like this", a hint). A student copies it into a cell and runs it, in the
notebook's state at that point, so that is how it is tested: the notebook is
executed (nbclient, as nbval does) with each snippet inserted as a code cell
right after the markdown cell that holds it; it must run without an error.

A snippet that is not meant to run (a sketch with placeholders, a shell
command) says so in an HTML comment on the line before its fence, invisible in
the rendered notebook:

    <!-- not runnable: <the reason> -->

Every snippet must parse as Python either way. Executing notebooks takes
minutes: the execution test is marked slow; the parse test is fast.
"""

from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# A fenced python block, possibly indented (inside a list item), with the
# comment line before it when there is one.
FENCE = re.compile(
    r"(?:^[ \t]*<!--\s*not runnable:(?P<reason>[^>]*)-->[ \t]*\n)?"
    r"^(?P<indent>[ \t]*)```python[ \t]*\n(?P<code>.*?)^(?P=indent)```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)


def snippets(markdown: str) -> list[tuple[str, str | None]]:
    """[(code, reason it is not runnable or None)] of one markdown text."""
    found = []
    for m in FENCE.finditer(markdown):
        code = textwrap.dedent(m["code"])
        reason = None if m["reason"] is None else m["reason"].strip()
        found.append((code, reason))
    return found


def _cells(path: Path) -> list[tuple[int, str, str | None]]:
    nb = nbformat.read(path, as_version=4)
    return [
        (i, code, reason)
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "markdown"
        for code, reason in snippets(cell.source)
    ]


# ------------------------------------------------------------- the parser itself


def test_snippets_are_found_indented_and_marked():
    text = (
        "1. Train it:\n\n"
        "   ```python\n"
        "   model = f(1)\n"
        "   print(model)\n"
        "   ```\n\n"
        "<!-- not runnable: a sketch, `x` is yours -->\n"
        "```python\n"
        "g(x)\n"
        "```\n\n"
        "```bash\nls\n```\n"
    )
    assert snippets(text) == [
        ("model = f(1)\nprint(model)\n", None),
        ("g(x)\n", "a sketch, `x` is yours"),
    ]


# ------------------------------------------------------------- the notebooks


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_snippet_parses_and_says_why_when_it_does_not_run(path):
    for i, code, reason in _cells(path):
        try:
            ast.parse(code)
        except SyntaxError as err:
            pytest.fail(f"{path.name}, cell {i}: snippet is not Python: {err}\n{code}")
        assert reason is None or reason, (
            f"{path.name}, cell {i}: a snippet marked not runnable must say why"
        )


def test_the_course_gives_runnable_snippets():
    """The test below is not vacuous: notebook 08's question 2 is one."""
    runnable = {p.name: [c for _, c, r in _cells(p) if r is None] for p in NOTEBOOKS}
    assert any("make_tagged" in c for c in runnable["08_shortcuts_and_faithfulness.ipynb"])


WITH_SNIPPETS = [p for p in NOTEBOOKS if any(r is None for _, _, r in _cells(p))]


@pytest.mark.slow
@pytest.mark.parametrize("path", WITH_SNIPPETS, ids=[p.stem for p in WITH_SNIPPETS])
def test_every_runnable_snippet_runs_where_the_notebook_gives_it(path):
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    cells = []
    for i, cell in enumerate(nb.cells):
        cells.append(cell)
        if cell.cell_type == "markdown":
            for code, reason in snippets(cell.source):
                if reason is None:
                    snippet = nbformat.v4.new_code_cell(code)
                    snippet.metadata["snippet_of_cell"] = i
                    cells.append(snippet)
    nb.cells = cells
    client = NotebookClient(
        nb, timeout=900, kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    try:
        client.execute()
    except CellExecutionError as err:
        pytest.fail(f"{path.name}: a cell or a snippet failed:\n{err}")
