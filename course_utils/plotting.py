"""Altair pictures of saliency maps: heatmaps, overlays, method grids, export.

Colours follow the lecture. Signed maps (gradient, input × gradient, IG) use a
diverging blue–white–red scale centred on zero (`SIGNED_COLORS`, domain
``[-vmax, vmax]``); magnitude maps (|gradient|, Grad-CAM, occlusion drops ≥ 0)
run from cool blue/purple = low to warm red/orange = high
(`MAGNITUDE_COLORS`, domain ``[0, vmax]``). Images are shown as they are:
intensity 0 = black background, 1 = white stroke; image row 0 is drawn at
the top.

How the charts stay small (Altair refuses inline data above 5,000 rows):

* `heatmap` and `overlay` draw one ``rect`` per pixel (784 rows for a digit)
  so every pixel has a tooltip (row, column, pixel value, attribution). Maps
  above `RECT_LIMIT` pixels switch to a single image mark (no per-pixel
  tooltip) so no input can trip the row limit.
* `grid`, `digits` and `panels` draw one ``image`` mark per map: the map is
  coloured in Python with the very same colour stops (linear RGB
  interpolation, as the legend's Vega scale uses) and inlined as a 28×28 PNG
  data URL (about 1 KB). A 10 × 9 grid of digit maps is 90 data rows and
  about 150 KB of spec instead of 70,560 rect rows. Trade-offs: no per-pixel
  tooltip (the tooltip names the cell and its scale), and the colours are
  baked into the PNG, so the legend is drawn by an invisible layer that
  carries the same scale. Images are drawn with ``smooth=False`` so the
  28 × 28 pixels stay crisp when scaled up.

Scaling. A map's colour scale ends at ``vmax``: by default the value below
which ``100 - outlier_perc`` percent of the map's total |attribution| lies —
exactly Captum's ``visualize_image_attr(..., outlier_perc=2)`` rule — so a
few extreme pixels saturate instead of washing out the rest. Larger values
are clamped to the end colours; tooltips show the unclamped values.

Export: `save(chart, "fig.png" | "fig.svg", scale=2)` renders through
vl-convert (no browser, no network). In JupyterLab, `enable_renderer()`
makes notebooks show charts offline with JupyterLab's built-in Vega viewer.
"""

from __future__ import annotations

import base64
import io
import math
import numbers
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import altair as alt
import numpy as np
import torch
from altair.utils import schemapi

__all__ = [
    "MAGNITUDE_COLORS",
    "RECT_LIMIT",
    "REDUCTIONS",
    "SCALES",
    "SIGNED_COLORS",
    "blend",
    "color_limit",
    "colorize",
    "confusion_matrix",
    "digits",
    "enable_renderer",
    "grid",
    "heatmap",
    "mimebundle",
    "overlay",
    "panels",
    "save",
    "to_map",
]

# ColorBrewer RdBu (9 classes) reversed, with a pure white centre: blue < 0 < red.
SIGNED_COLORS = (
    "#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#ffffff",
    "#fddbc7", "#f4a582", "#d6604d", "#b2182b",
)  # fmt: skip
# Matplotlib's "plasma" sampled at 0, .15, .3, .45, .6, .72, .84: cool → warm.
MAGNITUDE_COLORS = (
    "#0d0887", "#5601a4", "#8f0da4", "#bf3984", "#e16462", "#f58b47", "#feb72d",
)  # fmt: skip
REDUCTIONS = ("sum", "abs_sum", "max_abs")
SCALES = ("shared", "row", "column", "independent")
# Largest map drawn with one rect per pixel (Altair's inline limit is 5,000 rows).
RECT_LIMIT = 4096
# Overlays draw the digit at this brightness (white stroke → mid grey) so the
# white centre of the signed scale stays visible on top of the strokes.
OVERLAY_BRIGHTNESS = 0.6
OUTLIER_PERC = 2.0


# ------------------------------------------------------------------ arrays


def _to_numpy(value: object, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.float64).numpy()
    if isinstance(value, np.ndarray):
        if not np.issubdtype(value.dtype, np.number) or value.dtype == np.bool_:
            raise TypeError(f"{name} must hold numbers, got dtype {value.dtype}")
        return value.astype(np.float64, copy=False)
    raise TypeError(
        f"{name} must be a torch.Tensor or numpy array, got {type(value).__name__}"
    )


