"""Shapley values of the features of table rows, and the course's wine example."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..saliency.validate import check_int, check_model, target_tensor
from .game import MAX_PLAYERS, Game, ShapleyResult, _check_output, solve_exact

# ----------------------------------------------------------------- tables


def _check_table(x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError("x must be a floating-point torch.Tensor of shape (N, D)")
    if x.dim() != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(
            f"x must have shape (N, D) with N, D ≥ 1, got {tuple(x.shape)}"
        )
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x must be finite; it holds NaN or Inf values")
    return x


def exact_features(
    model: nn.Module,
    x: torch.Tensor,
    target,
    baseline=0.0,
    groups=None,
    output: str = "logit",
    batch_size: int = 4096,
) -> ShapleyResult:
    """Exact Shapley values of the features (or feature groups) of table rows.

    The game of `exact` with players = features: v(S) = f_target(x_S), x_S
    keeping the features in S (or in the groups in S) and setting the others
    to the baseline ("interventional" Shapley values: a removed feature takes
    the baseline's value, whatever the others are).

    Args:
        model: maps (N, D) rows to (N, K) logits.
        x: (N, D) rows (looped, N · 2^P evaluations).
        target: class index, or one per row.
        baseline: a number, or a (D,) / (N, D) tensor (e.g. the training
            mean). Default 0 (the mean of standardised features).
        groups: None (each feature a player, D ≤ 20), or a length-D sequence
            of group ids 0 … G − 1 (G ≤ 20 players; every id used).
        output: "logit" (default) or "prob".
        batch_size: most coalitions per model call (default 4096 rows).
    Returns:
        ShapleyResult with values (N, P) and maps None; patch_ids holds the
        (D,) feature → player map.
    """
    check_model(model)
    x = _check_table(x)
    n = x.shape[0]
    output = _check_output(output)
    batch_size = check_int(batch_size, "batch_size", 1)
    ids = _players(groups, x.shape[1]).to(x.device)
    p = int(ids.max()) + 1
    idx = target_tensor(target, n, x.device)
    base = _table_baseline(baseline, x)
    game = Game(x.detach(), ids, p, idx, base, output, batch_size)
    member, worths, values = solve_exact(model, game, "exact_features")
    f_x, f_base = worths[:, -1], worths[:, 0]
    return ShapleyResult(
        values.clone(),
        None,
        f_x.clone(),
        f_base.clone(),
        ids.clone(),
        2**p,
        member.clone(),
    )


def _players(groups: object, d: int) -> torch.Tensor:
    """(D,) int64: the player of each feature (groups None: one per feature)."""
    if groups is None:
        ids = torch.arange(d)
    else:
        ids = torch.as_tensor(groups)
        if ids.shape != (d,) or ids.is_floating_point() or ids.dtype == torch.bool:
            raise ValueError(f"groups must hold one integer group id per feature ({d})")
        if ids.min() < 0 or set(ids.tolist()) != set(range(int(ids.max()) + 1)):
            raise ValueError("groups must use every id 0 … G − 1 (no gaps)")
    p = int(ids.max()) + 1
    if p > MAX_PLAYERS:
        raise ValueError(
            f"x has {p} players; at most {MAX_PLAYERS} (pass groups= to merge features)"
        )
    return ids


def _table_baseline(baseline: object, x: torch.Tensor) -> torch.Tensor:
    """A number or a (D,) / (N, D) tensor, expanded to x's shape, dtype and device."""
    if isinstance(baseline, bool) or not isinstance(
        baseline, (int, float, torch.Tensor)
    ):
        raise TypeError("baseline must be a number or a tensor broadcastable to x")
    base = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
    try:
        return base.expand_as(x)
    except RuntimeError:
        raise ValueError(
            f"baseline must be broadcastable to x's shape {tuple(x.shape)}, "
            f"got {tuple(base.shape)}"
        ) from None


# ------------------------------------------------ a tabular example (notebook 10)


class RowsAsImages(nn.Module):
    """Wraps a model of (N, D) rows so it takes (N, 1, 1, D) "images".

    The saliency methods take (N, C, H, W) inputs; a table row is a 1 × D image
    with no spatial meaning, so `sal.integrated_gradients(RowsAsImages(m),
    x.view(N, 1, 1, D), ...)` gives IG over the features.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = check_model(model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.flatten(1))


@dataclass(frozen=True)
class TabularExample:
    """A small MLP trained on scikit-learn's bundled wine data (offline).

    Attributes:
        model: (N, 13) standardised features → (N, 3) logits, eval mode.
        x_train, y_train, x_test, y_test: standardised float32 features
            (train split's mean 0, std 1) and int64 cultivar labels.
        feature_names: the 13 chemical measurements.
        test_accuracy: fraction of test rows classified right.
    """

    model: nn.Module
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    feature_names: tuple
    test_accuracy: float


def wine_example(seed: int = 0, epochs: int = 300, hidden: int = 16) -> TabularExample:
    """Train a 13 → hidden → 3 ReLU MLP on the wine data (178 rows, 3 cultivars).

    The data ship inside scikit-learn (`sklearn.datasets.load_wine`, no
    download). A stratified 70/30 split (seeded), features standardised with
    the training mean and std (so the "average wine" baseline is 0), full-batch
    Adam (lr 0.01, weight decay 1e-3) for `epochs` steps: under a second on a
    laptop CPU, test accuracy ≈ 0.95–1.0. Deterministic for a given seed.
    """
    from sklearn.datasets import load_wine
    from sklearn.model_selection import train_test_split

    seed = check_int(seed, "seed", 0)
    epochs = check_int(epochs, "epochs", 1)
    hidden = check_int(hidden, "hidden", 1)
    raw = load_wine()
    x_tr, x_te, y_tr, y_te = train_test_split(
        raw.data, raw.target, test_size=0.3, random_state=seed, stratify=raw.target
    )
    mean, std = x_tr.mean(0), x_tr.std(0)
    x_tr = torch.tensor((x_tr - mean) / std, dtype=torch.float32)
    x_te = torch.tensor((x_te - mean) / std, dtype=torch.float32)
    y_tr, y_te = torch.tensor(y_tr), torch.tensor(y_te)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(13, hidden), nn.ReLU(), nn.Linear(hidden, 3))
        opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-3)
        for _ in range(epochs):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x_tr), y_tr)
            loss.backward()
            opt.step()
    model.eval()
    for param in model.parameters():
        param.grad = None
    with torch.no_grad():
        accuracy = float((model(x_te).argmax(1) == y_te).float().mean())
    return TabularExample(
        model, x_tr, y_tr, x_te, y_te, tuple(raw.feature_names), accuracy
    )
