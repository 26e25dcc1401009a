"""Faceted image-mark charts from a cached layout, and `panels`.

A layout (`FacetLayout`: colour scale, legend, cell size, row and column
labels, titles, tooltip, spacing) fixes a chart's structure; its Altair chart
and spec are built once and cached. A new chart of the same layout differs only
in its data and title, so `facet_chart` builds it with Altair's public
constructor from the cached parts and copies the cached spec dict, which is
what makes the explorers redraw fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import altair as alt
import numpy as np
import torch

from ._base import (
    OUTLIER_PERC,
    _check_opacity,
    _grey_rgb,
    _png_url,
    _to_image,
    colorize,
    overlay_rgb,
)
from .maps import _image_layer, _legend_layer, _legend_rows, _prepare

# Height of the line under each picture that states its own scale.
SCALE_TEXT_HEIGHT = 15
# The dark ground of framed cells and the frame's width in pixels.
FRAME_RGB = "#3b3b3b"
FRAME_WIDTH = 3
CELL_STROKE = "#c8c8c8"  # Vega-Lite's cell border is #ddd; a touch darker

_GRID_TOOLTIP = (
    ("row:N", "row"),
    ("col:N", "column"),
    ("vmax:Q", "scale end (vmax)"),
)


@dataclass(frozen=True)
class FacetLayout:
    """The structure of an image-mark facet chart (hashable: the cache key).

    Attributes:
        signed: diverging (True) or magnitude (False) colour scale.
        legend_title: the colour legend's title.
        width, height: size of one cell in pixels.
        cols: column labels in display order.
        rows: row labels in display order, or None for a single row.
        row_title, column_title: facet header titles (None: none).
        tooltip: cells carry a tooltip (row, column, vmax).
        spacing: pixels between cells.
        legend_orient: where the colour legend goes ("right" or "bottom").
        scale_text: write each cell's ``scale`` field (its vmax, "≈ 0") under
            its picture (`SCALE_TEXT_HEIGHT` px): how a grid with one colour
            scale per map shows each map's scale. Default False.
        frame: draw each picture on a dark ground (`FRAME_RGB`) reaching
            `FRAME_WIDTH` px beyond it, so a white stroke on a patch's border
            stays visible. The picture keeps its width. Default False.
    """

    signed: bool
    legend_title: str
    width: int
    height: int
    cols: tuple[str, ...]
    rows: tuple[str, ...] | None = None
    row_title: str | None = None
    column_title: str | None = None
    tooltip: bool = False
    spacing: int = 6
    legend_orient: str = "right"
    scale_text: bool = False
    frame: bool = False

    @property
    def inset(self) -> int:
        """Pixels of dark ground around each picture (0 without a frame)."""
        return FRAME_WIDTH if self.frame else 0

    @property
    def cell_width(self) -> int:
        """The facet cell's width: the picture and its frame."""
        return self.width + 2 * self.inset

    @property
    def cell_height(self) -> int:
        """The facet cell's height: the picture, its frame, the scale text."""
        text = SCALE_TEXT_HEIGHT if self.scale_text else 0
        return self.height + 2 * self.inset + text

    def _tooltips(self) -> list | None:
        if not self.tooltip:
            return None
        return [
            alt.Tooltip(f, title=t, **({"format": ".4g"} if f.endswith(":Q") else {}))
            for f, t in _GRID_TOOLTIP
        ]

    def _facets(self) -> dict:
        facets = {
            "column": alt.Column(
                "col:N",
                sort=list(self.cols),
                title=self.column_title,
                header=alt.Header(
                    labelFontSize=12 if self.rows is None else 11,
                    labelLimit=self.cell_width + self.spacing,
                    # a label wider than its cell goes on several lines (split
                    # at spaces and underscores) instead of being cut off
                    labelExpr=(
                        f"length(datum.label) * 6.5 > {self.cell_width + self.spacing}"
                        " ? split(replace(datum.label, /_/g, ' '), ' ')"
                        " : datum.label"
                    ),
                ),
            )
        }
        if self.rows is not None:
            facets["row"] = alt.Row(
                "row:N",
                sort=list(self.rows),
                title=self.row_title,
                header=alt.Header(labelAngle=0, labelAlign="left", labelFontSize=11),
            )
        return facets


