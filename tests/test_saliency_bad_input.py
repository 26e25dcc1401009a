"""Bad input gets a ValueError/TypeError naming the argument and what it accepts."""

import math

import pytest
import torch
from torch import nn

from course_utils import saliency as sal


class Net(nn.Module):
    """(N, 1, 5, 5) → (N, 3) logits."""

    def __init__(self, inplace=False):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.relu = nn.ReLU(inplace=inplace)
        self.fc = nn.Linear(50, 3)

    def forward(self, x):
        return self.fc(torch.flatten(self.relu(self.conv(x)), 1))


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return Net().eval()


@pytest.fixture
def x():
    return torch.rand(3, 1, 5, 5, generator=torch.Generator().manual_seed(0))


FAST = {
    "integrated_gradients": {"n_steps": 2},
    "smoothgrad": {"n_samples": 2},
    "occlusion": {"patch": 2},
    "gradient_shap": {"n_samples": 2, "baselines": torch.zeros(2, 1, 5, 5)},
}
NAMES = list(sal.METHODS)


def call(name, model, x, target, **kwargs):
    return sal.METHODS[name](model, x, target, **{**FAST.get(name, {}), **kwargs})


@pytest.mark.parametrize("name", NAMES)
def test_every_method_checks_x_target_and_model(net, x, name):
    cases = [
        (ValueError, r"x must have 4 dims \(N, C, H, W\)", net, x[0], 0),
        (TypeError, r"x must be a torch.Tensor", net, x.numpy(), 0),
        (TypeError, r"x must have a floating-point dtype", net, (x * 9).long(), 0),
        (
            ValueError,
            r"x must be finite",
            net,
            x.index_fill(3, torch.tensor([1]), math.nan),
            0,
        ),
        (
            ValueError,
            r"x must be finite",
            net,
            x.index_fill(2, torch.tensor([0]), math.inf),
            0,
        ),
        (
            ValueError,
            (
                r"target must be an int or hold one class per row of x: x has 3 "
                r"rows, target has 2"
            ),
            net,
            x,
            [0, 1],
        ),
        (ValueError, r"target must be a class index in 0..2", net, x, 3),
        (ValueError, r"target must be a class index in 0..2", net, x, [0, 1, 5]),
        (ValueError, r"target must hold class indices ≥ 0", net, x, -1),
        (TypeError, r"target must hold integers", net, x, torch.tensor([0.0, 1, 2])),
        (TypeError, r"target must be an int", net, x, "cat"),
        (
            TypeError,
            r"target must be an int or one int per row, got bool",
            net,
            x,
            True,
        ),
        (TypeError, r"model must be a torch.nn.Module", lambda t: t.sum(1), x, 0),
    ]
    for error, message, model, inputs, target in cases:
        with pytest.raises(error, match=message):
            call(name, model, inputs, target)


def test_model_must_return_logits(x):
    with pytest.raises(ValueError, match=r"model must return \(N, K\) logits"):
        sal.gradient(nn.Flatten(0), x, 0)


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        ({"patch": 0}, ValueError, r"patch must be an int in 1..5, got 0"),
        ({"patch": 6}, ValueError, r"patch must be an int in 1..5, got 6"),
        ({"patch": 2.5}, TypeError, r"patch must be an int"),
        (
            {"patch": 3, "stride": 0},
            ValueError,
            r"stride must be an int in 1..3, got 0",
        ),
        (
            {"patch": 3, "stride": 4},
            ValueError,
            r"stride must be an int in 1..3, got 4",
        ),
        ({"output": "foo"}, ValueError, r"output must be one of \['prob', 'logit'\]"),
        (
            {"baseline": "foo"},
            ValueError,
            (
                r"baseline must be a number, a tensor broadcastable to x or one of "
                r"\['black', 'zero', 'grey', 'blur', 'noise'\], got 'foo'"
            ),
        ),
        (
            {"baseline": torch.zeros(2, 5, 5)},
            ValueError,
            r"baseline must be broadcastable to x's shape \(3, 1, 5, 5\)",
        ),
        ({"baseline": math.nan}, ValueError, r"baseline must be finite"),
        ({"baseline": [0.0]}, TypeError, r"baseline must be a number, a tensor"),
        ({"batch_size": 0}, ValueError, r"batch_size must be an int ≥ 1"),
    ],
)
def test_occlusion_arguments(net, x, kwargs, error, message):
    with pytest.raises(error, match=message):
        sal.occlusion(net, x, 0, **kwargs)


