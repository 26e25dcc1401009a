"""Faithfulness of saliency maps: deletion / insertion curves and completeness.

A map is *faithful* when the pixels it ranks high are the ones the model's
output actually depends on. Petsiuk, Das & Saenko, "RISE: Randomized Input
Sampling for Explanation of Black-box Models", BMVC 2018, measure it with two
curves:

* deletion: replace pixels by a baseline, most important first, and track
  the target probability; a faithful map makes it fall fast (low area under
  the curve, AUC);
* insertion: start from the baseline and reveal pixels, most important
  first; a faithful map makes the probability rise fast (high AUC).

A random pixel order (`random_attr`) gives the reference curve a map has to
beat. Every step of every image goes through the model in chunked forward
passes (no Python loop over steps).

Also here: `completeness_gap` (Σ attr − (f(x) − f(x₀)), the axiom integrated
gradients satisfies; Sundararajan et al., 2017), `mass_share` (how much of a
map's absolute mass falls inside a region, e.g. the shortcut tag) and
`faithfulness_table`, which ranks several methods at once. Three numbers
that describe maps themselves, used where a notebook compares maps:
`map_correlation` (Pearson correlation per image, for "the same shape?"),
`total_variation` (how grainy a map is) and `diffuseness` (normalised
entropy: how evenly a map spreads its mass).

What these numbers do not say: a map that scores well here tracks what this
model uses under this kind of perturbation; it says nothing about whether
the model is right, and the ranking depends on the baseline (deleting to
black favours maps built against a black baseline, such as IG's and
input × gradient's). Interpretability is not correctness.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from .saliency.baselines import resolve_baseline
from .saliency.core import check_batch_size, chunks, eval_mode, select
from .saliency.validate import (
    check_choice,
    check_input,
    check_int,
    check_model,
    target_tensor,
)

KINDS = ("deletion", "insertion")
OUTPUTS = ("prob", "logit")
RANDOM = "random"


@dataclass(frozen=True)
class Curve:
    """Deletion or insertion curves of N images, one point per step.

    Attributes:
        kind: "deletion" or "insertion".
        n_changed: (K,) int64 pixels replaced (deletion) or revealed
            (insertion) at each of the K = n_steps + 1 points: 0 … H·W,
            non-decreasing.
        fraction: (K,) n_changed / (H·W), from 0 to 1.
        scores: (N, K) target probability (or logit) at each point.
        auc: (N,) area under each image's curve, ∫ score d(fraction)
            (trapezoid rule); for probabilities it lies in [0, 1].
        n_evaluated: images actually run through the model, ≤ N·K (a step
            that changes only pixels already equal to the baseline repeats
            the previous image, and its score is copied).
    """

    kind: str
    n_changed: torch.Tensor
    fraction: torch.Tensor
    scores: torch.Tensor
    auc: torch.Tensor
    n_evaluated: int

    @property
    def mean_auc(self) -> float:
        """AUC averaged over the images."""
        return float(self.auc.mean())

    def frame(self, method: str | None = None) -> pd.DataFrame:
        """The mean curve as a tidy table: fraction, score, kind (and method).

        One row per step, `score` = mean over images; ready for Altair.
        """
        out = pd.DataFrame({
            "fraction": self.fraction.tolist(),
            "score": self.scores.mean(0).tolist(),
            "kind": self.kind,
        })
        if method is not None:
            out.insert(0, "method", method)
        return out


def _attr_scores(attr: object, x: torch.Tensor) -> torch.Tensor:
    """(N, H·W) per-pixel importance: attr summed over its channels."""
    if not isinstance(attr, torch.Tensor):
        raise TypeError(f"attr must be a torch.Tensor, got {type(attr).__name__}")
    n, c, h, w = x.shape
    if attr.dim() != 4 or attr.shape[0] != n or attr.shape[1] not in (1, c) or (
        tuple(attr.shape[2:]) != (h, w)
    ):
        raise ValueError(
            f"attr must have shape (N, C, H, W) or (N, 1, H, W) matching x "
            f"{tuple(x.shape)}, got {tuple(attr.shape)}"
        )
    if not bool(torch.isfinite(attr).all()):
        raise ValueError("attr must be finite; it holds NaN or Inf values")
    return attr.detach().to(device=x.device, dtype=x.dtype).sum(1).reshape(n, h * w)


def pixel_order(
    attr: torch.Tensor, absolute: bool = False, seed: int = 0
) -> torch.Tensor:
    """Pixels from most to least important: (N, H·W) int64 flat indices.

    Importance of pixel p is Σ_c attr[c, p] (or |Σ_c attr[c, p]| when
    `absolute`), sorted in decreasing order. Ties (Grad-CAM's flat blocks,
    the zeros of input × gradient on the background) are broken in a random
    order drawn from `seed`, so no corner of the image is favoured.

    Args:
        attr: (N, C, H, W) map (C may be 1).
        absolute: rank by magnitude instead of signed value (default False:
            a negative attribution counts as evidence *against* the target).
        seed: seeds the tie-breaking order (default 0).
    """
    if not isinstance(attr, torch.Tensor) or attr.dim() != 4:
        raise ValueError("attr must be a (N, C, H, W) tensor")
    score = attr.detach().sum(1).reshape(attr.shape[0], -1)
    if absolute:
        score = score.abs()
    gen = torch.Generator().manual_seed(seed)
    shuffle = torch.argsort(torch.rand(score.shape, generator=gen), dim=1)
    shuffle = shuffle.to(score.device)
    ordered = torch.argsort(score.gather(1, shuffle), dim=1, descending=True,
                            stable=True)
    return shuffle.gather(1, ordered)


def random_attr(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A map whose pixel order is uniformly random: (N, 1, H, W) in [0, 1).

    Feeding it to `deletion` / `insertion` gives the random-order reference
    curve. Drawn on the CPU from `seed`, then moved to x's device.
    """
    check_input(x)
    n, _, h, w = x.shape
    gen = torch.Generator().manual_seed(seed)
    return torch.rand((n, 1, h, w), generator=gen, dtype=x.dtype).to(x.device)


