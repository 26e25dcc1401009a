"""CAM: class activation mapping for networks ending in GAP + one linear layer."""

from __future__ import annotations

import torch
from torch import nn

from .core import capture_output, eval_mode, get_layer, removing_hooks, select
from .grad_cam import upsample_cam
from .validate import check_input, check_model, target_tensor

REQUIREMENT = (
    "cam needs a network that ends in global average pooling and one linear "
    "layer (… → features (N, D, h, w) → AdaptiveAvgPool2d(1) → flatten → "
    "Linear(D, K)), like ResNetSmall or torchvision's ResNets"
)


def cam_textbook(model: nn.Module, x: torch.Tensor, target, layer=None) -> torch.Tensor:
    """M_c(i, j) = Σ_k w_ck A^k(i, j), one image, one channel at a time.

    The plain loop of `cam` (no ReLU, no upsampling), for reading next to the
    formula; `cam` computes the same map batched. Returns (N, 1, h, w).
    """
    layer_name, fc = gap_linear_head(model, layer)
    idx = target_tensor(target, x.shape[0], x.device)
    module = get_layer(model, layer_name)
    with eval_mode(model), capture_output(module) as store, torch.no_grad():
        select(model(x), idx)  # checks targets and rows
    act = store["output"]
    n, d, h, w = act.shape
    maps = torch.zeros(n, 1, h, w, dtype=act.dtype)
    for i in range(n):
        c = int(idx[i])
        for k in range(d):
            maps[i, 0] += fc.weight[c, k].detach() * act[i, k]
    return maps


def cam(
    model: nn.Module,
    x: torch.Tensor,
    target,
    layer=None,
    relu: bool = True,
    upsample: bool = True,
) -> torch.Tensor:
    """L_c = ReLU(Σ_k w_ck A^k): the class weights of the last layer on the feature maps.

    A = the feature maps (N, D, h, w) that the network averages globally; the
    logits are y_c = Σ_k w_ck · mean_ij A^k_ij + b_c. CAM puts the same
    weights on the maps before they are averaged (the bias, one number per
    class, is left out as in the paper).

    Zhou, Khosla, Lapedriza, Oliva & Torralba, "Learning Deep Features for
    Discriminative Localization", CVPR 2016.

    Relation to Grad-CAM: here ∂y_c/∂A^k_ij = w_ck / (hw), so Grad-CAM's
    weights are α_k = w_ck / (hw) and Grad-CAM at the same layer is exactly
    CAM / (hw), before and after the ReLU and the (linear) bilinear
    upsampling. For ResNetSmall (layer3, 7 × 7): CAM = 49 · Grad-CAM.

    Args:
        model: maps (N, C, H, W) inputs to (N, K) logits and ends in global
            average pooling and one `nn.Linear` (its last top-level child is
            the Linear; before it, only an `nn.AdaptiveAvgPool2d(1)` and
            optionally an `nn.Flatten`). Checked on every call: the Linear's
            input must equal the spatial mean of the layer's output, else
            ValueError naming the requirement (use `grad_cam` instead, which
            works for any CNN; e.g. SmallCNN ends in two Linear layers).
        x: (N, C, H, W) inputs.
        target: class index, or one per row.
        layer: the module whose output is pooled, by dotted name or module;
            None (default) = the top-level child just before the pooling
            ("layer3" for ResNetSmall).
        relu: apply ReLU to the map (default True), as `grad_cam`.
        upsample: resize to x's (H, W) bilinearly (default True), exactly as
            `grad_cam` does.
    Returns:
        (N, 1, H, W) if upsample else (N, 1, h, w); detached, on x's device.

    Not in `METHODS`: METHODS entries must run on every model (SmallCNN
    has no GAP + linear head). Captum has no CAM; `LayerGradCam` times hw
    reproduces it (see above).
    """
    check_model(model)
    check_input(x)
    layer_name, fc = gap_linear_head(model, layer)
    idx = target_tensor(target, x.shape[0], x.device)
    module = get_layer(model, layer_name)
    with eval_mode(model), capture_output(module) as store, removing_hooks() as hooks:
        fc_in: dict = {}
        hooks.append(
            fc.register_forward_pre_hook(lambda _m, inputs: fc_in.update(x=inputs[0]))
        )
        with torch.no_grad():
            select(model(x), idx)
    act = _check_pooled(store, fc_in, layer_name)
    n, d, h, w = act.shape
    weights = fc.weight.detach()[idx].to(act.dtype)  # (N, D): w_c for each row
    # Σ_k w_ck A^k for every row at once: (N, 1, D) @ (N, D, hw)
    maps = torch.bmm(weights[:, None], act.reshape(n, d, h * w)).view(n, 1, h, w)
    if relu:
        maps = maps.clamp(min=0)
    return upsample_cam(maps, x.shape[2:]) if upsample else maps


