"""Argument checks shared by the saliency methods, metrics, sanity checks and widgets.

Each check returns the (normalised) value or raises a `TypeError`/`ValueError`
naming the argument and what it accepts:

* `check_model`, `check_input`, `check_int`, `check_choice` (`core` adds
  `check_batch_size`, next to the chunking it sizes);
* targets: `target_tensor` (one class per row, an (N,) int64 tensor: every
  public function resolves its target once, on entry) and `check_target` (the
  one range check, 0..K − 1).

Imports only torch.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import nn


def check_model(model: object) -> nn.Module:
    """Accept only an `nn.Module` (we need its modes, parameters and hooks)."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            "model must be a torch.nn.Module mapping (N, C, H, W) inputs to "
            f"(N, K) logits, got {type(model).__name__}"
        )
    return model


def check_input(x: object, name: str = "x") -> torch.Tensor:
    """Accept a finite floating-point (N, C, H, W) tensor with N ≥ 1."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape (N, C, H, W), "
            f"got {type(x).__name__}"
        )
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must have a floating-point dtype (e.g. torch.float32), "
            f"got {x.dtype}"
        )
    if x.dim() != 4:
        raise ValueError(
            f"{name} must have 4 dims (N, C, H, W), got shape {tuple(x.shape)} "
            f"({x.dim()} dims); use x.unsqueeze(0) for a single image"
        )
    if x.shape[0] == 0 or x.numel() == 0:
        raise ValueError(
            f"{name} must hold at least one non-empty image, got shape {tuple(x.shape)}"
        )
    # One reduction and one sync: a NaN/Inf makes the sum non-finite; only a
    # non-finite sum (or an overflowing one) pays for the elementwise check.
    if not math.isfinite(float(x.detach().sum())) and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite; it holds NaN or Inf values")
    return x


def check_int(value: object, name: str, low: int, high: int | None = None) -> int:
    """Accept a Python/numpy int (not bool) in low … high (high=None: no cap)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if value < low or (high is not None and value > high):
        accepted = f"in {low}..{high}" if high is not None else f"≥ {low}"
        raise ValueError(f"{name} must be an int {accepted}, got {value}")
    return value


def check_choice(value: object, name: str, choices: Sequence[str]) -> str:
    """Accept one of a fixed set of strings."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


# ----------------------------------------------------------------- targets


def target_tensor(target: object, n: int, device: torch.device) -> torch.Tensor:
    """The class explained in each row, as an (n,) int64 tensor on `device`.

    The one place a target is resolved: every public function calls it on
    entry and passes the tensor down. `target` is an int (the same class for
    every row), a 0-d integer tensor, or a list/tuple/1-D integer tensor of n
    ints (one per row). Its range is checked by `check_target` (here ≥ 0; the
    upper end once the model's logits show how many classes there are).
    """
    if isinstance(target, bool):
        raise TypeError("target must be an int or one int per row, got bool")
    if isinstance(target, numbers.Integral):
        idx = torch.full((n,), int(target), dtype=torch.long, device=device)
        return check_target(idx)
    if isinstance(target, torch.Tensor):
        if (
            target.is_floating_point()
            or target.is_complex()
            or target.dtype == torch.bool
        ):
            raise TypeError(
                f"target must hold integers (class indices), got dtype {target.dtype}"
            )
        if target.dim() == 0:
            return target_tensor(int(target), n, device)
        if target.dim() > 1:
            raise ValueError(
                "target must be an int or a 1-D tensor with one int per row, "
                f"got a tensor of shape {tuple(target.shape)}"
            )
        count = target.shape[0]
    elif isinstance(target, (list, tuple)):
        if not all(
            isinstance(t, numbers.Integral) and not isinstance(t, bool) for t in target
        ):
            raise TypeError(f"target must be an int or a list of ints, got {target!r}")
        count = len(target)
    else:
        raise TypeError(
            "target must be an int, a list of ints or an integer tensor, "
            f"got {type(target).__name__}"
        )
    if count != n:
        raise ValueError(
            f"target must be an int or hold one class per row of x: x has {n} "
            f"rows, target has {count}"
        )
    if isinstance(target, torch.Tensor):
        idx = target.detach().to(device=device, dtype=torch.long)
    else:
        idx = torch.tensor([int(t) for t in target], dtype=torch.long, device=device)
    return check_target(idx)


def check_target(idx: torch.Tensor, classes: int | None = None) -> torch.Tensor:
    """The one range check of class indices: each in 0..classes − 1.

    `classes` is the model's number of outputs K (None while it is not known:
    then only ≥ 0 is checked). Returns idx.
    """
    if idx.numel() == 0:
        return idx
    if idx.numel() <= 4096:  # one sync, then Python (cheaper than two .item())
        values = idx.tolist()
        lo, hi = min(values), max(values)
    else:
        lo, hi = (int(v) for v in torch.aminmax(idx))
    if lo >= 0 and (classes is None or hi < classes):
        return idx
    got = sorted(set(idx.tolist()))
    if classes is None:
        raise ValueError(f"target must hold class indices ≥ 0, got {got}")
    raise ValueError(
        f"target must be a class index in 0..{classes - 1} (the model has "
        f"{classes} outputs), got {got}"
    )


def check_noise_level(noise_level: object) -> float:
    """σ as a fraction of the input range: a finite real number ≥ 0."""
    if isinstance(noise_level, bool) or not isinstance(noise_level, numbers.Real):
        raise TypeError(
            f"noise_level must be a number ≥ 0, got {type(noise_level).__name__}"
        )
    if not 0 <= noise_level < float("inf"):
        raise ValueError(f"noise_level must be a finite number ≥ 0, got {noise_level}")
    return float(noise_level)


def check_generator(generator: object) -> torch.Generator | None:
    """A torch.Generator for the draws, or None (torch's global generator)."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            "generator must be a torch.Generator or None, "
            f"got {type(generator).__name__}"
        )
    return generator