def _cell_layers(layout: FacetLayout) -> list:
    """What one facet cell draws: (the dark frame,) the picture, (its scale
    text,) and the invisible legend layer."""
    w, h = layout.cell_width, layout.cell_height - (
        SCALE_TEXT_HEIGHT if layout.scale_text else 0
    )
    image = _image_layer(layout.width, layout.height, layout._tooltips(), at=layout.inset)
    layers = [image.transform_filter("isValid(datum.url)")]
    if layout.frame or layout.scale_text:
        # the cell's own border is off (it would box the text too): each
        # picture gets its frame, a dark ground or a thin grey line on top
        mark = (dict(color=FRAME_RGB) if layout.frame else
                dict(filled=False, stroke=CELL_STROKE, strokeWidth=1))
        box = (
            alt.Chart()
            .mark_rect(aria=False, **mark)
            .encode(x=alt.XValue(0), x2=alt.X2Value(w), y=alt.YValue(0),
                    y2=alt.Y2Value(h))
            .transform_filter("isValid(datum.url)")
        )
        layers.insert(0 if layout.frame else 1, box)
    if layout.scale_text:
        text = (
            alt.Chart()
            .mark_text(align="left", baseline="top", fontSize=10, color="#333")
            .encode(x=alt.XValue(0), y=alt.YValue(h + 3), text=alt.Text("scale:N"))
            .transform_filter("isValid(datum.scale)")
        )
        layers.append(text)
    layers.append(_legend_layer(layout.signed, layout.legend_title, layout.legend_orient))
    return layers


@lru_cache(maxsize=64)
def _facet_template(layout: FacetLayout) -> tuple[alt.LayerSpec, dict]:
    """The layer inside every facet as an `alt.LayerSpec`, and the spec of an
    image-mark facet chart with empty data (built once per layout).

    The layer is kept as a plain `LayerSpec` (not a `LayerChart`): Altair copies
    the facet's inner spec on every `FacetChart(...)`, and copying a
    `LayerChart` re-runs its constructor, which copies each layer twice more.
    """
    layer = alt.layer(*_cell_layers(layout)).properties(
        width=layout.cell_width, height=layout.cell_height,
        **({"view": alt.ViewBackground(stroke=None)}
           if layout.frame or layout.scale_text else {}),
    )
    chart = layer.facet(
        data=alt.Data(values=[]), spacing=layout.spacing, **layout._facets()
    )
    spec = chart.to_dict(validate=False)
    spec.pop("datasets", None)
    spec.pop("title", None)
    return alt.LayerSpec.from_dict(spec["spec"], validate=False), spec


def facet_chart(layout: FacetLayout, values: list[dict], title: str | None):
    """(chart, spec) of `layout` holding `values` (inline rows) and `title`.

    The chart is `alt.FacetChart(...)` (Altair's public constructor) given the
    cached layer (`alt.LayerSpec`), the facet and spacing of the cached spec,
    and the rows as inline data; the spec is the cached template's dict with the new data
    and title, equal to ``chart.to_dict()`` without paying for Altair's
    serialisation.
    """
    layer, spec0 = _facet_template(layout)
    data = {"values": values}
    spec = {**spec0, "data": data}
    extra = {}
    if title is not None:
        extra["title"] = spec["title"] = str(title)
    chart = alt.FacetChart(
        data=alt.Data(values=values),
        spec=layer,
        facet=spec0["facet"],
        spacing=spec0["spacing"],
        **extra,
    )
    return chart, spec


