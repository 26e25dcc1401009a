"""The references a test cell names: ``checks.saliency(...)``, ``checks.reference_answer(...)``.

A test cell passes ``reference=checks.saliency("integrated_gradients",
method="riemann_right")`` rather than importing the course package, so that no
name bound to a reference implementation lands in the student's namespace. The
returned function imports its module on the first call only: in the grading
sandbox and in a hand-out before the set's deadline the module is absent, and
a test cell naming it must still be harmless there (`checks` then says
"graded after submission"). It imports with `importlib.import_module`, whose
ModuleNotFoundError names the missing module; ``from course_utils import
saliency`` would raise a bare ImportError that `checks` cannot tell from a bug.

Each reference says what it is, for the hints (`alternatives`) that compute
it again under a wrong choice: ``ref.method`` and ``ref.fixed`` (the method of
`course_utils.saliency` and its fixed keyword arguments) and
``ref.variant(**override)`` (the same reference with other fixed arguments);
or ``ref.answer`` (the name in `closed_form.REFERENCES`). Runs in the student's
kernel; re-exported by `checks`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable


def saliency(method: str, /, **fixed) -> Callable:
    """The course's implementation of a method, as a reference for `check`.

    ``checks.saliency("integrated_gradients", method="riemann_right")`` calls
    `course_utils.saliency.integrated_gradients` with those arguments fixed.
    """

    def reference(*args, **kwargs):
        # import_module: an absent module raises ModuleNotFoundError naming it
        # (`from course_utils import saliency` raises a bare ImportError).
        sal = importlib.import_module("course_utils.saliency")

        if method not in sal.METHODS and not hasattr(sal, method):
            raise ValueError(
                f"method must be one of {sorted(sal.METHODS)}, got {method!r}"
            )
        return getattr(sal, method)(*args, **{**kwargs, **fixed})

    reference.__name__ = f"saliency.{method}"
    reference.method = method
    reference.fixed = dict(fixed)
    reference.variant = lambda **override: saliency(method, **{**fixed, **override})
    return reference


def reference_answer(name: str, /) -> Callable:
    """A reference answer from `course_utils.grading.closed_form`, for `check`.

    Like `saliency`, so that a test cell computes its expected values without
    binding a reference implementation to a name in the student's namespace.
    """

    def reference(*args, **kwargs):
        closed_form = importlib.import_module("course_utils.grading.closed_form")

        if name not in closed_form.REFERENCES:
            raise ValueError(
                f"name must be one of {sorted(closed_form.REFERENCES)}, got {name!r}"
            )
        return closed_form.REFERENCES[name](*args, **kwargs)

    reference.__name__ = f"closed_form.{name}"
    reference.answer = name
    return reference
