"""Error-against-cost charts: how an estimator's error falls as it spends evaluations."""

from __future__ import annotations

from collections.abc import Mapping

import altair as alt

GUIDE = "∝ 1/√n"  # the legend name of the 1/√n guide line


def error_vs_cost(
    errors,
    label: str,
    points: Mapping[str, tuple[float, float]] | None = None,
    *,
    title: str = "",
    x_title: str = "model evaluations",
    y_title: str = "relative error",
    width: int = 480,
    height: int = 300,
) -> alt.LayerChart:
    """An estimator's mean error against its model evaluations, log–log.

    Draws the curve (line with points), a dashed guide ∝ 1/√n through its
    first point (what Monte Carlo sampling gives), and single estimates that
    cost a fixed number of evaluations as diamonds.

    Args:
        errors: pandas Series of mean errors indexed by evaluations, increasing
            (e.g. ``table.groupby("evaluations")["error"].mean()``).
        label: the curve's legend name.
        points: {legend name: (evaluations, error)} single estimates.
        title, x_title, y_title: the chart's and the axes' titles.
        width, height: the chart's size in pixels.
    Returns:
        The layered chart; its data has columns evaluations, mean, method.
    """
    import pandas as pd

    evals = [float(n) for n in errors.index]
    curve = pd.DataFrame(
        {"evaluations": list(errors.index), "mean": list(errors), "method": label}
    )
    first = float(errors.iloc[0])
    guide = pd.DataFrame(
        {
            "evaluations": list(errors.index),
            "mean": [first * (evals[0] / n) ** 0.5 for n in evals],
            "method": GUIDE,
        }
    )
    points = dict(points or {})
    dots = pd.DataFrame(
        {
            "evaluations": [n for n, _ in points.values()],
            "mean": [e for _, e in points.values()],
            "method": list(points),
        }
    )
    x_axis = alt.X("evaluations:Q", scale=alt.Scale(type="log"), title=x_title)
    y_axis = alt.Y("mean:Q", scale=alt.Scale(type="log"), title=y_title)
    colour = alt.Color("method:N", title=None, legend=alt.Legend(orient="top-right"))
    dash = alt.condition(
        alt.datum.method == GUIDE, alt.value([4, 3]), alt.value([1, 0])
    )
    lines = (
        alt.Chart(pd.concat([curve, guide], ignore_index=True))
        .mark_line(point=True)
        .encode(x_axis, y_axis, colour, strokeDash=dash)
    )
    dot = (
        alt.Chart(dots)
        .mark_point(size=120, filled=True, shape="diamond")
        .encode(x_axis, y_axis, colour)
    )
    return (lines + dot).properties(width=width, height=height, title=title)
