"""The modules that compute the answers: one list for every part of grading.

These are the reference implementations the exercises are graded against —
the course's own methods and Captum. The one list is used four ways:

* `notebooks.absent_modules`: a set's default for what the grading sandbox
  leaves out (and the hand-out with ``--withhold``; `copying` compares answers
  with their functions) (a solution notebook may declare its own list in
  ``metadata.course_grading.absent_modules``);
* `checks.check(..., forbid=)`: the call detector's default in a self-check;
* `checks` again: a failed import of one of them means "withheld", not "broken";
* `static`: the review notes an answer that imports one of them.

The module is a constant and a matcher, so the sandbox can import it.

It also holds what the course withholds from a student before grading, and
why: whether a short answer (a number, TRUE/FALSE, a letter) is right.
`checks.validate` and `course check` print the same words (`SHORT_ANSWERS`,
`SHORT_ANSWERS_WHY`); the README and every exercise header say it at length.
"""

from __future__ import annotations

from collections.abc import Iterable

REFERENCE_MODULES: tuple[str, ...] = (
    "course_utils.saliency",
    "course_utils.reference",
    "course_utils.sanity",
    "course_utils.metrics",
    "course_utils.grading.closed_form",
    "course_utils.shapley",
    "captum",
)


# Short answers: checked for their form before grading, never for right or wrong.
SHORT_ANSWERS = "right or wrong is shown only after grading"
SHORT_ANSWERS_WHY = (
    "a check on your machine would have to carry the answer, and a few tries "
    "(TRUE, then FALSE; each letter) would find it: the point would no longer "
    "say what you understood"
)


def matching(module: str, prefixes: Iterable[str] = REFERENCE_MODULES) -> str | None:
    """The prefix (a module or a package of them) that `module` is, or is inside of.

    >>> matching("captum.attr")
    'captum'
    >>> matching("course_utils.saliency.gradient")
    'course_utils.saliency'
    >>> matching("course_utils.saliency_tools") is None
    True
    """
    for prefix in prefixes:
        if module == prefix or module.startswith(prefix + "."):
            return prefix
    return None