def to_map(attr: torch.Tensor | np.ndarray, reduce: str = "sum") -> np.ndarray:
    """Reduce one attribution to a 2-D (H, W) map.

    Args:
        attr: (H, W), (C, H, W) or (1, C, H, W) attribution (tensor or array).
        reduce: how channels are combined. "sum" (default) keeps the sign
            (Captum's ``sign="all"`` view); "abs_sum" = Σ_c |attr_c| and
            "max_abs" = max_c |attr_c| (Simonyan et al.'s map) are magnitudes.
            For one channel "sum" is the map itself.
    Returns:
        (H, W) float64 numpy array.
    Raises:
        ValueError: wrong rank, a batch of more than one map, NaN/Inf values or
            an unknown `reduce`.
    """
    a = _to_numpy(attr, "attr")
    if a.ndim == 4:
        if a.shape[0] != 1:
            raise ValueError(
                f"attr must hold one map, got a batch of {a.shape[0]} "
                f"(shape {a.shape}); use grid() for several maps"
            )
        a = a[0]
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[0] == 0 or a.shape[1] == 0 or a.shape[2] == 0:
        raise ValueError(
            f"attr must have shape (H, W), (C, H, W) or (1, C, H, W), got {a.shape}"
        )
    if not np.isfinite(a).all():
        raise ValueError("attr must be finite; it holds NaN or Inf values")
    if reduce == "sum":
        return a.sum(axis=0)
    if reduce == "abs_sum":
        return np.abs(a).sum(axis=0)
    if reduce == "max_abs":
        return np.abs(a).max(axis=0)
    raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")


def _to_image(image: object, name: str = "image") -> np.ndarray:
    """(H, W), (1, H, W), (3, H, W) or (1, C, H, W) → (H, W) grey in [0, 1]."""
    a = _to_numpy(image, name)
    if a.ndim == 4:
        if a.shape[0] != 1:
            raise ValueError(
                f"{name} must hold one image, got a batch of shape {a.shape}"
            )
        a = a[0]
    if a.ndim == 3:
        if a.shape[0] not in (1, 3):
            raise ValueError(
                f"{name} must have 1 (grey) or 3 (RGB) channels, got shape {a.shape}"
            )
        a = a.mean(axis=0)
    if a.ndim != 2:
        raise ValueError(
            f"{name} must have shape (H, W), (C, H, W) or (1, C, H, W), got {a.shape}"
        )
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite; it holds NaN or Inf values")
    return np.clip(a, 0.0, 1.0)


def color_limit(values: np.ndarray, outlier_perc: float = OUTLIER_PERC) -> float:
    """The end of the colour scale, vmax, for one or several maps.

    Captum's rule (`captum.attr.visualization._cumulative_sum_threshold`): sort
    |values|, and take the smallest value at which the cumulative sum reaches
    ``100 - outlier_perc`` percent of the total. ``outlier_perc=0`` gives
    max |values|.

    Args:
        values: any-shaped array of attributions.
        outlier_perc: percent of the total |attribution| mass allowed to
            saturate, in [0, 100). Default 2 (Captum's default).
    Returns:
        vmax > 0 (1.0 for an all-zero map, so the scale is never empty).
    """
    if not isinstance(outlier_perc, numbers.Real) or not 0 <= outlier_perc < 100:
        raise ValueError(
            f"outlier_perc must be a number in [0, 100), got {outlier_perc!r}"
        )
    flat = np.sort(np.abs(np.asarray(values, dtype=np.float64)).ravel())
    if flat.size == 0 or flat[-1] <= 0:
        return 1.0
    if outlier_perc == 0:
        return float(flat[-1])
    cum = np.cumsum(flat)
    i = int(np.searchsorted(cum, cum[-1] * 0.01 * (100 - outlier_perc)))
    vmax = float(flat[min(i, flat.size - 1)])
    return vmax if vmax > 0 else float(flat[-1])


