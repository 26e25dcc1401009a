"""Every lecture notebook, run top to bottom in JupyterLab, looks right to a student.

For each notebook: open it in a fresh workspace, "Run All" (JupyterLab's own
command), wait until the kernel is idle, then check what is on screen:
every code cell ran, no error output, no widget that failed to render, every
chart drawn (non-blank canvas/SVG), images loaded, and no uncaught error in
the browser console. Each chart is saved as a PNG under artifacts/browser/.
"""

from __future__ import annotations

import re
from pathlib import Path

import browser_lab as bl
import pytest

NOTEBOOKS = sorted(p.name for p in bl.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
MAX_SHOTS = 40  # chart screenshots kept per notebook

# Console messages that are not the course's business (none known so far).
CONSOLE_ALLOW: list[re.Pattern] = []


def _format(problems):
    return "\n".join(f"  cell {p['cell']}: {p['kind']}: {p['text']}" for p in problems)


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.notebook(n)) for n in NOTEBOOKS]
)
def test_notebook_runs_clean(name, runs, artifacts):
    nb = runs.get(name)
    stem = Path(name).stem
    cells = nb.model()
    dom = nb.rendered
    problems = list(dom["problems"])

    # Kernel side: every code cell ran, none produced an error.
    for c in cells:
        if c["type"] != "code" or not c["source"].strip():
            continue
        if c["exec"] is None:
            problems.append(
                {"cell": c["index"], "kind": "not executed", "text": c["source"]}
            )
        for o in c["outputs"]:
            if o["type"] == "error":
                problems.append(
                    {
                        "cell": c["index"],
                        "kind": "error",
                        "text": f"{o['ename']}: {o['evalue']}\n{o['traceback']}",
                    }
                )
            if o.get("altairHtml"):
                problems.append(
                    {
                        "cell": c["index"],
                        "kind": "chart needs a CDN",
                        "text": "Altair's HTML renderer output (loads Vega from "
                        "the internet); call plotting.enable_renderer()",
                    }
                )

    # Charts: as many drawn as the kernel produced (outside widgets at least).
    expected = sum(
        1
        for c in cells
        for o in c["outputs"]
        if any(
            m.startswith(("application/vnd.vegalite", "application/vnd.vega."))
            for m in o["mimes"]
        )
    )
    drawn = [ci for ci in dom["chartInfo"] if not ci["widget"]]
    if len(drawn) < expected:
        problems.append(
            {
                "cell": -1,
                "kind": "charts missing",
                "text": f"{expected} chart outputs, {len(drawn)} drawn",
            }
        )

    console = [m for m in nb.console if not any(p.search(m) for p in CONSOLE_ALLOW)]
    for m in console:
        problems.append({"cell": -1, "kind": "browser console", "text": m})

    # Screenshots of the charts and of the top of the notebook, for a person.
    out = artifacts / stem
    out.mkdir(exist_ok=True)
    charts = nb.page.locator(".jp-NotebookPanel .jp-RenderedVegaCommon5")
    for k in range(min(charts.count(), MAX_SHOTS)):
        try:
            charts.nth(k).screenshot(
                path=str(out / f"chart-{k:02d}.png"), timeout=10_000
            )
        except Exception as exc:  # noqa: BLE001 - a screenshot is not the test
            print(f"{name}: screenshot of chart {k} failed: {exc}")

    stderr = [
        o["text"]
        for c in cells
        for o in c["outputs"]
        if o["type"] == "stream" and o.get("name") == "stderr"
    ]
    times = ", ".join(f"{k} {v:.1f} s" for k, v in nb.timings.items())
    print(
        f"\n{name}: {times}; {dom['charts']} charts "
        f"({expected} from cells), {dom['widgets']} widget views, "
        f"{len(stderr)} stderr outputs"
    )
    slow = sorted((c for c in cells if c.get("seconds")), key=lambda c: -c["seconds"])[
        :3
    ]
    for c in slow:
        print(
            f"   slowest: cell {c['index']} {c['seconds']:.1f} s: "
            f"{c['source'].splitlines()[0] if c['source'] else ''}"
        )
    for info in dom["chartInfo"]:
        print(
            f"   chart in cell {info['cell']}{' (widget)' if info['widget'] else ''}: "
            f"{info['how']}"
            + (
                f"; WIDER than the output column ({info['width']} > {info['room']} px)"
                if info["width"] > info["room"]
                else ""
            )
        )
    assert not problems, f"{name} in the browser:\n{_format(problems)}"
