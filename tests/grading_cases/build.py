"""Build submission folders from case files (used by the grading tests and bench).

A case file `tests/grading_cases/NAME.cells` holds the cells a student would
have written, each after a marker line::

    # %% q1_answer          replace the answer cell with this grade id
    # %% +code              add a code cell after the previous one
    # %% +markdown          add a markdown cell after the previous one
    # %% -q2_tests          delete that cell from the submission

`{COURSE_ROOT}` and `{GRADEBOOK}` in a case are replaced by the paths of the
course being graded, so a case can try to reach them.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

CASES = Path(__file__).parent
MARKER = re.compile(r"^# %% (?P<op>[+-]?)(?P<arg>[A-Za-z0-9_]+)\s*$")


def parse(text: str) -> list[tuple[str, str, str]]:
    """(op, arg, source) for each section of a case file."""
    sections, current, lines = [], None, []
    for line in text.splitlines():
        match = MARKER.match(line)
        if match:
            if current:
                sections.append((*current, "\n".join(lines).strip("\n")))
            current, lines = (match["op"], match["arg"]), []
        elif current:
            lines.append(line)
    if current:
        sections.append((*current, "\n".join(lines).strip("\n")))
    return sections


def build(
    released: nbformat.NotebookNode, case_text: str, substitutions: dict[str, str]
) -> nbformat.NotebookNode:
    """A student's submission: the released notebook with the case's cells."""
    for key, value in substitutions.items():
        case_text = case_text.replace("{" + key + "}", value)
    nb = nbformat.reads(nbformat.writes(released), as_version=4)
    ids = [c.get("metadata", {}).get("nbgrader", {}).get("grade_id") for c in nb.cells]
    last = len(nb.cells) - 1
    for op, arg, source in parse(case_text):
        if op == "":
            index = ids.index(arg)
            nb.cells[index].source = source
            last = index
        elif op == "-":
            index = ids.index(arg)
            del nb.cells[index]
            del ids[index]
            last = min(last, len(nb.cells) - 1)
        else:
            cell = (
                nbformat.v4.new_code_cell(source)
                if arg == "code"
                else nbformat.v4.new_markdown_cell(source)
            )
            nb.cells.insert(last + 1, cell)
            ids.insert(last + 1, None)
            last += 1
    return nb


def write_submissions(
    released_path: Path,
    dest: Path,
    set_id: str,
    cases: dict[str, str],
    substitutions: dict[str, str],
) -> None:
    """Write dest/STUDENT/SET/NB.ipynb for each student → case name."""
    released = nbformat.read(released_path, as_version=4)
    for student, case in cases.items():
        text = (CASES / f"{case}.cells").read_text()
        folder = dest / student / set_id
        folder.mkdir(parents=True, exist_ok=True)
        nbformat.write(
            build(released, text, substitutions), folder / released_path.name
        )