def _stops(colors: Sequence[str]) -> np.ndarray:
    return np.array(
        [[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in colors], dtype=np.float64
    )


_SIGNED_RGB = _stops(SIGNED_COLORS)
_GREY_TOP = "#" + f"{round(255 * OVERLAY_BRIGHTNESS):02x}" * 3
_MAGNITUDE_RGB = _stops(MAGNITUDE_COLORS)


def colorize(m: np.ndarray, vmax: float, signed: bool) -> np.ndarray:
    """Colour a 2-D map with the course's scales (as Vega does with `_scale`).

    Args:
        m: (H, W) map.
        vmax: end of the scale; values beyond it are clamped.
        signed: True → blue–white–red over [-vmax, vmax]; False → cool-to-warm
            over [0, vmax] applied to |m|.
    Returns:
        (H, W, 3) uint8 RGB.
    """
    stops = _SIGNED_RGB if signed else _MAGNITUDE_RGB
    t = (m / vmax + 1.0) / 2.0 if signed else np.abs(m) / vmax
    pos = np.clip(t, 0.0, 1.0) * (len(stops) - 1)
    i0 = np.minimum(pos.astype(np.int64), len(stops) - 2)
    frac = (pos - i0)[..., None]
    rgb = stops[i0] * (1.0 - frac) + stops[i0 + 1] * frac
    return np.rint(rgb).astype(np.uint8)


def blend(
    image: np.ndarray,
    m: np.ndarray,
    vmax: float,
    signed: bool,
    opacity: float = 0.7,
    fade: bool = True,
) -> np.ndarray:
    """The grey digit with the coloured map blended on top.

    The digit is drawn at `OVERLAY_BRIGHTNESS` (0.6): white strokes become mid
    grey, so the white centre of the signed scale stays visible on them.

    Args:
        image: (H, W) grey image in [0, 1].
        m: (H, W) map, same size.
        vmax, signed: as in `colorize`.
        opacity: opacity of the heat layer in [0, 1] (at |m| ≥ vmax with fade).
        fade: scale each pixel's opacity by sqrt(min(|m| / vmax, 1)), so pixels
            with no attribution show the digit untouched (the square root keeps
            middling values visible: their colour is already pale). False:
            constant opacity, as Captum's ``blended_heat_map`` (alpha_overlay)
            does.
    Returns:
        (H, W, 3) uint8 RGB.
    """
    if image.shape != m.shape:
        raise ValueError(
            f"image and attr must have the same (H, W), got {image.shape} and {m.shape}"
        )
    alpha = _alpha(m, vmax, opacity, fade)[..., None]
    grey = np.repeat(image[..., None] * (255.0 * OVERLAY_BRIGHTNESS), 3, axis=2)
    out = grey * (1.0 - alpha) + colorize(m, vmax, signed) * alpha
    return np.rint(out).astype(np.uint8)


def _alpha(m: np.ndarray, vmax: float, opacity: float, fade: bool) -> np.ndarray:
    if fade:
        return opacity * np.sqrt(np.clip(np.abs(m) / vmax, 0.0, 1.0))
    return np.full(m.shape, float(opacity))


def _png_url(rgb: np.ndarray) -> str:
    """(H, W) or (H, W, 3) uint8 → ``data:image/png;base64,...``."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _grey_rgb(image: np.ndarray) -> np.ndarray:
    return np.rint(image * 255.0).astype(np.uint8)


# ------------------------------------------------------------------ checks


def _check_signed(signed: object, m: np.ndarray | Sequence[np.ndarray]) -> bool:
    if signed is None:
        maps = [m] if isinstance(m, np.ndarray) else m
        return any(bool((x < 0).any()) for x in maps)
    if not isinstance(signed, bool):
        raise TypeError(f"signed must be True, False or None (auto), got {signed!r}")
    return signed


def _check_opacity(opacity: object) -> float:
    if not isinstance(opacity, numbers.Real) or not 0 <= opacity <= 1:
        raise ValueError(f"opacity must be a number in [0, 1], got {opacity!r}")
    return float(opacity)


def _check_size(size: object, name: str = "size") -> int:
    if not isinstance(size, numbers.Integral) or isinstance(size, bool) or size < 8:
        raise ValueError(f"{name} must be an int ≥ 8 (pixels), got {size!r}")
    return int(size)


def _check_vmax(vmax: object) -> float | None:
    if vmax is None:
        return None
    if not isinstance(vmax, numbers.Real) or not math.isfinite(vmax) or vmax <= 0:
        raise ValueError(
            f"vmax must be None (auto) or a finite number > 0, got {vmax!r}"
        )
    return float(vmax)


def _scale(signed: bool, vmax: float | None = None) -> alt.Scale:
    """The course's colour scale; domain [-vmax, vmax] / [0, vmax], or from data."""
    kwargs = {"interpolate": "rgb", "clamp": True, "nice": False, "zero": False}
    if vmax is not None:
        kwargs["domain"] = [-vmax, vmax] if signed else [0.0, vmax]
    if signed:
        return alt.Scale(range=list(SIGNED_COLORS), domainMid=0, **kwargs)
    return alt.Scale(range=list(MAGNITUDE_COLORS), **kwargs)


def _title(title: str | None) -> dict:
    return {} if title is None else {"title": str(title)}


# ------------------------------------------------------------------ single maps


def _pixel_records(m: np.ndarray, image: np.ndarray | None, extra=None) -> list:
    h, w = m.shape
    rows, cols = np.mgrid[0:h, 0:w]
    records = {
        "row": rows.ravel().tolist(),
        "col": cols.ravel().tolist(),
        "attr": np.round(m.ravel(), 6).tolist(),
    }
    if image is not None:
        records["pixel"] = np.round(image.ravel(), 4).tolist()
    if extra is not None:
        for key, value in extra.items():
            records[key] = np.round(value.ravel(), 4).tolist()
    keys = list(records)
    return [dict(zip(keys, vals)) for vals in zip(*records.values())]


def _tooltip(image: np.ndarray | None) -> list:
    tips = [alt.Tooltip("row:O"), alt.Tooltip("col:O", title="column")]
    if image is not None:
        tips.append(alt.Tooltip("pixel:Q", title="pixel value", format=".3f"))
    tips.append(alt.Tooltip("attr:Q", title="attribution", format=".4g"))
    return tips


def _pixel_axes(h: int, w: int):
    x = alt.X("col:O", axis=None, scale=alt.Scale(domain=list(range(w))))
    y = alt.Y("row:O", axis=None, scale=alt.Scale(domain=list(range(h))))
    return x, y


def _prepare(attr, image, reduce, signed, outlier_perc, vmax):
    m = to_map(attr, reduce)
    img = None if image is None else _to_image(image)
    if img is not None and img.shape != m.shape:
        raise ValueError(f"image must have the map's size {m.shape}, got {img.shape}")
    signed = _check_signed(signed, m)
    if not signed:
        m = np.abs(m)
    vmax = _check_vmax(vmax)
    if vmax is None:
        vmax = color_limit(m, outlier_perc)
    return m, img, signed, vmax


def heatmap(
    attr: torch.Tensor | np.ndarray,
    image: torch.Tensor | np.ndarray | None = None,
    *,
    reduce: str = "sum",
    signed: bool | None = None,
    outlier_perc: float = OUTLIER_PERC,
    vmax: float | None = None,
    size: int = 168,
    title: str | None = None,
    legend_title: str = "attribution",
) -> alt.Chart:
    """One saliency map as a heatmap with per-pixel tooltips.

    Args:
        attr: (H, W), (C, H, W) or (1, C, H, W) attribution.
        image: optional (H, W), (1, H, W) or (1, 1, H, W) input in [0, 1]; its
            pixel values are added to the tooltip. Default None.
        reduce: channel reduction, "sum" (signed, default), "abs_sum" or
            "max_abs" (magnitudes); see `to_map`.
        signed: True → diverging blue–white–red scale over [-vmax, vmax]
            (centred on 0); False → cool-to-warm scale over [0, vmax] of |map|;
            None (default) → signed iff the map has a negative value.
        outlier_perc: percent of the total |attribution| allowed to saturate
            (Captum's `outlier_perc`, default 2); 0 = scale to the maximum.
        vmax: fixed end of the scale (> 0), e.g. to share one scale between
            several heatmaps; overrides `outlier_perc`. Default None (per map).
        size: width of the map in pixels (height follows the aspect ratio).
        title: chart title. legend_title: the colour legend's title.
    Returns:
        An Altair chart: one rect per pixel with tooltips (row, column, pixel
        value, attribution) for maps up to `RECT_LIMIT` pixels; larger maps are
        drawn as one image mark.
    """
    m, img, signed, vmax = _prepare(attr, image, reduce, signed, outlier_perc, vmax)
    size = _check_size(size)
    h, w = m.shape
    height = max(1, round(size * h / w))
    color = alt.Color(
        "attr:Q", scale=_scale(signed, vmax), legend=alt.Legend(title=legend_title)
    )
    if h * w > RECT_LIMIT:
        return _image_chart(
            colorize(m, vmax, signed),
            size,
            height,
            legend_title,
            vmax,
            signed,
            **_title(title),
        )
    x, y = _pixel_axes(h, w)
    return (
        alt.Chart(alt.Data(values=_pixel_records(m, img)), **_title(title))
        .mark_rect()
        .encode(x=x, y=y, color=color, tooltip=_tooltip(img))
        .properties(width=size, height=height)
    )


def overlay(
    image: torch.Tensor | np.ndarray,
    attr: torch.Tensor | np.ndarray,
    *,
    opacity: float = 0.7,
    fade: bool = True,
    reduce: str = "sum",
    signed: bool | None = None,
    outlier_perc: float = OUTLIER_PERC,
    vmax: float | None = None,
    size: int = 168,
    title: str | None = None,
    legend_title: str = "attribution",
) -> alt.Chart:
    """The grey digit with the heatmap blended on top, with per-pixel tooltips.

    Args:
        image: (H, W), (1, H, W) or (1, 1, H, W) input in [0, 1], drawn black
            background, grey strokes (`OVERLAY_BRIGHTNESS`).
        attr: attribution of the same (H, W); see `heatmap`.
        opacity: opacity of the heat layer, in [0, 1]; default 0.7.
        fade: True (default) scales each pixel's opacity by sqrt(min(|attr| /
            vmax, 1)), so the digit shows through where the attribution is ~0; False
            blends every pixel with the same opacity (Captum's
            ``blended_heat_map``).
        reduce, signed, outlier_perc, vmax, size, title, legend_title: as in
            `heatmap`.
    Returns:
        A layered Altair chart (grey image rects + heat rects sharing one
        784-row dataset for a digit), or one image mark for maps larger than
        `RECT_LIMIT` pixels.
    """
    if image is None:
        raise TypeError("image must be a tensor or array, got None; use heatmap()")
    opacity = _check_opacity(opacity)
    m, img, signed, vmax = _prepare(attr, image, reduce, signed, outlier_perc, vmax)
    size = _check_size(size)
    h, w = m.shape
    height = max(1, round(size * h / w))
    color = alt.Color(
        "attr:Q", scale=_scale(signed, vmax), legend=alt.Legend(title=legend_title)
    )
    if h * w > RECT_LIMIT:
        rgb = blend(img, m, vmax, signed, opacity, fade)
        return _image_chart(
            rgb, size, height, legend_title, vmax, signed, **_title(title)
        )
    alpha = _alpha(m, vmax, opacity, fade)
    data = alt.Data(values=_pixel_records(m, img, {"alpha": alpha}))
    x, y = _pixel_axes(h, w)
    base = alt.Chart().encode(x=x, y=y, tooltip=_tooltip(img))
    grey = base.mark_rect().encode(
        color=alt.Color(
            "pixel:Q",
            scale=alt.Scale(domain=[0, 1], range=["#000000", _GREY_TOP]),
            legend=None,
        )
    )
    heat = base.mark_rect().encode(
        color=color, opacity=alt.Opacity("alpha:Q", scale=None, legend=None)
    )
    return (
        alt.layer(grey, heat, data=data, **_title(title))
        .resolve_scale(color="independent")
        .properties(width=size, height=height)
    )


def _legend_layer(signed: bool, title: str) -> alt.Chart:
    """An invisible mark that carries the colour scale, so a legend is drawn.

    Its domain comes from the data rows holding `_legend` (±vmax, or 0 and
    vmax), so a template chart can be reused with new data.
    """
    return (
        alt.Chart()
        .mark_point(opacity=0, size=0)
        .encode(
            color=alt.Color(
                "_legend:Q", scale=_scale(signed), legend=alt.Legend(title=title)
            )
        )
        .transform_filter("isValid(datum._legend)")
    )


def _legend_rows(signed: bool, vmax: float, **where) -> list[dict]:
    lo = -vmax if signed else 0.0
    return [{**where, "_legend": lo}, {**where, "_legend": vmax}]


def _image_layer(width: int, height: int, tooltip=None, data=None) -> alt.Chart:
    enc = {"url": alt.Url("url:N"), "x": alt.XValue(0), "y": alt.YValue(0)}
    if tooltip:
        enc["tooltip"] = tooltip
    return (
        alt.Chart(alt.Undefined if data is None else data)
        .mark_image(
            width=width,
            height=height,
            align="left",
            baseline="top",
            smooth=False,
            aria=False,
        )
        .encode(**enc)
    )


def _image_chart(rgb, width, height, legend_title, vmax, signed, **kwargs):
    values = [{"url": _png_url(rgb)}, *_legend_rows(signed, vmax)]
    return alt.layer(
        _image_layer(width, height).transform_filter("isValid(datum.url)"),
        _legend_layer(signed, legend_title),
        data=alt.Data(values=values),
        **kwargs,
    ).properties(width=width, height=height)


_GRID_TOOLTIP = (
    ("row:N", "row"),
    ("col:N", "column"),
    ("vmax:Q", "scale end (vmax)"),
)


@lru_cache(maxsize=64)
def _facet_template(
    signed: bool,
    legend_title: str,
    width: int,
    height: int,
    rows: tuple[str, ...] | None,
    cols: tuple[str, ...],
    row_title: str | None,
    column_title: str | None,
    tooltip: bool,
    spacing: int,
) -> tuple[alt.FacetChart, dict]:
    """An image-mark facet chart with empty data, and its spec (built once)."""
    tips = (
        [
            alt.Tooltip(f, title=t, **({"format": ".4g"} if f.endswith(":Q") else {}))
            for f, t in _GRID_TOOLTIP
        ]
        if tooltip
        else None
    )
    layer = alt.layer(
        _image_layer(width, height, tips).transform_filter("isValid(datum.url)"),
        _legend_layer(signed, legend_title),
    ).properties(width=width, height=height)
    facets = {
        "column": alt.Column(
            "col:N",
            sort=list(cols),
            title=column_title,
            header=alt.Header(
                labelFontSize=12 if rows is None else 11, labelLimit=width + spacing
            ),
        )
    }
    if rows is not None:
        facets["row"] = alt.Row(
            "row:N",
            sort=list(rows),
            title=row_title,
            header=alt.Header(labelAngle=0, labelAlign="left", labelFontSize=11),
        )
    chart = layer.facet(data=alt.Data(values=[]), spacing=spacing, **facets)
    spec = chart.to_dict(validate=False)
    spec.pop("datasets", None)
    spec.pop("title", None)
    return chart, spec


def _from_template(template: tuple, values: list[dict], title: str | None):
    """A new chart (and its spec) from a cached template: only data and title change.

    Copying a template costs a few milliseconds; building the chart through
    Altair's API and serialising it costs tens (it validates and deep-copies),
    which is what makes the explorers redraw fast.
    """
    chart0, spec0 = _facet_template(*template)
    kwds = {**chart0._kwds}
    spec = {**spec0, "data": {"values": values}}
    if title is not None:
        kwds["title"] = spec["title"] = str(title)
    # The template was validated when it was built and the new data are plain
    # records, so skip the re-validation (debug mode) and FacetChart.__init__'s
    # deep copies: build the object with SchemaBase's own constructor.
    with schemapi.debug_mode(False):
        kwds["data"] = alt.Data(values=values)
        chart = alt.FacetChart.__new__(alt.FacetChart)
        schemapi.SchemaBase.__init__(chart, **kwds)
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
    m, img, signed, vmax = _prepare(attr, image, reduce, signed, outlier_perc, vmax)
    size = _check_size(size)
    h, w = m.shape
    height = max(1, round(size * h / w))
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
        ("overlay", blend(img, m, vmax, signed, opacity, fade)),
    ]
    names = tuple(name for name, _ in cells)
    if len(set(names)) != len(names):
        raise ValueError(f"extra must not reuse the panel names {list(names)}")
    values = [{"col": n, "url": _png_url(rgb)} for n, rgb in cells]
    values += _legend_rows(signed, vmax, col="map")
    template = (
        signed,
        str(legend_title),
        size,
        height,
        None,
        names,
        None,
        None,
        False,
        6,
    )
    chart, spec = _from_template(template, values, title)
    return (chart, spec) if return_spec else chart


