"""`grid`: maps laid out rows × columns as one faceted chart.

Built in three steps, each a small function: the cells (labels, maps, the
images under them), the scale groups (one vmax per group of cells), and the
values (one data row per cell, coloured and PNG-encoded), which fill a cached
`FacetLayout`.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import altair as alt
import numpy as np
import torch

from ._base import (
    COLUMN_WIDTH,
    OUTLIER_PERC,
    SCALES,
    _check_opacity,
    _check_signed,
    _check_size,
    _grey_rgb,
    _png_url,
    _to_image,
    _to_numpy,
    color_limit,
    colorize,
    overlay_rgb,
    to_map,
)
from .layout import FRAME_WIDTH, FacetLayout, facet_chart
from .maps import _legend_rows

# A scale group whose largest |value| is at most this share of the grid's
# largest is drawn greyed out (`NEGLIGIBLE_GREY`) and labelled "≈ 0".
NEGLIGIBLE = 1e-3
NEGLIGIBLE_GREY = 228


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


@dataclass(frozen=True)
class _Cells:
    """What the grid draws: labels in display order, the maps, the images."""

    row_labels: list[str]
    col_labels: list[str]
    maps: list[tuple[str, str, np.ndarray]]  # (row, column, (H, W) map)
    signed: bool
    images: dict[str, np.ndarray] | None  # column label -> (H, W) image
    one_image: bool  # one image serves every column

    @property
    def shape(self) -> tuple[int, int]:
        return self.maps[0][2].shape


def _collect_maps(maps, reduce: str):
    """(row labels, column labels in first-seen order, [(row, col, map)])."""
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
    return [r for r, _ in rows], col_labels, cells


def _cells(maps, image, signed, reduce: str, show_input: bool) -> _Cells:
    row_labels, col_labels, cells = _collect_maps(maps, reduce)
    signed = _check_signed(signed, [m for _, _, m in cells])
    if not signed:
        cells = [(r, c, np.abs(m)) for r, c, m in cells]
    images, one_image = _grid_images(image, col_labels)
    shape = cells[0][2].shape
    for c, img in (images or {}).items():
        if img.shape != shape:
            raise ValueError(f"image for column {c!r} is {img.shape}, maps are {shape}")
    if show_input and images is None:
        raise ValueError("show_input=True needs image (one per column or one for all)")
    if show_input and ("input" in (col_labels if one_image else row_labels)):
        raise ValueError("show_input=True adds an 'input' row/column; rename yours")
    return _Cells(row_labels, col_labels, cells, signed, images, one_image)


def _group_key(scale: str, row: str, col: str) -> tuple:
    """Which cells share a colour scale: all, per row, per column or none."""
    return {"shared": (), "row": (row,), "column": (col,), "independent": (row, col)}[
        scale
    ]


def _scale_limits(cells: _Cells, scale: str, outlier_perc: float) -> dict:
    """{group key: vmax} over the maps of each scale group."""
    groups: dict[tuple, list[np.ndarray]] = {}
    for r, c, m in cells.maps:
        groups.setdefault(_group_key(scale, r, c), []).append(m)
    return {g: color_limit(np.stack(ms), outlier_perc) for g, ms in groups.items()}


def _negligible_groups(cells: _Cells, scale: str, negligible: float) -> set:
    """The scale groups whose largest |value| is below `negligible` × the
    grid's largest: their own scale would stretch ≈ 0 to full colour."""
    if scale == "shared":  # one scale: a ≈ 0 map is drawn pale by itself
        return set()
    peaks: dict[tuple, float] = {}
    for r, c, m in cells.maps:
        g = _group_key(scale, r, c)
        peaks[g] = max(peaks.get(g, 0.0), float(np.abs(m).max()))
    top = max(peaks.values())
    return {g for g, p in peaks.items() if p <= negligible * top}


def scale_label(vmax: float, peak: float | None = None) -> str:
    """The text under a map drawn on its own scale: "vmax 0.279", or for a
    map greyed out as negligible, "≈ 0 (max 3.1e-05)" (peak = its largest
    |value|; "= 0" when it is exactly zero)."""
    if peak is None:
        return f"vmax {vmax:.3g}"
    return "= 0" if peak == 0 else f"≈ 0 (max {peak:.2g})"


