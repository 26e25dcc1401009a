"""Re-initialising blocks of a model, always on copies (Adebayo et al., 2018).

`randomize` returns one randomized copy; `Randomization` holds the validated
rule and walks the blocks top down, either cumulatively (the cascade) or one at
a time on fresh copies (independent randomization).
"""

from __future__ import annotations

import copy
import math
import numbers
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ._shared import check_model, check_seed

RULES = ("reset", "normal")


def randomization_layers(model: nn.Module) -> list[str]:
    """The model's named blocks that hold parameters, in forward (bottom-up) order.

    These are the top-level children with parameters, in registration order
    (which is the order of the forward pass for the course's models):
    SmallCNN → ["conv1", "conv2", "fc1", "fc2"]; ResNetSmall → ["stem",
    "layer1", "layer2", "layer3", "fc"]. `normalize` (buffers only), ReLUs and
    pooling hold no parameters and are skipped.
    """
    check_model(model)
    names = [n for n, m in model.named_children() if any(True for _ in m.parameters())]
    if not names:
        raise ValueError("model has no child module with parameters to randomize")
    return names


def check_layers(model: nn.Module, layers) -> list[str]:
    available = randomization_layers(model)
    if layers is None:
        return available
    if isinstance(layers, str) or not isinstance(layers, Sequence):
        raise TypeError(
            "layers must be None or a list of block names in bottom-up order, "
            f"e.g. {available}; got {type(layers).__name__}"
        )
    layers = list(layers)
    if not layers:
        raise ValueError(
            f"layers must not be empty; the model's blocks are {available}"
        )
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers must be unique, got {layers}")
    for name in layers:
        if not isinstance(name, str):
            raise TypeError(f"layers must hold block names (str), got {name!r}")
        if not name:
            raise ValueError(f"layers: a block name must not be empty; use {available}")
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ValueError(
                f"layers: the model has no submodule {name!r}; its blocks are "
                f"{available}"
            ) from None
        if not any(True for _ in module.parameters()):
            raise ValueError(
                f"layers: {name!r} holds no parameters; its blocks are {available}"
            )
    return layers


def layer_seed(seed: int, name: str) -> int:
    """A per-layer seed from (seed, layer name), so a layer is re-initialised
    identically whatever else is randomized (cascading and independent agree
    on it)."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63 - 1)


@torch.no_grad()
def reinit_(block: nn.Module, rule: str, sigma: float, seed: int) -> None:
    """Re-initialise every parameterised module inside `block`, in place."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in block.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                # γ = 1, β = 0, running mean 0, running var 1: exactly a freshly
                # built layer (finite, no NaN) under either rule.
                module.reset_parameters()
                continue
            own = list(module.parameters(recurse=False))
            if not own:
                continue
            if rule == "reset":
                if not hasattr(module, "reset_parameters"):
                    raise TypeError(
                        f"rule='reset' needs reset_parameters() on every module with "
                        f"parameters; {type(module).__name__} has none (use "
                        "rule='normal')"
                    )
                module.reset_parameters()
            else:
                for p in own:
                    p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * sigma)


def randomize(
    model: nn.Module,
    layers: str | Sequence[str],
    rule: str = "reset",
    sigma: float = 0.01,
    seed: int = 0,
) -> nn.Module:
    """A deep copy of `model` with the named blocks re-initialised.

    Rules (the weights of every Conv/Linear inside each block):

    * "reset" (default): the layer's own initialisation, `reset_parameters()`
      — PyTorch's Kaiming-uniform weights and uniform biases, i.e. exactly what
      a freshly built model holds. This matches Adebayo et al.'s code, which
      re-runs each variable's initialiser.
    * "normal": every weight and bias ~ N(0, σ²), σ = `sigma` (the lecture's
      code).

    BatchNorm under either rule: γ = 1, β = 0, running mean 0, running
    variance 1 (`reset_parameters()`, as freshly built), so eval-mode
    normalisation stays finite — never NaN.

    Seeding: block `name` is drawn from its own generator seeded by
    (`seed`, `name`), so randomizing fc2 alone or as part of a cascade gives
    the same new fc2. The global RNG is left as it was.

    Args:
        model: any module; never modified.
        layers: one dotted block name or a list of them ("fc2", ["fc1", "fc2"]).
        rule: "reset" or "normal".
        sigma: σ for rule="normal" (> 0). Default 0.01.
        seed: int ≥ 0. Default 0.
    Returns:
        The randomized copy, in eval mode.
    """
    check_model(model)
    names = check_layers(model, [layers] if isinstance(layers, str) else layers)
    rule, sigma, seed = check_rule(rule, sigma, seed)
    out = copy.deepcopy(model)
    for name in names:
        reinit_(out.get_submodule(name), rule, sigma, layer_seed(seed, name))
    return out.eval()


def check_rule(rule, sigma, seed) -> tuple[str, float, int]:
    if rule not in RULES:
        raise ValueError(f"rule must be one of {list(RULES)}, got {rule!r}")
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
        raise TypeError(f"sigma must be a number > 0, got {type(sigma).__name__}")
    if not (sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma must be a finite number > 0, got {sigma}")
    return rule, float(sigma), check_seed(seed)


@dataclass(frozen=True)
class Randomization:
    """A validated re-initialisation: which blocks (bottom-up), rule, σ, seed."""

    layers: tuple[str, ...]
    rule: str = "reset"
    sigma: float = 0.01
    seed: int = 0

    @classmethod
    def checked(cls, model: nn.Module, layers, rule, sigma, seed) -> Randomization:
        names = check_layers(model, layers)
        rule, sigma, seed = check_rule(rule, sigma, seed)
        return cls(tuple(names), rule, sigma, seed)

    def record(self) -> dict:
        """The settings as stored on a `SanityResult`."""
        return {"layers": list(self.layers), "rule": self.rule, "sigma": self.sigma,
                "seed": self.seed}

    def cascade(self, model: nn.Module) -> list[tuple[str, Callable[[], nn.Module]]]:
        """(block, build) top down; each build adds one block to the same copy."""
        state = copy.deepcopy(model).eval()

        def step(name: str) -> Callable[[], nn.Module]:
            def build() -> nn.Module:
                block = state.get_submodule(name)
                reinit_(block, self.rule, self.sigma, layer_seed(self.seed, name))
                return state

            return build

        return [(name, step(name)) for name in reversed(self.layers)]

    def independent(self, model: nn.Module) -> list[tuple[str, Callable[[], nn.Module]]]:
        """(block, build) top down; each build randomizes one block of a new copy."""

        def step(name: str) -> Callable[[], nn.Module]:
            return lambda: randomize(model, name, self.rule, self.sigma, self.seed)

        return [(name, step(name)) for name in reversed(self.layers)]
