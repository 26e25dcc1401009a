"""The one engine behind every sanity check.

`run` explains the inputs with the trained model and with each variant (a
randomized copy, or a model trained on random labels), and compares every
method's maps with the trained model's, image by image and measure by measure.
What varies between the tests is only the list of variants; what they share is
validated once, into a frozen `Settings`.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial

import pandas as pd
import torch
from torch import nn

from .. import models
from .. import saliency as sal
from ._shared import (
    DEFAULT_METHODS,
    check_input,
    check_int,
    check_methods,
    check_metrics,
    check_model,
    check_seed,
    check_target,
    target_tensor,
)
from .randomize import Randomization
from .result import SanityResult
from .similarity import METRICS, Prepared, compare

TARGET_MODES = ("original", "argmax")
# A variant: (label, build) where build() returns the model of that step, built
# lazily in step order.
Variant = tuple[str, Callable[[], nn.Module]]


def default_methods(n_steps: int = 50, n_samples: int = 50) -> dict[str, Callable]:
    """The six `DEFAULT_METHODS` as {name: f(model, x, target)}, with IG's
    `n_steps` and SmoothGrad's `n_samples` set (both ≥ 1; default 50 = the
    `sal.METHODS` defaults). Fewer steps/samples make the many recomputations
    of a randomization test cheaper; the cost is linear in both."""
    n_steps = check_int(n_steps, "n_steps", 1)
    n_samples = check_int(n_samples, "n_samples", 1)
    out = {name: sal.METHODS[name] for name in DEFAULT_METHODS}
    out["integrated_gradients"] = partial(sal.integrated_gradients, n_steps=n_steps)
    out["smoothgrad"] = partial(sal.smoothgrad, n_samples=n_samples)
    return out


@dataclass(frozen=True)
class Settings:
    """What a sanity run needs besides the model, inputs and variants; validated.

    Attributes:
        test: "cascading", "independent" or "labels".
        key: the table column naming the step: "layer" or "model".
        methods: {name: f(model, x, target)}.
        metrics: names from `METRICS`.
        seed: seeds the global RNG (in a fork) before each method call.
        target_mode: "original" or "argmax".
        progress: show a tqdm bar.
        record: extra settings stored on the result (rule, layers, …).
    """

    test: str
    key: str
    methods: dict[str, Callable] = field(compare=False)
    metrics: tuple[str, ...] = METRICS
    seed: int = 0
    target_mode: str = "original"
    progress: bool = True
    record: dict = field(default_factory=dict, compare=False)

    @classmethod
    def checked(cls, test, key, methods, metrics, seed, target_mode, progress,
                record=None) -> Settings:
        methods = check_methods(methods)
        metrics = tuple(check_metrics(metrics, METRICS))
        seed = check_seed(seed)
        if target_mode not in TARGET_MODES:
            raise ValueError(
                f"target_mode must be one of {list(TARGET_MODES)}, got {target_mode!r}"
            )
        record = {**(record or {}), "seed": seed, "target_mode": target_mode,
                  "methods": list(methods)}
        return cls(test, key, methods, metrics, seed, target_mode, bool(progress),
                   record)


def _resolve_target(model: nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    """The class explained per row, an int64 (N,) tensor. Validated once, here.

    None → the trained model's predicted class (one forward pass); a given
    target is checked against the model's number of outputs K with a forward
    pass of one row only.
    """
    if target is None:
        return models.predict(model, x).argmax(1)
    idx = target_tensor(target, len(x), x.device)
    with torch.no_grad():
        return check_target(idx, model(x[:1]).shape[-1])


def _explain_all(model, x, target, methods, seed) -> dict[str, torch.Tensor]:
    """Every method's maps; stochastic methods (SmoothGrad) see the same noise
    for every model because the global RNG is re-seeded (in a fork) per call."""
    out = {}
    for name, fn in methods.items():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out[name] = fn(model, x, target).detach().cpu()
    return out


def _prepare(maps: dict[str, torch.Tensor]) -> dict[str, Prepared]:
    return {m: Prepared(a, f"maps[{m!r}]") for m, a in maps.items()}


def _rows(step, key, label, ref, maps, metrics) -> list[dict]:
    """Per-image rows comparing `maps` with `ref` ({method: Prepared})."""
    rows = []
    for method, m in maps.items():
        for metric in metrics:
            vals, const = compare(metric, ref[method], m)
            rows += [
                {"step": step, key: label, "method": method, "metric": metric,
                 "image": i, "value": float(v), "constant": bool(c)}
                for i, (v, c) in enumerate(zip(vals, const))
            ]
    return rows


def run(
    model: nn.Module,
    x: torch.Tensor,
    target,
    variants: Iterable[Variant],
    settings: Settings,
) -> SanityResult:
    """Explain with the trained model and every variant; compare the maps.

    Step 0 is the trained model (an eval-mode copy) compared with itself; step
    k the k-th variant. With target_mode "original" every model explains the
    trained model's class; with "argmax" each its own prediction.
    """
    from tqdm.auto import tqdm

    variants = list(variants)
    s = settings
    trained = copy.deepcopy(model).eval()
    target = _resolve_target(trained, x, target)
    bar = tqdm(total=len(variants) + 1, desc=f"{s.test} randomization",
               disable=not s.progress)
    try:
        maps = {"original": _explain_all(trained, x, target, s.methods, s.seed)}
        ref = _prepare(maps["original"])
        rows = _rows(0, s.key, "original", ref, ref, s.metrics)
        bar.update(1)
        for step, (label, build) in enumerate(variants, start=1):
            bar.set_postfix_str(label)
            variant = build()
            t = target
            if s.target_mode == "argmax":
                t = models.predict(variant, x).argmax(1)
            maps[label] = _explain_all(variant, x, t, s.methods, s.seed)
            rows += _rows(step, s.key, label, ref, _prepare(maps[label]), s.metrics)
            bar.update(1)
    finally:
        bar.close()
    return SanityResult(
        s.test,
        s.key,
        pd.DataFrame(rows),
        maps,
        x.detach().clone(),
        target.cpu(),
        s.record,
    )


def _layer_test(
    test: str,
    model: nn.Module,
    x: torch.Tensor,
    target=None,
    methods=None,
    layers: Sequence[str] | None = None,
    *,
    rule: str = "reset",
    sigma: float = 0.01,
    seed: int = 0,
    target_mode: str = "original",
    metrics: Sequence[str] | None = None,
    progress: bool = True,
) -> SanityResult:
    """cascading_randomization / independent_randomization: one signature (the
    options' defaults live here), one validation."""
    check_model(model)
    x = check_input(x)
    plan = Randomization.checked(model, layers, rule, sigma, seed)
    settings = Settings.checked(test, "layer", methods, metrics, seed, target_mode,
                                progress, plan.record())
    variants = plan.cascade(model) if test == "cascading" else plan.independent(model)
    return run(model, x, target, variants, settings)


def _layer_test_signature(fn):
    """Show `_layer_test`'s options (names, defaults) in help() and tab completion
    of a public layer test that passes them on as **options."""
    sig = inspect.signature(_layer_test)
    fn.__signature__ = sig.replace(parameters=list(sig.parameters.values())[1:])
    return fn


@_layer_test_signature
def cascading_randomization(
    model: nn.Module, x: torch.Tensor, target=None, methods=None, layers=None, **options
) -> SanityResult:
    """Cascading model randomization (Adebayo et al., 2018, Sec. 3.1).

    With blocks L₁ … L_B in forward order, step k re-initialises L_B, L_{B−1},
    …, L_{B−k+1} (logits first, top down) and compares every method's maps
    E(x; θ_k) with the trained model's E(x; θ₀), image by image, with each
    metric. Step 0 is the trained model compared with itself (1 by
    definition), so curves start at 1. Each step adds one block to the copy
    of the previous step; the trained model is never modified.

    Args:
        model: the trained model; works on deep copies.
        x: (N, C, H, W) inputs.
        target: class per row (int, list or tensor); None (default) = the
            trained model's predicted class.
        methods: None (default: `DEFAULT_METHODS`), a `sal.METHODS` name, a
            function f(model, x, target), a list of those, or {label: name or
            function}. Functions get the (randomized) copy, so Grad-CAM's layer
            must be given by name (as `sal.METHODS["grad_cam"]` does).
        layers: block names in forward order; None = `randomization_layers`
            (SmallCNN: conv1, conv2, fc1, fc2; ResNetSmall: stem, layer1,
            layer2, layer3, fc). They are randomized in reverse order.
        **options: keyword-only (help() shows them), defaults rule="reset", sigma=0.01,
            seed=0, target_mode="original", metrics=None, progress=True:
        rule, sigma, seed: re-initialisation, see `randomize` (default: each
            layer's own `reset_parameters()`, BatchNorm reset to γ=1, β=0, μ=0,
            σ²=1; seed 0). Stochastic methods are run with the global RNG
            seeded by `seed` (in a fork), so SmoothGrad's noise is the same for
            every step and the result is reproducible.
        target_mode: which class is explained after randomization: "original"
            (default; the same class as on the trained model, so the two maps
            explain the same output, as Adebayo et al. compare) or "argmax"
            (the randomized model's own predicted class).
        metrics: subset of `METRICS`; None = all four.
        progress: tqdm bar, one tick per step.
    Returns:
        `SanityResult` with key "layer": steps 0 ("original") … B (the
        bottom block), `.table` (mean, std over images per step, method,
        metric), `.per_image`, `.maps`.
    """
    return _layer_test("cascading", model, x, target, methods, layers, **options)


@_layer_test_signature
def independent_randomization(
    model: nn.Module, x: torch.Tensor, target=None, methods=None, layers=None, **options
) -> SanityResult:
    """Independent (one layer at a time) model randomization (Adebayo et al.).

    Step k re-initialises only block L_{B−k+1} (top down, as in the cascade)
    on a fresh copy of the trained model; every other block keeps its trained
    weights. A layer gets the very same new weights as in
    `cascading_randomization` with the same seed, so step 1 of both is the
    same model. Arguments and result as in `cascading_randomization`.
    """
    return _layer_test("independent", model, x, target, methods, layers, **options)
