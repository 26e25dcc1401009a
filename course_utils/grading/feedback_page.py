"""A student's feedback page, and the files `course feedback` writes.

The page follows nbgrader's feedback page (its template
``feedback/index.html.j2``): a heading "NOTEBOOK (Score: x / y)", a table of
contents with each graded cell's score, then one panel per graded cell. It is
built as if every text were hostile — the student id, their answers, a TA's
comment quoting them — each passes `sanitize.html`, and a
Content-Security-Policy (``default-src 'none'``) forbids every request but the
local MathJax, so an escape missed would still run nothing and load nothing.

Math (a free answer, a TA's comment) is typeset by MathJax 2.7 from
jupyter-server-mathjax — the copy formgrader uses — with the same TeX
configuration and the Safe extension, which drops ``\\href{javascript:…}``,
``\\style``, ``\\class`` and the like. Only those texts are typeset
(``tex2jax_process``); code, ids and the rest of the page are not. MathJax is
found offline: `write_feedback` copies it once into FEEDBACK/mathjax/, which a
page finds at ``../../mathjax/``; a page released to a student's JupyterHub
home (`nbgrader release_feedback` copies pages only) falls back to the
Jupyter server's own copy (``<base url>/static/jupyter_server_mathjax/``).
The one inline script that chooses between them is allowed by its hash; what
it loads is trusted through ``'strict-dynamic'``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from . import sanitize
from .atomic import atomic_write
from .feedback import NotebookFeedback, QuestionFeedback
from .outcome import Status

MATHJAX_DIR = "mathjax"  # FEEDBACK/mathjax: the shared copy, next to the students
MATHJAX_QUERY = "?config=TeX-AMS-MML_HTMLorMML-full,Safe"
# formgrader's MathJax configuration (course_utils/grading/templates/formgrade).
MATHJAX_CONFIG = {
    "tex2jax": {
        "inlineMath": [["$", "$"], ["\\(", "\\)"]],
        "displayMath": [["$$", "$$"], ["\\[", "\\]"]],
        "processEscapes": True,
        "processEnvironments": True,
    },
    "TeX": {"equationNumbers": {"autoNumber": "AMS", "useLabelIds": True}},
    "HTML-CSS": {
        "availableFonts": [],
        "imageFont": None,
        "preferredFont": None,
        "webFont": "STIX-Web",
        "linebreaks": {"automatic": True},
    },
    "SVG": {"font": "STIX-Web"},
    "displayAlign": "center",
    "messageStyle": "none",
    "showMathMenu": False,
}
_LOADER = (
    "(function () {\n"
    "  window.MathJax = {config};\n"
    '  var query = "{query}", here = "../../{folder}/MathJax.js";\n'
    "  var base = document.baseURI, i = base.search(/\\/(files|view|tree)\\//);\n"
    '  var server = (i >= 0 && location.protocol !== "file:") ?\n'
    '    base.slice(0, i) + "/static/jupyter_server_mathjax/MathJax.js" : null;\n'
    "  function load(src, next) {\n"
    '    var s = document.createElement("script");\n'
    "    s.src = src + query;\n"
    "    if (next) { s.onerror = function () { s.remove(); load(next, null); }; }\n"
    "    document.head.appendChild(s);\n"
    "  }\n"
    "  load(here, server);\n"
    "})();"
).replace("{config}", json.dumps(MATHJAX_CONFIG, sort_keys=True)).replace(
    "{query}", MATHJAX_QUERY
).replace("{folder}", MATHJAX_DIR)
LOADER_HASH = "sha256-" + base64.b64encode(
    hashlib.sha256(_LOADER.encode()).digest()
).decode()
CSP = (
    f"default-src 'none'; script-src '{LOADER_HASH}' 'strict-dynamic'; "
    "style-src 'unsafe-inline'; font-src 'self' file:; img-src data:; "
    "form-action 'none'"
)
_STATUS_NOTES = {
    Status.TIMED_OUT.value: "Your notebook ran past its time limit: the cells it "
    "did not reach score 0.",
    Status.CRASHED.value: "Your notebook's kernel stopped: the cells it did not "
    "reach score 0.",
    Status.FLAGGED.value: "A person reviews this notebook before its automatic "
    "points count.",
}
_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 16px auto; max-width: 940px;
       color: #222; padding: 0 12px; }
h4 { font-size: 19px; margin: 4px 0; }
.panel { border: 1px solid #ccc; border-radius: 4px; margin: 12px 0; }
.panel-heading { background: #f3f3f3; padding: 6px 10px; border-bottom: 1px solid #ccc; }
.panel-primary > .panel-heading { background: #337ab7; color: #fff; }
.panel-body { padding: 8px 10px; }
.panel-footer { background: #f7f7f7; padding: 6px 10px; border-top: 1px solid #ddd; }
.pull-right { float: right; }
.score { font-weight: 600; }
pre.answer { background: #fafafa; border: 1px solid #eee; padding: 6px;
             white-space: pre-wrap; overflow-wrap: anywhere; margin: 4px 0; }
div.answer, div.comment { white-space: pre-wrap; overflow-wrap: anywhere; }
.note { color: #555; }
ul.mistakes li { margin: 2px 0; }
table.summary { border-collapse: collapse; margin: 8px 0; }
table.summary th, table.summary td { border: 1px solid #ddd; padding: 3px 8px;
                                     text-align: left; }
table.summary td.n { text-align: right; font-variant-numeric: tabular-nums; }
"""


