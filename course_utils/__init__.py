"""course_utils: helpers for the Saliency Maps course.

Modules: `data` (offline MNIST digits), `models` (small CNNs, training,
shipped checkpoints), `saliency` (one module per method), `reference`
(the same methods via Captum), `shapley` (exact Shapley values, KernelSHAP),
`sanity`, `metrics`, `plotting`, `widgets`,
`grading`.
"""

__version__ = "0.1.0"

# A docstring paragraph starting with one of these is left out by `show`
# (where the code departs from Captum or the paper: that is for help()).
_DEPARTURES = ("Captum:", "Departure")


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
