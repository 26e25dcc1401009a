"""Single maps: `heatmap` and `overlay` (one rect per pixel, with tooltips),
and the image-mark layers the larger charts reuse."""

from __future__ import annotations

import altair as alt
import numpy as np
import torch

from ._base import (
    OUTLIER_PERC,
    RECT_LIMIT,
    _alpha,
    _check_opacity,
    _check_signed,
    _check_size,
    _check_vmax,
    _png_url,
    _scale,
    _title,
    _to_image,
    color_limit,
    colorize,
    overlay_rgb,
    to_map,
)


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


def _prepare(attr, image, reduce, signed, outlier_perc, vmax, size):
    """(map, image or None, signed, vmax, size, height) of one checked map."""
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
    size = _check_size(size)
    h, w = m.shape
    return m, img, signed, vmax, size, max(1, round(size * h / w))


def _attr_color(signed: bool, vmax: float, legend_title: str) -> alt.Color:
    return alt.Color(
        "attr:Q", scale=_scale(signed, vmax), legend=alt.Legend(title=legend_title)
    )


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
            (centred on 0); False → the plasma scale (dark purple → yellow)
            over [0, vmax] of |map|;
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
    m, img, signed, vmax, size, height = _prepare(
        attr, image, reduce, signed, outlier_perc, vmax, size
    )
    h, w = m.shape
    color = _attr_color(signed, vmax, legend_title)
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
    m, img, signed, vmax, size, height = _prepare(
        attr, image, reduce, signed, outlier_perc, vmax, size
    )
    h, w = m.shape
    rgb = overlay_rgb(img, m, vmax, signed, opacity, fade)
    chart = _image_chart(rgb, size, height, legend_title, vmax, signed, **_title(title))
    if h * w > RECT_LIMIT:
        return chart
    # The picture is one image (no seams between pixel rects in PNG exports);
    # transparent rects on top carry the per-pixel tooltips.
    alpha = _alpha(m, vmax, opacity, fade)
    x, y = _pixel_axes(h, w)
    tips = (
        alt.Chart(alt.Data(values=_pixel_records(m, img, {"alpha": alpha})))
        .mark_rect(opacity=0)
        .encode(x=x, y=y, tooltip=_tooltip(img))
    )
    return alt.layer(*chart.layer, tips, data=chart.data, **_title(title)).properties(
        width=size, height=height
    )


def _legend_layer(signed: bool, title: str, orient: str = "right") -> alt.Chart:
    """An invisible mark that carries the colour scale, so a legend is drawn.

    Its domain comes from the data rows holding `_legend` (±vmax, or 0 and
    vmax), so a template chart can be reused with new data.
    """
    return (
        alt.Chart()
        .mark_point(opacity=0, size=0)
        .encode(
            color=alt.Color(
                "_legend:Q",
                scale=_scale(signed),
                legend=alt.Legend(
                    title=title,
                    orient=orient,
                    **({"direction": "horizontal", "gradientLength": 240,
                        "titleLimit": 400}
                       if orient in ("top", "bottom") else {}),
                ),
            )
        )
        .transform_filter("isValid(datum._legend)")
    )


def _legend_rows(signed: bool, vmax: float, **where) -> list[dict]:
    lo = -vmax if signed else 0.0
    return [{**where, "_legend": lo}, {**where, "_legend": vmax}]


def _image_layer(width: int, height: int, tooltip=None, data=None, at: int = 0):
    """Image marks of `width` × `height` px, top left corner at (at, at)."""
    enc = {"url": alt.Url("url:N"), "x": alt.XValue(at), "y": alt.YValue(at)}
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