def _e(value: object, limit: int | None = 20_000) -> str:
    return sanitize.html(value, limit)


def _n(x: float | None) -> str:
    return "—" if x is None else f"{x:g}" if x == round(x, 2) else f"{x:.2f}"


def _score(q: QuestionFeedback) -> str:
    if q.score is None:
        return f"awaiting a person / {_n(q.max_points)}"
    return f"{_n(q.score)} / {_n(q.max_points)}"


def _kind(q: QuestionFeedback) -> str:
    return "Written or free answer, graded by a person" if q.manual else "Test cell"


def _mistakes(q: QuestionFeedback) -> str:
    if q.manual:
        return ""
    if q.score is not None and q.score >= q.max_points - 1e-9:
        return '<p class="note">Every hidden test case passed.</p>'
    if not q.mistakes:
        return (
            '<p class="note">The hidden tests did not pass; the grader could not '
            "name the kind of mistake (your code stopped before an answer, or the "
            "output is of another kind).</p>"
        )
    items = "".join(
        f"<li>{_e(m.words)} — {m.cases} hidden case{'s' if m.cases != 1 else ''}</li>"
        for m in q.mistakes
    )
    return (
        "<p>What the grader found in the hidden test cases that did not pass "
        "(the kind of mistake; the cases themselves stay hidden):</p>"
        f'<ul class="mistakes">{items}</ul>'
    )


def _answer(q: QuestionFeedback) -> str:
    if not q.answer:
        return '<p class="note">No answer found.</p>'
    if q.answer_is_code:
        return f'<pre class="answer tex2jax_ignore">{_e(q.answer)}</pre>'
    return f'<div class="answer tex2jax_process">{_e(q.answer)}</div>'


def _panel(q: QuestionFeedback) -> str:
    gid = _e(q.grade_id, 200)
    by = " (set by a person)" if q.by_person else ""
    footer = ""
    if q.comment:
        footer = (
            '<div class="panel-footer"><b>Comments:</b> '
            f'<div class="comment tex2jax_process">{_e(q.comment)}</div></div>'
        )
    return (
        f'<a id="{gid}"></a><div class="panel panel-primary nbgrader_cell">'
        f'<div class="panel-heading"><span class="nbgrader-label">{_kind(q)}: '
        f"<code>{gid}</code></span>"
        f'<span class="pull-right score">Score: {_score(q)}{by} '
        '<a href="#top" style="color:#fff">(Top)</a></span></div>'
        f'<div class="panel-body"><p><b>Your answer</b></p>{_answer(q)}'
        f"{_mistakes(q)}</div>{footer}</div>"
    )


def _summary(fb: NotebookFeedback) -> str:
    rows = "".join(
        f'<tr><td><a href="#{_e(q.grade_id, 200)}">{_e(q.grade_id, 200)}</a></td>'
        f"<td>{'by a person' if q.manual else 'hidden tests'}</td>"
        f'<td class="n">{_score(q)}</td></tr>'
        for q in fb.questions
    )
    return (
        '<table class="summary"><thead><tr><th>question</th><th>graded</th>'
        f"<th>score</th></tr></thead><tbody>{rows}"
        f'<tr><th colspan="2">total</th><th class="n">{_n(fb.total)} / '
        f"{_n(fb.max_total)}</th></tr></tbody></table>"
    )


