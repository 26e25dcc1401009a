"""The static review of student code: what flags a submission, and what does not."""

import asyncio
import threading
import time

import pytest

from course_utils.grading import static
from course_utils.grading.static import Policy, scan_sources

TRUSTED = [
    (
        "import torch\nimport numpy as np\nfrom course_utils import data, models\n"
        "from course_utils.grading import checks\n"
        "from course_utils import saliency as sal"
    )
]
DEFAULT = Policy()


def scan(source, policy=DEFAULT):
    return scan_sources([("cell 'a'", source)], TRUSTED, policy)


def categories(source, policy=DEFAULT):
    return sorted({f.category for f in scan(source, policy)})


CLEAN = {
    "gradient": (
        "import torch\n"
        "def gradient_saliency(model, x, target):\n"
        "    x = x.detach().clone().requires_grad_(True)\n"
        "    rows = torch.arange(len(x))\n"
        "    (grad,) = torch.autograd.grad(model(x)[rows, target].sum(), x)\n"
        "    return grad\n"
    ),
    "tensor attribute store": "t = torch.zeros(3)\nt.requires_grad = True",
    "own class": (
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.w = torch.nn.Parameter(torch.ones(1))\n"
    ),
    "local name that shadows a test name": "def f(x):\n    checks = 3\n    return checks",
    "re-import of the same module": "import numpy as np\nfrom course_utils.grading import checks",
    "scipy and math": "import math\nimport scipy.stats\nr = scipy.stats.spearmanr([1, 2], [2, 1])",
    "interrupt-catching loop (runtime, not static)": (
        "while True:\n    try:\n        pass\n    except KeyboardInterrupt:\n        pass"
    ),
    "calling a public test helper": "checks.validate(1, 'number')",
    "module methods named like dangerous things": (
        "layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]\n"
        "import scipy.signal\nw = scipy.signal.windows.hann(5)"
    ),
    "a syntax error": "def broken(:\n    pass",
}


@pytest.mark.parametrize("source", CLEAN.values(), ids=CLEAN.keys())
def test_ordinary_answers_are_not_flagged(source):
    assert scan(source) == []


FLAGGED = {
    "torch.allclose patched": ("torch.allclose = lambda *a, **k: True", "tamper"),
    "numpy testing patched": ("np.testing.assert_allclose = print", "tamper"),
    "patch through an alias": (
        "T = torch.Tensor\nT.allclose = lambda *a: True",
        "tamper",
    ),
    "delete a module attribute": ("del torch.allclose", "tamper"),
    "write into a module dict": ("torch.__dict__['allclose'] = 1", "tamper"),
    "setattr": ("setattr(torch, 'allclose', None)", "tamper"),
    "computed getattr": ("getattr(torch, 'all' + 'close')", "tamper"),
    "getattr passed around": (
        "import functools\nfunctools.reduce(getattr, ['sys'], torch)",
        "tamper",
    ),
    "attrgetter": ("import operator\noperator.attrgetter('sys')(torch)", "tamper"),
    "rebind the test helpers": ("checks = None", "tamper"),
    "rebind them from a function": (
        "def f():\n    global checks\n    checks = 1",
        "tamper",
    ),
    "import something else as checks": ("import numpy as checks", "tamper"),
    "private helper": ("checks._write_record('a', {}, {})", "tamper"),
    "IPython hooks": ("get_ipython().events.register('pre_run_cell', print)", "tamper"),
    "shell escape": ("!cat /etc/passwd", "tamper"),
    "exec": ("exec('1')", "tamper"),
    "reference import": ("from course_utils import saliency", "reference"),
    "reference import, dotted": ("import course_utils.saliency.gradient", "reference"),
    "reference via the setup's name": (
        "def f(m, x, t):\n    return sal.gradient(m, x, t)",
        "reference",
    ),
    "reference via the package": (
        "import course_utils\ncourse_utils.saliency.gradient",
        "reference",
    ),
    "captum": ("from captum.attr import Saliency", "reference"),
    "the grader": ("import course_utils.grading.verify", "tamper"),
    "open a file": ("open('/etc/passwd').read()", "system"),
    "os": ("import os", "import"),
    "os through torch": ("torch.os._exit(1)", "system"),
    "torch.load": ("torch.load('x.pt')", "system"),
    "sqlite": ("import sqlite3", "import"),
}


@pytest.mark.parametrize("source,category", FLAGGED.values(), ids=FLAGGED.keys())
def test_tampering_and_reference_calls_are_flagged(source, category):
    assert category in categories(source)


def test_a_finding_says_where_and_what():
    (finding,) = scan("x = 1\ntorch.allclose = None")
    assert finding.where == "cell 'a'" and finding.line == 2
    assert "torch.allclose" in finding.message
    assert str(finding).startswith("cell 'a', line 2:")


def test_policy_can_allow_the_saliency_methods_as_tools():
    policy = Policy.from_metadata(
        {"course_grading": {"allow_imports": ["course_utils.saliency"]}}
    )
    assert scan("from course_utils import saliency\nsal.gradient", policy) == []
    assert "reference" in categories("import captum", policy)


