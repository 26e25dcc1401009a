"""Shapley values of the patches of an image: exact, and KernelSHAP as Captum draws it."""

from __future__ import annotations

import torch
from torch import nn

from ..saliency.baselines import resolve_baseline
from ..saliency.core import check_batch_size, eval_mode
from ..saliency.validate import check_input as check_images
from ..saliency.validate import check_int, check_model, target_tensor
from .game import (
    INF_WEIGHT,
    MAX_PLAYERS,
    Game,
    ShapleyResult,
    _check_output,
    solve_exact,
)


def _check_grid(grid, height: int, width: int) -> tuple[int, int]:
    if isinstance(grid, (tuple, list)) and len(grid) == 2:
        rows = check_int(grid[0], "grid", 1, height)
        cols = check_int(grid[1], "grid", 1, width)
    elif isinstance(grid, bool) or not isinstance(grid, int):
        raise TypeError(f"grid must be an int or a (rows, cols) pair, got {grid!r}")
    else:
        rows = check_int(grid, "grid", 1, min(height, width))
        cols = rows
    if rows * cols > MAX_PLAYERS:
        raise ValueError(
            f"grid must have at most {MAX_PLAYERS} patches (2^patches model "
            f"evaluations per image), got {rows}×{cols} = {rows * cols}"
        )
    return rows, cols


def patch_ids(height: int, width: int, grid) -> torch.Tensor:
    """(H, W) int64: the patch of every pixel on a rows × cols grid (row-major ids).

    Patch row r covers pixel rows ⌊r·H/rows⌋ … ⌊(r+1)·H/rows⌋ − 1 (equal
    patches when rows divides H: a 4×4 grid on 28×28 gives 7×7-pixel patches).
    """
    rows, cols = _check_grid(grid, height, width)
    r = torch.arange(height) * rows // height
    c = torch.arange(width) * cols // width
    return r[:, None] * cols + c[None, :]


def _patch_game(model, x, target, grid, baseline, output, batch_size) -> Game:
    """The checks and set-up `exact` and `kernel_shap` share (errors name arguments)."""
    check_model(model)
    check_images(x)
    ids = patch_ids(x.shape[-2], x.shape[-1], grid).to(x.device)
    output = _check_output(output)
    batch_size = check_batch_size(batch_size, x, model)
    idx = target_tensor(target, x.shape[0], x.device)
    base = resolve_baseline(baseline, x, model).expand_as(x)
    return Game(x.detach(), ids, int(ids.max()) + 1, idx, base, output, batch_size)


def exact(
    model: nn.Module,
    x: torch.Tensor,
    target,
    grid=4,
    baseline="grey",
    output: str = "logit",
    batch_size: int | None = None,
) -> ShapleyResult:
    """Exact Shapley values of the patches of a grid: φ = v · W over all 2^P coalitions.

    v(S) = f_target(x_S) where x_S keeps the pixels of the patches in S and
    sets the others to the baseline (all channels);
    φ_i = Σ_{S ∌ i} |S|!(P−|S|−1)!/P! [v(S ∪ {i}) − v(S)], computed as one
    matrix product of the 2^P worths with `shapley_matrix(P)`. Efficiency
    Σφ = f(x) − f(baseline) is checked (RuntimeError if violated beyond
    float64 round-off).

    Shapley, "A value for n-person games", 1953; Lundberg & Lee, NeurIPS 2017
    (patch players as in their image examples, "super-pixels").

    Args:
        model: maps (N, C, H, W) inputs to (N, K) logits.
        x: (N, C, H, W) inputs; each row is its own game (rows are looped, so
            N rows cost N · 2^P evaluations).
        target: class index, or one per row.
        grid: P = rows × cols patches: an int g (g × g, default 4 → 16
            patches of 7×7 pixels on a digit, 65,536 coalitions) or
            (rows, cols); at most MAX_PLAYERS = 20 patches. See `patch_ids`.
        baseline: value of the pixels outside a coalition: a number, a tensor
            broadcastable to x, "grey" (default: `model.normalize.mean`, zero
            after normalisation — occlusion's grey) or "black"/"zero".
        output: "logit" (default) or "prob" (softmax probability).
        batch_size: most coalitions per model call; default
            `default_batch_size(x, model)` (256 for SmallCNN on digits).
    Returns:
        ShapleyResult: values (N, P) float64, maps (N, 1, H, W), f_x, f_baseline,
        patch_ids (H, W), n_evaluations = 2^P, coalitions (2^P, P).

    Cost, measured on this course's 2-core machine (SmallCNN, one digit, one
    thread, 4×4 grid, bench/bench_shapley.py): 65,536 evaluations in 3.8 s
    lightly loaded (≈ 58 µs each), 1.1× the same number of bare forward passes
    at 256 rows per call; each extra patch doubles it. Occlusion with the same
    16 patches needs 17 evaluations.

    Captum has no exact Shapley values over a feature mask;
    `ShapleyValues(f).attribute(x, baselines=..., target=..., feature_mask=
    patch_ids, n_samples=...)` samples permutations (it converges to these
    values), and `KernelShap` (see `kernel_shap`) fits them by regression.
    """
    game = _patch_game(model, x, target, grid, baseline, output, batch_size)
    x, ids, p = game.x, game.ids, game.p
    member, worths, values = solve_exact(model, game, "exact")
    f_x, f_base = worths[:, -1], worths[:, 0]
    return ShapleyResult(
        values=values.clone(),
        maps=_to_maps(values, ids, x),
        f_x=f_x.clone(),
        f_baseline=f_base.clone(),
        patch_ids=ids.clone(),
        n_evaluations=2**p,
        coalitions=member.clone(),
        worths=worths.clone(),
    )


