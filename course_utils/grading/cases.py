"""What a check feeds to a student's function: its cases, built from a seed.

Exercise notebooks reach these through `checks` (``checks.Case``,
``checks.Inputs``, ``checks.Noise``, ``checks.build_model``,
``checks.parameter_changes``); the grader's `harness` rebuilds `Built` cases
from the inputs the reference run stored. Runs in the student's kernel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Noise:
    """A noise tensor (n_samples, *x.shape) ~ N(0, scale²), drawn from `seed`."""

    n_samples: int
    scale: float
    seed: int = 0

    def make(self, x: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed)
        return torch.randn((self.n_samples, *x.shape), generator=gen) * self.scale


@dataclass(frozen=True)
class Built:
    """A case made concrete: call `fn(*args, **kwargs)`; `model` if there is one."""

    args: tuple
    kwargs: dict
    model: nn.Module | None
    label: str
    case: object = None


def _linear_model(seed: int) -> nn.Module:
    """f(x) = W·flatten(x) + b on 28×28 digits, 10 classes, weights from `seed`."""
    gen = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(10, 28 * 28, generator=gen) * 0.05)
        model[1].bias.copy_(torch.randn(10, generator=gen) * 0.1)
    return model.eval()


def build_model(name: str, seed: int = 0) -> nn.Module:
    """A fresh eval-mode model for a case.

    Args:
        name: "small_cnn" or "resnet_small" (the shipped, trained checkpoints),
            "small_cnn:random" / "resnet_small:random" (untrained, initialised
            from `seed`), or "linear" (a linear model f(x) = W·x + b from `seed`).
        seed: initialisation seed for the random and linear models.
    """
    from course_utils import models

    if name == "linear":
        return _linear_model(seed)
    arch, _, variant = name.partition(":")
    if variant == "":
        return models.load_pretrained(arch)
    if variant != "random":
        raise ValueError(
            f"model must be 'linear', an architecture name or 'NAME:random', got {name!r}"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = models.build(arch)
    return model.eval()


@dataclass(frozen=True)
class Case:
    """Inputs for a saliency function `fn(model, x, target, **kwargs)`.

    Args:
        model: see `build_model`.
        digits: indices into the data split; they form the batch x (N, 1, 28, 28).
        target: "label" (the digits' labels), "pred" (the model's prediction),
            one int for every row, or one int per row.
        seed: seed of random and linear models.
        split: "train" or "test".
        kwargs: extra keyword arguments for fn and the reference; a `Noise`
            value is turned into a tensor shaped (n_samples, *x.shape).
    """

    model: str = "small_cnn"
    digits: tuple[int, ...] = (0,)
    target: int | str | tuple[int, ...] = "label"
    seed: int = 0
    split: str = "test"
    kwargs: dict = field(default_factory=dict)

    def build(self) -> Built:
        from course_utils import data

        split = data.load_split(self.split)
        rows = list(self.digits)
        x = split.x[rows].clone()
        model = build_model(self.model, self.seed)
        if self.target == "label":
            target = split.y[rows].clone()
        elif self.target == "pred":
            with torch.no_grad():
                target = model(x).argmax(1)
        elif isinstance(self.target, int):
            target = self.target
        else:
            target = torch.tensor(list(self.target))
        kwargs = {
            k: v.make(x) if isinstance(v, Noise) else v for k, v in self.kwargs.items()
        }
        return Built((model, x, target), kwargs, model, self.describe(), self)

    def describe(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.kwargs.items())
        return (
            f"{self.model}, digits {list(self.digits)}, target {self.target!r}{extra}"
        )


@dataclass(frozen=True)
class Inputs:
    """Inputs built by a function: `fn(*args, **kwargs)` with (args, kwargs) = make(gen).

    Args:
        make: builds the arguments from a seeded `torch.Generator`; returns a
            tuple of positional arguments, or (args, kwargs).
        seed: the generator's seed.
        label: a short description shown in messages.

    The first `nn.Module` among the arguments, if any, is the case's model
    (see `parameter_changes`).
    """

    make: Callable[[torch.Generator], tuple]
    seed: int = 0
    label: str = "inputs"

    def build(self) -> Built:
        made = self.make(torch.Generator().manual_seed(self.seed))
        if len(made) == 2 and isinstance(made[0], tuple) and isinstance(made[1], dict):
            args, kwargs = made
        else:
            args, kwargs = tuple(made), {}
        model = next((a for a in args if isinstance(a, nn.Module)), None)
        return Built(tuple(args), dict(kwargs), model, self.describe(), self)

    def describe(self) -> str:
        return f"{self.label} (seed {self.seed})"


def fresh(built: Built) -> tuple[tuple, dict]:
    """Copies of the tensors in a built case, so fn and reference see the same data."""

    def copy(v):
        return v.clone() if isinstance(v, torch.Tensor) else v

    return tuple(copy(a) for a in built.args), {
        k: copy(v) for k, v in built.kwargs.items()
    }


def parameter_changes(model: nn.Module, built: Built) -> np.ndarray:
    """Per-parameter change of a returned model, then of the model passed in.

    For a function that returns a modified copy of `built.model`: entry i is
    ‖pᵢ(returned) − pᵢ(original)‖ over the parameters in `named_parameters`
    order, followed by the same for the model that was passed in (which must
    not change). Compared with compare="nonzero_pattern".
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"returned {type(model).__name__}, expected an nn.Module")
    if built.model is None:
        raise TypeError("parameter_changes needs a case that passes a model")
    pristine = dict(built.case.build().model.named_parameters())
    returned = dict(model.named_parameters())
    passed = dict(built.model.named_parameters())
    if returned.keys() != pristine.keys():
        raise ValueError(
            "the returned model has different parameters than the original"
        )
    with torch.no_grad():
        out = [float((returned[k] - pristine[k]).norm()) for k in pristine]
        out += [float((passed[k] - pristine[k]).norm()) for k in pristine]
    return np.asarray(out)
