"""Guided backpropagation and deconvnet: gradients with modified ReLU backward."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .core import eval_mode, input_gradient, removing_hooks
from .gradient import gradient_textbook
from .validate import check_input, check_model, target_tensor


def guided_backprop_textbook(model, x, target):
    """The gradient, with every ReLU passing back max(g, 0)·1[y > 0]: plain version.

    grad_in of an nn.ReLU is already g·1[y > 0]; guided backprop clamps it at 0.
    """
    return _textbook_rule(model, x, target, lambda grad_in, grad_out: grad_in)


def deconvnet_textbook(model, x, target):
    """The gradient, with every ReLU passing back max(g, 0) (no forward mask)."""
    return _textbook_rule(model, x, target, lambda grad_in, grad_out: grad_out)


def _textbook_rule(model, x, target, passed):
    """gradient_textbook with each nn.ReLU's backward replaced by max(passed, 0)."""

    def hook(_relu, grad_in, grad_out):
        return (passed(grad_in[0], grad_out[0]).clamp(min=0),)

    with removing_hooks() as handles:
        for module in model.modules():
            if isinstance(module, nn.ReLU):
                handles.append(module.register_full_backward_hook(hook))
        return gradient_textbook(model, x, target)


class _DeconvReLU(torch.autograd.Function):
    """relu(x) forward; backward passes max(g, 0), ignoring the forward mask."""

    @staticmethod
    def forward(ctx, x):
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        return grad.clamp(min=0)


def _relus(module: nn.Module, out: list) -> list:
    """Every nn.ReLU under module (a plain recursion, cheaper than modules())."""
    if isinstance(module, nn.ReLU):
        out.append(module)
    for child in module._modules.values():
        if child is not None:
            _relus(child, out)
    return out


def check_relus(model: nn.Module) -> list[nn.Module]:
    """The model's nn.ReLU modules, in-place ones included (see `relu_rule`)."""
    return _relus(model, [])


@contextmanager
def relu_rule(model: nn.Module, rule: str) -> Iterator[dict]:
    """Change the backward rule of every nn.ReLU module of model inside the block.

    For the upstream gradient g at a ReLU's output y = relu(x), the gradient
    passed to x becomes

    * "plain":     g · 1[y > 0]            (the true ReLU gradient)
    * "guided":    max(g, 0) · 1[y > 0]    (guided backprop)
    * "deconvnet": max(g, 0)               (ignores the forward mask)

    "plain"/"guided": a forward hook puts a tensor hook on y that clamps g
    before ReLU's own backward masks it; the rule is read from the yielded
    `switch["rule"]` when the backward pass runs, so guided Grad-CAM can take
    the plain gradient at its layer and then the guided one at the input from
    one forward pass. This works for in-place ReLUs too (y is then x itself,
    rectified; the hook still sees the gradient at y, and ReLU's backward
    masks it). "deconvnet": the forward hook swaps y for an equal-valued
    output of `_DeconvReLU` computed from the ReLU's input as it was before
    the ReLU ran; for an in-place ReLU a forward pre-hook hands the ReLU a
    copy of its input (as Captum's hooks do), so the original stays
    unrectified for `_DeconvReLU` and its gradient skips ReLU's mask. The
    forward values are unchanged. Hooks are removed on exit, also when the
    body raises (the exception propagates).
    """
    relus = check_relus(model)
    switch = {"rule": rule}
    before: dict = {}  # in-place ReLU module → its input before this call

    def clamp_if_guided(grad):
        return grad.clamp(min=0) if switch["rule"] == "guided" else None

    def keep_input(module, inputs):
        before[module] = inputs[0]
        return (inputs[0].clone(), *inputs[1:])

    def hook(module, inputs, output):
        if rule == "deconvnet":
            return _DeconvReLU.apply(before.pop(module, inputs[0]))
        if output.requires_grad:
            output.register_hook(clamp_if_guided)
        return None

    with removing_hooks() as handles:
        for module in relus:
            if rule == "deconvnet" and module.inplace:
                handles.append(module.register_forward_pre_hook(keep_input))
            handles.append(module.register_forward_hook(hook))
        yield switch
        before.clear()


def _modified_gradient(model, x, target, rule: str) -> torch.Tensor:
    check_model(model)
    check_input(x)
    idx = target_tensor(target, x.shape[0], x.device)
    with eval_mode(model), relu_rule(model, rule):
        grad, _ = input_gradient(model, x, idx)
    return grad


def guided_backprop(model: nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    """∇ₓ f_target(x) with every ReLU's backward replaced by max(g, 0)·1[y > 0].

    Only positive gradient flows back, and only through units that were
    active in the forward pass.

    Springenberg, Dosovitskiy, Brox & Riedmiller, "Striving for Simplicity:
    The All Convolutional Net", ICLR workshop 2015.

    Args:
        model: maps (N, C, H, W) inputs to (N, K) logits; every ReLU must be
            its own `nn.ReLU` module (in-place or not: torchvision's in-place
            ReLUs work, and a module reused several times in one forward pass
            is handled call by call). What cannot work: a ReLU applied as a
            function (`F.relu`, `torch.relu`, `x.clamp(min=0)`) cannot be
            detected and silently keeps the plain gradient, and other
            activations (ReLU6, Hardswish, SiLU…) keep their own gradient,
            as in Captum.
        x: (N, C, H, W) inputs.
        target: class index, or one per row.
    Returns:
        (N, C, H, W) guided gradients, detached, on x's device.

    Captum: `GuidedBackprop(model).attribute(x, target=target)` (same rule,
    applied with backward hooks).
    """
    return _modified_gradient(model, x, target, "guided")


def deconvnet(model: nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    """∇ₓ f_target(x) with every ReLU's backward replaced by max(g, 0).

    The backward pass ignores which units were active (the "deconvnet"
    reconstruction of Zeiler & Fergus, as framed by Springenberg et al.).

    Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks",
    ECCV 2014.

    Args:
        model: as for `guided_backprop` (nn.ReLU modules, in-place or not;
            functional ReLUs cannot be detected and keep the plain gradient).
            An in-place nn.ReLU is run on a copy of its input (as in Captum),
            so a model that reads that input tensor again after the ReLU,
            instead of the ReLU's return value, would see it unrectified.
        x: (N, C, H, W) inputs.
        target: class index, or one per row.
    Returns:
        (N, C, H, W) attributions, detached, on x's device.

    Captum: `Deconvolution(model).attribute(x, target=target)`.
    """
    return _modified_gradient(model, x, target, "deconvnet")