def panels(
    image: torch.Tensor | np.ndarray,
    attr: torch.Tensor | np.ndarray,
    *,
    extra: Mapping[str, torch.Tensor | np.ndarray] | None = None,
    opacity: float = 0.7,
    fade: bool = True,
    reduce: str = "sum",
    signed: bool | None = None,
    outlier_perc: float = OUTLIER_PERC,
    vmax: float | None = None,
    size: int = 140,
    title: str | None = None,
    legend_title: str = "attribution",
    return_spec: bool = False,
):
    """Digit | map | overlay side by side, light enough to redraw per slider move.

    The explorers' picture: one image mark per panel (PNG data URLs, ~1 KB
    each) and one colour legend. The chart's structure is cached per layout,
    so a call costs a few milliseconds, most of it colouring and PNG-encoding.

    Args:
        image: (H, W), (1, H, W) or (1, 1, H, W) input in [0, 1].
        attr: its attribution; see `heatmap`.
        extra: optional {panel title: grey image in [0, 1]} drawn after the
            digit (e.g. IG's baseline). Default None.
        opacity, fade, reduce, signed, outlier_perc, vmax, legend_title: as in
            `overlay`.
        size: width of each panel in pixels. title: chart title.
        return_spec: also return the Vega-Lite spec (a dict equal to
            ``chart.to_dict()`` with the data inline), without paying for
            Altair's serialisation. Default False.
    Returns:
        An Altair chart with one column per panel ("input", extras…, "map",
        "overlay"); with return_spec, (chart, spec).
    """
    opacity = _check_opacity(opacity)
    m, img, signed, vmax, size, height = _prepare(
        attr, image, reduce, signed, outlier_perc, vmax, size
    )
    cells = [("input", _grey_rgb(img))]
    for name, other in (extra or {}).items():
        other = _to_image(other, f"extra[{name!r}]")
        if other.shape != m.shape:
            raise ValueError(
                f"extra[{name!r}] must have the map's size {m.shape}, got {other.shape}"
            )
        cells.append((str(name), _grey_rgb(other)))
    cells += [
        ("map", colorize(m, vmax, signed)),
        ("overlay", overlay_rgb(img, m, vmax, signed, opacity, fade)),
    ]
    names = tuple(name for name, _ in cells)
    if len(set(names)) != len(names):
        raise ValueError(f"extra must not reuse the panel names {list(names)}")
    values = [{"col": n, "url": _png_url(rgb)} for n, rgb in cells]
    values += _legend_rows(signed, vmax, col="map")
    layout = FacetLayout(signed, str(legend_title), size, height, cols=names)
    chart, spec = facet_chart(layout, values, title)
    return (chart, spec) if return_spec else chart


def stack(parts, title: str | None = None, spacing: int = 14):
    """Charts one below the other, each with its own colour scale and legend.

    For a figure that mixes signed maps (blue–white–red) and magnitude maps
    (plasma), e.g. Grad-CAM next to gradient methods: one `grid` per kind,
    stacked. The spec is assembled from the parts' specs (no Altair
    serialisation, as `facet_chart`).

    Args:
        parts: (chart, spec) pairs, e.g. `grid(..., return_spec=True)`.
        title: the whole figure's title. spacing: pixels between the parts.
    Returns:
        (chart, spec): `alt.vconcat` of the charts with independent colour
        scales, and its spec dict.
    """
    parts = list(parts)
    if not parts:
        raise ValueError("parts must hold at least one (chart, spec) pair")
    extra = {} if title is None else {"title": str(title)}
    chart = alt.vconcat(*(c for c, _ in parts), spacing=spacing, **extra)
    chart = chart.resolve_scale(color="independent")
    inner = [{k: v for k, v in s.items() if k != "$schema"} for _, s in parts]
    spec = {
        "$schema": parts[0][1].get("$schema"),
        "vconcat": inner,
        "spacing": spacing,
        "resolve": {"scale": {"color": "independent"}},
        **extra,
    }
    return chart, spec