# ------------------------------------------------------------------ grids


def _labelled(obj: object, name: str) -> list[tuple[str, object]]:
    """Mapping or sequence of (label, value) pairs → list of (str, value)."""
    if isinstance(obj, Mapping):
        pairs = [(str(k), v) for k, v in obj.items()]
    elif (
        isinstance(obj, Sequence)
        and not isinstance(obj, str)
        and all(isinstance(p, tuple) and len(p) == 2 for p in obj)
    ):
        pairs = [(str(k), v) for k, v in obj]
    else:
        raise TypeError(
            f"{name} must be a dict {{label: …}} or a list of (label, …) pairs, "
            f"got {type(obj).__name__}"
        )
    if not pairs:
        raise ValueError(f"{name} must not be empty")
    labels = [k for k, _ in pairs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"{name} labels must be unique as strings, got {labels}")
    return pairs


def _grid_rows(maps: object) -> list[tuple[str, list[tuple[str, object]]]]:
    rows = []
    for row_label, row in _labelled(maps, "maps"):
        if isinstance(row, (torch.Tensor, np.ndarray)):
            a = row if row.ndim == 4 else row[:, None] if row.ndim == 3 else None
            if a is None:
                raise ValueError(
                    f"maps[{row_label!r}] must be (N, C, H, W) or (N, H, W) when "
                    f"given as one tensor, got shape {tuple(row.shape)}"
                )
            cols = [(str(i), a[i]) for i in range(a.shape[0])]
            if not cols:
                raise ValueError(f"maps[{row_label!r}] must not be empty")
        else:
            cols = _labelled(row, f"maps[{row_label!r}]")
        rows.append((row_label, cols))
    return rows