def _greyed(image: np.ndarray | None, shape) -> np.ndarray:
    """A negligible map's picture: light grey, the digit faintly in it."""
    base = np.full(shape, NEGLIGIBLE_GREY, dtype=np.float64)
    if image is not None:
        base = base - 45.0 * image
    return np.rint(np.repeat(base[..., None], 3, axis=2)).astype(np.uint8)


def _input_values(cells: _Cells) -> tuple[list[dict], list[str], list[str]]:
    """The grey input cells, and the row/column labels with "input" added."""
    if cells.one_image:
        url = _png_url(_grey_rgb(next(iter(cells.images.values()))))
        values = [
            {"row": r, "col": "input", "url": url, "vmax": None}
            for r in cells.row_labels
        ]
        return values, cells.row_labels, ["input", *cells.col_labels]
    values = [
        {"row": "input", "col": c, "url": _png_url(_grey_rgb(cells.images[c])),
         "vmax": None}
        for c in cells.col_labels
    ]
    return values, ["input", *cells.row_labels], cells.col_labels


def _map_values(cells: _Cells, limits: dict, scale: str, overlay: bool,
                opacity: float, fade: bool, negligible: set) -> list[dict]:
    """One data row per map: coloured (over its image with `overlay`) as PNG;
    with per-map scales, its scale as text ("vmax …", or "≈ 0" and greyed)."""
    values = []
    for r, c, m in cells.maps:
        group = _group_key(scale, r, c)
        vmax = limits[group]
        image = None if cells.images is None else cells.images[c]
        row = {"row": r, "col": c, "vmax": float(f"{vmax:.4g}")}
        if group in negligible:
            rgb = _greyed(image if overlay else None, m.shape)
            row["scale"] = scale_label(vmax, float(np.abs(m).max()))
        else:
            if image is not None and overlay:
                rgb = overlay_rgb(image, m, vmax, cells.signed, opacity, fade)
            else:
                rgb = colorize(m, vmax, cells.signed)
            if scale != "shared":
                row["scale"] = scale_label(vmax)
        values.append({**row, "url": _png_url(rgb)})
    return values


def _legend(scale: str, limits: dict, legend_title: str) -> tuple[float, str]:
    """(vmax the legend spans, its title): shared scales show the attribution,
    the others attribution / vmax over [-1, 1] or [0, 1]."""
    if scale == "shared":  # magnitudes are comparable across cells: say so
        return next(iter(limits.values())), f"{legend_title} (one scale for all)"
    return 1.0, f"{legend_title} / vmax (each map's own vmax is written under it)"


def _check_negligible(negligible: object) -> float:
    if (isinstance(negligible, bool) or not isinstance(negligible, numbers.Real)
            or not 0 <= negligible < 1):
        raise ValueError(f"negligible must be a number in [0, 1), got {negligible!r}")
    return float(negligible)


