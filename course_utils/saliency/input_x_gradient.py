"""Input × gradient."""

from __future__ import annotations

import torch
from torch import nn

from .gradient import gradient, gradient_textbook


def input_x_gradient_textbook(model, x, target):
    """E(x) = x ⊙ ∇ₓ f_target(x), the plain version (model in eval mode)."""
    return x.detach() * gradient_textbook(model, x, target)


def input_x_gradient(model: nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    """E(x) = x ⊙ ∇ₓ f_target(x)  (Shrikumar et al., 2016).

    Shrikumar, Greenside, Shcherbina & Kundaje, "Not Just a Black Box:
    Learning Important Features Through Propagating Activation Differences",
    arXiv:1605.01713, 2016.

    Args:
        model: maps (N, C, H, W) inputs to (N, K) logits.
        x: (N, C, H, W) inputs.
        target: class index, or one per row.
    Returns:
        (N, C, H, W) attributions; zero wherever x is zero (the black
        background of the digits).

    Captum: `captum.attr.InputXGradient(model).attribute(x, target=target)`
    (same defaults, no departure).
    """
    grad = gradient(model, x, target)  # checks model, x and target first
    return x.detach() * grad
