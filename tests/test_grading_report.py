"""`course report SET`: the class at a glance, from the gradebook alone.

Fast tests build the report from constructed rows and from a gradebook that
`publish_run` wrote without kernels; one slow test grades a small class of the
tiny set in the real sandbox — model answers, the bug bank's wrong answers
(sign flipped, 3× the reference), a wrong count, an endless loop, a folder
without the notebook, a student on the roster only, a symlinked folder, and a
student id made of HTML, a formula and an escape sequence — and reads the
report that `course report` writes.
"""

import base64
import os
import re
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from test_chart_layout import chart_problems

from course_utils.grading import gradebook as gbook
from course_utils.grading import (
    hints,
    mistakes,
    publish,
    report,
    report_charts,
    report_page,
    sandbox,
    statuses,
)
from course_utils.grading.course import Course, generate
from course_utils.grading.outcome import NotebookOutcome, Status, StudentResult

TINY = Path(__file__).parent / "grading_cases" / "course"
QUESTIONS = [
    report.Question("tiny", "q1_tests", 2.0),
    report.Question("tiny", "q2_tests", 1.0),
    report.Question("tiny", "q3_answer", 1.0, manual=True),
]
# A folder name may hold HTML, quotes and a formula (one with control
# characters is skipped by `discover`; the pure tests add them).
HOSTILE_ID = '<img src=x onerror=alert(1)>=HYPERLINK("evil")'
HOSTILE = HOSTILE_ID + "\x1b]0;pwn\x07"
Q1, Q2, Q3 = (("tiny", q) for q in ("q1_tests", "q2_tests", "q3_answer"))


# ------------------------------------------------- the grader's vocabulary


@pytest.mark.parametrize(
    "make, category",
    [
        (lambda e: -e, "sign_flipped"),
        (lambda e: 3 * e, "summed_not_averaged"),
        (lambda e: e / 4, "averaged_not_summed"),
        (lambda e: 100 * e, "percent_or_255"),
        (lambda e: -2 * e, "sign_and_scale"),
        (lambda e: 1.37 * e, "scaled"),
        (lambda e: e[[1, 0, 2]], "rows_swapped"),
        (lambda e: e.reshape(3, 64), "wrong_shape"),
        (lambda e: np.stack([e, e]), "extra_axis"),
        (lambda e: np.array(0.5), "one_value_for_batch"),
        (lambda e: np.where(np.arange(3)[:, None, None, None] == 2, -e, e),
         "some_rows_wrong"),
        (lambda e: e + 0.05 * np.random.default_rng(1).normal(size=e.shape),
         "detail_off"),
        (lambda e: np.random.default_rng(2).normal(size=e.shape),
         "different_quantity"),
    ],
)
def test_the_grader_names_the_mistake_the_students_hint_names(make, category):
    """`mistakes.classify` (grader, numbers only) and `hints.diagnose` (the
    student's visible test) put each classic bug in the same category."""
    expected = np.random.default_rng(0).normal(size=(3, 1, 8, 8))
    actual = make(expected)
    assert mistakes.classify(actual, expected) == category
    sentence = hints.diagnose(actual, expected)[0]
    assert mistakes.category_of_hint(sentence) == category, sentence


def test_categories_are_validated_and_run_failures_are_not_mistakes():
    expected = np.linspace(-1, 1, 64).reshape(1, 1, 8, 8)
    assert mistakes.classify(np.zeros_like(expected), expected) == "all_zeros"
    assert mistakes.classify(expected * np.nan, expected) == "not_finite"
    assert mistakes.classify(expected * 1.004, expected) == "imprecise"
    assert mistakes.classify(np.abs(expected), expected) == "absolute_value"
    alt = {"targets_summed": expected[:, :, ::-1]}
    assert mistakes.classify(expected[:, :, ::-1], expected, alt) == "targets_summed"
    assert mistakes.known("<script>") == "other" and mistakes.known(3) == "other"
    assert mistakes.words("nope") == mistakes.CATEGORIES["other"]
    assert {"not_run", "malformed"} == mistakes.RUN_FAILURES
    assert mistakes.category_of_hint("something new") == "other"


