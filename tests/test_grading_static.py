"""The static review of student code: what flags a submission, and what does not."""

import pytest

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
