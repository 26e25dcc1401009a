"""Every chart a notebook shows fits the notebook column and can be read.

The notebooks are executed (nbclient, as nbval does), every Vega-Lite output is
rendered to SVG with vl-convert (the renderer `plotting.save` uses), and each
chart is checked for what a student would trip over:

* wider than the JupyterLab notebook column (`MAX_WIDTH` px at scale 1);
* a label cut off with "…" (axis labels, legend labels, titles);
* several series told apart by colour (lines, points, areas) but no legend;
* a heatmap panel (a picture of a map or a digit) under `MIN_PANEL` px wide,
  too small to read a shape in;
* a legend in units of each map's own vmax ("attribution / vmax") while the
  maps do not each state their vmax: the magnitudes would be invisible;
* a series drawn exactly under another (same values at every x, nothing such
  as a dash, a shape or an offset to tell them apart): it looks absent.

The widgets' charts are checked too (they are not notebook outputs).

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
import torch
import vl_convert as vlc

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
VEGA_LITE = "application/vnd.vegalite.v5+json"
# JupyterLab's notebook column on a 1280 px laptop screen, less the prompt gutter.
MAX_WIDTH = 900
MIN_PANEL = 120
SERIES_MARKS = {"line", "point", "circle", "square", "area", "trail"}
# Encodings that keep two coinciding series apart when keyed on the series.
SEPARATING = ("strokeDash", "shape", "xOffset", "yOffset")
# Two series closer than this share of the y range at every x coincide.
COINCIDE = 0.01
# How `plotting` writes a map's own scale under it: "vmax 0.279", "≈ 0 (…)", "= 0".
SCALE_TEXT = re.compile(r"^(vmax \S+|≈ 0.*|= 0)$")


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


def _walk(spec: dict, data=None, facets=()):
    """(unit, its data, the facet fields above it) for every unit spec."""
    if not isinstance(spec, dict):
        return
    data = spec.get("data", data)
    facet = spec.get("facet")
    if isinstance(facet, dict):
        fields = [f["field"] for f in (facet.values() if "field" not in facet
                                       else [facet]) if isinstance(f, dict) and "field" in f]
        facets = (*facets, *fields)
    if "mark" in spec:
        yield spec, data, facets
    for key in ("layer", "hconcat", "vconcat", "concat"):
        for sub in spec.get(key, []) or []:
            yield from _walk(sub, data, facets)
    if isinstance(spec.get("spec"), dict):
        yield from _walk(spec["spec"], data, facets)


def _rows(data, datasets: dict) -> list[dict]:
    if not isinstance(data, dict):
        return []
    if isinstance(data.get("values"), list):
        return data["values"]
    return datasets.get(data.get("name"), [])


def _all_rows(spec: dict) -> list[dict]:
    """Every inline data row of a spec (datasets and inline `values`)."""
    found = [r for rows in (spec.get("datasets") or {}).values() for r in rows]

    def visit(obj):
        if isinstance(obj, dict):
            if isinstance(obj.get("values"), list) and "mark" not in obj:
                found.extend(r for r in obj["values"] if isinstance(r, dict))
            for v in obj.values():
                visit(v)
        elif isinstance(obj, list):
            for v in obj:
                visit(v)

    visit({k: v for k, v in spec.items() if k != "datasets"})
    return found


def small_panels(spec: dict) -> list[int]:
    """Widths of the pictures of maps or digits narrower than `MIN_PANEL`."""
    widths = []
    for unit, _, _ in _walk(spec):
        mark = unit.get("mark")
        if _mark_type(unit) == "image" and isinstance(mark, dict):
            widths.append(mark.get("width", unit.get("width", 0)))
        color = (unit.get("encoding") or {}).get("color") or {}
        if _mark_type(unit) == "rect" and color.get("field") == "attr":  # heatmap
            widths.append(unit.get("width", 0))
    return sorted({int(w) for w in widths if isinstance(w, (int, float)) and w < MIN_PANEL})


def hidden_scales(spec: dict, svg: str) -> str | None:
    """A legend in units of each map's vmax, but fewer scale texts than maps."""
    titles = [
        str(legend.get("title", ""))
        for unit, _, _ in _walk(spec)
        for enc in (unit.get("encoding") or {}).values()
        if isinstance(enc, dict) and isinstance(legend := enc.get("legend"), dict)
    ]
    if not any(re.search(r"[/÷] ?vmax", t) for t in titles):
        return None
    maps = [r for r in _all_rows(spec) if r.get("url") and r.get("vmax") is not None]
    stated = [t for t in _texts(svg) if SCALE_TEXT.match(t.strip())]
    if len(stated) < len(maps):
        return (f"legend in units of each map's vmax, but only {len(stated)} of "
                f"{len(maps)} maps state their vmax")
    return None