def _grid_images(image, col_labels: list[str]) -> tuple[dict | None, bool]:
    """→ ({column label: (H, W) image} or None, True if one image serves all)."""
    if image is None:
        return None, False
    if isinstance(image, Mapping):
        by_label = {str(k): v for k, v in image.items()}
        missing = [c for c in col_labels if c not in by_label]
        if missing:
            raise ValueError(f"image has no entry for the columns {missing}")
        return {c: _to_image(by_label[c], f"image[{c!r}]") for c in col_labels}, False
    arr = _to_numpy(image, "image")
    if arr.ndim == 4 and arr.shape[0] > 1:
        if arr.shape[0] != len(col_labels):
            raise ValueError(
                f"image holds {arr.shape[0]} images but the grid has "
                f"{len(col_labels)} columns; give one image per column or one "
                "image for all"
            )
        images = {
            c: _to_image(arr[i : i + 1], "image") for i, c in enumerate(col_labels)
        }
        return images, False
    one = _to_image(arr, "image")
    return {c: one for c in col_labels}, True


def grid(
    maps: Mapping | Sequence,
    image: torch.Tensor | np.ndarray | Mapping | None = None,
    *,
    scale: str = "shared",
    signed: bool | None = None,
    reduce: str = "sum",
    outlier_perc: float = OUTLIER_PERC,
    overlay: bool = True,
    show_input: bool = False,
    opacity: float = 0.7,
    fade: bool = True,
    size: int = 84,
    title: str | None = None,
    row_title: str | None = None,
    column_title: str | None = None,
    legend_title: str = "attribution",
    return_spec: bool = False,
):
    """Maps laid out rows × columns as one faceted chart (method / cascade figures).

    Examples::

        grid({"gradient": g, "IG": ig}, image=x, show_input=True)  # methods × images
        grid({"logits": {"gradient": g0, "Grad-CAM": c0},  # cascade: steps ×
              "fc2": {"gradient": g1, "Grad-CAM": c1}},     # methods, one digit
             image=x[0], scale="row")

    Args:
        maps: {row label: row}, or a list of (row label, row) pairs, in display
            order. A row is {column label: map} / list of (label, map) pairs,
            each map (H, W), (C, H, W) or (1, C, H, W); or one (N, C, H, W) /
            (N, H, W) tensor whose columns are labelled "0".."N-1". Rows may
            list different columns; missing cells stay empty.
        image: None (default); one image (H, W)/(1, H, W)/(1, 1, H, W) for
            every cell; an (N, 1, H, W) batch with one image per column (in
            column order); or {column label: image}.
        scale: "shared" (default: one colour scale for all maps), "row" (one
            per row, e.g. per randomization step), "column" or "independent"
            (one per map). Non-shared scales divide each group by its own vmax,
            so the legend reads "attribution / vmax" over [-1, 1] (or [0, 1]);
            the tooltip gives each cell's vmax.
        signed: True / False / None (auto: signed iff any map is negative); one
            choice for the whole grid so one legend reads every cell.
        reduce, outlier_perc: as in `heatmap` (vmax is computed per scale group).
        overlay: blend each map over its image (needs `image`; default True).
            False draws the bare maps.
        show_input: also draw the input, grey (needs `image`): a first row
            "input" when there is one image per column, a first column "input"
            when one image serves the whole grid. Default False.
        opacity, fade: overlay blending, as in `overlay`.
        size: width of each cell in pixels (default 84 = 3 px per digit pixel).
        title, row_title, column_title, legend_title: texts.
        return_spec: also return the spec dict (see `panels`). Default False.
    Returns:
        A faceted Altair chart with one image mark per cell (PNG data URL; see
        the module docstring) and one colour legend; with return_spec,
        (chart, spec).
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    if not isinstance(overlay, bool) or not isinstance(show_input, bool):
        raise TypeError("overlay and show_input must be True or False")
    opacity = _check_opacity(opacity)
    size = _check_size(size)
    rows = _grid_rows(maps)
    col_labels: list[str] = []
    for _, cols in rows:
        for c, _ in cols:
            if c not in col_labels:
                col_labels.append(c)
    cells = [(r, c, to_map(a, reduce)) for r, cols in rows for c, a in cols]
    shape = cells[0][2].shape
    for r, c, m in cells:
        if m.shape != shape:
            raise ValueError(
                f"all maps must have the same (H, W); maps[{r!r}][{c!r}] is "
                f"{m.shape}, the first is {shape}"
            )
    signed = _check_signed(signed, [m for _, _, m in cells])
    if not signed:
        cells = [(r, c, np.abs(m)) for r, c, m in cells]
    images, one_image = _grid_images(image, col_labels)
    if images is not None:
        for c, img in images.items():
            if img.shape != shape:
                raise ValueError(
                    f"image for column {c!r} is {img.shape}, maps are {shape}"
                )
    if show_input and images is None:
        raise ValueError("show_input=True needs image (one per column or one for all)")
    row_labels = [r for r, _ in rows]
    if show_input and ("input" in (col_labels if one_image else row_labels)):
        raise ValueError("show_input=True adds an 'input' row/column; rename yours")

    def group(r: str, c: str) -> tuple:
        return {"shared": (), "row": (r,), "column": (c,), "independent": (r, c)}[scale]

    groups: dict[tuple, list[np.ndarray]] = {}
    for r, c, m in cells:
        groups.setdefault(group(r, c), []).append(m)
    limits = {g: color_limit(np.stack(ms), outlier_perc) for g, ms in groups.items()}

    values = []
    if show_input and one_image:
        url = _png_url(_grey_rgb(next(iter(images.values()))))
        values += [
            {"row": r, "col": "input", "url": url, "vmax": None} for r in row_labels
        ]
        col_labels = ["input", *col_labels]
    elif show_input:
        values += [
            {
                "row": "input",
                "col": c,
                "url": _png_url(_grey_rgb(images[c])),
                "vmax": None,
            }
            for c in col_labels
        ]
        row_labels = ["input", *row_labels]
    for r, c, m in cells:
        vmax = limits[group(r, c)]
        if images is not None and overlay:
            rgb = blend(images[c], m, vmax, signed, opacity, fade)
        else:
            rgb = colorize(m, vmax, signed)
        values.append(
            {"row": r, "col": c, "url": _png_url(rgb), "vmax": float(f"{vmax:.4g}")}
        )

    if scale == "shared":
        legend_vmax, legend = next(iter(limits.values())), legend_title
    else:
        legend_vmax, legend = 1.0, f"{legend_title} / vmax ({scale})"
    values += _legend_rows(signed, legend_vmax, row=row_labels[0], col=col_labels[0])
    h, w = shape
    height = max(1, round(size * h / w))
    template = (
        signed,
        legend,
        size,
        height,
        tuple(row_labels),
        tuple(col_labels),
        None if row_title is None else str(row_title),
        None if column_title is None else str(column_title),
        True,
        4,
    )
    chart, spec = _from_template(template, values, title)
    return (chart, spec) if return_spec else chart


def digits(
    images: torch.Tensor | np.ndarray,
    labels: Sequence | torch.Tensor | np.ndarray | None = None,
    *,
    predictions: Sequence | torch.Tensor | np.ndarray | None = None,
    columns: int = 8,
    size: int = 56,
    title: str | None = None,
) -> alt.Chart:
    """A grid of digits, captioned with their labels (and predictions).

    Args:
        images: (N, 1, H, W) or (N, H, W) intensities in [0, 1], N ≥ 1.
        labels: optional N labels. predictions: optional N predicted classes
            (captions then read "7 → 7"; a wrong prediction is easy to spot).
        columns: digits per row (default 8). size: width of each digit in px.
        title: chart title.
    Returns:
        A faceted Altair chart, one image mark per digit (N data rows).
    """
    arr = _to_numpy(images, "images")
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4 or arr.shape[1] not in (1, 3):
        raise ValueError(
            f"images must have shape (N, 1, H, W) or (N, H, W), got {arr.shape}"
        )
    n = arr.shape[0]
    if n == 0:
        raise ValueError("images must hold at least one image, got 0")
    if not isinstance(columns, numbers.Integral) or columns < 1:
        raise ValueError(f"columns must be an int ≥ 1, got {columns!r}")
    size = _check_size(size)

    def as_list(v, name):
        if v is None:
            return None
        v = v.tolist() if isinstance(v, (torch.Tensor, np.ndarray)) else list(v)
        if len(v) != n:
            raise ValueError(
                f"{name} must have one entry per image ({n}), got {len(v)}"
            )
        return v

    labels = as_list(labels, "labels")
    predictions = as_list(predictions, "predictions")
    values = []
    for i in range(n):
        caption = f"#{i}"
        if labels is not None:
            caption += f"  {labels[i]}"
        if predictions is not None:
            caption += f" → {predictions[i]}"
        img = _to_image(arr[i : i + 1], "images")
        values.append({"i": i, "caption": caption, "url": _png_url(_grey_rgb(img))})
    h, w = arr.shape[2:]
    height = max(1, round(size * h / w))
    return (
        _image_layer(
            size,
            height,
            [alt.Tooltip("caption:N", title="digit")],
            data=alt.Data(values=values),
        )
        .properties(width=size, height=height)
        .facet(
            facet=alt.Facet(
                "caption:N",
                sort=alt.EncodingSortField("i"),
                title=None,
                header=alt.Header(labelFontSize=10, labelPadding=2),
            ),
            columns=int(columns),
            spacing=4,
            **_title(title),
        )
    )


def confusion_matrix(
    cm: torch.Tensor | np.ndarray | Sequence,
    labels: Sequence | None = None,
    *,
    normalize: bool = False,
    size: int = 280,
    title: str | None = None,
) -> alt.Chart:
    """A confusion matrix as a heatmap with the counts written in the cells.

    Args:
        cm: (K, K) counts, rows = true class, columns = predicted class.
        labels: K class names (default 0..K-1).
        normalize: colour by the fraction of each true class (row) instead of
            counts. Default False.
        size: width and height in pixels. title: chart title.
    Returns:
        A layered Altair chart (K² rows): rects coloured white → blue plus text.
    """
    a = _to_numpy(np.asarray(cm) if isinstance(cm, (list, tuple)) else cm, "cm")
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise ValueError(f"cm must be a square (K, K) matrix, got shape {a.shape}")
    if not np.isfinite(a).all() or (a < 0).any():
        raise ValueError("cm must hold finite, non-negative counts")
    k = a.shape[0]
    labels = [str(i) for i in range(k)] if labels is None else [str(x) for x in labels]
    if len(labels) != k:
        raise ValueError(f"labels must have {k} entries, got {len(labels)}")
    size = _check_size(size)
    totals = a.sum(axis=1, keepdims=True)
    frac = np.divide(a, totals, out=np.zeros_like(a), where=totals > 0)
    value = frac if normalize else a
    records = [
        {
            "true": labels[i],
            "predicted": labels[j],
            "count": float(a[i, j]),
            "fraction": round(float(frac[i, j]), 4),
            "value": float(value[i, j]),
        }
        for i in range(k)
        for j in range(k)
    ]
    vmax = float(value.max()) or 1.0
    x = alt.X("predicted:O", sort=labels, title="predicted class")
    y = alt.Y("true:O", sort=labels, title="true class")
    tooltip = [
        "true:O",
        "predicted:O",
        "count:Q",
        alt.Tooltip("fraction:Q", format=".1%"),
    ]
    base = alt.Chart().encode(x=x, y=y, tooltip=tooltip)
    rects = base.mark_rect().encode(
        color=alt.Color(
            "value:Q",
            scale=alt.Scale(domain=[0, vmax], range=["#ffffff", "#08306b"]),
            legend=alt.Legend(title="fraction of row" if normalize else "count"),
        )
    )
    text = base.mark_text(fontSize=10).encode(
        text=alt.Text("fraction:Q", format=".0%") if normalize else alt.Text("count:Q"),
        color=alt.condition(
            alt.datum.value > vmax / 2, alt.value("white"), alt.value("black")
        ),
    )
    return alt.layer(
        rects, text, data=alt.Data(values=records), **_title(title)
    ).properties(width=size, height=size)


# ------------------------------------------------------------------ output


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
