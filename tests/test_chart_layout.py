"""Every chart a notebook shows fits the notebook column and can be read.

The notebooks are executed (nbclient, as nbval does), every Vega-Lite output is
rendered to SVG with vl-convert (the renderer `plotting.save` uses), and each
chart is checked for what a student would trip over:

* wider than the JupyterLab notebook column (`MAX_WIDTH` px at scale 1);
* a label cut off with "…" (axis labels, legend labels, titles);
* several series told apart by colour (lines, points, areas) but no legend.

The checker itself is tested on hand-made charts, so a regression in it cannot
make the notebook test pass vacuously. Executing all notebooks takes minutes:
those tests are marked slow.
"""

from __future__ import annotations

import re
from pathlib import Path

import altair as alt
import nbformat
import pandas as pd
import pytest
import vl_convert as vlc

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
VEGA_LITE = "application/vnd.vegalite.v5+json"
# JupyterLab's notebook column on a 1280 px laptop screen, less the prompt gutter.
MAX_WIDTH = 900
SERIES_MARKS = {"line", "point", "circle", "square", "area", "trail"}


def _svg_size(svg: str) -> tuple[float, float]:
    m = re.search(r'<svg[^>]*\swidth="([\d.]+)"[^>]*\sheight="([\d.]+)"', svg)
    if not m:
        raise AssertionError("vl-convert returned an SVG without width/height")
    return float(m.group(1)), float(m.group(2))


def _texts(svg: str) -> list[str]:
    """Every text of the SVG: single-line <text> and the lines (<tspan>) of
    multi-line labels."""
    found = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    found += re.findall(r"<tspan[^>]*>([^<]*)</tspan>", svg)
    return [re.sub(r"&[a-z]+;|&#\d+;", "", t) for t in found]


def _units(spec: dict):
    """Every unit (single-view) spec inside a layered/concatenated/faceted spec."""
    if not isinstance(spec, dict):
        return
    if "mark" in spec:
        yield spec
    for key in ("layer", "hconcat", "vconcat", "concat"):
        for sub in spec.get(key, []) or []:
            yield from _units(sub)
    if isinstance(spec.get("spec"), dict):
        yield from _units(spec["spec"])


def _mark_type(unit: dict) -> str:
    mark = unit.get("mark")
    return mark.get("type", "") if isinstance(mark, dict) else str(mark)


def _series_by_colour(unit: dict) -> bool:
    enc = unit.get("encoding", {}) or {}
    color = enc.get("color") or enc.get("stroke")
    if not isinstance(color, dict) or "field" not in color:
        return False
    if color.get("type") == "quantitative":
        return False
    return _mark_type(unit) in SERIES_MARKS


def chart_problems(spec: dict) -> list[str]:
    """What makes a chart hard to read in the notebook column; [] when fine."""
    svg = vlc.vegalite_to_svg(spec)
    width, _height = _svg_size(svg)
    problems = []
    if width > MAX_WIDTH:
        problems.append(f"{width:.0f} px wide (column: {MAX_WIDTH} px)")
    cut = sorted({t for t in _texts(svg) if t.endswith("…")})
    if cut:
        problems.append(f"truncated labels {cut}")
    if any(_series_by_colour(u) for u in _units(spec)) and "role-legend" not in svg:
        problems.append("several series by colour but no legend")
    return problems


# ------------------------------------------------------------- the checker itself


def _lines(**color_kw):
    df = pd.DataFrame({"x": [0, 1] * 2, "y": [0, 1, 1, 0], "s": ["a"] * 2 + ["b"] * 2})
    return alt.Chart(df).mark_line().encode(
        x="x:Q", y="y:Q", color=alt.Color("s:N", **color_kw)
    )


def test_checker_accepts_a_readable_chart():
    assert chart_problems(_lines().properties(width=300).to_dict()) == []


def test_checker_flags_a_chart_wider_than_the_column():
    (problem,) = chart_problems(_lines().properties(width=1000).to_dict())
    assert "px wide" in problem


def test_checker_flags_a_truncated_label():
    df = pd.DataFrame({"m": ["integrated_gradients", "gradient"], "v": [1.0, 2.0]})
    chart = alt.Chart(df).mark_bar().encode(
        x="v:Q", y=alt.Y("m:N", axis=alt.Axis(labelLimit=50))
    )
    (problem,) = chart_problems(chart.to_dict())
    assert "truncated" in problem and "integ" in problem


def test_checker_flags_series_without_legend():
    (problem,) = chart_problems(_lines(legend=None).properties(width=300).to_dict())
    assert "no legend" in problem


# ------------------------------------------------------------- the notebooks


def _notebook_charts(path: Path) -> list[tuple[int, dict]]:
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    return [
        (i, out["data"][VEGA_LITE])
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if VEGA_LITE in out.get("data", {})
    ]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_chart_of_the_notebook_is_readable(path):
    charts = _notebook_charts(path)
    assert charts, f"{path.name} shows no chart"
    bad = {f"cell {i}": p for i, spec in charts if (p := chart_problems(spec))}
    assert not bad, f"{path.name}: {bad}"