def _series_values(unit, rows, facets) -> dict | None:
    enc = unit.get("encoding") or {}
    color = enc.get("color") or enc.get("stroke")
    x, y = enc.get("x") or {}, enc.get("y") or {}
    if not (_series_by_colour(unit) and "field" in x and "field" in y):
        return None
    series_field = color["field"]
    if any((enc.get(k) or {}).get("field") == series_field for k in SEPARATING):
        return None  # drawn apart (dashes, shapes, offsets): none can hide
    mark = unit.get("mark")
    if isinstance(mark, dict) and mark.get("opacity", 1) < 1:
        return None  # translucent (a ±std band): what lies under shows through
    series: dict = {}
    for r in rows:
        if not isinstance(r.get(y["field"]), (int, float)):
            continue
        key = (tuple(r.get(f) for f in facets), r.get(series_field))
        series.setdefault(key, {})[r.get(x["field"])] = float(r[y["field"]])
    return series


def hidden_series(spec: dict) -> list[str]:
    """Series drawn exactly under another: equal (within `COINCIDE` of the y
    range) at every x they share, in the same panel."""
    datasets = spec.get("datasets") or {}
    found = []
    for unit, data, facets in _walk(spec):
        series = _series_values(unit, _rows(data, datasets), facets)
        if not series:
            continue
        ys = [v for s in series.values() for v in s.values()]
        tol = COINCIDE * ((max(ys) - min(ys)) or 1.0)
        keys = list(series)
        for i, a in enumerate(keys):
            for b in keys[i + 1:]:
                shared = set(series[a]) & set(series[b])
                if a[0] == b[0] and len(shared) >= 2 and all(
                    abs(series[a][k] - series[b][k]) <= tol for k in shared
                ):
                    found.append(f"{a[1]!r} and {b[1]!r}" + (f" in {a[0]}" if a[0] else ""))
    return sorted(set(found))


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
    if small := small_panels(spec):
        problems.append(f"heatmap panels {small} px wide (at least {MIN_PANEL} px)")
    if hidden := hidden_scales(spec, svg):
        problems.append(hidden)
    if under := hidden_series(spec):
        problems.append(f"series drawn under another: {under}")
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


def test_checker_flags_heatmap_panels_under_120_px():
    from course_utils import plotting

    x = torch.rand(3, 1, 28, 28)
    assert chart_problems(plotting.digits(x, size=120).to_dict()) == []
    (problem,) = chart_problems(plotting.digits(x, size=64).to_dict())
    assert "[64] px wide" in problem
    maps = {"m": {"a": torch.randn(1, 28, 28)}}
    (problem,) = chart_problems(plotting.grid(maps, size=100).to_dict())
    assert "[100] px wide" in problem
    (problem,) = chart_problems(plotting.heatmap(torch.randn(28, 28), size=84).to_dict())
    assert "[84] px wide" in problem


