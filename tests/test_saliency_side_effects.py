"""No side effects: every method leaves the model and the input as it found them.

After every call — and after a call that raised — the model's weights and
buffers (BatchNorm running statistics included), every module's `training`
flag, every parameter's `requires_grad` and `.grad`, and every registered
hook are unchanged, and the input tensor is untouched. The model used here is
in train mode, with Dropout and BatchNorm, one submodule in eval mode, one
frozen parameter and a user hook.
"""

import pytest
import torch
from torch import nn

from course_utils import saliency as sal

# Cheap settings so each method runs in milliseconds.
KWARGS = {
    "integrated_gradients": {"n_steps": 4, "batch_size": 5},
    "smoothgrad": {"n_samples": 3, "batch_size": 4},
    "occlusion": {"patch": 3, "stride": 2, "batch_size": 7},
    "gradient_shap": {"baselines": torch.rand(3, 1, 8, 8), "n_samples": 3},
}


class Busy(nn.Module):
    """Conv, BatchNorm, ReLU, Dropout; (N, 1, 8, 8) → (N, 3). Can explode on demand."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu1 = nn.ReLU()
        self.drop = nn.Dropout(0.5)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(24, 3)
        self.explode = False

    def forward(self, x):
        x = self.drop(self.relu1(self.bn(self.conv1(x))))
        if self.explode:
            raise RuntimeError("boom inside forward")
        x = self.pool(self.relu2(self.conv2(x)))
        return self.fc(torch.flatten(x, 1))


def hook_state(model):
    return {
        name: tuple(
            tuple(getattr(m, attr).keys())
            for attr in (
                "_forward_hooks",
                "_forward_pre_hooks",
                "_backward_hooks",
                "_backward_pre_hooks",
            )
        )
        for name, m in model.named_modules()
    }


def snapshot(model, x):
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "training": {n: m.training for n, m in model.named_modules()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "grad": {
            n: None if p.grad is None else p.grad.clone()
            for n, p in model.named_parameters()
        },
        "hooks": hook_state(model),
        "global_hooks": (
            len(nn.modules.module._global_forward_hooks),
            len(nn.modules.module._global_backward_hooks),
        ),
        "x": x.clone(),
        "x_version": x._version,
        "x_requires_grad": x.requires_grad,
    }


def assert_unchanged(before, model, x):
    after = snapshot(model, x)
    assert before["state"].keys() == after["state"].keys()
    for k in before["state"]:
        assert torch.equal(before["state"][k], after["state"][k]), k
    for key in (
        "training",
        "requires_grad",
        "hooks",
        "global_hooks",
        "x_version",
        "x_requires_grad",
    ):
        assert before[key] == after[key], key
    for n, g in before["grad"].items():
        if g is None:
            assert after["grad"][n] is None, n
        else:
            assert torch.equal(g, after["grad"][n]), n
    assert torch.equal(before["x"], after["x"])


@pytest.fixture
def busy():
    torch.manual_seed(0)
    model = Busy().train()
    model.drop.eval()  # a submodule whose mode differs from its parent's
    model.conv1.weight.requires_grad_(False)
    model.fc.weight.grad = torch.full_like(model.fc.weight, 0.5)
    calls = []
    model.relu1.register_forward_hook(lambda *args: calls.append(1))
    model.calls = calls
    return model


@pytest.fixture
def x():
    return torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", list(sal.METHODS))
def test_call_leaves_model_and_input_unchanged(busy, x, name):
    before = snapshot(busy, x)
    attr = sal.METHODS[name](busy, x, [0, 1, 2, 0], **KWARGS.get(name, {}))
    assert_unchanged(before, busy, x)
    assert busy.calls, "the user's hook must stay active during the call"
    assert not attr.requires_grad and attr.grad_fn is None
    # Evaluated in eval mode: the same map as for an eval-mode copy (Dropout
    # off, BatchNorm on running statistics), and repeatable.
    import copy

    frozen = copy.deepcopy(busy).eval()
    kwargs = dict(KWARGS.get(name, {}))
    if name == "smoothgrad":
        kwargs["generator"] = torch.Generator().manual_seed(1)
        attr = sal.smoothgrad(busy, x, [0, 1, 2, 0], **kwargs)
        kwargs["generator"] = torch.Generator().manual_seed(1)
    expected = sal.METHODS[name](frozen, x, [0, 1, 2, 0], **kwargs)
    torch.testing.assert_close(attr, expected)


@pytest.mark.parametrize("name", list(sal.METHODS))
def test_failed_call_leaves_model_and_input_unchanged(busy, x, name):
    before = snapshot(busy, x)
    with pytest.raises(ValueError, match="target must be a class index in 0..2"):
        sal.METHODS[name](busy, x, 7, **KWARGS.get(name, {}))
    assert_unchanged(before, busy, x)
    busy.explode = True
    with pytest.raises(RuntimeError, match="boom inside forward"):
        sal.METHODS[name](busy, x, 1, **KWARGS.get(name, {}))
    busy.explode = False
    assert_unchanged(before, busy, x)


def test_hooks_removed_when_user_hook_raises(busy, x):
    """An exception raised by someone else's hook mid-call propagates unchanged."""

    def bad(*_args):
        raise KeyError("user hook failed")

    handle = busy.relu2.register_forward_hook(bad)
    before = snapshot(busy, x)
    for name in ("guided_backprop", "grad_cam", "guided_grad_cam", "deconvnet"):
        with pytest.raises(KeyError, match="user hook failed"):
            sal.METHODS[name](busy, x, 0)
        assert_unchanged(before, busy, x)
    handle.remove()


def test_inputs_that_require_grad_or_live_in_inference_mode(small_cnn, digits):
    x, y = digits
    leaf = x[:2].clone().requires_grad_()
    attr = sal.gradient(small_cnn, leaf, y[:2])
    assert leaf.grad is None and leaf.requires_grad
    with torch.inference_mode():
        frozen = x[:2].clone()
    torch.testing.assert_close(sal.gradient(small_cnn, frozen, y[:2]), attr)
    with torch.no_grad():  # works inside no_grad too
        torch.testing.assert_close(sal.gradient(small_cnn, x[:2], y[:2]), attr)
    assert all(p.grad is None for p in small_cnn.parameters())
