"""`course feedback SET`: each graded student's pages, without the hidden cases.

One slow fixture grades a small class of the tiny set in the real sandbox — a
model answer, the bug bank's flipped sign, and a student whose folder name is
HTML and whose answers carry a script, an ``<img onerror>`` and a MathJax
``\\href{javascript:…}`` — then sets a TA's score and comments in the
gradebook the way formgrader does, and runs `course feedback`. The pages are
read as files here; tests/browser/test_feedback_page.py opens one in
Chromium with the network cut off.
"""

import os
import re
import shutil
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from course_utils.grading import feedback, feedback_page, sandbox
from course_utils.grading import gradebook as gbook
from course_utils.grading.course import Course

CASES = Path(__file__).parent / "grading_cases"
OPTIONS = {
    "workers": 2,
    "cell_timeout": 8.0,
    "notebook_timeout": 25.0,
    "interrupt_grace": 2.0,
    "memory_gib": 2.5,
    "address_space_gib": 6.0,
    "progress": False,
    "sandbox_uid": 64600,  # not the scenarios' nor the report's range
}
HOSTILE_ID = '<img src=x onerror=alert(1)>"evil"'
ATTACK = (
    "<script>window.pwned = 1</script><img src=x onerror=\"window.pwned = 2\">"
    " $\\href{javascript:window.pwned=3}{click me}$ and the gradient "
    "$\\nabla_x f_c(x)$ </div><style>body{display:none}</style>"
)
TA_COMMENT = "Good: the map is $\\partial f_c / \\partial x$. <b>see me</b>"
# autograded/ and feedback/ name the student as the gradebook does
SID = gbook.sanitize.student_id(HOSTILE_ID)
SIGN_COMMENT = "Check which way you subtracted: $f(x) - f(x')$."


def _bug(name: str) -> str:
    from test_exercise_bug_bank import BANK

    bugs = {n: src for n, src, _ in BANK[("ps1_gradients/gradients.ipynb", "q1_tests")]}
    return bugs[name]


def _case(q1: str, q3: str = "The gradient is local.") -> str:
    return f"# %% q1_answer\n{q1}\n# %% q2_answer\nn_passes = 5\n# %% q3_answer\n{q3}\n"


def _set_by_hand(course: Course, student: str) -> None:
    """What a TA does in formgrader: a manual score and comments."""
    gb = gbook.open_gradebook(course.gradebook)
    try:
        grade = gb.find_grade("q3_answer", "tiny", "tiny", student)
        grade.manual_score = 0.5
        gb.find_comment("q3_answer", "tiny", "tiny", student).manual_comment = TA_COMMENT
        gb.find_comment("q1_answer", "tiny", "tiny", student).manual_comment = (
            SIGN_COMMENT
        )
        gb.db.commit()
    finally:
        gb.close()


@pytest.fixture(scope="module")
def graded():
    """The tiny set graded in the sandbox, a TA's marks set, feedback written."""
    sys.path.insert(0, str(CASES))
    import build

    from course_utils.cli import main
    from course_utils.grading.grade import GradeOptions, grade
    from course_utils.grading.release import release

    if not sandbox.detect().usable:
        pytest.skip(sandbox.detect().describe())
    root = Path(tempfile.mkdtemp(prefix="course-feedback-"))
    os.chmod(root, 0o755)
    shutil.copytree(CASES / "course" / "solutions", root / "solutions")
    course = Course.load(root)
    release(course)
    texts = {
        "model": (CASES / "correct.cells").read_text(),
        "sign": _case(_bug("flipped sign")),
        HOSTILE_ID: _case(_bug("flipped sign") + f"\n# {ATTACK}\n", ATTACK),
    }
    released = build.nbformat.read(course.release / "tiny" / "tiny.ipynb", as_version=4)
    for student, text in texts.items():
        folder = course.submitted / student / "tiny"
        folder.mkdir(parents=True)
        build.nbformat.write(build.build(released, text, {}), folder / "tiny.ipynb")
    (course.submitted / "sign" / "tiny" / "timestamp.txt").write_text(
        "2025-01-31 23:59:00.000000 UTC"
    )
    grade(course, "tiny", options=GradeOptions(**OPTIONS))
    _set_by_hand(course, "sign")
    _set_by_hand(course, SID)
    assert main(["feedback", "tiny", "--root", str(root)]) == 0
    yield course
    shutil.rmtree(root, ignore_errors=True)


def _page(course: Course, folder: str) -> str:
    return (course.feedback / folder / "tiny" / "tiny.html").read_text()