def _ranks(
    attr: torch.Tensor, x: torch.Tensor, absolute: bool, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`pixel_order` (N, H·W) and each pixel's rank in it (0 = most important)."""
    n, _, h, w = x.shape
    order = pixel_order(_attr_scores(attr, x).view(n, 1, h, w), absolute, seed)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(h * w, device=x.device).expand(n, -1))
    return order, rank


def _mix(x_flat, base_flat, rank, n_changed, kind: str) -> torch.Tensor:
    """Rows of x with their first n_changed (one count per row) pixels changed.

    x_flat, base_flat: (B, C, P); rank: (B, P); n_changed: (B,). Deletion puts
    the baseline at the changed pixels, insertion puts x there (on the
    baseline).
    """
    changed = (rank < n_changed[:, None])[:, None, :]
    if kind == "deletion":
        return torch.where(changed, base_flat, x_flat)
    return torch.where(changed, x_flat, base_flat)


def perturb(
    model: nn.Module,
    x: torch.Tensor,
    attr: torch.Tensor,
    n_changed: int,
    kind: str = "deletion",
    baseline="black",
    absolute: bool = False,
    seed: int = 0,
) -> torch.Tensor:
    """The images the model sees at one point of a deletion / insertion curve.

    Deletion: x with its `n_changed` most important pixels (by `attr`, see
    `pixel_order`) set to the baseline. Insertion: the baseline with those
    pixels of x put back.

    Args:
        model: only used to resolve the "grey" baseline (its normalize.mean).
        x: (N, C, H, W) inputs (never modified).
        attr: (N, C, H, W) or (N, 1, H, W) map of x.
        n_changed: pixels to change, 0 … H·W.
        kind, baseline, absolute, seed: as in `perturbation_curve`.
    Returns:
        (N, C, H, W) new tensor.
    """
    check_input(x)
    kind = check_choice(kind, "kind", KINDS)
    n, c, h, w = x.shape
    n_changed = check_int(n_changed, "n_changed", 0, h * w)
    _, rank = _ranks(attr, x, absolute, seed)
    base = resolve_baseline(baseline, x, model).expand_as(x)
    counts = torch.full((n,), n_changed, device=x.device)
    out = _mix(x.detach().reshape(n, c, h * w), base.reshape(n, c, h * w), rank,
               counts, kind)
    return out.reshape(n, c, h, w).clone()