def gap_linear_head(model: nn.Module, layer=None) -> tuple[str, nn.Linear]:
    """(name of the pooled layer, the final Linear) of a GAP + linear network.

    Structural check only (the pooling's input is verified numerically by
    `cam`): the last top-level child is an `nn.Linear`, and the children
    between it and the layer are one `nn.AdaptiveAvgPool2d` with output size 1
    and optionally an `nn.Flatten`. ValueError naming the requirement otherwise.
    """
    check_model(model)
    children = list(model.named_children())
    if not children or not isinstance(children[-1][1], nn.Linear):
        last = children[-1][0] if children else "(none)"
        raise ValueError(
            f"{REQUIREMENT}; this model's last top-level module is {last!r} "
            f"({type(children[-1][1]).__name__ if children else 'no children'}), "
            "not an nn.Linear. Use grad_cam, which works for any CNN."
        )
    fc = children[-1][1]
    k = len(children) - 2
    while k >= 0 and isinstance(children[k][1], nn.Flatten):
        k -= 1
    pool = children[k][1] if k >= 0 else None
    if not (isinstance(pool, nn.AdaptiveAvgPool2d) and _is_global(pool.output_size)):
        before = children[k][0] if k >= 0 else "(none)"
        raise ValueError(
            f"{REQUIREMENT}; before its last Linear {children[-1][0]!r} this model "
            f"has {before!r} ({type(pool).__name__}), not a global "
            "nn.AdaptiveAvgPool2d(1). Use grad_cam, which works for any CNN."
        )
    if k == 0:
        raise ValueError(f"{REQUIREMENT}; no layer comes before the pooling")
    if layer is None:
        return children[k - 1][0], fc
    if isinstance(layer, nn.Module):
        get_layer(model, layer)
        name = next(n for n, m in model.named_modules() if m is layer)
        return name, fc
    get_layer(model, layer)
    return layer, fc


def _is_global(size) -> bool:
    sizes = (size, size) if isinstance(size, int) else tuple(size)
    return all(s == 1 for s in sizes)  # None (keep the input size) is not global


def feature_maps(store: dict, layer) -> torch.Tensor:
    """The (N, D, h, w) output `capture_output` recorded for `layer`.

    ValueError if the layer was not called or does not output feature maps.
    """
    if "output" not in store:
        raise ValueError(f"layer {layer!r} was not called in the model's forward pass")
    act = store["output"]
    if act.dim() != 4:
        raise ValueError(
            f"layer {layer!r} must output (N, D, h, w) feature maps, got shape "
            f"{tuple(act.shape)}"
        )
    return act


def _check_pooled(store: dict, fc_in: dict, layer) -> torch.Tensor:
    """The layer's maps, after checking the Linear read their spatial mean."""
    act = feature_maps(store, layer)
    pooled = act.mean((2, 3))
    seen = fc_in.get("x")
    if (
        seen is None
        or seen.shape != pooled.shape
        or not torch.allclose(seen, pooled, rtol=1e-4, atol=1e-5)
    ):
        raise ValueError(
            f"{REQUIREMENT}; the final Linear does not read the global average of "
            f"layer {layer!r}'s output (pass the layer that feeds the pooling, or "
            "use grad_cam)"
        )
    return act