def _alternatives_written():
    """Every wrong choice `alternatives` names, computed on small cases."""
    import torch

    from course_utils import models
    from course_utils.grading import alternatives, checks

    lin = checks.Case("linear", digits=(0, 1, 2), target=(3, 5, 7)).build().args
    torch.manual_seed(0)
    cnn, x, t = models.load_pretrained("small_cnn"), torch.rand(2, 1, 28, 28), torch.tensor([3, 7])
    answer = checks.reference_answer
    calls = [
        (checks.saliency("gradient"), lin, {}),
        (checks.saliency("input_x_gradient"), lin, {}),
        (checks.saliency("integrated_gradients", method="riemann_right"),
         (*lin, torch.zeros_like(lin[1]), 8), {}),
        (checks.saliency("occlusion"), (cnn, x, t), {"patch": 7}),
        (checks.saliency("grad_cam", upsample=False), (cnn, x, t, "relu1"), {}),
        (answer("smoothgrad_from_noise"),
         (cnn, x[:1].expand(3, -1, -1, -1).clone(), 3, torch.randn(4, 3, 1, 28, 28)), {}),
        (answer("spearman"), (torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4)), {}),
        (answer("noise_sigma"), (torch.rand(3, 1, 4, 4), 0.15), {}),
        (answer("path_points"), (torch.rand(1, 1, 2, 2), 0.0, 4), {}),
    ]
    written = set(alternatives.HEADS.values()) | set(alternatives.RULES.values())
    for reference, args, kwargs in calls:
        found = alternatives.of(reference, args, kwargs)
        assert found, reference.__name__  # each case computes its alternatives
        written |= set(found)
    return written


def _other_sentences():
    """What the Grad-CAM shape hints, the model checks and the invariants write."""
    import torch

    from course_utils.grading import checks

    cam = checks.saliency("grad_cam", upsample=False)
    e = np.zeros((2, 1, 7, 7))
    photo, digit = (None, torch.zeros(2, 3, 28, 28)), (None, torch.zeros(2, 1, 28, 28))
    said = [
        *hints.grad_cam_shape(cam, np.zeros((2, 3, 28, 28)), e, photo),
        *hints.grad_cam_shape(cam, np.zeros((2, 32, 7, 7)), e, digit),
        *hints.grad_cam_shape(cam, np.zeros((2, 1, 28, 28)), e, digit),
        *hints.grad_cam_shape(cam, np.zeros((2, 1, 14, 14)), e, digit),
    ]
    assert len(said) == 4
    model = checks.build_model("resnet_small:random", seed=1)
    states = hints.model_states((model,))
    model.train()
    model(torch.rand(2, 1, 28, 28))
    model.fc.weight.requires_grad_(False)
    model.fc.register_forward_hook(lambda *a: None)
    changes = hints.model_changes(states)
    assert len(changes) == 4
    return said + changes


def test_every_sentence_a_visible_test_writes_has_a_category():
    """The wrong choices the hints name (`alternatives`: the probability, the
    loss, Grad-CAM without its ReLU…), the Grad-CAM shape hints and what a
    function did to the model all count as a known mistake in the report."""
    sentences = sorted(_alternatives_written()) + _other_sentences()
    unknown = [s for s in sentences if mistakes.category_of_hint(s) == "other"]
    assert unknown == []
    named = {mistakes.category_of_hint(s) for s in sentences}
    assert {"probability_not_logit", "loss_not_score", "grad_cam_no_relu",
            "grad_cam_weights", "wrong_layer", "model_changed", "wrong_steps"} <= named
    loss = next(s for s in sentences if "cross-entropy" in s)
    assert "sign is flipped" in loss  # the loss, not a flipped sign
    assert mistakes.category_of_hint(loss) == "loss_not_score"


