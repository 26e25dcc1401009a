"""Digits and confusion matrices."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import altair as alt
import numpy as np
import torch

from ._base import (
    COLUMN_WIDTH,
    _check_size,
    _grey_rgb,
    _png_url,
    _title,
    _to_image,
    _to_numpy,
)
from .maps import _image_layer


def _per_image(v, name: str, n: int) -> list | None:
    """`v` (None, a sequence, tensor or array) as a list of n entries."""
    if v is None:
        return None
    v = v.tolist() if isinstance(v, (torch.Tensor, np.ndarray)) else list(v)
    if len(v) != n:
        raise ValueError(f"{name} must have one entry per image ({n}), got {len(v)}")
    return v


def _captions(n: int, labels: list | None, predictions: list | None) -> list[str]:
    """Captions "#3: 5" for class labels (→ prediction); a text label ("black",
    "occluded") alone, so it cannot read like a digit's number ("#0 black")."""
    numbered = labels is None or all(
        isinstance(v, numbers.Integral) or (isinstance(v, str) and v.isdigit())
        for v in labels
    )
    captions = []
    for i in range(n):
        caption = f"#{i}" if numbered else ""
        if labels is not None:
            caption += f": {labels[i]}" if numbered else str(labels[i])
        if predictions is not None:
            caption += f" → {predictions[i]}"
        captions.append(caption)
    return captions


def digits(
    images: torch.Tensor | np.ndarray,
    labels: Sequence | torch.Tensor | np.ndarray | None = None,
    *,
    predictions: Sequence | torch.Tensor | np.ndarray | None = None,
    columns: int | None = None,
    size: int = 120,
    title: str | None = None,
) -> alt.Chart:
    """A grid of digits, captioned with their labels (and predictions).

    Args:
        images: (N, 1, H, W) or (N, H, W) intensities in [0, 1], N ≥ 1.
        labels: optional N labels. Class labels (ints) are captioned "#i: 7",
            text labels (e.g. baseline names) by the text alone.
            predictions: optional N predicted classes (captions then read
            "#i: 7 → 7"; a wrong prediction is easy to spot).
        columns: digits per row; default None: as many as fit the notebook
            column (`COLUMN_WIDTH`, 7 at the default size).
        size: width of each digit in px (default 120, about 4 px per pixel
            of a 28 × 28 digit: enough to read its shape).
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
    size = _check_size(size)
    if columns is None:
        columns = max(1, min(n, COLUMN_WIDTH // (size + 4)))
    if isinstance(columns, bool) or not isinstance(columns, numbers.Integral) or columns < 1:
        raise ValueError(f"columns must be None or an int ≥ 1, got {columns!r}")

    labels = _per_image(labels, "labels", n)
    captions = _captions(n, labels, _per_image(predictions, "predictions", n))
    values = []
    for i, caption in enumerate(captions):
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
