"""Occlusion sensitivity."""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import nn

from .baselines import resolve_baseline
from .core import check_batch_size, eval_mode, grid_chunks, select
from .validate import check_choice, check_input, check_int, check_model, target_tensor

OUTPUTS = ("prob", "logit")


def occlusion_textbook(
    model, x, target, patch=4, stride=None, baseline="grey", output="prob"
):
    """s(p) = mean over windows W ∋ p of [f_c(x) − f_c(x̃_W)]: two loops, one forward each.

    x̃_W is x with window W (all channels) replaced by the baseline; f_c the
    target's softmax probability ("prob") or logit. Model in eval mode.
    """
    stride = patch if stride is None else stride
    n, c, h, w = x.shape
    x, x0 = x.detach(), resolve_baseline(baseline, x, model).expand_as(x)
    rows = torch.arange(n)

    def f(z):  # f_c of every row
        logits = model(z)
        return (torch.softmax(logits, 1) if output == "prob" else logits)[rows, target]

    with torch.no_grad():
        clean, total, count = f(x), torch.zeros(n, h, w), torch.zeros(h, w)
        for top in range(0, h - patch + stride, stride):
            for left in range(0, w - patch + stride, stride):
                win = (..., slice(top, top + patch), slice(left, left + patch))
                occluded = x.clone()
                occluded[win] = x0[win]
                total[win] += (clean - f(occluded))[:, None, None]
                count[win] += 1
    return (total / count)[:, None].expand(n, c, h, w).clone()


def _windows(size: int, patch: int, stride: int) -> int:
    """Captum's window count along one axis: ⌈(size − patch)/stride⌉ + 1."""
    return math.ceil((size - patch) / stride) + 1


def _check_patch_stride(patch, stride, height: int, width: int) -> tuple[int, int]:
    patch = check_int(patch, "patch", 1, min(height, width))
    stride = patch if stride is None else check_int(stride, "stride", 1, patch)
    return patch, stride


def forward_passes_occlusion(
    image_shape, patch: int = 4, stride: int | None = None
) -> int:
    """Model evaluations `occlusion` spends: one per window, plus the clean input.

    Windows are counted as Captum counts them: ⌈(H − patch)/stride⌉ + 1 rows of
    windows times ⌈(W − patch)/stride⌉ + 1 columns (the last window in a row
    or column may be cut off by the border). A 28×28 digit with patch 4 and
    stride 4 costs 7·7 + 1 = 50 evaluations; with stride 1, 25·25 + 1 = 626.

    Args:
        image_shape: (H, W), (C, H, W) — cost per image — or (N, C, H, W) —
            cost for the batch (N times as much).
        patch: square window side, 1 … min(H, W). Default 4.
        stride: window step, 1 … patch; default patch.
    Returns:
        The number of rows the model is evaluated on.
    """
    if (
        not isinstance(image_shape, (tuple, list, torch.Size))
        or not 2 <= len(image_shape) <= 4
    ):
        raise ValueError(
            "image_shape must be (H, W), (C, H, W) or (N, C, H, W), "
            f"got {image_shape!r}"
        )
    dims = [check_int(d, "image_shape", 1) for d in image_shape]
    height, width = dims[-2:]
    patch, stride = _check_patch_stride(patch, stride, height, width)
    per_image = _windows(height, patch, stride) * _windows(width, patch, stride) + 1
    return per_image * (dims[0] if len(dims) == 4 else 1)


def window_matrix(
    height: int, width: int, patch: int, stride: int, device=None, dtype=torch.float32
) -> torch.Tensor:
    """Window-membership matrix M: (n_windows, H·W), M[j, p] = 1 if pixel p ∈ window j.

    Window (a, b) covers rows a·stride … a·stride + patch − 1 and columns
    b·stride … b·stride + patch − 1, clipped to the image; j = a·n_cols + b.
    M = rows ⊗ cols of the two `axis_indicators`; it is for reading and
    small tests only: `occlusion` never builds it (it has n_windows × H·W
    entries, 9.8 GB for stride 1 at 224×224) and folds the drops back with
    the two 1-D indicators instead.
    """
    rows = axis_indicators(height, patch, stride, device).to(dtype)
    cols = axis_indicators(width, patch, stride, device).to(dtype)
    return (rows[:, None, :, None] * cols[None, :, None, :]).reshape(-1, height * width)


def axis_indicators(size: int, patch: int, stride: int, device=None) -> torch.Tensor:
    """(n_windows along the axis, size) bool: [a, i] = pixel i ∈ the a-th window."""
    starts = torch.arange(_windows(size, patch, stride), device=device) * stride
    pos = torch.arange(size, device=device)
    return (pos >= starts[:, None]) & (pos < starts[:, None] + patch)


@lru_cache(maxsize=16)
def _separable_windows(height, width, patch, stride, device, dtype):
    """The 1-D pieces of a window setting, cached (small; callers must not modify).

    Windows are separable: window j = (a, b) covers rows_ind[a] ⊗ cols_ind[b]
    (`axis_indicators`). Returns rows_pad (1 + n_a, H) and cols_pad
    (1 + n_b, W) bool, the indicators with a leading all-False row; grid_a,
    grid_b (1 + n_a·n_b,) int64, the padded row/column indicator of each grid
    entry: entry 0 (a = b = 0, nothing occluded) is the clean input, entry
    g ≥ 1 is window g − 1; and 1/count (H, W), the reciprocal of the number
    of windows covering each pixel. Memory O(n_windows + H·W), never
    windows × pixels (9.8 GB for stride 1 at 224×224).
    """
    rows_ind = axis_indicators(height, patch, stride, device)
    cols_ind = axis_indicators(width, patch, stride, device)
    n_a, n_b = rows_ind.shape[0], cols_ind.shape[0]
    rows_pad = torch.cat([rows_ind.new_zeros(1, height), rows_ind])
    cols_pad = torch.cat([cols_ind.new_zeros(1, width), cols_ind])
    zero = torch.zeros(1, dtype=torch.long, device=device)
    grid_a = torch.cat(
        [zero, torch.arange(1, n_a + 1, device=device).repeat_interleave(n_b)]
    )
    grid_b = torch.cat([zero, torch.arange(1, n_b + 1, device=device).repeat(n_a)])
    count = rows_ind.sum(0).to(dtype)[:, None] * cols_ind.sum(0).to(dtype)[None, :]
    return rows_pad, cols_pad, grid_a, grid_b, 1 / count