def _to_maps(values, ids, x):
    """(N, 1, H, W): every pixel holds its patch's value."""
    return values.to(x.dtype)[:, ids][:, None].clone()


def patch_map(values: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) float32 map with patch j's value on its pixels (for plotting).

    Args:
        values: (N, P) per-patch values (Shapley values, `patch_sums` of a map).
        ids: (H, W) patch of each pixel (`patch_ids`).
    """
    if not isinstance(values, torch.Tensor) or values.dim() != 2:
        raise ValueError("values must be an (N, P) tensor")
    if values.shape[1] != int(ids.max()) + 1:
        raise ValueError(
            f"values has {values.shape[1]} columns; ids has {int(ids.max()) + 1} patches"
        )
    return values.detach().float()[:, ids.to(values.device)][:, None].clone()


def patch_sums(attr: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """(N, P) sum of a per-pixel map (N, C, H, W) over each patch (and channels).

    Puts pixel maps (IG, input × gradient, expected gradients) on the same
    players as Shapley values: for IG, Σ_i patch_sums(IG)_i ≈ f(x) − f(x₀).
    """
    if not isinstance(attr, torch.Tensor) or attr.dim() != 4:
        raise ValueError("attr must be an (N, C, H, W) tensor")
    if attr.shape[-2:] != ids.shape:
        raise ValueError(
            f"attr's (H, W) {tuple(attr.shape[-2:])} must match patch_ids' "
            f"{tuple(ids.shape)}"
        )
    flat = attr.detach().double().sum(1).flatten(1)  # (N, H·W)
    p = int(ids.max()) + 1
    one_hot = torch.nn.functional.one_hot(ids.flatten().to(flat.device), p).double()
    return flat @ one_hot


# --------------------------------------------------------------- KernelSHAP


def _draw_coalitions(p: int, n_samples: int, generator) -> torch.Tensor:
    """Captum's KernelShap draws: all, none, then |S| ~ p(k) and a uniform S of size k.

    p(k) ∝ (P − 1)/(k(P − k)) for k = 1 … P − 1 (Captum's `Categorical`, k = 0
    has probability 0); S = the k largest of P standard normals (Captum's
    `torch.randn(1, P)` thresholded at its (P − k)-th value). With
    generator=None the global generator is used, as Captum does, so seeding
    it the same way reproduces Captum's coalitions one for one.
    """
    ks = torch.arange(p, dtype=torch.float)
    probs = torch.tensor(p - 1) / (ks * (p - ks))
    probs[0] = 0.0
    probs = probs / probs.sum(-1, keepdim=True)  # as Categorical normalises
    rows = [torch.ones(p, dtype=torch.bool), torch.zeros(p, dtype=torch.bool)]
    for _ in range(n_samples - 2):
        k = int(torch.multinomial(probs.reshape(-1, p), 1, True, generator=generator))
        rand = torch.randn(1, p, generator=generator)
        threshold = torch.kthvalue(rand, p - k).values.item()
        rows.append((rand > threshold)[0])
    return torch.stack(rows[:n_samples])


def kernel_shap_fit(member: torch.Tensor, worths: torch.Tensor) -> torch.Tensor:
    """Weighted least squares v(S) ≈ b + Σ_{i∈S} φ_i, weights 1 (10⁶ for ∅ and all).

    Captum's KernelShap regression (its `SkLearnLinearRegression`, intercept
    fitted): with the Shapley-kernel *sampling* p(|S|) every drawn coalition
    has weight 1, and the two end coalitions get INF_WEIGHT so that the fit
    (nearly) satisfies efficiency. Solved in float64 by `torch.linalg.lstsq`.

    Args:
        member: (n, P) bool coalitions; worths: (n,) v(S).
    Returns:
        (P,) φ, float64.
    """
    z = member.double()
    full = z.sum(1)
    w = torch.where((full == 0) | (full == z.shape[1]), INF_WEIGHT, 1.0)
    design = torch.cat([torch.ones_like(full)[:, None], z], 1) * w.sqrt()[:, None]
    target = worths.double() * w.sqrt()
    coef = torch.linalg.lstsq(design, target[:, None], driver="gelsd").solution[:, 0]
    return coef[1:]


def kernel_shap(
    model: nn.Module,
    x: torch.Tensor,
    target,
    grid=4,
    baseline="grey",
    output: str = "logit",
    n_samples: int = 1000,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
) -> ShapleyResult:
    """KernelSHAP over the patches of a grid: a weighted linear fit to sampled v(S).

    Draws n_samples coalitions (∅ and all players first, then |S| = k with
    probability ∝ (P−1)/(k(P−k)) and S uniform among the k-subsets: the
    Shapley kernel as a sampling distribution), evaluates v(S) as in `exact`,
    and fits v(S) ≈ b + Σ_{i∈S} φ_i by least squares (`kernel_shap_fit`). With
    all coalitions and the exact kernel the fit is the Shapley value; with
    samples the error shrinks roughly as 1/√n_samples.

    Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions",
    NeurIPS 2017.

    Args:
        model, x, target, grid, baseline, output, batch_size: as in `exact`.
        n_samples: model evaluations per row (the two end coalitions
            included), ≥ 2. Default 1000. Coalitions may repeat.
        generator: torch.Generator for the draws; None (default) uses the
            global generator, as Captum does. Rows are drawn one after the other.
    Returns:
        ShapleyResult (values (N, P) float64; `gap` is the small efficiency
        error the 10⁶ end weights leave; coalitions = the last row's draws).

    Captum: `KernelShap(f).attribute(x, baselines=baseline, target=target,
    feature_mask=patch_ids(H, W, grid), n_samples=n_samples)` with f = model
    ("logit") or softmax ∘ model ("prob"), after `torch.manual_seed(s)`; ours
    after the same seed (generator=None) draws the same coalitions in the same
    order and solves the same weighted regression, so the values agree to
    round-off (tests/test_shapley.py). Departures: the shap package enforces
    efficiency exactly as a constraint and pairs complementary coalitions;
    Captum (and we) approximate the constraint with weight 10⁶.
    """
    game = _patch_game(model, x, target, grid, baseline, output, batch_size)
    n_samples = check_int(n_samples, "n_samples", 2)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__}"
        )
    x, ids, p = game.x, game.ids, game.p
    values, f_x, f_base, all_worths = [], [], [], []
    with eval_mode(model), torch.inference_mode():
        for i in range(x.shape[0]):
            member = _draw_coalitions(p, n_samples, generator).to(x.device)
            worths = game.play(model, i, member)
            values.append(kernel_shap_fit(member, worths))
            all_worths.append(worths)
            f_x.append(worths[0])
            f_base.append(worths[1])
    values = torch.stack(values)
    return ShapleyResult(
        values=values,
        maps=_to_maps(values, ids, x),
        f_x=torch.stack(f_x),
        f_baseline=torch.stack(f_base),
        patch_ids=ids.clone(),
        n_evaluations=n_samples,
        coalitions=member.clone(),
        worths=torch.stack(all_worths),
    )
