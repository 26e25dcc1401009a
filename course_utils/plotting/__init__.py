"""Altair pictures of saliency maps: heatmaps, overlays, method grids, export.

Colours follow the lecture. Signed maps (gradient, input × gradient, IG) use a
diverging blue–white–red scale centred on zero (`SIGNED_COLORS`, domain
``[-vmax, vmax]``); magnitude maps (|gradient|, Grad-CAM, occlusion drops ≥ 0)
use Matplotlib's "plasma" scale, dark blue/purple = low to orange/yellow =
high (`MAGNITUDE_COLORS`, domain ``[0, vmax]``). Images are shown as they are:
intensity 0 = black background, 1 = white stroke; image row 0 is drawn at
the top.

Overlays. A signed map over a digit is drawn at full colour with the digit's
outline on top (`outline_overlay`): the white zero of the diverging scale is
then white on the ink too, so "no attribution" cannot be mistaken for a grey
stroke. A magnitude map is blended over the grey digit (`blend`). Grids wider
than the notebook column (`COLUMN_WIDTH`, 900 px) wrap their columns.

How the charts stay small (Altair refuses inline data above 5,000 rows):

* `heatmap` draws one ``rect`` per pixel (784 rows for a digit) so every
  pixel has a tooltip (row, column, pixel value, attribution); `overlay`
  draws one image (no seams between rects in PNG exports) under transparent
  tooltip rects. Maps above `RECT_LIMIT` pixels switch to a single image mark
  (no per-pixel tooltip) so no input can trip the row limit.
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

The package, one concern per module: `_base` (arrays, colours, checks),
`maps` (`heatmap`, `overlay`), `layout` (`FacetLayout`, cached facet charts,
`panels`, `stack`), `grid`, `figures` (`digits`, `confusion_matrix`), `curves`
(`error_vs_cost`), `export` (`save`,
`mimebundle`, `enable_renderer`) and `sanity` (the sanity checks' charts).
Charts are built with Altair's public API only.
"""

from __future__ import annotations

from ._base import (
    COLUMN_WIDTH,
    MAGNITUDE_COLORS,
    OUTLIER_PERC,
    OUTLINE_RGB,
    OUTLINE_UPSAMPLE,
    OVERLAY_BRIGHTNESS,
    RECT_LIMIT,
    REDUCTIONS,
    SCALES,
    SIGNED_COLORS,
    _check_size,  # noqa: F401  (widgets use it)
    blend,
    color_limit,
    colorize,
    outline,
    outline_overlay,
    to_map,
)
from .curves import error_vs_cost
from .export import enable_renderer, mimebundle, save
from .figures import confusion_matrix, digits
from .grid import grid
from .layout import FacetLayout, facet_chart, panels, stack
from .maps import heatmap, overlay

__all__ = [
    "COLUMN_WIDTH",
    "MAGNITUDE_COLORS",
    "OUTLIER_PERC",
    "OUTLINE_RGB",
    "OUTLINE_UPSAMPLE",
    "OVERLAY_BRIGHTNESS",
    "RECT_LIMIT",
    "REDUCTIONS",
    "SCALES",
    "SIGNED_COLORS",
    "FacetLayout",
    "blend",
    "color_limit",
    "colorize",
    "confusion_matrix",
    "digits",
    "enable_renderer",
    "error_vs_cost",
    "facet_chart",
    "grid",
    "heatmap",
    "mimebundle",
    "outline",
    "outline_overlay",
    "overlay",
    "panels",
    "save",
    "stack",
    "to_map",
]
