"""The game every Shapley function plays: coalitions, weights, worths, efficiency."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import torch

from ..saliency.core import chunks, eval_mode, select
from ..saliency.validate import check_choice, check_int

OUTPUTS = ("logit", "prob")
MAX_PLAYERS = 20  # 2^20 ≈ 10^6 model evaluations per image; beyond is too slow
INF_WEIGHT = 1_000_000.0  # Captum's KernelShap weight of the empty and full coalitions


@dataclass(frozen=True)
class ShapleyResult:
    """Shapley values of one game per row.

    Attributes:
        values: (N, P) φ per player (patch or feature), float64.
        maps: (N, 1, H, W) each pixel holds its patch's φ (as occlusion fills
            a patch with its drop), on x's dtype and device; None for tables.
        f_x: (N,) v(all players) = f_target(x).
        f_baseline: (N,) v(∅) = f_target(baseline).
        patch_ids: (H, W) int64 player of each pixel (None for tables), or
            (D,) feature → group for tables.
        n_evaluations: model evaluations spent per row.
        coalitions: (n_evaluations, P) bool, the coalitions evaluated for the
            last row (KernelSHAP's draws; all 2^P for the exact values).
        worths: (N, n_evaluations) float64 v(S) for those coalitions (for the
            exact values in `coalitions(P)` order: the worth of S is at index
            Σ_{i∈S} 2^i, so v(all) − v(all ∖ {i}) is occlusion's drop).
    """

    values: torch.Tensor
    maps: torch.Tensor | None
    f_x: torch.Tensor
    f_baseline: torch.Tensor
    patch_ids: torch.Tensor | None
    n_evaluations: int
    coalitions: torch.Tensor
    worths: torch.Tensor | None = None

    @property
    def gap(self) -> torch.Tensor:
        """(N,) Σ φ − (f(x) − f(baseline)): zero for exact values (efficiency)."""
        return self.values.sum(1) - (self.f_x - self.f_baseline)


# ------------------------------------------------------------- the textbook


def shapley_textbook(value: Callable[[frozenset], float], n_players: int) -> list:
    """φ_i = Σ_{S ⊆ P∖{i}} |S|!(P−|S|−1)!/P! · [v(S ∪ {i}) − v(S)], by loops.

    Args:
        value: v(S) for a frozenset S of player indices 0 … n_players − 1.
        n_players: P, 1 … MAX_PLAYERS (each v(S) is computed once, 2^P calls).
    Returns:
        A list of P floats.
    """
    if not callable(value):
        raise TypeError(f"value must be a function v(S), got {type(value).__name__}")
    p = check_int(n_players, "n_players", 1, MAX_PLAYERS)
    worth = {}
    for bits in range(2**p):
        s = frozenset(i for i in range(p) if bits >> i & 1)
        worth[s] = float(value(s))
    phi = [0.0] * p
    for s, v_s in worth.items():
        for i in range(p):
            if i not in s:
                weight = math.factorial(len(s)) * math.factorial(p - len(s) - 1)
                phi[i] += weight / math.factorial(p) * (worth[s | {i}] - v_s)
    return phi


# ---------------------------------------------------------- batched pieces


@lru_cache(maxsize=8)
def coalitions(n_players: int) -> torch.Tensor:
    """All 2^P coalitions as a (2^P, P) bool matrix; row s has bit i of s in column i.

    Row 0 is ∅, the last row holds every player (cached; do not modify).
    """
    p = check_int(n_players, "n_players", 1, MAX_PLAYERS)
    rows = torch.arange(2**p)[:, None]
    return (rows >> torch.arange(p)) & 1 == 1


@lru_cache(maxsize=8)
def shapley_matrix(n_players: int) -> torch.Tensor:
    """W (2^P, P), float64, such that φ = v · W for worths v (…, 2^P) in `coalitions` order.

    W[S, i] = (|S| − 1)!(P − |S|)!/P! if i ∈ S (S is S′ ∪ {i} with |S′| = |S| − 1),
    and −|S|!(P − |S| − 1)!/P! if i ∉ S. Columns sum to 0, and v · W · 1 =
    v(P) − v(∅) exactly (efficiency is a property of W). Cached; do not modify.
    """
    member = coalitions(n_players)
    p = member.shape[1]
    size = member.sum(1, keepdim=True)
    # w(s) = s!(P − s − 1)!/P! for s = 0 … P − 1, from exact integer factorials
    fact = math.factorial
    w = torch.tensor(
        [fact(s) * fact(p - s - 1) / fact(p) for s in range(p)] + [0.0],
        dtype=torch.float64,
    )
    w_in = w[(size - 1).clamp(min=0)]  # (|S|-1)!(P-|S|)!/P!
    w_out = w[size]  # |S|!(P-|S|-1)!/P! (0 for the full coalition: never used)
    return torch.where(member, w_in, -w_out)


def _check_output(output: str) -> str:
    return check_choice(output, "output", OUTPUTS)


def _play(model, x_row, base_row, ids, member, target_row, output, batch_size):
    """Worths v(S) (n_coalitions,) of one row for coalitions `member` (n, P).

    `ids` maps each input value (a pixel, all channels; or a table feature)
    to its player; `target_row` is the row's class as a 1-element tensor.
    """
    worths = []
    for part in chunks(member.shape[0], batch_size):
        keep = member[part][:, ids]  # pixel (feature) kept if its player is in S
        if x_row.dim() == 3:
            keep = keep[:, None]  # every channel of a kept pixel
        logits = model(torch.where(keep, x_row, base_row))
        if output == "prob":
            logits = torch.softmax(logits, dim=1)
        worths.append(select(logits, target_row.expand(keep.shape[0])).double())
    return torch.cat(worths)


def _check_efficiency(values, f_x, f_base, name="exact") -> None:
    gap = (values.sum(1) - (f_x - f_base)).abs()
    tol = 1e-6 * (1 + (f_x - f_base).abs())
    if bool((gap > tol).any()):
        raise RuntimeError(
            f"{name}: efficiency violated, Σφ − (f(x) − f(baseline)) = "
            f"{gap.max().item():.3g} (the Shapley weights are wrong)"
        )


@dataclass(frozen=True)
class Game:
    """One game per row of x: its players, target, baseline and how it is scored."""

    x: torch.Tensor  # (N, C, H, W) images or (N, D) table rows, detached
    ids: torch.Tensor  # (H, W) player of each pixel, or (D,) of each feature
    p: int  # number of players
    idx: torch.Tensor  # (N,) class of each row
    base: torch.Tensor  # baseline expanded to x
    output: str
    batch_size: int

    def play(self, model, i: int, member: torch.Tensor) -> torch.Tensor:
        """Worths v(S) of row i for the coalitions `member` (n, P)."""
        return _play(
            model, self.x[i], self.base[i], self.ids, member, self.idx[i : i + 1],
            self.output, self.batch_size,
        )  # fmt: skip


def solve_exact(model, game: Game, name: str) -> tuple:
    """Every row's game over all 2^P coalitions: φ = v · W (`shapley_matrix`).

    Returns (coalitions (2^P, P), worths (N, 2^P), values (N, P)); efficiency
    Σφ = f(x) − f(baseline) is checked (RuntimeError naming `name`).
    """
    member = coalitions(game.p).to(game.x.device)
    with eval_mode(model), torch.inference_mode():
        worths = torch.stack([game.play(model, i, member) for i in range(len(game.x))])
    values = worths @ shapley_matrix(game.p).to(game.x.device)
    _check_efficiency(values, worths[:, -1], worths[:, 0], name)
    return member, worths, values
