"""Guided Grad-CAM."""

from __future__ import annotations

import torch
from torch import nn

from .core import check_used, eval_mode, resolve_layer
from .grad_cam import cam_from, grad_cam_textbook, target_and_activation, upsample_cam
from .guided_backprop import guided_backprop_textbook, relu_rule
from .validate import check_input, check_model, target_tensor


def guided_grad_cam_textbook(model, x, target, layer=None):
    """GuidedBackprop(x) ⊙ upsample(Grad-CAM(x)), the plain version (two passes)."""
    cam = grad_cam_textbook(model, x, target, layer)  # (N, 1, H, W), with ReLU
    return guided_backprop_textbook(model, x, target) * cam


def guided_grad_cam(
    model: nn.Module, x: torch.Tensor, target, layer=None
) -> torch.Tensor:
    """GuidedBackprop(x) ⊙ upsample(Grad-CAM(x)): fine detail masked by the class map.

    Grad-CAM with its ReLU, resized bilinearly to (H, W), multiplies the
    guided-backprop gradient channel by channel.

    Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization", ICCV 2017 (section 3.2).

    Args:
        model: maps (N, C, H, W) inputs to (N, K) logits, with nn.ReLU
            modules, in-place or not (see `guided_backprop`).
        x: (N, C, H, W) inputs.
        target: class index, or one per row.
        layer: Grad-CAM's layer (dotted name or module); None (default) =
            `default_layer(model)`.
    Returns:
        (N, C, H, W) attributions, detached, on x's device.
    Raises:
        ValueError: naming the layer, if its output does not feed the logits.

    One forward pass serves both maps: the ReLUs' backward rule is switched
    from the true gradient (for Grad-CAM's ∂f/∂A) to the guided one (for the
    input) between the two backward passes.

    Captum: `GuidedGradCam(model, module).attribute(x, target=target,
    interpolate_mode="bilinear")`. Departure: Captum's default
    interpolate_mode is "nearest".
    """
    check_model(model)
    check_input(x)
    module = resolve_layer(model, layer)
    idx = target_tensor(target, x.shape[0], x.device)
    with eval_mode(model), relu_rule(model, "plain") as switch, torch.enable_grad():
        leaf, out, act = target_and_activation(model, x, idx, module, layer)
        out = out.sum()
        (grad,) = torch.autograd.grad(out, act, retain_graph=True, allow_unused=True)
        check_used(grad, layer)
        switch["rule"] = "guided"
        (guided,) = torch.autograd.grad(out, leaf)
    cam = cam_from(act.detach(), grad, relu=True)
    return guided * upsample_cam(cam, x.shape[2:])
