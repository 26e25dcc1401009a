"""Saliency maps over colour photos: one channel aggregation, stated, for every map.

A photo's attribution has three channels; a picture needs one value per pixel.
Here it is always the lecture's: the mean over channels of |attribution|,
m(i, j) = (1/C) Σ_c |E_c(i, j)| (`channel_map`); Grad-CAM's one-channel map is
its own aggregate. Each map is scaled to its own end of scale vmax (Captum's
`outlier_perc=2` rule, `color_limit`) and drawn with the magnitude colours
(plasma) over the photo turned grey, with opacity fading to 0 where the map is
0, so the photo's own colours cannot be mistaken for attribution
(`photo_overlay_rgb`). `photo_maps` lays out the photo and its maps;
`picture` draws one map ahead, for a caller that redraws the same maps often
(`widgets.PhotoExplainer` keeps the pictures of the maps it shows).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from ._base import (
    OUTLIER_PERC,
    _alpha,
    _check_opacity,
    _check_size,
    _png_url,
    _to_numpy,
    color_limit,
    colorize,
)
from .grid import _check_negligible, _greyed, scale_label
from .layout import FacetLayout, facet_chart
from .maps import _legend_rows

AGGREGATION = "mean |attribution| over channels"
PHOTO_BRIGHTNESS = 0.85  # the grey photo under the heat
# Short enough for Vega's legend title limit (about 180 px); each map's vmax is
# written under it.
LEGEND_TITLE = "channel mean |attr| ÷ vmax"


def channel_map(attr: torch.Tensor | np.ndarray) -> np.ndarray:
    """(1, C, H, W), (C, H, W) or (H, W) → (H, W): mean over channels of |attr|."""
    a = _to_numpy(attr, "attr")
    if a.ndim == 4:
        if a.shape[0] != 1:
            raise ValueError(f"attr must hold one map, got a batch of shape {a.shape}")
        a = a[0]
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"attr must have shape (1, C, H, W), (C, H, W) or (H, W), "
                         f"got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("attr must be finite; it holds NaN or Inf values")
    return np.abs(a).mean(axis=0)


def photo_rgb(photo: torch.Tensor | np.ndarray) -> np.ndarray:
    """(1, 3, H, W) or (3, H, W) in [0, 1] → (H, W, 3) float in [0, 1]."""
    a = _to_numpy(photo, "photo")
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 3 or a.shape[0] not in (1, 3):
        raise ValueError(f"photo must have shape (1, 3, H, W) or (3, H, W), got {a.shape}")
    return np.clip(np.repeat(a, 3 // a.shape[0], axis=0), 0, 1).transpose(1, 2, 0)


def photo_overlay_rgb(rgb: np.ndarray, m: np.ndarray, vmax: float,
                      opacity: float = 0.8, fade: bool = True) -> np.ndarray:
    """The photo in grey (× `PHOTO_BRIGHTNESS`) with the plasma map blended on top.

    Args:
        rgb: (H, W, 3) photo in [0, 1]. m: (H, W) map ≥ 0 of the same size.
        vmax: end of the colour scale. opacity: of the heat at m ≥ vmax.
        fade: opacity × sqrt(min(m / vmax, 1)), so the photo shows where m ≈ 0.
    Returns:
        (H, W, 3) uint8.
    """
    if rgb.shape[:2] != m.shape:
        raise ValueError(f"photo and map must have the same (H, W), got "
                         f"{rgb.shape[:2]} and {m.shape}")
    grey = rgb @ np.array([0.299, 0.587, 0.114]) * (255.0 * PHOTO_BRIGHTNESS)
    alpha = _alpha(m, vmax, opacity, fade)[..., None]
    out = grey[..., None] * (1 - alpha) + colorize(m, vmax, signed=False) * alpha
    return np.rint(out).astype(np.uint8)


def _upsampled(m: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if m.shape == shape:
        return m
    t = torch.as_tensor(m, dtype=torch.float64)[None, None]
    return torch.nn.functional.interpolate(t, size=shape, mode="bilinear",
                                           align_corners=False)[0, 0].numpy()


@dataclass(frozen=True)
class Picture:
    """One map drawn as `photo_maps` draws it (a PNG data URL, its vmax and its
    largest value), made by `picture`; `photo_maps` takes it in place of an
    attribution and reuses the PNG."""

    url: str
    vmax: float
    peak: float


def picture(photo: torch.Tensor | np.ndarray, attr, *, overlay: bool = True,
            opacity: float = 0.8, outlier_perc: float = OUTLIER_PERC) -> Picture:
    """The map of `attr` as `photo_maps` draws it, for reuse (arguments as there)."""
    return _picture(photo_rgb(photo), attr, overlay, _check_opacity(opacity),
                    outlier_perc)


def _picture(rgb: np.ndarray, attr, overlay: bool, opacity: float,
             outlier_perc: float) -> Picture:
    if isinstance(attr, Picture):
        return attr
    m = _upsampled(channel_map(attr), rgb.shape[:2])
    vmax = color_limit(m, outlier_perc)
    drawn = (photo_overlay_rgb(rgb, m, vmax, opacity) if overlay
             else colorize(m, vmax, signed=False))
    return Picture(_png_url(drawn), vmax, float(m.max()))


def photo_maps(
    photo: torch.Tensor | np.ndarray,
    maps: Mapping,
    *,
    overlay: bool = True,
    show_photo: bool = True,
    opacity: float = 0.8,
    outlier_perc: float = OUTLIER_PERC,
    size: int = 168,
    title: str | None = None,
    row_title: str | None = None,
    negligible: float = 0.0,
):
    """The photo and its maps side by side, each as mean |attribution| over channels.

    Args:
        photo: (1, 3, H, W) in [0, 1].
        maps: {column: attribution} for one row, or {row: {column: attribution}}
            for a grid (e.g. cascade steps × methods). An attribution is
            (1, C, H, W) (C = 3 or 1; Grad-CAM's coarse maps are upsampled
            bilinearly to the photo's size if needed), or a `Picture` of it
            drawn before (`picture`, with the same photo and settings).
        overlay: draw each map over the grey photo (default) or alone.
        show_photo: a first column "photo" with the photo in colour.
        opacity: of the heat layer at its top value. outlier_perc: Captum's
            rule for each map's vmax (default 2 %). size: cell width in pixels.
        title, row_title: chart and row-header titles.
        negligible: a map whose largest value is at most `negligible` × the
            chart's largest is drawn light grey and labelled "≈ 0" instead of
            being stretched to full colour. Default 0: only all-zero maps
            (a Grad-CAM after its ReLU), because the course's photo grids are
            cascades, whose maps shrink by orders of magnitude as the layers go
            random while their pattern is what is compared (each map's vmax
            under it shows the shrinking). `NEGLIGIBLE` (1e-3) is `grid`'s.
    Returns:
        An Altair facet chart; the legend runs from 0 to each map's own vmax
        (`LEGEND_TITLE`), written under each map ("vmax 0.0123").
    """
    opacity = _check_opacity(opacity)
    size = _check_size(size)
    negligible = _check_negligible(negligible)
    rgb = photo_rgb(photo)
    grid = maps if all(isinstance(v, Mapping) for v in maps.values()) else None
    rows = {None: maps} if grid is None else grid
    cols = ["photo"] if show_photo else []
    values = []
    drawn = {(row, col): _picture(rgb, attr, overlay, opacity, outlier_perc)
             for row, cells in rows.items() for col, attr in cells.items()}
    top = max(p.peak for p in drawn.values())
    for row, cells in rows.items():
        where = {} if row is None else {"row": str(row)}
        if show_photo:
            values.append({**where, "col": "photo",
                           "url": _png_url(np.rint(rgb * 255).astype(np.uint8))})
        for col in cells:
            p = drawn[(row, col)]
            if p.peak <= negligible * top:  # its own scale would stretch ≈ 0 to colour
                url = _png_url(_greyed(None, rgb.shape[:2]))
                text = scale_label(p.vmax, p.peak)
            else:
                url, text = p.url, scale_label(p.vmax)
            values.append({**where, "col": str(col), "url": url, "scale": text})
            if str(col) not in cols:
                cols.append(str(col))
    first = {"col": cols[-1], **({} if grid is None else {"row": str(next(iter(rows)))})}
    values += _legend_rows(False, 1.0, **first)
    height = max(1, round(size * rgb.shape[0] / rgb.shape[1]))
    layout = FacetLayout(
        False, LEGEND_TITLE, size, height, cols=tuple(cols),
        rows=None if grid is None else tuple(str(r) for r in rows),
        row_title=row_title, legend_orient="bottom", scale_text=True,
    )
    chart, _ = facet_chart(layout, values, title)
    return chart