def test_checker_flags_a_legend_that_hides_each_maps_scale():
    from course_utils import plotting

    maps = {"m": {"a": torch.randn(1, 28, 28), "b": 100 * torch.randn(1, 28, 28)}}
    _, spec = plotting.grid(maps, scale="independent", return_spec=True)
    assert chart_problems(spec) == []
    # the same chart without the text under each map: the legend reads
    # "attribution / vmax" from -1 to 1 and no vmax is visible anywhere
    for row in _all_rows(spec):
        row.pop("scale", None)
    (problem,) = chart_problems(spec)
    assert "0 of 2 maps state their vmax" in problem
    # one scale for all: the legend itself shows the attribution
    _, shared = plotting.grid(maps, scale="shared", return_spec=True)
    assert chart_problems(shared) == []


def test_checker_flags_a_series_drawn_under_another():
    df = pd.DataFrame({"x": [0, 1, 2] * 3, "y": [0, 1, 0.5] * 2 + [1, 0, 1],
                       "s": ["a"] * 3 + ["b"] * 3 + ["c"] * 3})
    base = alt.Chart(df).encode(x="x:Q", y="y:Q", color="s:N").properties(width=300)
    (problem,) = chart_problems(base.mark_line().to_dict())
    assert "drawn under another" in problem and "'a' and 'b'" in problem
    assert chart_problems(base.mark_line().encode(strokeDash="s:N").to_dict()) == []
    # in different panels the same values hide nothing
    df["p"] = ["left"] * 3 + ["right"] * 6
    faceted = alt.Chart(df).mark_line().encode(x="x:Q", y="y:Q", color="s:N").properties(
        width=200).facet(column="p:N")
    assert chart_problems(faceted.to_dict()) == []


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


# ------------------------------------------------------------- the widgets


def _widget_charts(widget) -> list[dict]:
    """The Vega-Lite specs a widget shows now, from each of its Output areas."""
    import ipywidgets

    specs = []
    for value in vars(widget).values():
        if isinstance(value, ipywidgets.Output):
            specs += [o["data"][VEGA_LITE] for o in value.outputs
                      if VEGA_LITE in o.get("data", {})]
    return specs


def _build_widget(name):
    from course_utils import data, models, widgets

    model = models.load_pretrained("small_cnn")
    test = data.load_split("test")
    x, y = data.demo_digits(6)
    if name == "OcclusionExplorer":
        return widgets.OcclusionExplorer(model, x, y, patch=4)
    if name == "IGExplorer":
        return widgets.IGExplorer(model, x, y, n_steps=8)
    if name == "SmoothGradExplorer":
        return widgets.SmoothGradExplorer(model, x, y, n_samples=4)
    if name == "MethodBrowser":
        return widgets.MethodBrowser(model, x, y)
    if name.startswith("UnitBrowser"):
        layer = name.split(":")[1]
        return widgets.UnitBrowser(model, test.x[:300], layers=("conv1", "conv2"),
                                   layer=layer, unit=2)
    if name == "TrainingLab":
        lab = widgets.TrainingLab(test.x[:4], test.y[:4], auto=False)
        lab.train_steps(50)
        lab.update()
        return lab
    if name.startswith("PhotoExplainer"):
        w = widgets.PhotoExplainer(models.load_pretrained("efficientnet_lite0"),
                                   photo="chelsea", n_steps=2, n_samples=2)
        if name.endswith("cascade"):
            w.run_cascade()
        return w
    raise AssertionError(name)


WIDGETS = ["OcclusionExplorer", "IGExplorer", "SmoothGradExplorer", "MethodBrowser",
           "UnitBrowser:conv1", "UnitBrowser:conv2", "TrainingLab", "PhotoExplainer",
           pytest.param("PhotoExplainer+cascade", marks=pytest.mark.slow)]


@pytest.mark.parametrize("name", WIDGETS)
def test_every_chart_of_the_widget_is_readable(name):
    charts = _widget_charts(_build_widget(name))
    assert charts, f"{name} shows no chart"
    bad = {i: p for i, spec in enumerate(charts) if (p := chart_problems(spec))}
    assert not bad, f"{name}: {bad}"
