"""Grad-CAM."""

from __future__ import annotations

import torch
from torch import nn

from .core import (
    as_leaf,
    capture_output,
    captured,
    check_used,
    eval_mode,
    resolve_layer,
    select,
)
from .validate import check_input, check_model, target_tensor


def grad_cam_textbook(model, x, target, layer=None, relu=True, upsample=True):
    """L = ReLU(Σ_k α_k A^k), α_k = (1/hw) Σ_ij ∂f_target/∂A^k_ij: the plain version.

    A = the layer's output (N, K, h, w); model in eval mode.
    """
    module = resolve_layer(model, layer)
    x = x.detach().clone().requires_grad_(True)
    with capture_output(module) as store:
        scores = model(x)[torch.arange(len(x)), target]
    act = store["output"]  # A
    (grad,) = torch.autograd.grad(scores.sum(), act)  # ∂f/∂A
    alpha = grad.mean(dim=(2, 3), keepdim=True)  # α_k, (N, K, 1, 1)
    cam = (alpha * act).sum(1, keepdim=True).detach()  # Σ_k α_k A^k
    cam = cam.clamp(min=0) if relu else cam
    return upsample_cam(cam, x.shape[2:]) if upsample else cam


def cam_from(act: torch.Tensor, grad: torch.Tensor, relu: bool) -> torch.Tensor:
    """Σ_k α_k A^k with α_k = mean over (h, w) of ∂f/∂A^k; (N, 1, h, w)."""
    if act.dim() != 4:
        raise ValueError(
            "layer must output (N, C, h, w) feature maps for Grad-CAM, got shape "
            f"{tuple(act.shape)}"
        )
    n, k, h, w = act.shape
    alpha = grad.reshape(n, k, h * w).mean(2)  # (N, K)
    # Σ_k α_k A^k for every row as one batched product: (N, 1, K) @ (N, K, hw)
    cam = torch.bmm(alpha[:, None], act.reshape(n, k, h * w)).view(n, 1, h, w)
    return cam.clamp(min=0) if relu else cam


def target_and_activation(model, x, idx, module, layer) -> tuple:
    """(leaf, f_idx per row, A): one forward pass of x recording module's output A.

    Call in eval mode under `torch.enable_grad()`; the leaf is a fresh copy
    of x that requires grad. ValueError naming `layer` if A is not usable.
    """
    with capture_output(module) as store:
        leaf = as_leaf(x)
        out = select(model(leaf), idx)
    return leaf, out, captured(store, layer)


def upsample_cam(cam: torch.Tensor, size) -> torch.Tensor:
    """Bilinear resize to (H, W), `align_corners=False` (Captum's interpolate)."""
    return nn.functional.interpolate(cam, size=tuple(size), mode="bilinear")


def grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    target,
    layer=None,
    relu: bool = True,
    upsample: bool = True,
) -> torch.Tensor:
    """L = ReLU(Σ_k α_k A^k), α_k = (1/hw) Σ_ij ∂f_target/∂A^k_ij.

    A = the layer's output (N, D, h, w) for x; α_k the spatial mean of the
    target logit's gradient with respect to feature map k.

    Selvaraju, Cogswell, Das, Vedantam, Parikh & Batra, "Grad-CAM: Visual
    Explanations from Deep Networks via Gradient-based Localization", ICCV
    2017.

    Args:
        model: maps (N, C, H, W) inputs to (N, K) logits.
        x: (N, C, H, W) inputs.
        target: class index, or one per row.
        layer: a dotted submodule name ("relu2", "layer3", "layer2.conv1") or
            the module itself; it must output (N, D, h, w). None (default, as
            in `METHODS`) = `default_layer(model)`: "relu2" for SmallCNN,
            "layer3" for ResNetSmall. If the module runs more than once in a
            forward pass, its last call is used.
        relu: apply the paper's ReLU (default True).
        upsample: resize to x's (H, W) bilinearly (default True).
    Returns:
        (N, 1, H, W) if upsample else (N, 1, h, w); detached, on x's device.
    Raises:
        ValueError: naming the layer, if it is not called, or its output does
            not depend on x or does not feed the logits.

    A is kept as the layer produced it: the rest of the model runs on a copy
    (`capture_output`), so in-place ops downstream (ResNet's `out +=
    identity`, in-place ReLUs) do not alter it.

    Captum: `LayerGradCam(model, module).attribute(x, target=target,
    relu_attributions=relu)`, then `LayerAttribution.interpolate(attr, (H,
    W), interpolate_mode="bilinear")`. Departures: Captum skips the ReLU by
    default (`relu_attributions=False`) and interpolates with "nearest" by
    default.
    """
    check_model(model)
    check_input(x)
    module = resolve_layer(model, layer)
    idx = target_tensor(target, x.shape[0], x.device)
    with eval_mode(model), torch.enable_grad():
        _, out, act = target_and_activation(model, x, idx, module, layer)
        (grad,) = torch.autograd.grad(out.sum(), act, allow_unused=True)
    check_used(grad, layer)
    cam = cam_from(act.detach(), grad, relu)
    return upsample_cam(cam, x.shape[2:]) if upsample else cam
