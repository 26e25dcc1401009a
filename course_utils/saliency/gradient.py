"""Gradient saliency (vanilla gradient)."""

from __future__ import annotations

import torch
from torch import nn

from .core import eval_mode, input_gradient
from .validate import check_input, check_model, target_tensor


def gradient_textbook(model, x, target):
    """E_grad(x) = ∇ₓ f_target(x), the plain version (model in eval mode).

    target: an int, or one class per row. Rows are independent, so the
    gradient of the sum of the rows' target logits is every row's gradient.
    """
    x = x.detach().clone().requires_grad_(True)
    scores = model(x)[torch.arange(len(x)), target]  # f_target(x), one per row
    (grad,) = torch.autograd.grad(scores.sum(), x)
    return grad


def gradient(
    model: nn.Module, x: torch.Tensor, target, absolute: bool = False
) -> torch.Tensor:
    """E_grad(x) = ∇ₓ f_target(x), the gradient of the target logit.

    Simonyan, Vedaldi & Zisserman, "Deep Inside Convolutional Networks:
    Visualising Image Classification Models and Saliency Maps", ICLR workshop
    2014.

    Args:
        model: maps (N, C, H, W) inputs to (N, K) logits; run in eval mode
            (each module's `training` flag is restored afterwards).
        x: (N, C, H, W) finite float inputs (left untouched).
        target: class index (int) for every row, or one per row
            (list / 1-D integer tensor of length N).
        absolute: return |∇ₓ f_target(x)| (the paper's map takes the absolute
            value, and the maximum over channels; we keep channels). Default
            False: the signed gradient.
    Returns:
        (N, C, H, W) gradient, detached, on x's device.

    Captum: `captum.attr.Saliency(model).attribute(x, target=target,
    abs=absolute)`. Departure: Captum's default is `abs=True`; ours is signed.
    """
    check_model(model)
    check_input(x)
    idx = target_tensor(target, x.shape[0], x.device)
    with eval_mode(model):
        grad, _ = input_gradient(model, x, idx)
    return grad.abs() if absolute else grad