@pytest.mark.parametrize(
    "sentence, category",
    [("the values do not add up (efficiency): row 0 sums to 1.0 … Banzhaf values, "
      "which miss the sum once three or more features interact).", "not_efficient"),
     ("your map did not move: it depends on the logits only through the softmax (the "
      "probability p_c, or the loss −log p_c)", "probability_not_logit"),
     ("adding the same number to every logit of a row (no probability changes) "
      "changed your map: you use the logit f_c, not the softmax probability p_c",
      "logit_not_probability"),
     ("… adds k to the gradient of the logit f_c; your map moved by −k: the sign is "
      "flipped", "sign_flipped"),
     ("… your map moved by 2× that: a factor too many or too few?", "scaled"),
     ("your function returns a numpy array: return a torch.Tensor", "raised")],
)
def test_the_invariants_and_type_sentences_have_a_category(sentence, category):
    assert mistakes.category_of_hint(sentence) == category


def test_a_few_values_are_wrong_values_on_both_sides():
    """Two numbers fit almost any factor: `hints` shows them, the grader agrees."""
    (said,) = hints.diagnose([0.70, 0.69], [0.72, 0.70])
    assert mistakes.category_of_hint(said) == "wrong_values"
    assert mistakes.classify([0.70, 0.69], [0.72, 0.70]) == "wrong_values"
    assert mistakes.classify([72.0, 70.0], [0.72, 0.70]) == "percent_or_255"


def test_facts_read_back_bounded_whatever_the_file_holds(tmp_path):
    db = tmp_path / "gradebook.db"
    stored = statuses.StoredStatus(
        HOSTILE,
        "graded",
        ["ok"],
        4.25,
        {Q1: {"sign_flipped": 2, "made_up": 1}, Q2: {"wrong_answer": 1}},
    )
    statuses.write_statuses(db, "tiny", [stored], "run-1")
    con = sqlite3.connect(db)
    with con:  # what a person (or an older version) might leave
        con.execute(
            "INSERT INTO course_grading_mistakes VALUES (?, ?, ?, ?, ?, ?)",
            ("tiny", "bob", "tiny", "q1_tests", "<script>", 3),
        )
        con.execute(
            "INSERT INTO course_grading_mistakes VALUES (?, ?, ?, ?, ?, ?)",
            ("tiny", "bob", "tiny", "q2_tests", "sign_flipped", "many"),
        )
        con.execute(
            "INSERT INTO course_grading_status VALUES (?, ?, ?, ?, ?, ?, ?)",
            ("tiny", "bob", "graded", "", "r", "t", float("nan")),
        )
    con.close()
    facts = statuses.read_facts(db, "tiny")
    sid = next(k for k in facts if k != "bob")
    assert "<" not in sid and "\x1b" not in sid and sid.startswith("⟨U+003C⟩img")
    assert facts[sid].seconds == 4.25
    assert facts[sid].mistakes == {Q1: {"sign_flipped": 2, "other": 1},
                                   Q2: {"wrong_answer": 1}}
    assert facts["bob"].mistakes == {Q1: {"other": 3}}
    assert facts["bob"].seconds is None
    # a re-grade replaces a student's mistakes, it does not add to them
    stored.mistakes = {Q2: {"wrong_answer": 1}}
    statuses.write_statuses(db, "tiny", [stored], "run-2")
    assert statuses.read_facts(db, "tiny")[sid].mistakes == {Q2: {"wrong_answer": 1}}


