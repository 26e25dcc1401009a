"""Start-up: course_utils skips rfc3987_syntax; nothing the course uses is lost.

jsonschema imports `rfc3987_syntax` (an Earley parser built at import, 1.3–2.3 s)
only to add its "iri"/"iri-reference" format checks. course_utils blocks
that import when it is imported before altair (see course_utils/__init__).
Run in a fresh interpreter so the result does not depend on test order.
"""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, sys, time
import course_utils
import altair as alt
import jsonschema
import numpy as np
from course_utils import plotting

out = {"rfc3987_syntax": repr(sys.modules.get("rfc3987_syntax", "absent"))}
# charts still validate against Vega-Lite's schema: a good one passes...
chart = plotting.heatmap(np.random.default_rng(0).normal(size=(8, 8)))
spec = chart.to_dict()
out["valid"] = spec["$schema"]
# ...and a bad one is still refused
try:
    alt.Chart("data.csv").mark_point().encode(x=alt.X("a:Q", bin=3)).to_dict()
    out["refused"] = False
except Exception as e:
    out["refused"] = type(e).__name__
# jsonschema's format checking still works for the formats it has
checker = jsonschema.Draft7Validator.FORMAT_CHECKER
out["formats"] = [
    checker.conforms("not-an-ip", "ipv4"),
    checker.conforms("127.0.0.1", "ipv4"),
    checker.conforms("2020-01-32", "date"),
]
# and the chart still renders (the course renderer's bundle)
bundle = plotting.mimebundle(chart)
out["mimetypes"] = sorted(bundle)
print(json.dumps(out))
"""


def test_rfc3987_syntax_is_skipped_and_charts_still_validate():
    env_path = str(ROOT)
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": env_path, "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
        check=True,
    )
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["rfc3987_syntax"] == "None"
    assert out["valid"].startswith("https://vega.github.io/schema/vega-lite/")
    assert out["refused"] == "SchemaValidationError"
    assert out["formats"] == [False, True, False]
    assert out["mimetypes"]


def test_notebooks_import_course_utils_before_altair():
    """The guard only works if course_utils comes first in the first cell."""
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        source = "".join(next(c for c in cells if c["cell_type"] == "code")["source"])
        lines = [line.split("#")[0].strip() for line in source.splitlines()]
        if "import altair as alt" in lines:
            assert lines.index("import course_utils") < lines.index(
                "import altair as alt"
            ), path.name
