"""Formgrader renders LaTeX offline: MathJax comes from the Jupyter server.

nbgrader's formgrade template loads MathJax from a CDN, which an offline course
cannot reach, so answers show raw LaTeX. nbgrader_config.py puts our template
(course_utils/grading/templates/formgrade, extending nbgrader's) first; it
loads MathJax from jupyter-server-mathjax on the same server. These tests build
the exporter exactly as formgrader does (its extension, initialised in the
course root, reads nbgrader_config.py), render a submission page, and fetch
every script it names from a real JupyterLab server. tests/browser checks that
the math is typeset in Chromium.
"""

import re
import sys
import urllib.request
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "browser"))
import browser_lab as bl

MATH = r"The gradient $\nabla_x f_c(x)$ and $$\mathrm{IG}_i = (x_i - x'_i)\int_0^1 \partial_i f\,d\alpha$$"


def formgrade_page(base_url: str = "/base", root: Path = REPO) -> str:
    """The HTML formgrader serves for a submission holding MATH (as its handler)."""
    import os

    from nbconvert import HTMLExporter
    from nbgrader.server_extensions.formgrader.formgrader import FormgradeExtension

    cwd = os.getcwd()
    os.chdir(root)
    try:
        ext = FormgradeExtension()
        ext.root_dir = str(root)
        ext.initialize([])
        exporter = HTMLExporter(config=ext.config)
    finally:
        os.chdir(cwd)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(MATH)])
    resources = {
        "assignment_id": "ps1",
        "notebook_id": "ps1",
        "submission_id": "x",
        "index": 0,
        "total": 1,
        "base_url": base_url,
        "student": "s1",
        "last_name": "",
        "first_name": "",
        "notebook_path": "autograded/s1/ps1/ps1.ipynb",
    }
    html, _ = exporter.from_notebook_node(nb, resources=resources)
    return html


def script_sources(html: str) -> list[str]:
    return re.findall(r"<script[^>]*\bsrc=\"([^\"]*)\"", html)


def test_formgrader_loads_mathjax_from_its_own_server():
    html = formgrade_page("/base")
    sources = script_sources(html)
    mathjax = [s for s in sources if "MathJax" in s or "mathjax" in s]
    local = "/base/static/jupyter_server_mathjax/MathJax.js"
    assert mathjax == [local + "?config=TeX-AMS-MML_HTMLorMML-full,Safe"]
    # nothing from the network: every script is on the same server
    assert [s for s in sources if re.match(r"(https?:)?//", s)] == []
    assert "cdnjs" not in html
    # configured once, for the only fonts jupyter-server-mathjax ships
    assert html.count("MathJax.Hub.Config") == 1 and 'webFont: "STIX-Web"' in html
    # it is still nbgrader's page (grading form, the answer as Markdown)
    assert "formgrade.css" in html and r"\nabla_x f_c(x)" in html


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("formgrader-math")
    (root / "empty").mkdir()
    server = bl.LabServer(root, notebooks=root / "empty").start()
    try:
        yield server
    finally:
        server.stop()


def test_every_script_of_the_page_is_served(lab):
    html = formgrade_page("")
    for src in script_sources(html):
        with urllib.request.urlopen(lab.url(src.lstrip("/")), timeout=30) as resp:
            assert resp.status == 200, src
            assert len(resp.read()) > 100, src
    # and the files MathJax asks for next: its configuration and the Safe extension
    for path in (
        "config/TeX-AMS-MML_HTMLorMML-full.js",
        "config/Safe.js",
        "jax/output/HTML-CSS/fonts/STIX-Web/fontdata.js",
    ):
        url = lab.url(f"static/jupyter_server_mathjax/{path}")
        with urllib.request.urlopen(url, timeout=30) as resp:
            assert resp.status == 200, path
