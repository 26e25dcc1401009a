"""Arrays, colours and argument checks shared by every plotting module."""

from __future__ import annotations

import base64
import io
import math
import numbers
from collections.abc import Sequence

import altair as alt
import numpy as np
import torch

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
# The JupyterLab notebook column on a 1280 px laptop screen: grids wider than
# this wrap their columns onto several blocks of rows.
COLUMN_WIDTH = 900


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
        signed: True → blue–white–red over [-vmax, vmax]; False → plasma
            (dark purple → yellow) over [0, vmax] applied to |m|.
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


# Signed maps are drawn at full colour with the digit as a thin outline on top
# (`outline_overlay`), upsampled this many times so the outline is smooth.
OUTLINE_UPSAMPLE = 4
OUTLINE_LEVEL = 0.4  # the contour of the ink at this intensity
OUTLINE_RGB = (38, 38, 38)  # dark grey: visible on the white centre and the light tints


def outline(image: np.ndarray, upsample: int = OUTLINE_UPSAMPLE) -> np.ndarray:
    """The contour of the ink, (H·k, W·k) bool, k = `upsample`.

    The image is upsampled bilinearly (half-pixel centres), thresholded at
    `OUTLINE_LEVEL`, and the boundary pixels of the inked region are kept
    (inked, with a 4-neighbour that is not): a one-pixel line at k× resolution.
    """
    t = torch.as_tensor(np.asarray(image, dtype=np.float32))[None, None]
    big = torch.nn.functional.interpolate(
        t, scale_factor=upsample, mode="bilinear", align_corners=False
    )[0, 0].numpy()
    ink = big > OUTLINE_LEVEL
    pad = np.pad(ink, 1, constant_values=False)
    inner = pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
    return ink & ~inner


def outline_overlay(
    image: np.ndarray, m: np.ndarray, vmax: float, signed: bool,
    upsample: int = OUTLINE_UPSAMPLE,
) -> np.ndarray:
    """The map at full colour with the digit's outline drawn over it.

    How the course shows a signed map on a digit: the white zero of the
    blue–white–red scale is white on the ink too, so "no attribution" can never
    be mistaken for a grey stroke (as it can with `blend`), and the outline
    says where the ink is.

    Args:
        image: (H, W) grey image in [0, 1]. m: (H, W) map.
        vmax, signed: as in `colorize`. upsample: k (default 4).
    Returns:
        (H·k, W·k, 3) uint8 RGB: each map pixel a k×k block, the outline in
        `OUTLINE_RGB`.
    """
    if image.shape != m.shape:
        raise ValueError(
            f"image and attr must have the same (H, W), got {image.shape} and {m.shape}"
        )
    rgb = colorize(m, vmax, signed)
    rgb = np.repeat(np.repeat(rgb, upsample, axis=0), upsample, axis=1)
    rgb[outline(image, upsample)] = OUTLINE_RGB
    return rgb


def overlay_rgb(image, m, vmax, signed, opacity=0.7, fade=True) -> np.ndarray:
    """The course's overlay: `outline_overlay` for signed maps, `blend` (grey
    digit under the faded magnitude colours) for magnitude maps."""
    if signed:
        return outline_overlay(image, m, vmax, signed)
    return blend(image, m, vmax, signed, opacity, fade)


def _alpha(m: np.ndarray, vmax: float, opacity: float, fade: bool) -> np.ndarray:
    if fade:
        return opacity * np.sqrt(np.clip(np.abs(m) / vmax, 0.0, 1.0))
    return np.full(m.shape, float(opacity))


def _png_url(rgb: np.ndarray) -> str:
    """(H, W) or (H, W, 3) uint8 → ``data:image/png;base64,...``.

    Images above 64 × 64 pixels (the upsampled outline overlays) are stored
    with a 256-colour palette: a third of the bytes, colours within a few
    units of 255, so a grid of 90 of them stays a few hundred KB.
    """
    from PIL import Image

    buf = io.BytesIO()
    picture = Image.fromarray(rgb)
    if rgb.ndim == 3 and rgb.shape[0] * rgb.shape[1] > 64 * 64:
        picture = picture.quantize(256, method=Image.Quantize.FASTOCTREE)
        picture.save(buf, format="PNG", compress_level=6)
    else:
        picture.save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _grey_rgb(image: np.ndarray) -> np.ndarray:
    return np.rint(image * 255.0).astype(np.uint8)


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
