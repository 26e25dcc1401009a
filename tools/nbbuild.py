"""Write a clean notebook (no outputs, no execution counts) from a list of cells.

Used by the course authors: `cells` is a list of ("md" | "code", source) pairs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat


def write(path: str | Path, cells: list[tuple[str, str]]) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)",
                                 "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    for kind, src in cells:
        src = src.strip("\n")
        cell = (nbformat.v4.new_markdown_cell(src) if kind == "md"
                else nbformat.v4.new_code_cell(src))
        nb.cells.append(cell)
    nbformat.validator.normalize(nb)
    nbformat.write(nb, str(path))


if __name__ == "__main__":
    sys.exit("import this module; it has no command line")
