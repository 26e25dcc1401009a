"""The class report as one HTML page, and its files: OUT/report.html plus a PNG per chart.

The page opens in the instructor's browser, so it is built as if every text
were hostile (student ids and details are): each one passes `sanitize.html`
(visible, bounded, HTML-escaped, quotes too), numbers are formatted here,
and the page carries no script and loads nothing — its charts are inlined
as ``data:`` PNGs and a Content-Security-Policy (``default-src 'none'``)
forbids scripts, frames, fonts and every external request even if an
escape were ever missed. It reads the same offline, attached to an e-mail,
or from a USB stick.
"""

from __future__ import annotations

import base64
import struct
import time
from pathlib import Path

from . import sanitize
from .report import BANDS, ClassReport

CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'"
)
DETAILS_CHARS = 400  # characters of a row's details shown on the page
_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 940px;
       color: #222; padding: 0 12px; }
h1 { font-size: 24px; margin-bottom: 4px; }
h2 { font-size: 19px; margin-top: 32px; border-bottom: 1px solid #ccc; }
h3 { font-size: 16px; margin-bottom: 4px; }
p.meta, p.note { color: #555; }
table { border-collapse: collapse; margin: 8px 0 16px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left;
         vertical-align: top; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f3f3f3; }
td.why { max-width: 560px; overflow-wrap: anywhere; white-space: pre-wrap; }
img { display: block; margin: 8px 0; max-width: 100%; height: auto; }
"""


def _e(value: object, limit: int | None = 2_000) -> str:
    """A text for the page: `sanitize.html` (visible, bounded, escaped)."""
    return sanitize.html(value, limit)


def _id(student: object) -> str:
    """A student id for the page: as `sanitize.student_id` shows it, escaped."""
    return _e(sanitize.student_id(student), 300)


def _n(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:g}" if float(x) == round(float(x), 2) else f"{x:.2f}"


def _table(headers: list[str], rows: list[list[tuple[str, str]]]) -> str:
    """A table; each cell is (css class, already escaped HTML)."""
    head = "".join(
        f'<th class="{"n" if h.startswith("#") else ""}">{_e(h.lstrip("#"))}</th>'
        for h in headers
    )
    body = "".join(
        "<tr>" + "".join(f'<td class="{c}">{v}</td>' for c, v in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(name: str, pngs: dict[str, bytes], alt: str, scale: float = 2.0) -> str:
    """The chart `name` inlined as a data: PNG at its natural size, or ''."""
    data = pngs.get(name)
    if not data:
        return ""
    width = struct.unpack(">I", data[16:20])[0] / scale  # the PNG header's width
    src = base64.b64encode(data).decode("ascii")
    return (
        f'<img src="data:image/png;base64,{src}" width="{width:.0f}" alt="{_e(alt)}">'
    )


def _status_section(report: ClassReport, pngs: dict[str, bytes]) -> str:
    rows = [[("", _e(s)), ("n", _n(n))] for s, n in report.counts.items()]
    out = [
        "<h2>Submissions by status</h2>",
        _table(["status", "#students"], rows),
        _img("status", pngs, "submissions by status"),
    ]
    if report.missing:
        shown = ", ".join(_id(s) for s in report.missing[:100])
        more = (
            f" and {len(report.missing) - 100} more"
            if len(report.missing) > 100
            else ""
        )
        out.append(f'<p class="note">Missing: {shown}{more}.</p>')
    return "\n".join(out)


def _scores_section(report: ClassReport, pngs: dict[str, bytes]) -> str:
    rows = []
    for d in report.distributions:
        bands = d.bands()
        kind = "by hand" if d.question.manual else "hidden tests"
        rows.append(
            [
                ("", _e(report.label(d.question.key))),
                ("", kind),
                ("n", _n(d.question.max_points)),
                ("n", _n(d.mean)),
                *[("n", _n(bands[b])) for b in BANDS],
            ]
        )
    headers = ["question", "graded", "#points", "#mean", *[f"#{b}" for b in BANDS]]
    return "\n".join(
        [
            "<h2>Scores by question</h2>",
            _img("scores", pngs, "scores by question"),
            _table(headers, rows),
            (
                '<p class="note">The mean is over settled scores: answers awaiting '
                "a person and students who submitted nothing are left out.</p>"
            ),
            _img("distribution", pngs, "score distribution per question"),
        ]
    )


def _mistakes_section(report: ClassReport, pngs: dict[str, bytes]) -> str:
    out = [
        "<h2>Most frequent mistakes</h2>",
        (
            '<p class="note">For every hidden case that did not pass, the grader '
            "compared the output with the reference and named the kind of mistake "
            "— the same vocabulary as the hints students see (sign flipped, summed "
            "instead of averaged, rows swapped, …). Counts are students (and their "
            "cases); cases a timeout or crash never reached are counted under the "
            "statuses, not here.</p>"
        ),
        _img("mistakes", pngs, "most frequent mistakes per question"),
    ]
    for key, found in report.mistakes.items():
        lost = report.lost_points.get(key, 0)
        out.append(
            f"<h3>{_e(report.label(key))}: {lost} of {report.students} students "
            "lost points</h3>"
        )
        if not found:
            out.append('<p class="note">No mistake recorded.</p>')
            continue
        rows = [
            [
                ("", _e(m.words)),
                ("", _e(m.category)),
                ("n", _n(m.students)),
                ("n", _n(m.cases)),
            ]
            for m in found
        ]
        out.append(_table(["mistake", "category", "#students", "#cases"], rows))
    return "\n".join(out)


def _attention_section(report: ClassReport) -> str:
    out = ["<h2>Needs a person</h2>"]
    if report.attention:
        rows = [
            [
                ("", _id(a.student)),
                ("", _e(a.status)),
                ("why", "<br>".join(_e(r, DETAILS_CHARS) for r in a.reasons)),
            ]
            for a in report.attention
        ]
        out.append(_table(["student", "status", "why"], rows))
    else:
        out.append(
            '<p class="note">No flagged notebook, grader error, interrupted '
            "run or test awaiting review.</p>"
        )
    waiting = [(k, n) for k, n in report.to_grade.items() if n]
    if waiting:
        items = "".join(
            f"<li>{_e(report.label(k))}: {n} answer(s) to grade in formgrader</li>"
            for k, n in waiting
        )
        out.append(f"<p>Free answers:</p><ul>{items}</ul>")
    return "\n".join(out)


def _slowest_section(report: ClassReport, pngs: dict[str, bytes]) -> str:
    if not report.slowest:
        return ""
    rows = [
        [("", _id(s)), ("n", f"{t:.1f}"), ("", _e(st))]
        for s, t, st in report.slowest
    ]
    return "\n".join(
        [
            "<h2>Slowest submissions</h2>",
            _img("slowest", pngs, "slowest submissions"),
            _table(["student", "#seconds", "status"], rows),
        ]
    )


def page(report: ClassReport, pngs: dict[str, bytes], extra: str = "",
         extra_style: str = "") -> str:
    """The whole page as a string (charts: name → PNG bytes, see `report_charts`).

    `extra`: an HTML fragment of ours appended after the sections (the copying
    check's `copying.html_section`, which escapes every student string itself),
    with its CSS in `extra_style`.
    """
    stamp = time.strftime("%Y-%m-%d %H:%M")
    body = "\n".join(
        [
            f"<h1>Class report: {_e(report.set_id)}</h1>",
            (
                f'<p class="meta">{report.students} student(s) · from the '
                f"gradebook, {_e(stamp)}</p>"
            ),
            _status_section(report, pngs),
            _scores_section(report, pngs),
            _mistakes_section(report, pngs),
            _attention_section(report),
            _slowest_section(report, pngs),
            extra,
        ]
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="referrer" content="no-referrer">\n'
        f"<title>Class report: {_e(report.set_id)}</title>\n"
        f"<style>{_STYLE}{extra_style}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def write_report(report: ClassReport, out_dir: Path, extra: str = "",
                 extra_style: str = "") -> list[Path]:
    """Write OUT_DIR/report.html (charts inlined) and each chart as OUT_DIR/NAME.png.

    Returns the paths written, the page first. Each file is written
    atomically (`atomic_write`): a reader never sees half a page.
    """
    from . import report_charts
    from .atomic import atomic_write

    out_dir = Path(out_dir)
    pngs = {
        name: report_charts.render_png(chart)
        for name, chart in report_charts.charts(report).items()
    }
    written = []
    for name, data in pngs.items():
        path = out_dir / f"{name}.png"
        with atomic_write(path, "wb", chmod=0o644) as fh:
            fh.write(data)
        written.append(path)
    html_path = out_dir / "report.html"
    with atomic_write(html_path, chmod=0o644) as fh:
        fh.write(page(report, pngs, extra, extra_style))
    return [html_path, *written]