def perturbation_curve(
    model: nn.Module,
    x: torch.Tensor,
    target,
    attr: torch.Tensor,
    kind: str = "deletion",
    n_steps: int = 50,
    baseline="black",
    output: str = "prob",
    absolute: bool = False,
    batch_size: int | None = None,
    seed: int = 0,
) -> Curve:
    """Deletion or insertion curve of every image (Petsiuk et al., 2018).

    With pixels ordered by decreasing attribution (`pixel_order`) and
    m_k = round(k · H·W / n_steps) for k = 0 … n_steps, the k-th point is
    f_target(x̃_k), where x̃_k (`perturb`) is

    * deletion: x with its first m_k pixels set to the baseline x₀;
    * insertion: x₀ with the first m_k pixels of x put back.

    A pixel means all channels at one (row, column). All N·(n_steps + 1)
    perturbed copies are built chunk by chunk and run through the model in
    eval mode under `torch.inference_mode()` (its modes are restored after),
    `batch_size` rows per call; a copy identical to the step before it (black
    background under a black baseline) is not run again (`_new_images`).

    Args:
        model: maps (N, C, H, W) inputs to (N, K) logits.
        x: (N, C, H, W) inputs (never modified).
        target: class index, or one per row.
        attr: (N, C, H, W) or (N, 1, H, W) map of x (a Grad-CAM map is fine).
        kind: "deletion" (default) or "insertion".
        n_steps: number of steps, 1 … H·W (default 50: 2 % of the pixels
            each); the curve has n_steps + 1 points.
        baseline: x₀: a number, a tensor broadcastable to x, or a name:
            "black" (0, default: on digits, deleting = erasing ink),
            "grey" (`model.normalize.mean`), "blur" (x blurred by a Gaussian,
            σ = 3 px, Petsiuk's insertion canvas) or "noise".
        output: "prob" (softmax probability of the target, default, as in
            the paper) or "logit".
        absolute: rank pixels by |attr| (default False: signed).
        batch_size: rows per model call (default `default_batch_size(x, model)`).
        seed: tie-breaking order (see `pixel_order`).
    Returns:
        A `Curve` with (N, n_steps + 1) scores and (N,) AUCs.

    Departures from the paper: Petsiuk et al. delete to black and insert
    onto a blurred copy; here both default to black, and any baseline can be
    chosen for either.
    """
    kind, output, n_steps, batch_size, idx = _check_curve(
        model, x, target, kind, output, n_steps, batch_size
    )
    n, c, h, w = x.shape
    n_pixels = h * w
    order, rank = _ranks(attr, x, absolute, seed)
    base = resolve_baseline(baseline, x, model).expand_as(x)
    x_flat, base_flat = x.detach().reshape(n, c, n_pixels), base.reshape(n, c, n_pixels)
    n_points = n_steps + 1
    n_changed = torch.linspace(0, n_pixels, n_points).round().long().to(x.device)
    new = _new_images(x_flat, base_flat, order, n_changed)
    rows = torch.nonzero(new.flatten()).flatten()
    scores = torch.empty(n * n_points, dtype=x.dtype, device=x.device)
    with eval_mode(model), torch.inference_mode():
        # Flat row r is image r // n_points at step r % n_points.
        for part in chunks(len(rows), batch_size):
            img, step = rows[part] // n_points, rows[part] % n_points
            batch = _mix(x_flat[img], base_flat[img], rank[img], n_changed[step], kind)
            logits = model(batch.view(-1, c, h, w))
            if output == "prob":
                logits = torch.softmax(logits, dim=1)
            scores[rows[part]] = select(logits, idx[img])
    scores = _carry_forward(scores.view(n, n_points), new)
    fraction = n_changed.to(x.dtype) / n_pixels
    auc = torch.trapezoid(scores, fraction, dim=1)
    return Curve(kind=kind, n_changed=n_changed, fraction=fraction, scores=scores,
                 auc=auc, n_evaluated=len(rows))


