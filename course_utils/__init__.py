"""course_utils: helpers for the Saliency Maps course.

Modules: `data` (offline MNIST digits), `models` (small CNNs, training,
shipped checkpoints), `saliency` (one module per method), `reference`
(the same methods via Captum), `shapley` (exact Shapley values, KernelSHAP),
`sanity`, `metrics`, `plotting`, `widgets`,
`grading`.
"""

import sys as _sys

__version__ = "0.1.0"

# A docstring paragraph starting with one of these is left out by `show`
# (where the code departs from Captum or the paper: that is for help()).
_DEPARTURES = ("Captum:", "Departure")
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



def show(obj, batched: bool = False) -> None:
    """Print the code of a course_utils function or class, for reading it in class.

    For a saliency method (e.g. `sal.integrated_gradients`) it prints the
    formula (the first line of its docstring) and its module's textbook loop
    (`integrated_gradients_textbook`), the version to hold against the
    formula. With `batched=True`, or for anything without a textbook twin, it
    prints the source itself. Either way the docstring paragraphs on
    departures from Captum or the paper are left out (`help(obj)` has them).
    """
    import inspect
    import sys

    name = getattr(obj, "__name__", "")
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    textbook = getattr(module, f"{name}_textbook", None)
    if textbook is not None and not batched:
        print(f"# {inspect.getdoc(obj).splitlines()[0]}\n")
        obj = textbook
    print(_without_departures(inspect.getsource(obj)))


def _without_departures(source: str) -> str:
    """`source` with its docstring cut before the first Captum/departures paragraph."""
    lines = source.rstrip("\n").splitlines()
    opens = [i for i, line in enumerate(lines) if '"""' in line]
    if len(opens) < 2 or opens[0] == opens[1]:
        return "\n".join(lines)
    first, last = opens[0], opens[1]  # the docstring's opening and closing lines
    for i in range(first + 1, last + 1):
        if lines[i].strip().startswith(_DEPARTURES) and not lines[i - 1].strip():
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
            return "\n".join(lines[: i - 1] + [f'{indent}"""'] + lines[last + 1 :])
    return "\n".join(lines)