@pytest.mark.parametrize("name", sal.BASELINE_NAMES)
def test_every_baseline_name_works_for_every_method_and_metric(net, x, name):
    """One resolver: a name IG or a deletion curve takes, occlusion takes too."""
    from course_utils import metrics
    from course_utils.saliency.baselines import resolve_baseline

    value = resolve_baseline(name, x, net).expand_as(x)
    for fn in (sal.occlusion, sal.integrated_gradients):
        by_name = fn(net, x, 0, baseline=name)
        assert torch.equal(by_name, fn(net, x, 0, baseline=value.clone()))
    attr = sal.gradient(net, x, 0)
    curve = metrics.deletion(net, x, 0, attr, baseline=name, n_steps=5)
    same = metrics.deletion(net, x, 0, attr, baseline=value.clone(), n_steps=5)
    assert torch.equal(curve.scores, same.scores)


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        ({"n_steps": 0}, ValueError, r"n_steps must be an int ≥ 1, got 0"),
        (
            {"n_steps": 1},
            ValueError,
            r"n_steps must be an int ≥ 2 for method='riemann_trapezoid'",
        ),
        ({"n_steps": 1.0}, TypeError, r"n_steps must be an int"),
        (
            {"method": "foo"},
            ValueError,
            (
                r"method must be one of \['riemann_trapezoid', 'gausslegendre', "
                r"'riemann_left', 'riemann_right', 'riemann_middle', "
                r"'clenshaw_curtis'\], got 'foo'"
            ),
        ),
        (
            {"baseline": "foo"},
            ValueError,
            r"one of \['black', 'zero', 'grey', 'blur', 'noise'\], got 'foo'",
        ),
        (
            {"baseline": torch.full((1, 1, 5, 5), math.inf)},
            ValueError,
            r"baseline must be finite",
        ),
        ({"batch_size": -3}, ValueError, r"batch_size must be an int"),
    ],
)
def test_integrated_gradients_arguments(net, x, kwargs, error, message):
    with pytest.raises(error, match=message):
        sal.integrated_gradients(net, x, 0, **kwargs)


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        ({"noise_level": -0.1}, ValueError, r"noise_level must be a finite number ≥ 0"),
        ({"noise_level": math.nan}, ValueError, r"noise_level must be a finite number"),
        ({"noise_level": math.inf}, ValueError, r"noise_level must be a finite number"),
        ({"noise_level": "high"}, TypeError, r"noise_level must be a number"),
        (
            {"kind": "foo"},
            ValueError,
            (
                r"kind must be one of \['smoothgrad', 'smoothgrad_sq', 'vargrad'\], "
                r"got 'foo'"
            ),
        ),
        ({"n_samples": 0}, ValueError, r"n_samples must be an int ≥ 1, got 0"),
        ({"explain": "gradient"}, TypeError, r"explain must be a saliency function"),
        ({"generator": 3}, TypeError, r"generator must be a torch.Generator"),
        ({"batch_size": 0}, ValueError, r"batch_size must be an int"),
    ],
)
def test_smoothgrad_arguments(net, x, kwargs, error, message):
    with pytest.raises(error, match=message):
        sal.smoothgrad(net, x, 0, **kwargs)


@pytest.mark.parametrize("name", ["grad_cam", "guided_grad_cam"])
def test_grad_cam_layer(net, x, name):
    fn = sal.METHODS[name]
    with pytest.raises(
        ValueError,
        match=r"'conv9' not found. Available: \['conv', "
        r"'relu', 'fc'\]",
    ):
        fn(net, x, 0, "conv9")
    with pytest.raises(ValueError, match=r"layer must be a submodule of model"):
        fn(net, x, 0, nn.ReLU())
    with pytest.raises(TypeError, match=r"layer must be a dotted module name"):
        fn(net, x, 0, 3)
    with pytest.raises(
        ValueError, match=r"layer must output \(N, C, h, w\) feature maps"
    ):
        fn(net, x, 0, "fc")


def test_default_layer_needs_a_conv():
    with pytest.raises(ValueError, match=r"model has no nn.Conv2d.*pass layer="):
        sal.default_layer(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))


@pytest.mark.parametrize("name", ["guided_backprop", "deconvnet", "guided_grad_cam"])
def test_in_place_relu_works_like_out_of_place(x, name):
    """In-place nn.ReLUs are handled (no longer refused); hooks are removed."""
    torch.manual_seed(0)
    model = Net(inplace=True).eval()
    got = sal.METHODS[name](model, x, 0)
    assert not model.relu._forward_hooks and not model.relu._forward_pre_hooks
    assert model.relu.inplace
    model.relu.inplace = False
    torch.testing.assert_close(got, sal.METHODS[name](model, x, 0))


def test_forward_passes_occlusion_arguments():
    with pytest.raises(ValueError, match=r"image_shape must be \(H, W\)"):
        sal.forward_passes_occlusion(28, 4)
    with pytest.raises(ValueError, match=r"patch must be an int in 1..28, got 29"):
        sal.forward_passes_occlusion((28, 28), 29)
    with pytest.raises(ValueError, match=r"stride must be an int in 1..4, got 5"):
        sal.forward_passes_occlusion((28, 28), 4, 5)