def _check_curve(model, x, target, kind, output, n_steps, batch_size) -> tuple:
    """perturbation_curve's checks: (kind, output, n_steps, batch_size, targets)."""
    check_model(model)
    check_input(x)
    kind = check_choice(kind, "kind", KINDS)
    output = check_choice(output, "output", OUTPUTS)
    n_steps = check_int(n_steps, "n_steps", 1, x.shape[2] * x.shape[3])
    batch_size = check_batch_size(batch_size, x, model)
    return kind, output, n_steps, batch_size, target_tensor(target, len(x), x.device)


def _carry_forward(scores: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """Scores (N, K) where a step that shows the image of the step before it
    (`new` False) gets that step's score."""
    steps = torch.arange(new.shape[1], device=new.device).expand_as(new)
    return scores.gather(1, torch.where(new, steps, 0).cummax(dim=1).values)


def _new_images(x_flat, base_flat, order, n_changed) -> torch.Tensor:
    """(N, n_steps + 1) bool: does step k show an image step k − 1 did not?

    Changing a pixel where x equals the baseline (black background, black
    baseline) leaves the image as it was: step k shows the same image as step
    k − 1 when no pixel in between differs. Each distinct image is run once
    and its score copied forward; the curve is exactly the same.
    """
    n = x_flat.shape[0]
    differs = (x_flat != base_flat).any(1).gather(1, order)  # (N, P) in rank order
    n_differ = torch.cat([differs.new_zeros(n, 1, dtype=torch.long),
                          differs.long().cumsum(1)], dim=1)[:, n_changed]  # (N, K)
    new = torch.ones(n, len(n_changed), dtype=torch.bool, device=x_flat.device)
    new[:, 1:] = n_differ[:, 1:] != n_differ[:, :-1]
    return new


def deletion(model: nn.Module, x: torch.Tensor, target, attr: torch.Tensor,
             **kwargs) -> Curve:
    """Deletion curve, `perturbation_curve(..., kind="deletion")`: lower AUC wins.

    Replace the most important pixels first by the baseline (default black)
    and track the target probability (Petsiuk et al., 2018). Keyword
    arguments as in `perturbation_curve`.
    """
    return perturbation_curve(model, x, target, attr, kind="deletion", **kwargs)


def insertion(model: nn.Module, x: torch.Tensor, target, attr: torch.Tensor,
              **kwargs) -> Curve:
    """Insertion curve, `perturbation_curve(..., kind="insertion")`: higher AUC wins.

    Start from the baseline (default black) and reveal the most important
    pixels first (Petsiuk et al., 2018). Keyword arguments as in
    `perturbation_curve`.
    """
    return perturbation_curve(model, x, target, attr, kind="insertion", **kwargs)


def completeness_gap(
    model: nn.Module,
    x: torch.Tensor,
    target,
    attr: torch.Tensor,
    baseline="black",
    batch_size: int | None = None,
) -> torch.Tensor:
    """δ = Σ_p attr_p − (f_target(x) − f_target(x₀)), one per row: (N,).

    Completeness (Sundararajan et al., 2017) asks a map to split the change
    of the target *logit* between the baseline and the input among the
    pixels, so δ = 0. Integrated gradients satisfies it up to its quadrature
    error (this is `integrated_gradients(..., return_delta=True)`'s delta,
    same sign); input × gradient does for a linear model; gradient,
    SmoothGrad, occlusion (a probability drop) and Grad-CAM make no such
    promise, so their δ says how far from it they are, not that they are
    wrong.

    Args:
        model: maps (N, C, H, W) inputs to (N, K) logits.
        x: (N, C, H, W) inputs (never modified).
        target: class index, or one per row.
        attr: (N, C, H, W) or (N, 1, H, W) map of x.
        baseline: x₀, as in `perturbation_curve` (default "black", IG's default).
        batch_size: rows per model call (default `default_batch_size(x, model)`:
            sized by one row's activation memory on the model).
    """
    check_model(model)
    check_input(x)
    n = x.shape[0]
    total = _attr_scores(attr, x).sum(1)
    idx = target_tensor(target, n, x.device)
    batch_size = check_batch_size(batch_size, x, model)
    base = resolve_baseline(baseline, x, model).expand_as(x)
    ends = torch.cat([x.detach(), base])
    with eval_mode(model), torch.inference_mode():
        logits = torch.cat([model(ends[part]) for part in chunks(2 * n, batch_size)])
        out = select(logits, torch.cat([idx, idx]))
    return (total - (out[:n] - out[n:])).clone()


def mass_share(attr: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Share of a map's absolute mass inside a region, per image: (N,).

    share = Σ_{p ∈ R} |a_p| / Σ_p |a_p|, with a_p = Σ_c attr[c, p]; a map
    that ignores the region puts about |R| / (H·W) there by chance. (The
    "energy-based pointing game" of Wang et al., Score-CAM, 2020.) NaN for
    an all-zero map.

    Args:
        attr: (N, C, H, W) map (C may be 1).
        region: bool mask broadcastable to (N, 1, H, W), e.g.
            `shortcut.tag_mask()` (1, 1, H, W).
    """
    if not isinstance(attr, torch.Tensor) or attr.dim() != 4:
        raise ValueError("attr must be a (N, C, H, W) tensor")
    if not isinstance(region, torch.Tensor) or region.dtype != torch.bool:
        raise TypeError("region must be a bool tensor broadcastable to (N, 1, H, W)")
    mass = attr.detach().sum(1, keepdim=True).abs()
    try:
        region = region.to(mass.device).expand_as(mass)
    except RuntimeError:
        raise ValueError(
            f"region must be broadcastable to {tuple(mass.shape)}, "
            f"got shape {tuple(region.shape)}"
        ) from None
    inside = (mass * region).flatten(1).sum(1)
    total = mass.flatten(1).sum(1)
    return torch.where(total > 0, inside / total, torch.full_like(total, math.nan))


def faithfulness_table(
    model: nn.Module,
    x: torch.Tensor,
    target,
    maps: Mapping[str, torch.Tensor | Callable],
    n_steps: int = 50,
    baseline="black",
    include_random: bool = True,
    completeness: bool = True,
    batch_size: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Deletion / insertion AUCs (and completeness gaps) for several maps.

    Args:
        model: maps (N, C, H, W) inputs to (N, K) logits.
        x: (N, C, H, W) inputs (never modified).
        target: class index, or one per row.
        maps: name → a precomputed map of x, or a function
            f(model, x, target) returning one (e.g. `saliency.METHODS[name]`).
        n_steps, baseline, batch_size, seed: as in `perturbation_curve`
            (the same baseline is used for deletion, insertion and the
            completeness gap).
        include_random: add the random-order reference row "random".
        completeness: add the completeness-gap columns.
        progress: show a tqdm bar, one tick per map (False by default; the
            notebooks turn it on, a table of 64 digits takes tens of seconds
            on two cores).
    Returns:
        (table, curves). `table`, one row per map sorted best first by
        insertion − deletion AUC: deletion_auc (mean, lower = better),
        insertion_auc (higher = better), ins_minus_del, their standard
        errors over images, and with `completeness` the mean |δ| and
        mean |δ| / mean |f(x) − f(x₀)| (`completeness_gap`).
        `curves`: the mean curves as a tidy table (method, fraction, score,
        kind) for Altair.
    """
    items = _map_items(maps, x, include_random, seed)
    rows, curves = [], []
    base_logit = None
    names = list(items)
    if progress:
        from tqdm.auto import tqdm

        names = tqdm(names, desc="faithfulness", leave=False)
    for name in names:
        value = items[name]
        attr = value(model, x, target) if callable(value) else value
        kw = {"n_steps": n_steps, "baseline": baseline, "batch_size": batch_size,
              "seed": seed}
        dele = deletion(model, x, target, attr, **kw)
        ins = insertion(model, x, target, attr, **kw)
        row = _auc_row(name, dele, ins)
        if completeness and name != RANDOM:
            gap = completeness_gap(model, x, target, attr, baseline=baseline,
                                   batch_size=batch_size)
            if base_logit is None:  # the gap of an all-zero map is −(f(x) − f(x₀))
                base_logit = completeness_gap(model, x, target, torch.zeros_like(x),
                                              baseline=baseline, batch_size=batch_size)
            row["completeness_gap"] = float(gap.abs().mean())
            row["relative_gap"] = float(gap.abs().mean() / base_logit.abs().mean())
        elif completeness:
            row["completeness_gap"] = row["relative_gap"] = math.nan
        rows.append(row)
        curves += [dele.frame(name), ins.frame(name)]
    table = pd.DataFrame(rows).sort_values("ins_minus_del", ascending=False)
    return table.reset_index(drop=True), pd.concat(curves, ignore_index=True)


def _map_items(maps: object, x: torch.Tensor, include_random: bool, seed: int) -> dict:
    """faithfulness_table's maps as a dict, with the random reference added."""
    if not isinstance(maps, Mapping) or not maps:
        raise TypeError("maps must be a non-empty dict: name -> map tensor or function")
    items = dict(maps)
    if include_random:
        if RANDOM in items:
            raise ValueError(f"maps must not have a key {RANDOM!r} when include_random")
        items[RANDOM] = random_attr(x, seed=seed)
    return items


def _auc_row(name: str, dele: Curve, ins: Curve) -> dict:
    """Mean AUCs of one map, their difference and standard errors over images."""
    n = dele.auc.shape[0]
    sem = math.sqrt(n)
    return {
        "method": name,
        "deletion_auc": dele.mean_auc,
        "insertion_auc": ins.mean_auc,
        "ins_minus_del": float((ins.auc - dele.auc).mean()),
        "deletion_sem": float(dele.auc.std()) / sem if n > 1 else math.nan,
        "insertion_sem": float(ins.auc.std()) / sem if n > 1 else math.nan,
    }


def _maps(attr, name: str) -> torch.Tensor:
    """(N, C, H, W) → (N, H, W): channels summed, detached, float64."""
    if not isinstance(attr, torch.Tensor) or attr.dim() != 4:
        raise ValueError(f"{name} must be a (N, C, H, W) tensor")
    return attr.detach().sum(1).double()


def map_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of two maps of the same images, per image: (N,).

    ρ = Σ (a_p − ā)(b_p − b̄) / √(Σ (a_p − ā)² · Σ (b_p − b̄)²) over the
    H·W pixels (channels summed first). Invariant to scaling either map by
    a positive number, so it compares *shapes*, not magnitudes. NaN where a
    map is constant.

    Args:
        a, b: (N, C, H, W) maps with the same shape.
    """
    from .correlation import pearson

    fa, fb = _maps(a, "a").flatten(1), _maps(b, "b").flatten(1)
    if fa.shape != fb.shape:
        raise ValueError(
            f"a and b must have the same shape, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )
    return pearson(fa, fb).float()


def total_variation(attr: torch.Tensor) -> torch.Tensor:
    """Total variation of each map relative to its mass: (N,).

    TV(a) = Σ_{i,j} (|a_{i+1,j} − a_{i,j}| + |a_{i,j+1} − a_{i,j}|) / Σ |a_{i,j}|
    (anisotropic TV, channels summed first). Scale-free: a map and 10× the
    map have the same TV. Large = grainy (neighbours disagree), small =
    smooth. NaN for an all-zero map.

    Args:
        attr: (N, C, H, W) maps.
    """
    m = _maps(attr, "attr")
    tv = (m[:, 1:, :] - m[:, :-1, :]).abs().flatten(1).sum(1)
    tv = tv + (m[:, :, 1:] - m[:, :, :-1]).abs().flatten(1).sum(1)
    mass = m.abs().flatten(1).sum(1)
    return torch.where(mass > 0, tv / mass, torch.full_like(mass, math.nan)).float()


def diffuseness(attr: torch.Tensor) -> torch.Tensor:
    """Normalised entropy of each map's absolute mass: (N,), in [0, 1].

    With q_p = |a_p| / Σ |a| (channels summed first),
    D(a) = −Σ_p q_p log q_p / log(H·W): 0 when all mass sits on one pixel,
    1 when it is spread evenly over all of them. NaN for an all-zero map.

    Args:
        attr: (N, C, H, W) maps.
    """
    m = _maps(attr, "attr").abs().flatten(1)
    mass = m.sum(1, keepdim=True)
    q = m / mass.clamp_min(1e-300)
    h = -(q * torch.log(q.clamp_min(1e-300))).sum(1) / math.log(m.shape[1])
    return torch.where(mass[:, 0] > 0, h, torch.full_like(h, math.nan)).float()
