"""Export (PNG / SVG through vl-convert) and offline display in JupyterLab."""

from __future__ import annotations

import numbers
from pathlib import Path

import altair as alt


def save(chart: alt.TopLevelMixin, path: str | Path, *, scale: float = 1.0) -> Path:
    """Write a chart to PNG or SVG through vl-convert (offline, no browser).

    Args:
        chart: any Altair chart.
        path: output file; the format comes from the suffix, ".png" or ".svg".
            Missing parent folders are created.
        scale: size factor (PNG: pixels per chart pixel, e.g. 2 for slides;
            SVG: multiplies the width and height). Default 1.
    Returns:
        The path written.
    """
    import vl_convert as vlc

    if not isinstance(chart, alt.TopLevelMixin):
        raise TypeError(f"chart must be an Altair chart, got {type(chart).__name__}")
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("png", "svg"):
        raise ValueError(f"path must end in .png or .svg, got {str(path)!r}")
    if not isinstance(scale, numbers.Real) or not 0 < scale <= 16:
        raise ValueError(f"scale must be a number in (0, 16], got {scale!r}")
    spec = chart.to_dict(validate=True)
    version = alt.SCHEMA_VERSION.lstrip("v").rsplit(".", 1)[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "png":
        path.write_bytes(vlc.vegalite_to_png(spec, vl_version=version, scale=scale))
    else:
        svg = vlc.vegalite_to_svg(spec, vl_version=version)
        if scale != 1:
            svg = _scale_svg(svg, float(scale))
        path.write_text(svg, encoding="utf-8")
    return path


def _scale_svg(svg: str, scale: float) -> str:
    import re

    head = re.search(r"<svg[^>]*>", svg)
    if head is None:
        return svg
    tag = head.group(0)

    def repl(match):
        return f'{match.group(1)}="{float(match.group(2)) * scale:g}"'

    new = re.sub(r'\b(width|height)="([0-9.]+)"', repl, tag)
    return svg[: head.start()] + new + svg[head.end() :]


def mimebundle(chart: alt.TopLevelMixin | dict, validate: bool = False) -> dict:
    """A Jupyter display bundle that JupyterLab renders offline.

    JupyterLab (4.x) ships a Vega-Lite 5 viewer for the MIME type
    ``application/vnd.vegalite.v5+json``; Altair 6's default HTML renderer
    loads Vega from a CDN instead, which fails offline. The course's charts
    use only features Vega-Lite 5 has, so the spec is passed on as v5.

    Args:
        chart: an Altair chart, or a spec dict (e.g. from ``panels(...,
            return_spec=True)``; used as is, not copied deeply).
        validate: validate an Altair chart against the schema first (costs
            ~10–30 ms). Default False.
    Returns:
        {"application/vnd.vegalite.v5+json": spec, "text/plain": "<Altair chart>"}.
    """
    if isinstance(chart, dict):
        spec = dict(chart)
    elif isinstance(chart, alt.TopLevelMixin):
        spec = chart.to_dict(validate=validate)
    else:
        raise TypeError(
            f"chart must be an Altair chart or a spec dict, got {type(chart).__name__}"
        )
    spec["$schema"] = "https://vega.github.io/schema/vega-lite/v5.json"
    return {
        "application/vnd.vegalite.v5+json": spec,
        "text/plain": f"<{type(chart).__name__}: Vega-Lite chart>",
    }


def _course_renderer(spec: dict, **metadata) -> dict:
    spec = {**spec}
    spec["$schema"] = "https://vega.github.io/schema/vega-lite/v5.json"
    return {
        "application/vnd.vegalite.v5+json": spec,
        "text/plain": "<Vega-Lite chart>",
    }


def enable_renderer() -> None:
    """Make notebooks display Altair charts offline in JupyterLab.

    Registers and enables the Altair renderer "course", which emits the
    Vega-Lite 5 MIME bundle JupyterLab renders with its built-in viewer (no
    CDN). Call it once in a notebook's setup cell; `save` is unaffected.
    """
    alt.renderers.register("course", _course_renderer)
    alt.renderers.enable("course")
