"""Pearson correlation: the one definition the metrics, sanity checks and notebooks use."""

from __future__ import annotations

import torch


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson r of matching rows of two (N, P) tensors: (N,), float64.

    r = Σ (a_p − ā)(b_p − b̄) / √(Σ (a_p − ā)² · Σ (b_p − b̄)²), clipped to
    [−1, 1] (rounding can step just past). NaN where a row is constant (0/0).
    """
    a = a.detach().double()
    b = b.detach().double()
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(
            f"a and b must be (N, P) with the same shape, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    den = (a.square().sum(1) * b.square().sum(1)).sqrt()
    r = (a * b).sum(1) / den
    return torch.where(den > 0, r, torch.full_like(r, torch.nan)).clamp(-1.0, 1.0)


def pearson_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson r of every row of a (N, P) with every row of b (M, P): (N, M), float64.

    Entry (i, j) is `pearson(a[i:i+1], b[j:j+1])`; NaN where either row is constant.
    """
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"a and b must be (N, P) and (M, P), got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )
    n, m = a.shape[0], b.shape[0]
    rows = a.unsqueeze(1).expand(n, m, -1).reshape(n * m, -1)
    cols = b.unsqueeze(0).expand(n, m, -1).reshape(n * m, -1)
    return pearson(rows, cols).reshape(n, m)