def test_a_status_table_from_before_seconds_gains_the_column(tmp_path):
    db = tmp_path / "gradebook.db"
    con = sqlite3.connect(db)
    with con:
        con.execute(
            "CREATE TABLE course_grading_status (assignment TEXT NOT NULL, student "
            "TEXT NOT NULL, status TEXT NOT NULL, details TEXT NOT NULL, run_id TEXT "
            "NOT NULL, graded_at TEXT NOT NULL, PRIMARY KEY (assignment, student))"
        )
        con.execute("INSERT INTO course_grading_status VALUES "
                    "('tiny', 'old', 'graded', '', 'r0', 't')")
    con.close()
    assert statuses.read_facts(db, "tiny") == {}  # no seconds column: nothing
    statuses.write_statuses(
        db, "tiny", [statuses.StoredStatus("new", "crashed", ["x"], 2.0)], "r1"
    )
    facts = statuses.read_facts(db, "tiny")
    assert facts["new"].seconds == 2.0 and facts["old"].seconds is None
    assert statuses.read_statuses(db, "tiny", ("graded", "crashed")) == {
        "old": ("graded", ""), "new": ("crashed", "x")}


# ------------------------------------------------- the aggregation, pure


def _row(student, status="graded", q1=2.0, q2=1.0, q3=None, pending=(), details=""):
    scores = {Q1: q1, Q2: q2, Q3: q3}
    total = sum(v for v in scores.values() if v is not None)
    return gbook.Row(student, status, details, scores, total, len(pending),
                     list(pending))


def _constructed():
    rows = [
        _row("ada", q3=1.0),
        _row("bob", q1=0.0, pending=[Q3]),
        _row("cy", q1=0.0, q2=0.0, pending=[Q3]),
        _row("dee", q1=1.0, pending=[Q3]),
        _row("eve", "timed out", q1=0.0, pending=[Q1, Q3]),
        _row("fay", "missing", None, None, None, details="no submission"),
        _row("gil", "flagged for review", 0.0, 0.0, 0.0, [Q1, Q2],
             details="symbolic link <script>alert(2)</script>"),
        _row(HOSTILE, q1=0.0, pending=[Q3]),
        _row("hal", "grader error", 0.0, 0.0, 0.0, [Q1, Q2],
             details='=cmd|"/C calc"!A0 <b>bold</b>'),
    ]
    F = statuses.Facts
    facts = {
        "ada": F(3.0),
        "bob": F(3.5, {Q1: {"sign_flipped": 2}}),
        "cy": F(2.5, {Q1: {"sign_flipped": 1, "detail_off": 1},
                      Q2: {"wrong_answer": 1}}),
        "dee": F(3.1, {Q1: {"summed_not_averaged": 1}}),
        "eve": F(25.0, {Q1: {"not_run": 2}}),
        HOSTILE: F(4.0, {Q1: {"summed_not_averaged": 2}}),
        "gone": F(99.0, {Q1: {"sign_flipped": 9}}),  # no row: not in the report
    }
    return rows, facts


