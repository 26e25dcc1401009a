"""The class report's charts (Altair), readable at a glance and at most 900 px wide.

* `scores_chart` — one bar per question, split into full marks / partial /
  zero / awaiting a person / not submitted (green … red, greys), with the
  question's points and class mean in its label: which question the class
  failed;
* `distribution_chart` — one small panel per question: students per score;
* `status_chart` — submissions per status (graded, timed out, crashed, …);
* `mistakes_chart` — per auto-graded question, its most frequent mistakes
  (`mistakes` categories, in words), students and cases;
* `slowest_chart` — the slowest submissions, seconds to grade.

Every bar carries its number as text, so no one has to read an axis. Charts
follow the course's conventions (`plotting`: at most `COLUMN_WIDTH` = 900 px,
labels never cut off), but are drawn here without `course_utils.plotting`,
which imports torch. `render_png` renders through vl-convert, as
`plotting.save` does: offline, no browser.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from . import sanitize
from .outcome import STATUSES
from .report import BANDS, ClassReport

COLUMN_WIDTH = 900  # `plotting.COLUMN_WIDTH`: the notebook column, and the page's
BAND_COLORS = ("#1a9850", "#fdae61", "#d73027", "#878787", "#d9d9d9")
STATUS_COLORS = (
    "#1a9850",
    "#fdae61",
    "#d73027",
    "#762a83",
    "#000000",
    "#d9d9d9",
    "#4393c3",
)
LABEL_CHARS = 40  # a student id longer than this is shortened in a chart
FONT = 13


def _count_axis(top: float) -> alt.Axis:
    """An axis of student counts up to `top`: whole-number ticks only (Vega's
    own pick gives 0.5 steps for small counts, and tickMinStep does not stop it)."""
    top = max(int(top), 1)
    step = next(
        (s for s in (1, 2, 5, 10, 20, 50, 100, 200, 500) if top / s <= 10), 1000
    )
    return alt.Axis(values=list(range(0, top + step, step)), format="d")


def _count(top: float, field: str = "students") -> alt.X:
    """The x encoding of a count (both layers of a bar chart use the same)."""
    return alt.X(f"{field}:Q", title="students", axis=_count_axis(top))


def _fmt(x: float) -> str:
    return f"{x:g}" if x == round(x, 2) else f"{x:.2f}"


def _short(text: str) -> str:
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 3] + "..."


def _config(chart: alt.TopLevelMixin) -> alt.TopLevelMixin:
    return (
        chart.configure_axis(labelFontSize=FONT, titleFontSize=FONT, labelLimit=0)
        .configure_legend(labelFontSize=FONT, titleFontSize=FONT, labelLimit=0)
        .configure_title(fontSize=FONT + 3, anchor="start")
        .configure_header(labelFontSize=FONT, titleFontSize=FONT, labelLimit=0)
        .configure_view(stroke=None)
    )


def _question_label(report: ClassReport, d) -> str:
    mean, scored = d.mean, sum(d.points.values())
    tail = f"mean {_fmt(mean)} of {scored}" if mean is not None else "no score yet"
    return f"{report.label(d.question.key)} ({_fmt(d.question.max_points)} pt, {tail})"


def scores_chart(report: ClassReport) -> alt.TopLevelMixin:
    """Stacked bars: each question's students by band of `BANDS`."""
    rows = []
    for d in report.distributions:
        start = 0
        for band, n in d.bands().items():
            if n:
                rows.append(
                    {
                        "question": _question_label(report, d),
                        "band": band,
                        "students": n,
                        "start": start,
                        "end": start + n,
                        "mid": start + n / 2,
                    }
                )
            start += n
    axis = _count_axis(report.students)
    data = pd.DataFrame(rows)
    y = alt.Y(
        "question:N",
        sort=[_question_label(report, d) for d in report.distributions],
        title=None,
        axis=alt.Axis(labelLimit=0),
    )
    bars = (
        alt.Chart(data)
        .mark_bar()
        .encode(
            y=y,
            x=alt.X("start:Q", title="students", axis=axis),
            x2="end:Q",
            color=alt.Color(
                "band:N",
                scale=alt.Scale(domain=list(BANDS), range=list(BAND_COLORS)),
                legend=alt.Legend(orient="bottom", title=None, columns=5),
            ),
            tooltip=["question:N", "band:N", "students:Q"],
        )
    )
    labels = (
        alt.Chart(data)
        .mark_text(fontSize=FONT, color="black")
        .encode(y=y, x=alt.X("mid:Q", title="students", axis=axis), text="students:Q")
    )
    height = 34 * max(len(report.distributions), 1)
    return _config(
        (bars + labels).properties(
            width=420, height=height, title=f"{report.set_id}: scores by question"
        )
    )


def _panel(name: str, rows: list[dict], top: int) -> alt.Chart:
    """One question's bars: students per score, the number on each bar."""
    data = pd.DataFrame(rows)
    base = alt.Chart(data).encode(
        x=alt.X(
            "score:N",
            sort=[r["score"] for r in rows],
            title="points",
            axis=alt.Axis(labelAngle=0),
        ),
        y=alt.Y("students:Q", title="students", axis=_count_axis(top)),
    )
    bars = base.mark_bar().encode(
        color=alt.Color(
            "band:N",
            scale=alt.Scale(domain=list(BANDS), range=list(BAND_COLORS)),
            legend=alt.Legend(orient="bottom", title=None, columns=5),
        )
    )
    text = base.mark_text(dy=-8, fontSize=FONT).encode(text="students:Q")
    return (bars + text).properties(width=150, height=130, title=name)


