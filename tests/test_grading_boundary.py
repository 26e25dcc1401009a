"""The trust boundary in the layout: the grader's process never imports the
student-side test API, and only that API takes anything at import.

Each check runs in a fresh interpreter, so what this test process imported
before cannot hide an import.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKS = "course_utils.grading.checks"

# Every module of the grader's side (and of `course check`'s orchestration).
GRADER_MODULES = [
    "course_utils.grading.grade",
    "course_utils.grading.verify",
    "course_utils.grading.execute",
    "course_utils.grading.cli",
    "course_utils.grading.gradebook",
    "course_utils.grading.release",
    "course_utils.grading.handout",
    "course_utils.grading.selfcheck",
    "course_utils.grading.harness",  # imported by the grader for cell_source
    *(
        f"course_utils.grading.{name}"
        for name in (
            "discover",
            "plan",
            "notebooks",
            "static",
            "cells",
            "kernels",
            "sandbox",
            "mounts",
            "cgroups",
            "seccomp",
            "cpus",
            "outcome",
            "score",
            "formgrader",
            "publish",
            "sanitize",
            "atomic",
            "forkserver",
            "collect",
            "lms",
            "mistakes",
            "statuses",
            "report",
            "report_charts",
            "report_page",
        )
    ),
]


def _fresh_python(code: str) -> dict:
    """Run `code` in a new interpreter; it prints one JSON object, returned here."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("COURSE_GRADING_MODE", None)
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_grader_never_imports_the_student_side_api():
    found = _fresh_python(
        "import importlib, json, sys\n"
        f"for name in {GRADER_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps({'mods': sorted(sys.modules)}))\n"
    )["mods"]
    assert CHECKS not in found
    assert "course_utils.grading.cases" not in found
    assert "course_utils.grading.compare" in found  # verify's comparator
    assert "course_utils.grading.records" in found  # verify's reader


def test_only_the_student_side_api_snapshots_at_import():
    shared = _fresh_python(
        "import json, sys\n"
        "from course_utils.grading import compare, records\n"
        "print(json.dumps({'torch': 'torch' in sys.modules,\n"
        f"                  'checks': {CHECKS!r} in sys.modules,\n"
        "                  'profile': sys.getprofile() is not None}))\n"
    )
    # nothing taken: no torch to snapshot, no student-side module, no hook
    assert shared == {"torch": False, "checks": False, "profile": False}
    student = _fresh_python(
        "import json, torch\n"
        "from course_utils.grading import checks\n"
        "snap = checks._PRISTINE\n"
        "print(json.dumps({'allclose': snap['torch.allclose'] is torch.allclose,\n"
        "                  'n': len(snap),\n"
        "                  'own': 'course_utils.grading.checks.check' in checks._OWN,\n"
        "                  'clean': checks.tampering() == []}))\n"
    )
    assert student == {
        "allclose": True,
        "n": len(_watched()),
        "own": True,
        "clean": True,
    }


def _watched() -> tuple[str, ...]:
    from course_utils.grading import checks

    return tuple(p for p in checks.WATCHED if p in checks._PRISTINE)