def occlusion(
    model: nn.Module,
    x: torch.Tensor,
    target,
    patch: int = 4,
    stride: int | None = None,
    baseline="grey",
    output: str = "prob",
    batch_size: int | None = None,
) -> torch.Tensor:
    """s(p) = mean over windows W ∋ p of [f_c(x) − f_c(x̃_W)].

    x̃_W is x with the square window W (all channels) replaced by the baseline;
    f_c is the softmax probability of the target ("prob", as in the lecture)
    or its logit ("logit"). Each pixel gets the average drop over the windows
    that cover it (one window when stride = patch).

    Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks",
    ECCV 2014.

    Args:
        model: maps (N, C, H, W) inputs to (N, K) logits.
        x: (N, C, H, W) inputs.
        target: class index, or one per row.
        patch: window side in pixels, 1 … min(H, W). Default 4.
        stride: step between windows, 1 … patch; default patch (a tiling).
            Windows start at 0, stride, 2·stride, … while they still reach
            new pixels (Captum's ⌈(H − patch)/stride⌉ + 1 per axis); the last
            one may be cut off by the border.
        baseline: the occluding value: a number, a tensor broadcastable to x,
            or a name of `baselines.BASELINE_NAMES`: "grey" (default:
            `model.normalize.mean`, zero after normalisation), "black"/"zero"
            (0), "blur" or "noise" (as for `integrated_gradients`).
        output: "prob" (softmax probability, default) or "logit".
        batch_size: most rows per model call; the N·(windows + 1) copies
            (clean input included) go through in chunks of ⌊batch_size/N⌋
            whole windows (or batch_size rows of one window when N is
            larger). Default `default_batch_size(x, model)` (256 rows for
            SmallCNN on digits). `forward_passes_occlusion` gives the count.
    Returns:
        (N, C, H, W) drops (equal across channels), detached, on x's device.

    Captum: `Occlusion(f).attribute(x, sliding_window_shapes=(C, patch,
    patch), strides=(C, stride, stride), baselines=baseline, target=target,
    perturbations_per_eval=…)` with f = softmax ∘ model for "prob", f = model
    for "logit". Departures: Captum's default stride is 1 and its default
    baseline 0; ours are patch and grey. Same windows and per-pixel averaging.
    """
    check_model(model)
    check_input(x)
    n, c, height, width = x.shape
    patch, stride = _check_patch_stride(patch, stride, height, width)
    output = check_choice(output, "output", OUTPUTS)
    batch_size = check_batch_size(batch_size, x, model)
    idx = target_tensor(target, n, x.device)
    base = resolve_baseline(baseline, x, model).expand_as(x)
    x = x.detach()
    rows_pad, cols_pad, grid_a, grid_b, inv_count = _separable_windows(
        height, width, patch, stride, x.device, x.dtype
    )
    n_grid = grid_a.shape[0]
    # One (windows + 1, N) buffer filled block by block: no per-block tensors
    # kept alive (each would pin its logits; thousands of them at stride 1).
    scores = x.new_empty(n_grid, n)
    with eval_mode(model), torch.inference_mode():
        # Window-major like Captum; a block of w windows × r rows is one
        # broadcast where() of (w, 1, 1, H, W) masks over the (r, C, H, W)
        # rows; the masks are built per block (O(batch × image) memory).
        for windows, rows in grid_chunks(n_grid, n, batch_size):
            a, b = grid_a[windows], grid_b[windows]
            masks = rows_pad[a][:, :, None] & cols_pad[b][:, None, :]
            copies = torch.where(masks[:, None, None], base[rows], x[rows])
            logits = model(copies.flatten(0, 1))
            if output == "prob":
                logits = torch.softmax(logits, dim=1)
            picked = select(logits, idx[rows].repeat(copies.shape[0]))
            scores[windows, rows] = picked.view(copies.shape[0], -1)
        attr = _fold(scores, rows_pad[1:], cols_pad[1:], inv_count)  # (N, H, W)
    return attr[:, None].expand(n, c, height, width).clone()


def _fold(scores, rows_ind, cols_ind, inv_count) -> torch.Tensor:
    """(N, H, W) mean drop per pixel from the (windows + 1, N) scores (clean first).

    Σ_j drop_j · 1[p ∈ window j] = rows_indᵀ · drops · cols_ind per row, divided
    by the number of windows covering p (also separable); rows_ind (n_a, H) and
    cols_ind (n_b, W) say which pixel rows and columns each window covers.
    """
    n = scores.shape[1]
    drops = (scores[:1] - scores[1:]).T.reshape(n, rows_ind.shape[0], cols_ind.shape[0])
    r, c = rows_ind.to(scores.dtype), cols_ind.to(scores.dtype)
    return (r.T @ drops @ c) * inv_count