def test_summarize_counts_scores_mistakes_and_who_needs_a_person():
    rows, facts = _constructed()
    r = report.summarize("tiny", QUESTIONS, rows, facts, top=3, slowest=3)
    assert r.students == 9
    assert {k: v for k, v in r.counts.items() if v} == {
        "graded": 5, "timed out": 1, "flagged for review": 1, "grader error": 1,
        "missing": 1}
    assert r.missing == ["fay"]
    q1, q2, q3 = r.distributions
    # eve's q1 awaits a person (her kernel timed out first), so do gil's (flagged)
    # and hal's (grader error); fay submitted nothing
    assert q1.points == {0.0: 3, 1.0: 1, 2.0: 1} and q1.awaiting == 3
    assert q1.not_submitted == 1
    assert q1.bands() == {"full marks": 1, "partial": 1, "zero": 3,
                          "awaiting a person": 3, "not submitted": 1}
    assert q1.mean == pytest.approx(3 / 5)
    assert q2.bands()["zero"] == 1 and q3.bands()["awaiting a person"] == 5
    assert q3.bands()["zero"] == 2  # gil's and hal's, settled at 0
    # sign flipped: bob and cy (2 students, 3 cases); 3× : dee and the hostile
    # id (2 students, 3 cases); the timeout's unreached cases are no mistake
    assert r.mistakes[Q1] == [
        report.Mistake("sign_flipped", 2, 3),
        report.Mistake("summed_not_averaged", 2, 3),
        report.Mistake("detail_off", 1, 1),
    ]
    assert r.mistakes[Q2] == [report.Mistake("wrong_answer", 1, 1)]
    assert Q3 not in r.mistakes
    assert r.lost_points == {Q1: 4, Q2: 1}
    assert [a.student for a in r.attention] == ["eve", "gil", "hal"]
    why = {a.student: a.reasons for a in r.attention}
    assert why["eve"] == ("tests awaiting review: q1_tests",)
    assert why["gil"] == (
        "flagged for review: symbolic link <script>alert(2)</script>",
        "tests awaiting review: q1_tests, q2_tests",
    )
    assert r.to_grade == {Q3: 5}
    assert r.slowest == [("eve", 25.0, "timed out"), (HOSTILE, 4.0, "graded"),
                         ("bob", 3.5, "graded")]
    assert "sign flipped" in report.format_summary(r)
    with pytest.raises(ValueError, match="top must be an int"):
        report.summarize("tiny", QUESTIONS, rows, facts, top=0)


def test_the_page_escapes_every_student_string_and_loads_nothing(tmp_path):
    rows, facts = _constructed()
    rows[-1].details += "\u202e\x1b[2J"
    r = report.summarize("tiny", QUESTIONS, rows, facts)
    html = report_page.page(r, {})
    body = html.split("</style>", 1)[1]
    assert "<script" not in html.lower() and "<img src=x" not in html
    assert "<b>" not in body and "\x1b" not in html and "\u202e" not in html
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html and "⟨U+202E⟩⟨U+001B⟩[2J" in html
    assert "⟨U+003C⟩img src⟨U+003D⟩x" in html  # the id, as `student_id` shows it
    assert "default-src 'none'" in html
    # nothing is loaded: no src or href but inline data, no url(), no @import
    assert not re.search(r"(src|href)=\"(?!data:|#)", html)  # in-page anchors only
    assert "url(" not in html and "@import" not in html


def test_charts_fit_the_column_and_render(tmp_path):
    rows, facts = _constructed()
    r = report.summarize("tiny", QUESTIONS, rows, facts)
    charts = report_charts.charts(r)
    assert set(charts) == {"scores", "distribution", "status", "mistakes", "slowest"}
    for name, chart in charts.items():
        assert chart_problems(chart.to_dict()) == [], name
    paths = report_page.write_report(r, tmp_path / "out")
    assert [p.name for p in paths] == ["report.html", "scores.png", "distribution.png",
                                       "status.png", "mistakes.png", "slowest.png"]
    html = paths[0].read_text()
    for path in paths[1:]:
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG") and base64.b64encode(data).decode() in html


# ------------------------------------------------- through the gradebook


@pytest.fixture(scope="module")
def graded_db(tmp_path_factory):
    """A gradebook holding the tiny set (as `course grade` syncs it)."""
    folder = tmp_path_factory.mktemp("gb")
    db = folder / "gradebook.db"
    generate(Course.load(TINY), "tiny", folder / "release", db)
    return db


def _result(student, status, q1, q2, found, seconds):
    grades = gbook.NotebookGrades(
        {"q1_tests": q1, "q2_tests": q2, "q3_answer": None},
        needs_review=set() if status is Status.GRADED else {"q1_tests"},
    )
    out = NotebookOutcome("tiny", status, [], [], {"q1_tests": q1, "q2_tests": q2},
                          seconds, 0.0, found)
    r = StudentResult(student, status, [], {"tiny": out},
                      gbook.SubmissionGrades(student, {"tiny": grades}), seconds)
    r.report = publish.report(r, "tiny", False)
    return r