def _hidden_lines(course: Course, student: str) -> list[str]:
    """The grader's lines naming the failed hidden cases (its auto comment)."""
    gb = gbook.open_gradebook(course.gradebook)
    try:
        text = gb.find_comment("q1_answer", "tiny", "tiny", student).auto_comment
    finally:
        gb.close()
    return [ln.strip() for ln in (text or "").splitlines() if ln.startswith("  ✗")]


class Tags(HTMLParser):
    def __init__(self, html: str):
        super().__init__()
        self.tags = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


@pytest.mark.slow
def test_feedback_pages_in_nbgraders_layout(graded):
    course = graded
    folders = sorted(p.name for p in course.feedback.iterdir())
    assert folders == sorted([SID, "mathjax", "model", "sign"])
    for name in ("model", "sign", SID):
        assert (course.feedback / name / "tiny" / "tiny.html").is_file()
        assert (course.feedback / name / "tiny" / "timestamp.txt").is_file()
    # nbgrader's exchange wrote this one: it is carried over as it was
    stamp = (course.feedback / "sign" / "tiny" / "timestamp.txt").read_text()
    assert stamp == "2025-01-31 23:59:00.000000 UTC"
    assert (course.feedback / "mathjax" / "MathJax.js").is_file()
    assert (course.feedback / "mathjax" / "extensions" / "Safe.js").is_file()


@pytest.mark.slow
def test_points_mistakes_comments_and_total(graded):
    model, sign = _page(graded, "model"), _page(graded, "sign")
    assert "tiny (Score: 3 / 4)" in model  # q3 awaits a person: counted as 0
    assert "awaiting a person / 1" in model and "Every hidden test case passed" in model
    # the sign-flipped answer: 0 / 2 on q1, the kind of mistake in words
    assert "Score: 0 / 2" in sign
    assert "sign flipped (subtracted in the wrong order, or negated) — 2 hidden cases" \
        in sign
    # the TA's score (formgrader's manual score) and comments, escaped
    assert "Score: 0.5 / 1 (set by a person)" in sign
    assert "$\\partial f_c / \\partial x$. &lt;b&gt;see me&lt;/b&gt;" in sign
    assert "$f(x) - f(x&#x27;)$" in sign
    assert "tiny (Score: 1.5 / 4)" in sign and "Total: 1.5 / 4" in sign


@pytest.mark.slow
def test_no_hidden_case_reaches_a_page(graded):
    lines = _hidden_lines(graded, "sign")
    assert len(lines) == 2, lines  # the grader's comment names both hidden cases
    html = _page(graded, "sign")
    for line in lines:
        label = line.split(":", 1)[1].split("—")[0].strip()
        assert label and label not in html, label
    for word in ("q1_hidden", "small_cnn", "seed", "digits", "target=", "visible"):
        assert word not in html, word


@pytest.mark.slow
def test_a_hostile_student_and_answer_are_escaped(graded):
    html = _page(graded, SID)
    tags = Tags(html).tags
    assert [t for t, _ in tags].count("script") == 1  # the MathJax loader only
    assert not [a for t, a in tags if t == "img" or any(k.startswith("on") for k in a)]
    assert [t for t, _ in tags].count("style") == 1
    assert "<img src=x" not in html and "</div><style>" not in html
    assert html.count("&lt;script&gt;window.pwned = 1&lt;/script&gt;") == 2
    assert "&amp;lt;" not in html  # the markdown answer is escaped once, not twice
    assert "⟨U+003C⟩img src⟨U+003D⟩x onerror⟨U+003D⟩alert⟨U+0028⟩1⟨U+0029⟩" in html
    assert "\\href{javascript:window.pwned=3}" in html  # text, for MathJax's Safe
    assert not re.search(r"(src|href)=\"(?!#)", html)  # no external link or source
    csp = re.search(r'Content-Security-Policy" content="([^"]*)"', html)[1]
    assert csp.startswith("default-src 'none'; script-src 'sha256-")


def test_a_set_nobody_was_graded_in(tmp_path):
    shutil.copytree(CASES / "course" / "solutions", tmp_path / "solutions")
    course = Course.load(tmp_path)
    with pytest.raises(ValueError, match="no gradebook"):
        feedback.load_feedback(course, "tiny")
    with pytest.raises(ValueError, match="SET must be one of"):
        feedback.load_feedback(course, "nope")
    assert feedback_page.write_feedback([], tmp_path / "out") == []


def test_the_loader_hash_matches_the_csp():
    import base64
    import hashlib

    fb = feedback.NotebookFeedback("s", "tiny", "tiny", "graded", [])
    html = feedback_page.page(fb)
    script = re.search(r"<script>(.*?)</script>", html, re.DOTALL)[1]
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in html
