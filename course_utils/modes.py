"""Eval mode for the length of a block: the course's one mode restorer.

It lives outside `saliency` so that `models`, `shortcut` and the grading
sandbox (where `course_utils.saliency` is absent) can use it without
importing the saliency methods; `saliency.core` re-exports it.

Why eval mode: a saliency map explains the deployed function. A model left in
train mode would use batch statistics in BatchNorm (so a row's map would
depend on the other rows, the IG steps and the noisy copies in its chunk) and
would overwrite BatchNorm's running statistics, a side effect.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["eval_mode"]


def _collect_training(module: nn.Module, out: list) -> None:
    """Append every module in train mode (a plain recursion, cheaper than modules())."""
    if module.training:
        out.append(module)
    for child in module._modules.values():
        if child is not None:
            _collect_training(child, out)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode inside the block; each module's own `training` flag restored after.

    Only the modules that were training are switched (and switched back, in a
    `finally`, so also when the body raises; the exception propagates
    unchanged). Parameters are never touched: gradients are taken with
    respect to the input only (`torch.autograd.grad`), so their
    `requires_grad` flags stay as they are and `.grad` never accumulates.
    """
    training: list[nn.Module] = []
    _collect_training(model, training)
    try:
        for m in training:
            m.training = False
        yield model
    finally:
        for m in training:
            m.training = True
