"""course_utils: helpers for the Saliency Maps course.

Modules: `data` (offline MNIST digits), `models` (small CNNs, training,
shipped checkpoints), `saliency` (one module per method), `reference`
(the same methods via Captum), `sanity`, `metrics`, `plotting`, `widgets`,
`grading`.
"""

import sys as _sys

__version__ = "0.1.0"

# Start-up: jsonschema (which altair imports to validate charts) imports
# `rfc3987_syntax` when it is installed, and that module builds an Earley
# parser at import: 1.3–2.3 s of every notebook's first cell and every
# grading kernel's start, a third of it. It only adds jsonschema's "iri" and
# "iri-reference" format checks, which no schema the course validates uses
# (Vega-Lite's has no such format; tests/test_startup.py checks charts still
# validate and that format checking still works). So, unless something
# imported it already, importing course_utils makes `import rfc3987_syntax`
# fail (a None entry in sys.modules), which jsonschema treats as "not
# installed". Import course_utils before altair to get the saving.
if "jsonschema" not in _sys.modules:
    _sys.modules.setdefault("rfc3987_syntax", None)


def show(obj) -> None:
    """Print the source of a course_utils function or class (for reading it in class)."""
    import inspect

    print(inspect.getsource(obj))
