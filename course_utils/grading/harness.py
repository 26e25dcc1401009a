"""The grader's harness: what runs in the sandbox after every cell of a submission.

The grader appends one cell per check to the notebook it grades, after the
student's last cell, and just before the first of them writes a directory
``/tmp/h-NONCE`` into the sandbox that the student's cells never saw:

* ``plan.json`` — for each check: its kind ("arrays" or "value"), the
  expression naming the student's function or answer (``gradient_saliency``,
  ``q3``), and for arrays the cases file and the transform;
* ``NAME.cases.pt`` — the concrete inputs of each case (tensors, models),
  built by the instructor's solution in the reference run;
* ``records/`` — where this module writes what the student's code returned.

Nothing here judges: the reference outputs are not in the sandbox (neither
is the reference implementation), and the grader compares the records in its
own process (`verify`). A student who replaces this module, torch or numpy
changes only what *their* code returns.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import records
from .compare import normalize_value, to_array

# `checks` (the transforms, `Built`) and torch are imported by `run` and
# `_Stored`, in the kernel: the grader imports this module for `cell_source`
# only, and its process never imports the student-side test API.


class _Stored:
    """A case whose inputs are a fresh load of the cases file (for transforms
    that need the pristine inputs, e.g. `checks.parameter_changes`)."""

    def __init__(self, path: Path, index: int, label: str):
        self.path, self.index, self.label = path, index, label

    def build(self):
        """A `checks.Built` from the stored arguments of case `index`."""
        import torch

        from .checks import Built

        args, kwargs = torch.load(self.path, weights_only=False)[self.index]
        model = next((a for a in args if isinstance(a, torch.nn.Module)), None)
        return Built(tuple(args), dict(kwargs), model, self.label, self)


def _record_value(entry: dict, target, missing: str | None) -> dict:
    """The metadata of a short answer's record."""
    try:
        if missing:
            raise NameError(missing)
        value = normalize_value(target, entry["value_kind"])
        if isinstance(value, str) and len(value) > records.MAX_TEXT:
            raise ValueError(f"answer longer than {records.MAX_TEXT} characters")
        return {"value": value, "error": None}
    except (TypeError, ValueError, NameError) as exc:
        return {"value": None, "error": records.error_text(exc)}


def _record_cases(folder: Path, entry: dict, target, missing: str | None):
    """The case list and output arrays of a function's record."""
    from . import checks

    path = folder / entry["cases"]
    transform = getattr(checks, entry["transform"]) if entry.get("transform") else None
    metas, arrays = [], {}
    for i, label in enumerate(entry["labels"]):
        built = _Stored(path, i, label).build()
        error = missing
        if error is None and not callable(target):
            error = f"TypeError: expected a function, got {type(target).__name__}"
        if error is None:
            try:
                result = target(*built.args, **built.kwargs)
                arrays[i] = to_array(transform(result, built) if transform else result)
            except Exception as exc:  # noqa: BLE001 — the student's error is a result
                error = records.error_text(exc)
        metas.append({"label": label, "error": error})
    return metas, arrays


def run(directory: str, name: str, namespace: dict) -> None:
    """Run check `name` of the plan in `directory` on the student's namespace."""
    folder = Path(directory)
    entry = json.loads((folder / "plan.json").read_text())[name]
    out = folder / "records"
    base = {"version": records.RECORD_VERSION, "name": name, "kind": entry["kind"]}
    try:
        target = eval(entry["expr"], namespace)
        missing = None
    except Exception as exc:  # noqa: BLE001 — a missing answer is a result
        target, missing = None, records.error_text(exc)
    if entry["kind"] == "value":
        meta = {**base, **_record_value(entry, target, missing)}
        records.write_record(name, meta, {}, out)
        print(f"[grader] {name}: answer recorded")
        return
    metas, arrays = _record_cases(folder, entry, target, missing)
    records.write_record(name, {**base, "cases": metas}, arrays, out)
    print(f"[grader] {name}: {len(metas)} case(s) recorded")


def cell_source(name: str) -> str:
    """The harness cell the grader appends for check `name`."""
    return (
        "import course_utils.grading.harness as _course_harness\n"
        f"_course_harness.run('{{HARNESS_DIR}}', {name!r}, get_ipython().user_ns)"
    )