def distribution_chart(report: ClassReport) -> alt.TopLevelMixin:
    """Small multiples: students per score, one panel per question (4 a row)."""
    panels = []
    top_count = max(
        (n for d in report.distributions for n in [*d.points.values(), d.awaiting]),
        default=1,
    )
    for d in report.distributions:
        top = d.question.max_points
        rows = [
            {
                "score": _fmt(points),
                "students": n,
                "band": "full marks"
                if points >= top - 1e-9
                else "zero"
                if points <= 0
                else "partial",
            }
            for points, n in d.points.items()
        ]
        if d.awaiting:
            rows.append(
                {
                    "score": "awaiting",
                    "students": d.awaiting,
                    "band": "awaiting a person",
                }
            )
        if rows:
            panels.append(_panel(report.label(d.question.key), rows, top_count))
    return _config(
        alt.concat(*panels, columns=4)
        .resolve_scale(y="shared")
        .properties(title=f"{report.set_id}: score distribution per question")
    )


def status_chart(report: ClassReport) -> alt.TopLevelMixin:
    """Horizontal bars: submissions per status, every status shown."""
    order = list(STATUSES) + [s for s in report.counts if s not in STATUSES]
    data = pd.DataFrame(
        [{"status": s, "students": report.counts.get(s, 0)} for s in order]
    )
    colors = list(STATUS_COLORS) + ["#999999"] * (len(order) - len(STATUS_COLORS))
    y = alt.Y("status:N", sort=order, title=None)
    x = _count(max(report.counts.values(), default=1))
    bars = (
        alt.Chart(data)
        .mark_bar()
        .encode(
            y=y,
            x=x,
            color=alt.Color(
                "status:N", scale=alt.Scale(domain=order, range=colors), legend=None
            ),
        )
    )
    text = (
        alt.Chart(data)
        .mark_text(align="left", dx=4, fontSize=FONT)
        .encode(y=y, x=x, text="students:Q")
    )
    return _config(
        (bars + text).properties(
            width=420,
            height=26 * len(order),
            title=f"{report.set_id}: submissions by status",
        )
    )


def mistakes_chart(report: ClassReport) -> alt.TopLevelMixin | None:
    """Per auto-graded question, its most frequent mistakes; None if there are none."""
    panels = []
    for key, found in report.mistakes.items():
        if not found:
            continue
        data = pd.DataFrame(
            [
                {
                    "mistake": m.words,
                    "students": m.students,
                    "text": f"{m.students} ({m.cases} case{'s' if m.cases != 1 else ''})",
                }
                for m in found
            ]
        )
        y = alt.Y("mistake:N", sort=[m.words for m in found], title=None)
        x = _count(found[0].students)  # the most frequent first
        bars = alt.Chart(data).mark_bar(color="#d6604d").encode(y=y, x=x)
        text = (
            alt.Chart(data)
            .mark_text(align="left", dx=4, fontSize=FONT)
            .encode(y=y, x=x, text="text:N")
        )
        lost = report.lost_points.get(key, 0)
        panels.append(
            (bars + text).properties(
                width=260,
                height=26 * len(found),
                title=f"{report.label(key)}: {lost} of {report.students} "
                "students lost points",
            )
        )
    if not panels:
        return None
    return _config(
        alt.vconcat(*panels).properties(
            title=f"{report.set_id}: most frequent mistakes (hidden tests)"
        )
    )


def slowest_chart(report: ClassReport) -> alt.TopLevelMixin | None:
    """Horizontal bars: the slowest submissions' grading time; None if none."""
    if not report.slowest:
        return None
    names: list[str] = []
    for student, _, _ in report.slowest:  # shortened ids stay distinct bars
        name = _short(sanitize.student_id(student))
        names.append(name if name not in names else f"{name} ({len(names) + 1})")
    data = pd.DataFrame(
        [
            {"student": name, "seconds": t, "status": st, "text": f"{t:.1f} s"}
            for name, (_, t, st) in zip(names, report.slowest)
        ]
    )
    order = [s for s in STATUSES if s in set(data["status"])]
    order += [s for s in dict.fromkeys(data["status"]) if s not in order]
    colors = [dict(zip(STATUSES, STATUS_COLORS)).get(s, "#999999") for s in order]
    y = alt.Y("student:N", sort=list(data["student"]), title=None)
    bars = (
        alt.Chart(data)
        .mark_bar()
        .encode(
            y=y,
            x=alt.X("seconds:Q", title="seconds to grade"),
            color=alt.Color(
                "status:N",
                scale=alt.Scale(domain=order, range=colors),
                legend=alt.Legend(orient="bottom", title=None),
            ),
        )
    )
    text = (
        alt.Chart(data)
        .mark_text(align="left", dx=4, fontSize=FONT)
        .encode(y=y, x="seconds:Q", text="text:N")
    )
    return _config(
        (bars + text).properties(
            width=380,
            height=24 * len(data),
            title=f"{report.set_id}: slowest submissions",
        )
    )


def charts(report: ClassReport) -> dict[str, alt.TopLevelMixin]:
    """name → chart, in the page's order (charts without data left out)."""
    out = {
        "scores": scores_chart(report) if report.distributions else None,
        "distribution": distribution_chart(report) if report.distributions else None,
        "status": status_chart(report),
        "mistakes": mistakes_chart(report),
        "slowest": slowest_chart(report),
    }
    return {name: chart for name, chart in out.items() if chart is not None}


def render_png(chart: alt.TopLevelMixin, scale: float = 2.0) -> bytes:
    """The chart as PNG bytes (vl-convert; offline), `scale` pixels per px."""
    import vl_convert as vlc

    version = alt.SCHEMA_VERSION.lstrip("v").rsplit(".", 1)[0]
    return vlc.vegalite_to_png(chart.to_dict(), vl_version=version, scale=scale)