def page(fb: NotebookFeedback) -> str:
    """The feedback page of one student's notebook, as a string."""
    note = _STATUS_NOTES.get(fb.status, "")
    awaiting = (
        f'<p class="note">{fb.awaiting} answer(s) still await a person: the total '
        "counts them as 0 until then.</p>"
        if fb.awaiting
        else ""
    )
    title = f"{_e(fb.notebook, 200)} (Score: {_n(fb.total)} / {_n(fb.max_total)})"
    body = (
        '<a id="top"></a><div class="panel"><div class="panel-heading">'
        f"<h4>{title}</h4>"
        f'<div class="note">{_e(fb.set_id, 200)} · student '
        f"{_e(sanitize.student_id(fb.student), 300)}</div></div>"
        f'<div class="panel-body" id="toc">{_summary(fb)}'
        f'{f"<p><b>{_e(note)}</b></p>" if note else ""}{awaiting}</div></div>'
        + "".join(_panel(q) for q in fb.questions)
        + f'<p class="score">Total: {_n(fb.total)} / {_n(fb.max_total)}</p>'
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="referrer" content="no-referrer">\n'
        f"<title>{_e(fb.notebook, 200)}</title>\n<style>{_STYLE}</style>\n"
        f"<script>{_LOADER}</script>\n</head>\n"
        f'<body class="tex2jax_ignore">\n{body}\n</body></html>\n'
    )


def mathjax_source() -> Path:
    """jupyter-server-mathjax's MathJax 2.7 (what formgrader serves)."""
    import jupyter_server_mathjax

    return Path(jupyter_server_mathjax.__file__).parent / "static"


def install_mathjax(out_dir: Path) -> Path:
    """Copy MathJax into OUT_DIR/mathjax once (whole, then one rename).

    An existing copy of the same size and file count is kept; a different
    one is replaced only after the new copy is complete.
    """
    src, dest = mathjax_source(), Path(out_dir) / MATHJAX_DIR
    if not (src / "MathJax.js").is_file():
        raise RuntimeError(f"MathJax not found at {src} (jupyter-server-mathjax)")
    if dest.is_dir() and _tree_sig(dest) == _tree_sig(src):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".mathjax.tmp-", dir=dest.parent))
    try:
        shutil.copytree(src, tmp / "m")
        os.chmod(tmp / "m", 0o755)
        if dest.exists():
            old = dest.with_name(f".{MATHJAX_DIR}.old-{os.getpid()}")
            os.replace(dest, old)
            os.replace(tmp / "m", dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp / "m", dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _tree_sig(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def write_feedback(
    pages: list[NotebookFeedback], out_dir: Path, submitted: Path | None = None
) -> list[Path]:
    """Write OUT/<student>/<set>/<notebook>.html for each page, nbgrader's layout.

    Beside each student's pages: timestamp.txt (the submission's, from
    submitted/ or else the gradebook) and submission_secret.txt where
    nbgrader's exchange left one in submitted/ — what `nbgrader
    release_feedback` reads. MathJax is copied once to OUT/mathjax. Each file
    is written atomically; returns the pages written.
    """
    out_dir = Path(out_dir)
    if pages:
        install_mathjax(out_dir)
    written = []
    for fb in pages:
        folder = out_dir / fb.folder / fb.set_id
        path = folder / f"{fb.notebook}.html"
        with atomic_write(path, chmod=0o644) as fh:
            fh.write(page(fb))
        written.append(path)
        _exchange_files(fb, folder, submitted)
    return written


def _submitted_folder(submitted: Path | None, folder: str, set_id: str):
    """submitted/<student>/SET of the student whose sanitised id is `folder`."""
    if submitted is None or not submitted.is_dir():
        return None
    for p in submitted.iterdir():
        if sanitize.student_id(p.name) == folder and not p.is_symlink():
            found = p / set_id
            return found if found.is_dir() and not found.is_symlink() else None
    return None


def _exchange_files(fb: NotebookFeedback, folder: Path, submitted: Path | None):
    """timestamp.txt and submission_secret.txt, as nbgrader's exchange wrote them.

    Without an exchange's timestamp.txt: the gradebook's, else the submitted
    folder's modification time (UTC), in nbgrader's format.
    """
    src = _submitted_folder(submitted, fb.folder, fb.set_id)
    for name in ("timestamp.txt", "submission_secret.txt"):
        found = src / name if src else None
        if found and found.is_file() and not found.is_symlink():
            text = sanitize.line(found.read_text(errors="replace")[:1000], 1000)
        elif name == "timestamp.txt":
            text = fb.timestamp or _mtime(src)
        else:
            continue
        with atomic_write(folder / name, chmod=0o644) as fh:
            fh.write(text)


def _mtime(path: Path | None) -> str:
    import datetime as dt

    seconds = path.stat().st_mtime if path else dt.datetime.now().timestamp()
    when = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S.%f UTC")
