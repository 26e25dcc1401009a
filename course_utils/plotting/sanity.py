"""The sanity checks' pictures (Adebayo et al., 2018): the cascade curve, the
cascade figure (methods × steps) and the label randomization bars.

Re-exported as `course_utils.sanity.cascade_curve`, `cascade_grid` and
`label_chart`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import altair as alt

from ..sanity._shared import check_metrics
from ..sanity.result import SanityResult
from ..sanity.similarity import METRICS
from .grid import grid

METRIC_TITLES = {
    "spearman": "Spearman (signed)",
    "spearman_abs": "Spearman (absolute)",
    "ssim": "SSIM",
    "hog": "HOG correlation",
}
_STEP_TITLES = {
    "cascading": "randomized layers (top down, cumulative)",
    "independent": "randomized layer (alone)",
    "labels": "model",
}


def _similarity_scale(t) -> alt.Scale:
    """From a tenth below the lowest mean − std (at most −0.2) up to 1."""
    return alt.Scale(domain=[min(-0.2, math.floor(10 * float(t["lo"].min())) / 10), 1])


def _stat_tooltip(*fields: str) -> list:
    """`fields`, then mean and std (3 decimals) and n_constant."""
    return [
        *fields,
        alt.Tooltip("mean:Q", format=".3f"),
        alt.Tooltip("std:Q", format=".3f"),
        "n_constant",
    ]


def cascade_curve(
    result: SanityResult,
    metrics: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    band: bool = True,
    width: int = 220,
    height: int = 200,
    columns: int = 2,
) -> alt.Chart:
    """Similarity vs randomization step: one series per method, one panel per metric.

    x: the randomized layer in step order ("original", then top down), y: the
    mean similarity over images. A cascade (a progression: each step adds a
    layer) is drawn as lines with a ±1 std band, the lecture's cascade curve
    (Adebayo et al., 2018, Fig. 2/4). An independent result (each step is a
    different network, not a progression) is drawn as points side by side
    (offset per method) with ±1 std bars, never connected.

    Each method has its own dash pattern (cascade) or point shape and place
    (independent) besides its colour (the legend shows the colour): two
    methods with equal similarities (input × gradient and IG, whose maps
    share the digit's silhouette) are still both visible.

    Args:
        result: a `SanityResult` of `cascading_randomization` or
            `independent_randomization`.
        metrics: panels, a subset of `METRICS`; None = all four.
        methods: series; None = every method in the result.
        band: draw mean ± std over the images (default True).
        width, height: size of one panel in pixels.
        columns: panels per row (default 2, so four panels and the legend fit
            the 900 px notebook column).
    Returns:
        A faceted Altair chart (one panel per metric, `columns` to a row).
    """
    metrics = check_metrics(metrics, METRICS)
    t = result.table
    t = t[t.metric.isin(metrics)]
    if methods is not None:
        t = t[t.method.isin(list(methods))]
    t = t.assign(
        metric=t.metric.map(METRIC_TITLES),
        lo=t["mean"] - t["std"],
        hi=t["mean"] + t["std"],
    )
    x = alt.X(
        f"{result.key}:N",
        sort=result.order,
        title=_STEP_TITLES[result.test],
        axis=alt.Axis(labelAngle=-40),
    )
    y = alt.Y("mean:Q", title="similarity to trained map", scale=_similarity_scale(t))
    tooltip = _stat_tooltip("method", "metric", result.key)
    if result.test == "independent":
        layers = _independent_layers(x, y, tooltip, band)
    else:
        layers = _cascade_layers(x, y, tooltip, band)
    title = {
        "cascading": "Cascading randomization",
        "independent": "Independent layer randomization",
        "labels": "Label randomization",
    }[result.test]
    return (
        alt.layer(*layers)
        .properties(width=width, height=height)
        .facet(
            facet=alt.Facet(
                "metric:N", sort=[METRIC_TITLES[m] for m in metrics], title=None
            ),
            columns=columns,
            data=t,
            title=title,
        )
    )


def _cascade_layers(x, y, tooltip, band) -> list:
    """Lines with points, a dash pattern per method, under them the
    translucent ±1 std bands. The legend shows each method's colour (as a
    stroke); the dashes only keep coinciding lines apart. (Every layer's
    colour carries the same legend: Vega-Lite then draws one legend.)"""
    legend = alt.Legend(symbolType="stroke", symbolStrokeWidth=3, symbolOpacity=1)
    color = alt.Color("method:N", legend=legend)
    line = alt.Chart().mark_line(point=alt.OverlayMarkDef(size=30, filled=True)).encode(
        x=x, y=y, tooltip=tooltip, color=color,
        strokeDash=alt.StrokeDash("method:N", legend=None),
    )
    if not band:
        return [line]
    bands = alt.Chart().mark_area(opacity=0.12).encode(
        x=x, y="lo:Q", y2="hi:Q", color=color
    )
    return [bands, line]


def _independent_layers(x, y, tooltip, band) -> list:
    """Points side by side per step (offset by method, a shape each) and ±1
    std bars: each step is its own network, so nothing is connected."""
    color = alt.Color("method:N", legend=alt.Legend(symbolOpacity=1, symbolType="circle"))
    points = alt.Chart().mark_point(filled=True, size=45, opacity=1).encode(
        x=x, xOffset="method:N", y=y, tooltip=tooltip, color=color,
        shape=alt.Shape("method:N", legend=None),
    )
    if not band:
        return [points]
    bars = alt.Chart().mark_rule(opacity=0.6).encode(
        x=x, xOffset="method:N", y="lo:Q", y2="hi:Q", color=color
    )
    return [bars, points]


def cascade_grid(
    result: SanityResult,
    image: int = 0,
    methods: Sequence[str] | None = None,
    scale: str = "independent",
    absolute: bool = True,
    overlay: bool = False,
    size: int = 120,
) -> alt.Chart:
    """The lecture's cascade figure: rows = methods, columns = steps, one digit.

    Drawn with `plotting.grid`. By default every map gets its own colour scale
    (`scale="independent"`: |E| / its own top value, as Adebayo et al.'s
    figures normalise each map), so a randomized map that shrank is still
    visible and the eye compares patterns, as the rank measures do; each
    map's vmax is written under it, so the shrinking shows too. Only maps
    that are exactly zero are greyed out ("= 0"). Works for
    every `SanityResult` (columns: layers, or the compared models of the label
    test).

    Args:
        result: a `SanityResult`.
        image: which of its images, 0 … N−1. Default 0.
        methods: rows; None = every method in the result.
        scale: "independent" (default), "row" (one scale per method: shows
            how the maps' magnitude collapses), "shared" or "column" (see
            `plotting.grid`).
        absolute: show |E| (default True, as Adebayo et al.'s figures); False
            shows signed maps on the diverging scale.
        overlay: draw the maps over the digit (default False: maps alone, so
            a map that merely copies the digit shows it by itself).
        size: width of a cell in pixels (default 120: six steps, the
            ResNet's cascade, fit the notebook column in one block).
    Returns:
        A faceted Altair chart.
    """
    n = len(result.x)
    if (
        isinstance(image, bool)
        or not isinstance(image, numbers.Integral)
        or not 0 <= image < n
    ):
        raise ValueError(f"image must be an int in 0..{n - 1}, got {image!r}")
    methods = list(result.maps["original"]) if methods is None else list(methods)
    unknown = [m for m in methods if m not in result.maps["original"]]
    if unknown:
        raise ValueError(
            f"methods: not in the result: {unknown}; "
            f"it has {list(result.maps['original'])}"
        )
    rows = {}
    for m in methods:
        rows[m] = {}
        for label, maps in result.maps.items():
            a = maps[m][image].sum(0, keepdim=True)
            rows[m][label] = a.abs() if absolute else a
    return grid(
        rows,
        image=result.x[image] if overlay else None,
        scale=scale,
        signed=False if absolute else None,
        size=size,
        row_title=None,  # the rows are named by method; the room goes to columns
        column_title=_STEP_TITLES[result.test],
        legend_title="|attribution|" if absolute else "attribution",
        # randomized maps shrink by orders of magnitude (the vmax under each
        # map shows it); their pattern is what the figure compares, so only
        # an all-zero map (Grad-CAM after its ReLU) is greyed out
        negligible=0.0,
    )


def label_chart(
    result: SanityResult,
    metrics: Sequence[str] | None = None,
    width: int = 160,
    height: int = 200,
    columns: int = 2,
) -> alt.Chart:
    """The data randomization figure: similarity to the true-label model's maps.

    One panel per metric; per method one bar per compared model (random
    labels, and the re-seeded control when the result has one) at the mean
    over images, with a ±1 std rule.

    Args:
        result: a `SanityResult` of `label_randomization`.
        metrics: panels, a subset of `METRICS`; None = all four.
        width, height: size of one panel in pixels.
        columns: panels per row (default 2: fits the notebook column).
    Returns:
        A faceted Altair chart.
    """
    if result.test != "labels":
        raise ValueError(
            f"result must come from label_randomization, got a {result.test!r} "
            "result (use cascade_curve)"
        )
    metrics = check_metrics(metrics, METRICS)
    t = result.table
    t = t[(t.metric.isin(metrics)) & (t[result.key] != "original")]
    t = t.assign(
        metric=t.metric.map(METRIC_TITLES),
        lo=t["mean"] - t["std"],
        hi=t["mean"] + t["std"],
    )
    base = alt.Chart().encode(
        y=alt.Y("method:N", sort=list(dict.fromkeys(t.method)), title=None),
        color=alt.Color(
            f"{result.key}:N",
            title="compared model",
            legend=alt.Legend(labelLimit=0, orient="bottom"),  # labels in full
        ),
        yOffset=f"{result.key}:N",
    )
    bars = base.mark_bar().encode(
        x=alt.X(
            "mean:Q", title="similarity to true-label map", scale=_similarity_scale(t)
        ),
        tooltip=_stat_tooltip("method", result.key),
    )
    rules = base.mark_rule(color="black").encode(x="lo:Q", x2="hi:Q")
    return (
        alt.layer(bars, rules, data=t)
        .properties(width=width, height=height)
        .facet(
            facet=alt.Facet(
                "metric:N", sort=[METRIC_TITLES[m] for m in metrics], title=None
            ),
            columns=columns,
            title="Label randomization",
        )
    )