def test_a_report_from_a_gradebook_publish_run_wrote(graded_db, tmp_path):
    root = tmp_path / "course"
    shutil.copytree(TINY, root)
    shutil.copyfile(graded_db, root / "gradebook.db")
    course = Course.load(root)
    results = [
        _result("ada", Status.GRADED, 2.0, 1.0, {}, 3.0),
        _result("bob", Status.GRADED, 0.0, 1.0, {"q1_tests": {"sign_flipped": 2}}, 3.2),
        _result("cy", Status.GRADED, 1.0, 0.0,
                {"q1_tests": {"sign_flipped": 1}, "q2_tests": {"wrong_answer": 1}}, 2.9),
        _result("eve", Status.TIMED_OUT, 0.0, 1.0, {"q1_tests": {"not_run": 2}}, 30.0),
    ]
    work = root / "work"
    work.mkdir()
    candidate = work / "gradebook.db"
    fingerprint = gbook.snapshot(course.gradebook, candidate)
    commit = publish.Commit("r1", candidate, fingerprint, work, root / "grades.csv")
    publish.publish_run(course, "tiny", results, commit)
    r = report.load_report(course, "tiny")
    assert r.students == 4 and r.counts["graded"] == 3 and r.counts["timed out"] == 1
    assert r.mistakes[Q1] == [report.Mistake("sign_flipped", 2, 3)]
    assert r.mistakes[Q2] == [report.Mistake("wrong_answer", 1, 1)]
    assert [(a.student, a.reasons) for a in r.attention] == [
        ("eve", ("tests awaiting review: q1_tests",))]
    assert r.to_grade == {Q3: 4} and r.slowest[0] == ("eve", 30.0, "timed out")
    assert r.distributions[0].points == {0.0: 1, 1.0: 1, 2.0: 1}
    with pytest.raises(ValueError, match="SET"):
        report.load_report(course, "nope")
    from course_utils.cli import main

    out = tmp_path / "out"
    assert main(["report", "tiny", "--root", str(root), "--out", str(out)]) == 0
    assert (out / "report.html").is_file() and (out / "mistakes.png").is_file()
    assert main(["report", "nope", "--root", str(root)]) == 2


# ------------------------------------------------- a class, in the sandbox

CASES = Path(__file__).parent / "grading_cases"
OPTIONS = {
    "workers": 2,
    "cell_timeout": 8.0,
    "notebook_timeout": 25.0,
    "interrupt_grace": 2.0,
    "memory_gib": 2.5,
    "address_space_gib": 6.0,
    "progress": False,
    "sandbox_uid": 64500,  # not the scenarios' range
}


def _bug(name: str) -> str:
    """A wrong gradient_saliency from the bug bank (ps1's first question)."""
    from test_exercise_bug_bank import BANK

    bugs = {n: src for n, src, _ in BANK[("ps1_gradients/gradients.ipynb", "q1_tests")]}
    return bugs[name]


def _case(q1: str, q2: str = "n_passes = 5") -> str:
    return (f"# %% q1_answer\n{q1}\n# %% q2_answer\n{q2}\n"
            "# %% q3_answer\nThe gradient is local.\n")