def test_policy_metadata_is_validated():
    with pytest.raises(ValueError, match="allow_imports"):
        Policy.from_metadata({"course_grading": {"allow_imports": "course_utils"}})


# Bounds: nothing a student writes makes the review slow, deep or unbounded. -------


def chained(n, op=""):
    """`_t0 = torch`, then n chained assignments in a dead branch, last one first.

    In reverse order each alias is tainted one round after the next: the old
    fixed-point iteration re-walked every tree n times (7,000 lines took 196 s).
    """
    links = [f"    _t{k} = _t{k - 1}{op}" for k in range(n, 0, -1)]
    return "\n".join(["_t0 = torch", "if False:", *links, f"    _t{n}.allclose = 1"])


def steps(source):
    """The review's work on `source`: nodes visited and chain links walked."""
    budget = static._Budget()
    static._review([("cell 'a'", source)], TRUSTED, DEFAULT, budget)
    return budget.steps


@pytest.mark.parametrize(
    "source",
    [chained, lambda n: chained(n, " - 1"), lambda n: "x = torch" + ".a" * (n // 4)],
    ids=["aliases", "arithmetic", "one attribute chain"],
)
def test_the_review_costs_linear_work(source):
    ratio = steps(source(8000)) / steps(source(1000))
    assert 4 < ratio < 12


def test_seven_thousand_chained_aliases_are_followed_to_the_end():
    (finding,) = scan(chained(7000))
    assert finding.category == "tamper" and finding.line == 7003
    assert "_t7000.allclose" in finding.message


def test_answers_too_large_to_review_are_left_to_a_person():
    huge = "x = 1\n" * (static.MAX_SOURCE_CHARS // 6 + 1)
    findings = scan_sources(
        [("cell 'a'", "torch.allclose = None"), ("cell 'b'", huge), ("cell 'c'", "")],
        TRUSTED,
    )
    assert [(f.where, f.category) for f in findings] == [
        ("cell 'a'", "tamper"),
        ("cell 'b'", "review"),
    ]
    assert "too large to review" in findings[1].message


def test_answers_with_many_magics_are_left_to_a_person():
    # IPython rewrites one magic per pass over the cell: 2,000 lines, 2,000 passes
    (finding,) = scan("%time x\n" * 2000)
    assert finding.category == "review" and "IPython magics" in finding.message
    assert categories("%time x\n" * 20) == ["tamper"]  # a few are reviewed


def test_answers_with_too_many_nodes_are_left_to_a_person(monkeypatch):
    monkeypatch.setattr(static, "MAX_NODES", 100)
    (finding,) = scan("x = [" + "1, " * 100 + "]")
    assert finding.category == "review" and "syntax nodes" in finding.message


def test_nesting_python_cannot_parse_is_a_finding_not_a_crash():
    (finding,) = scan("x = " + "+".join(["a"] * 100_000))
    assert finding.category == "review" and "too deeply nested" in finding.message
    parens = "x = " + "(" * 10_000 + "1" + ")" * 10_000  # a syntax error today
    assert {f.category for f in scan(parens)} <= {"review"}


def test_deep_trees_that_parse_are_scanned_to_the_bottom():
    # 900 nested additions: a recursive visitor passed Python's recursion limit
    assert categories("x = " + " + ".join(["a"] * 900) + " + torch.os") == ["system"]
    assert categories("x = (" + "a." * 1900 + "b)._c\nnp" + ".a" * 1900) == []


def test_a_review_past_its_deadline_says_so():
    (finding,) = scan_sources(
        [("cell 'a'", "x = 1")], TRUSTED, deadline=time.monotonic() - 1
    )
    assert finding.category == "review" and "ran out of time" in finding.message


def test_review_gives_the_same_findings_off_the_event_loop():
    source = "torch.allclose = None\nimport os"
    findings = asyncio.run(static.review([("cell 'a'", source)], TRUSTED))
    assert findings == scan(source)


def test_the_event_loop_runs_while_a_review_does(monkeypatch):
    loop_ran = threading.Event()

    def slow_scan(*args, **kwargs):  # finishes only once the loop ran meanwhile
        assert loop_ran.wait(timeout=30), "the review blocked the event loop"
        return []

    async def meanwhile():
        await asyncio.sleep(0)
        loop_ran.set()

    async def both():
        return await asyncio.gather(static.review([], TRUSTED), meanwhile())

    monkeypatch.setattr(static, "scan_sources", slow_scan)
    assert asyncio.run(both()) == [[], None]


def test_a_review_that_does_not_return_times_out(monkeypatch):
    release = threading.Event()
    monkeypatch.setattr(static, "scan_sources", lambda *a, **k: release.wait(30))
    monkeypatch.setattr(static, "_REVIEW_GRACE", 0.0)

    async def timed_out():
        try:
            return await static.review([], TRUSTED, timeout=0.05)
        finally:
            release.set()  # the worker thread ends, so asyncio.run can return

    (finding,) = asyncio.run(timed_out())
    assert finding.category == "review" and "did not finish" in finding.message