def _check_options(scale, overlay, show_input, opacity, size) -> tuple[float, int]:
    """`grid`'s option checks; returns the checked opacity and size."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    if not isinstance(overlay, bool) or not isinstance(show_input, bool):
        raise TypeError("overlay and show_input must be True or False")
    return _check_opacity(opacity), _check_size(size)


def _values(cells, limits, scale, overlay, opacity, fade, show_input, negligible):
    """The grid's data rows (the input's first, then the maps') and its
    row and column labels (with "input" when the input is shown)."""
    values, row_labels, col_labels = [], cells.row_labels, cells.col_labels
    if show_input:
        values, row_labels, col_labels = _input_values(cells)
    greyed = _negligible_groups(cells, scale, negligible)
    values += _map_values(cells, limits, scale, overlay, opacity, fade, greyed)
    return values, row_labels, col_labels


def _wrapped_chart(
    cells, values, legend, row_labels, col_labels, size, title, row_title, column_title,
    scale_text=False, frame=False,
):
    """The faceted chart and its spec; a grid wider than `COLUMN_WIDTH` is
    split into blocks of columns stacked vertically, sharing one legend."""
    legend_vmax, legend = legend
    values += _legend_rows(
        cells.signed, legend_vmax, row=row_labels[0], col=col_labels[0]
    )
    h, w = cells.shape
    cell = size + (2 * FRAME_WIDTH if frame else 0)
    blocks = _column_blocks(col_labels, row_labels, cell, row_title)

    def block_chart(cols, block_values, block_title):
        layout = FacetLayout(
            cells.signed,
            legend,
            size,
            max(1, round(size * h / w)),
            cols=tuple(cols),
            rows=tuple(row_labels),
            row_title=None if row_title is None else str(row_title),
            column_title=None if column_title is None else str(column_title),
            tooltip=True,
            spacing=4,
            legend_orient="bottom",
            scale_text=scale_text,
            frame=frame,
        )
        return facet_chart(layout, block_values, block_title)

    if len(blocks) == 1:
        return block_chart(col_labels, values, title)
    charts = []
    for cols in blocks:
        keep = set(cols)
        block_values = [v for v in values if v.get("col") in keep and "url" in v]
        block_values += _legend_rows(
            cells.signed, legend_vmax, row=row_labels[0], col=cols[0]
        )
        charts.append(block_chart(cols, block_values, None)[0])
    chart = alt.vconcat(*charts, spacing=12, **({} if title is None else
                                               {"title": str(title)}))
    chart = chart.resolve_scale(color="shared")
    return chart, chart.to_dict()


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
    size: int = 120,
    title: str | None = None,
    row_title: str | None = None,
    column_title: str | None = None,
    legend_title: str = "attribution",
    negligible: float = NEGLIGIBLE,
    frame: bool = False,
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
            so the legend reads "attribution / vmax" over [-1, 1] (or [0, 1]),
            and each map states its own scale under it ("vmax 0.279"); the
            tooltip gives it too.
        signed: True / False / None (auto: signed iff any map is negative); one
            choice for the whole grid so one legend reads every cell. Signed
            overlays draw the map at full colour with the digit's outline on
            top (`outline_overlay`), magnitude overlays the grey digit under
            faded colours (`blend`).
        reduce, outlier_perc: as in `heatmap` (vmax is computed per scale group).
        overlay: blend each map over its image (needs `image`; default True).
            False draws the bare maps.
        show_input: also draw the input, grey (needs `image`): a first row
            "input" when there is one image per column, a first column "input"
            when one image serves the whole grid. Default False.
        opacity, fade: overlay blending, as in `overlay`.
        size: width of each cell in pixels (default 120, about 4 px per digit
            pixel). A grid wider than `COLUMN_WIDTH` (900 px, the notebook
            column) wraps: its columns are split into blocks drawn one below
            the other, each with its column labels, sharing one legend.
        title, row_title, column_title, legend_title: texts.
        negligible: with non-shared scales, a scale group whose largest
            |value| is at most `negligible` × the grid's largest (default
            1e-3) is not stretched to its own vmax: its maps are drawn light
            grey and labelled "≈ 0 (max …)" ("= 0" when exactly zero). A
            probability drop of 0.0002 next to one of 0.99 is no evidence,
            however red its own scale would paint it. 0 greys out only
            all-zero maps.
        frame: draw each picture inset on a dark ground (white strokes at a
            patch's border stay visible on the white page). Default False.
        return_spec: also return the spec dict (see `panels`). Default False.
    Returns:
        A faceted Altair chart with one image mark per cell (PNG data URL; see
        the module docstring) and one colour legend; with return_spec,
        (chart, spec).
    """
    opacity, size = _check_options(scale, overlay, show_input, opacity, size)
    negligible = _check_negligible(negligible)
    cells = _cells(maps, image, signed, reduce, show_input)
    limits = _scale_limits(cells, scale, outlier_perc)
    values, rows, cols = _values(
        cells, limits, scale, overlay, opacity, fade, show_input, negligible
    )
    legend = _legend(scale, limits, legend_title)
    chart, spec = _wrapped_chart(
        cells, values, legend, rows, cols, size, title, row_title, column_title,
        scale_text=scale != "shared", frame=bool(frame),
    )
    return (chart, spec) if return_spec else chart


def _column_blocks(col_labels, row_labels, size: int, row_title) -> list[list[str]]:
    """Split the columns so that each block fits `COLUMN_WIDTH`: the cells and
    the row labels (about 6.5 px a character; the legend sits below)."""
    label_w = min(160, 12 + 6.5 * max(map(len, row_labels))) + (20 if row_title else 0)
    per_row = int((COLUMN_WIDTH - label_w) // (size + 4))
    per_row = max(1, per_row)
    if len(col_labels) <= per_row:
        return [list(col_labels)]
    n_blocks = -(-len(col_labels) // per_row)
    per_block = -(-len(col_labels) // n_blocks)  # balanced blocks
    return [
        list(col_labels[i : i + per_block])
        for i in range(0, len(col_labels), per_block)
    ]
