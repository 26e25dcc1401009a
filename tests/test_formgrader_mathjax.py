"""Formgrader renders LaTeX offline and escapes what a student controls.

nbgrader's formgrade template loads MathJax from a CDN, which an offline course
cannot reach, so answers show raw LaTeX. nbgrader_config.py puts our template
(course_utils/grading/templates/formgrade, extending nbgrader's) first; it
loads MathJax from jupyter-server-mathjax on the same server. These tests build
the exporter exactly as formgrader does (its extension, initialised in the
course root, reads nbgrader_config.py), render a submission page, and fetch
every script it names from a real JupyterLab server. tests/browser checks that
the math is typeset in Chromium. The same page rendered for a student whose
folder is named as HTML or JavaScript shows the name as text.
"""

import json
import re
import sys
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "browser"))
import browser_lab as bl

MATH = r"The gradient $\nabla_x f_c(x)$ and $$\mathrm{IG}_i = (x_i - x'_i)\int_0^1 \partial_i f\,d\alpha$$"


def formgrade_page(
    base_url: str = "/base", root: Path = REPO, nb=None, **resources
) -> str:
    """The HTML formgrader serves for a submission (as its handler does).

    The notebook holds MATH unless `nb` is given; `resources` override what
    formgrader's handler reads from the gradebook (student id, names …).
    """
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
    if nb is None:
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
        **resources,
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


XSS = "<img src=x onerror=alert(1)>"


class Page(HTMLParser):
    """The elements of a page: (tag, attributes) and the text of each script."""

    def __init__(self):
        super().__init__()
        self.tags, self.scripts, self._in_script = [], [], False

    @classmethod
    def of(cls, html: str) -> "Page":
        page = cls()
        page.feed(html)
        page.close()
        return page

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data


JS = '";alert(2);//</script><script>alert(3)</script>'


def test_a_hostile_student_id_is_escaped_everywhere_on_the_page():
    html = formgrade_page(
        "/base",
        student=XSS,
        first_name="",
        last_name="",
        submission_id=JS,
        assignment_id="ps1",
        notebook_path=f"autograded/{XSS}/ps1/ps1.ipynb",
    )
    assert "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html  # the name, as text
    assert 'data-link="autograded/&lt;img src=x onerror=alert(1)&gt;/ps1' in html
    # in JavaScript the id is one JSON string: no quote or </script> escapes it
    as_js = json.dumps(JS).replace("<", "\\u003c").replace(">", "\\u003e")
    assert f"var submission_id = {as_js};" in html
    assert "</script><script>alert(3)" not in html
    page = Page.of(html)
    assert not [a for tag, a in page.tags if tag == "img" or "onerror" in a]
    hrefs = [a["href"] for tag, a in page.tags if tag == "a" and "href" in a]
    assert f"/base/formgrader/submissions/{JS}/next" in hrefs  # a path, nothing more
    # one script holds the id, as a string literal that decodes to the id
    (script,) = [t for t in page.scripts if "alert" in t]
    (literal,) = re.findall(r"var submission_id = (.*);\n", script)
    assert json.loads(literal) == JS
    names = formgrade_page("/base", first_name=XSS, last_name="<b>", student="s1")
    assert "<img src=x" not in names and "&lt;b&gt;, &lt;img src=x" in names


def test_the_sanitised_student_and_notebook_reach_the_page_as_text():
    from course_utils.grading import sanitize

    v4 = nbformat.v4
    code = v4.new_code_cell('ok = "user\u202e \u2066# admin\u2069 \u2066"')
    code.outputs = [v4.new_output("stream", name="stdout", text="\x1b]52;c;aGk=\x07")]
    nb = v4.new_notebook(cells=[code, v4.new_markdown_cell("\u202eevil")])
    sanitize.notebook(nb)
    sid = sanitize.student_id(XSS)
    html = formgrade_page("/base", nb=nb, student=sid)
    assert sid in html and "<img" not in html
    for char in "\u202e\u2066\u2069\x1b\x07":
        assert char not in html
    assert "⟨U+202E⟩" in html and "⟨U+001B⟩]52;c;aGk=⟨U+0007⟩" in html
