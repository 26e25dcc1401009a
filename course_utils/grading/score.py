"""The points of one notebook's questions, decided from typed facts only."""

from __future__ import annotations

from dataclasses import dataclass, field

import nbformat

from . import gradebook as gbook
from . import notebooks as nbs
from .outcome import Status
from .plan import NotebookSpec
from .verify import Marking


@dataclass
class QuestionScores:
    """What grading decided for each graded cell of one notebook.

    points: grade id → points (None: a person scores it).
    needs_review: grade ids a person should look at (crash, flag, timeout, …).
    comments: answer-cell grade id → comment shown in formgrader.
    flagged: the notebook is flagged for review (auto-graded points withheld).
    """

    points: dict[str, float | None] = field(default_factory=dict)
    needs_review: set[str] = field(default_factory=set)
    comments: dict[str, str] = field(default_factory=dict)
    flagged: bool = False

    def grades(self) -> gbook.NotebookGrades:
        """The same decisions as the gradebook takes them."""
        return gbook.NotebookGrades(
            auto_scores=dict(self.points),
            needs_review=set(self.needs_review),
            comments=dict(self.comments),
            flagged=self.flagged,
        )


def score(
    spec: NotebookSpec,
    merged: nbs.Merged | None,
    verdict: Marking | None,
    status: Status,
    flags: list[str],
) -> QuestionScores:
    """The points of every graded cell of SPEC for one submission.

    Only hidden cases carry points (`verdict`). A flagged notebook gets zero
    and every test awaits a person; a test the harness did not reach after a
    crash or timeout awaits a person too, as does every test when an answer
    cell was matched without its metadata. A manually graded answer left empty
    scores zero; any other awaits a person (None).

    Args:
        spec: the notebook's solution (its test and manual cells, their points).
        merged: what the merge recorded of the student's answer cells (the
            unanswered ones, those matched by position); None: nothing ran
            (no notebook, a link, a grader error).
        verdict: the comparison of the harness's records (None with merged).
        status: the notebook's status (`outcome`).
        flags: what a person must review (folder links, lost metadata …).
    """
    tests = spec.test_points()
    manual = [
        nbs.grade_id(c) for c in nbs.graded_cells(spec.source) if nbs.is_manual(c)
    ]
    if merged is None or verdict is None:
        return QuestionScores(
            {gid: 0.0 for gid in [*tests, *manual]}, set(tests), {}, bool(flags)
        )
    out = QuestionScores(flagged=bool(flags))
    for gid in tests:
        cell = verdict.cells[gid]
        out.points[gid] = 0.0 if flags else cell.score
        if flags or (status is not Status.GRADED and not cell.complete):
            out.needs_review.add(gid)
        if merged.matched_by_position:
            out.needs_review.add(gid)
    for gid in manual:
        out.points[gid] = 0.0 if gid in merged.unanswered else None
    out.comments = _comments(spec.source, merged, verdict)
    return out


def _comments(
    source: nbformat.NotebookNode, merged: nbs.Merged, verdict: Marking
) -> dict[str, str]:
    """Answer-cell grade id → the feedback formgrader shows beside it."""
    comments: dict[str, list[str]] = {}
    for gid, answer in _answer_for_tests(source).items():
        comments.setdefault(answer, []).extend(verdict.cells[gid].lines)
    for gid in merged.unanswered:
        comments.setdefault(gid, []).insert(0, "No response.")
    for gid in merged.matched_by_position:
        comments.setdefault(gid, []).insert(
            0, "matched without its cell metadata (by position/content): review"
        )
    return {gid: "\n".join(lines) for gid, lines in comments.items()}


def _answer_for_tests(source: nbformat.NotebookNode) -> dict[str, str]:
    """Each test cell's nearest preceding answer cell (where comments go)."""
    out, last = {}, None
    for cell in source.cells:
        if nbs.is_answer(cell) and nbs.grade_id(cell):
            last = nbs.grade_id(cell)
        elif nbs.is_autograded_test(cell) and last:
            out[nbs.grade_id(cell)] = last
    return out