@pytest.fixture(scope="module")
def graded_class():
    """The tiny set graded in the sandbox for a small class; its report written."""
    sys.path.insert(0, str(CASES))
    import build

    from course_utils.grading.grade import GradeOptions, grade
    from course_utils.grading.release import release

    if not sandbox.detect().usable:
        pytest.skip(sandbox.detect().describe())
    root = Path(tempfile.mkdtemp(prefix="course-report-"))
    os.chmod(root, 0o755)
    shutil.copytree(CASES / "course" / "solutions", root / "solutions")
    course = Course.load(root)
    release(course)
    gb = gbook.open_gradebook(course.gradebook)
    try:
        gb.update_or_create_student("absent")  # on the roster, never submits
    finally:
        gb.close()
    correct = (CASES / "correct.cells").read_text()
    texts = {
        "model_a": correct,
        "model_b": correct,
        "sign_a": _case(_bug("flipped sign")),
        "sign_b": _case(_bug("flipped sign"), "n_passes = 4"),
        "times_3": _case(_bug("summed over rows and channels")),
        "loop": (CASES / "infinite_loop.cells").read_text(),
        HOSTILE_ID: _case(_bug("flipped sign")),
    }
    released = build.nbformat.read(course.release / "tiny" / "tiny.ipynb", as_version=4)
    for student, text in texts.items():
        folder = course.submitted / student / "tiny"
        folder.mkdir(parents=True)
        build.nbformat.write(build.build(released, text, {}), folder / "tiny.ipynb")
    (course.submitted / "no_notebook" / "tiny").mkdir(parents=True)
    os.symlink(course.submitted / "model_a", course.submitted / "link_student")
    summary = grade(course, "tiny", options=GradeOptions(**OPTIONS))
    from course_utils.cli import main

    assert main(["report", "tiny", "--root", str(root)]) == 0
    yield course, summary, report.load_report(course, "tiny")
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_the_class_report_of_a_graded_class(graded_class):
    _, _, r = graded_class
    assert {k: v for k, v in r.counts.items() if v} == {
        "graded": 6, "timed out": 1, "flagged for review": 1, "missing": 2}
    assert sorted(r.missing) == ["absent", "no_notebook"]
    # the top mistake of each question, counted in students (and cases)
    # (the loop's function was never defined: its hidden cases raised)
    assert r.mistakes[Q1] == [
        report.Mistake("sign_flipped", 3, 6),
        report.Mistake("summed_not_averaged", 1, 2),
        report.Mistake("raised", 1, 2),
    ]
    assert r.mistakes[Q2] == [report.Mistake("wrong_answer", 1, 1)]
    assert r.lost_points[Q1] == 5 and r.lost_points[Q2] == 1
    q1 = r.distributions[0]
    assert q1.points == {0.0: 5, 2.0: 2} and q1.awaiting == 1  # the link
    assert q1.not_submitted == 2
    # who needs a person: the symlinked folder (its tests await review too)
    assert [(a.student, a.reasons[0].split(":")[0]) for a in r.attention] == [
        ("link_student", "flagged for review")]
    assert r.to_grade == {Q3: 6}  # the loop left q3 empty: it scores 0
    assert r.slowest[0][0] == "loop" and r.slowest[0][1] >= OPTIONS["cell_timeout"]


@pytest.mark.slow
def test_the_written_report_is_escaped_and_self_contained(graded_class):
    course, _, _ = graded_class
    out = course.root / "report-tiny"
    names = sorted(p.name for p in out.iterdir())
    assert names == ["distribution.png", "mistakes.png", "report.html", "scores.png",
                     "slowest.png", "status.png"]
    html = (out / "report.html").read_text()
    assert "<img src=x" not in html and "<script" not in html.lower()
    assert "\x1b" not in html and 'HYPERLINK("' not in html
    assert "⟨U+003C⟩img src⟨U+003D⟩x onerror⟨U+003D⟩alert⟨U+0028⟩1⟨U+0029⟩" in html
    assert not re.search(r"(src|href)=\"(?!data:|#)", html)  # in-page anchors only
    assert "sign flipped" in html and "n× the reference" in html


@pytest.mark.slow
def test_the_report_lists_answers_that_look_copied(graded_class):
    """`course report` embeds `course similarity`'s pairs (the two model answers
    are the same text: listed for a person to judge, no score changed)."""
    course, _, r = graded_class
    html = (course.root / "report-tiny" / "report.html").read_text()
    assert "Answers that look copied" in html
    assert "model_a" in html.split("Answers that look copied", 1)[1]
    assert r.distributions[0].points == {0.0: 5, 2.0: 2}
