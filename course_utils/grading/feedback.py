"""`course feedback SET`: what each graded student reads about their notebooks.

One HTML page per student and notebook, in nbgrader's feedback layout —
``feedback/<student>/<set>/<notebook>.html`` beside ``timestamp.txt`` (and the
``submission_secret.txt`` nbgrader's exchange left in submitted/) — so
`nbgrader release_feedback` delivers it on a JupyterHub, or an instructor
hands the folder out. A page says, for each graded cell of the notebook:

* its points out of its maximum (a person's score over the grader's, as
  formgrader and the CSV count it), or that it awaits a person;
* for a test cell, how many hidden cases passed and, for those that did not,
  the *kind* of mistake the grader found (`mistakes`: "sign flipped", "n× the
  reference: summed instead of averaged", …) with how many cases showed it —
  read from ``course_grading_mistakes`` (`statuses.read_facts`), the store the
  class report reads;
* the student's own answer (its source) and the TA's comment from formgrader;

and the notebook's total. What the page never shows: the hidden cases
(model, inputs, targets, expected values — the grader's comment lines and the
autograded notebook's outputs name them, so neither is read here), the
grader's auto comments, anything the student's kernel printed.

`load_feedback` gathers it from the gradebook, the facts and autograded/
(pure data, `NotebookFeedback`); `feedback_page` renders and writes it.
Everything a student controls (their id, answer sources, a TA comment quoting
them) passes `sanitize` on the way in and `sanitize.html` on the way out.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

from . import mistakes as kinds
from . import notebooks as nbs
from . import sanitize
from .course import Course
from .gradebook import COMMENT_LIMIT, open_gradebook
from .outcome import Status

ANSWER_LIMIT = 20_000  # characters of an answer's source shown on the page


@dataclass(frozen=True)
class Mistake:
    """One kind of mistake in a test cell's failed hidden cases."""

    category: str
    cases: int

    @property
    def words(self) -> str:
        return kinds.words(self.category)


@dataclass
class QuestionFeedback:
    """One graded cell as the student sees it.

    score: None while it awaits a person; by_person: a person set the score;
    answer: the source of the answer cell it grades (sanitised); comment: the
    TA's comment from formgrader (sanitised), '' when none.
    """

    grade_id: str
    max_points: float
    manual: bool
    score: float | None
    by_person: bool = False
    mistakes: list[Mistake] = field(default_factory=list)
    answer: str = ""
    answer_is_code: bool = True
    comment: str = ""


@dataclass
class NotebookFeedback:
    """One student's feedback on one notebook of a set."""

    student: str
    set_id: str
    notebook: str
    status: str
    questions: list[QuestionFeedback]
    folder: str = ""  # the student's folder name in autograded/ (and feedback/)
    timestamp: str = ""  # the submission's, as the gradebook holds it

    @property
    def total(self) -> float:
        return round(sum(q.score or 0.0 for q in self.questions), 2)

    @property
    def max_total(self) -> float:
        return round(sum(q.max_points for q in self.questions), 2)

    @property
    def awaiting(self) -> int:
        return sum(q.score is None for q in self.questions)


def _answers(source: object) -> dict[str, str]:
    """Graded cell grade id → the grade id of the answer cell it grades.

    A test cell grades the nearest answer cell before it; a manual cell (an
    answer with points) grades itself.
    """
    out, last = {}, None
    for cell in source.cells:
        gid = nbs.grade_id(cell)
        if nbs.is_answer(cell) and gid:
            last = gid
            if nbs.is_graded(cell):
                out[gid] = gid
        elif nbs.is_autograded_test(cell) and gid:
            out[gid] = last
    return out


def _sources(path: Path) -> dict[str, tuple[str, bool]]:
    """Answer grade id → (its source, is code) in a graded notebook.

    Only answer cells are read, never an output: the outputs of a graded
    notebook hold the grader's lines, which name hidden cases. A markdown
    answer was HTML-escaped for formgrader (`formgrader.sanitize_for_formgrader`):
    it is unescaped here, and escaped once again by the page.
    """
    if not path.is_file() or path.is_symlink():
        return {}
    try:
        nb = nbs.read_notebook(path)
    except Exception:  # noqa: BLE001 — an unreadable notebook shows no answers
        return {}
    out = {}
    for cell in nb.cells:
        gid = nbs.grade_id(cell)
        if nbs.is_answer(cell) and gid:
            text = cell.source if isinstance(cell.source, str) else "".join(cell.source)
            if cell.cell_type != "code":  # escaped for formgrader: shown as written
                text = html.unescape(text)
            out[sanitize.line(gid, 200)] = (
                sanitize.text(text, ANSWER_LIMIT),
                cell.cell_type == "code",
            )
    return out


def _graded_folders(course: Course) -> dict[str, Path]:
    """Sanitised student id → their autograded/ folder (links are not followed)."""
    if not course.autograded.is_dir():
        return {}
    return {
        sanitize.student_id(p.name): p
        for p in sorted(course.autograded.iterdir())
        if p.is_dir() and not p.is_symlink()
    }


def _question(q, grade, comment: str, mistakes: dict, answer) -> QuestionFeedback:
    """A QuestionFeedback from nbgrader's Grade row (None: no row)."""
    score, by_person = None, False
    if grade is not None:
        by_person = grade.manual_score is not None
        settled = by_person or not grade.needs_manual_grade
        value = grade.manual_score if by_person else grade.auto_score
        score = round(float(value), 2) if settled and value is not None else None
    found = sorted(
        (
            Mistake(c, n)
            for c, n in mistakes.items()
            if n > 0 and c not in kinds.RUN_FAILURES
        ),
        key=lambda m: (-m.cases, list(kinds.CATEGORIES).index(m.category)),
    )
    text, is_code = answer or ("", True)
    return QuestionFeedback(
        q.grade_id, q.max_points, q.manual, score, by_person, found, text, is_code,
        comment,
    )


def load_feedback(course: Course, set_id: str) -> list[NotebookFeedback]:
    """Every graded student's feedback on every notebook of a set.

    A student counts as graded when the gradebook has their submission and
    autograded/ their folder (a student who submitted nothing gets no page).

    Raises:
        ValueError: an unknown set, or a set nobody was graded in yet.
    """
    from nbgrader.api import MissingEntry

    from .publish import load_statuses
    from .report import questions_of
    from .statuses import read_facts

    set_id = course.check_set(set_id)
    if not course.gradebook.exists():
        raise ValueError(
            f"SET {set_id!r} has no gradebook yet ({course.gradebook}); run "
            f"`course grade {set_id}` first"
        )
    questions = questions_of(course, set_id)
    answers = {
        p.stem: _answers(nbs.read_notebook(p)) for p in course.source_notebooks(set_id)
    }
    facts = read_facts(course.gradebook, set_id)
    stored = load_statuses(course, set_id)
    folders = _graded_folders(course)
    out = []
    gb = open_gradebook(course.gradebook)
    try:
        for stored_id in sorted(s.id for s in gb.students):
            student = sanitize.student_id(stored_id)
            try:
                submission = gb.find_submission(set_id, stored_id)
            except MissingEntry:
                continue
            if student not in folders:
                continue
            status = stored.get(student, (Status.GRADED.value, ""))[0]
            mistakes = facts[student].mistakes if student in facts else {}
            for nb_name, answer_of in answers.items():
                page = _notebook(
                    gb, set_id, stored_id, student, nb_name, status,
                    [q for q in questions if q.notebook == nb_name],
                    answer_of, mistakes,
                    _sources(folders[student] / set_id / f"{nb_name}.ipynb"),
                )
                page.folder = folders[student].name
                page.timestamp = sanitize.line(submission.timestamp or "", 100)
                out.append(page)
    finally:
        gb.close()
    return out


def _notebook(
    gb, set_id, stored_id, student, nb_name, status, questions, answer_of, mistakes,
    sources,
) -> NotebookFeedback:
    """One notebook's feedback from the gradebook's rows for it."""
    from nbgrader.api import MissingEntry

    try:
        sub = gb.find_submission_notebook(nb_name, set_id, stored_id)
        grades = {g.name: g for g in sub.grades}
        comments = {c.name: c.manual_comment for c in sub.comments}
    except MissingEntry:
        grades, comments = {}, {}
    items = []
    for q in questions:
        answer_id = answer_of.get(q.grade_id)
        comment = comments.get(answer_id) if answer_id else None
        items.append(
            _question(
                q,
                grades.get(q.grade_id),
                sanitize.text(comment, COMMENT_LIMIT) if comment else "",
                mistakes.get((nb_name, q.grade_id), {}),
                sources.get(answer_id) if answer_id else None,
            )
        )
    return NotebookFeedback(student, set_id, nb_name, status, items)
