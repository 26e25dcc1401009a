"""The textbook loop at the top of each method module equals its batched version.

The textbook functions are what a student holds against the formula (one
forward per occluded window, one gradient per IG step, one noisy copy at a
time); the batched versions are what the course runs. They must agree to
float32 round-off on the shipped CNNs, for several settings each.
"""

import pytest
import torch

from course_utils import saliency as sal
from course_utils.saliency import (
    grad_cam,
    gradient,
    guided_backprop,
    guided_grad_cam,
    input_x_gradient,
    integrated_gradients,
    occlusion,
    smoothgrad,
)

# Modules, not the functions the package re-exports under the same names.
MOD = {
    name: __import__(f"course_utils.saliency.{name}", fromlist=[name])
    for name in (
        "gradient",
        "input_x_gradient",
        "integrated_gradients",
        "smoothgrad",
        "occlusion",
        "grad_cam",
        "guided_backprop",
        "guided_grad_cam",
    )
}


@pytest.fixture(params=["small_cnn", "resnet_small"])
def model(request):
    return request.getfixturevalue(request.param)


@pytest.fixture
def x(digits):
    return digits[0][:4]


def close(a, b, rtol=1e-4, atol=1e-6):
    scale = float(b.abs().max())
    assert a.shape == b.shape
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol * max(1.0, scale))


@pytest.mark.parametrize("target", [3, [7, 2, 1, 0]])
def test_gradient_family(model, x, target):
    close(
        MOD["gradient"].gradient_textbook(model, x, target), gradient(model, x, target)
    )
    close(
        MOD["input_x_gradient"].input_x_gradient_textbook(model, x, target),
        input_x_gradient(model, x, target),
    )
    gb = MOD["guided_backprop"]
    close(
        gb.guided_backprop_textbook(model, x, target), guided_backprop(model, x, target)
    )
    close(gb.deconvnet_textbook(model, x, target), sal.deconvnet(model, x, target))


@pytest.mark.parametrize(
    "baseline,n_steps,method",
    [
        ("black", 50, "riemann_trapezoid"),
        ("grey", 7, "gausslegendre"),
        ("blur", 5, "riemann_left"),
        ("noise", 1, "riemann_middle"),
        (0.3, 4, "riemann_right"),
        ("black", 9, "clenshaw_curtis"),
    ],
)
def test_integrated_gradients(model, x, baseline, n_steps, method):
    kw = {"baseline": baseline, "n_steps": n_steps, "method": method}
    textbook = MOD["integrated_gradients"].integrated_gradients_textbook
    close(
        textbook(model, x, [7, 2, 1, 0], **kw),
        integrated_gradients(model, x, [7, 2, 1, 0], batch_size=6, **kw),
    )


@pytest.mark.parametrize(
    "kind,noise_level,explain",
    [
        ("smoothgrad", 0.15, gradient),
        ("smoothgrad_sq", 0.3, input_x_gradient),
        ("vargrad", 0.1, guided_backprop),
    ],
)
def test_smoothgrad(model, x, kind, noise_level, explain):
    kw = {"kind": kind, "noise_level": noise_level, "explain": explain, "n_samples": 6}
    textbook = MOD["smoothgrad"].smoothgrad_textbook
    ours = textbook(model, x, 4, generator=torch.Generator().manual_seed(5), **kw)
    batched = smoothgrad(model, x, 4, generator=torch.Generator().manual_seed(5), **kw)
    close(ours, batched)


@pytest.mark.parametrize(
    "patch,stride,baseline,output",
    [
        (4, None, "grey", "prob"),
        (5, 3, "black", "logit"),
        (7, 2, 0.5, "prob"),
        (3, 1, "blur", "logit"),
    ],
)
def test_occlusion(model, x, patch, stride, baseline, output):
    kw = {"patch": patch, "stride": stride, "baseline": baseline, "output": output}
    textbook = MOD["occlusion"].occlusion_textbook
    close(
        textbook(model, x, [7, 2, 1, 0], **kw),
        occlusion(model, x, [7, 2, 1, 0], batch_size=40, **kw),
    )


@pytest.mark.parametrize("relu,upsample", [(True, True), (False, False)])
def test_grad_cam(model, x, relu, upsample):
    textbook = MOD["grad_cam"].grad_cam_textbook
    for layer in (None, sal.default_layer(model)):
        close(
            textbook(model, x, 5, layer=layer, relu=relu, upsample=upsample),
            grad_cam(model, x, 5, layer=layer, relu=relu, upsample=upsample),
        )
    close(
        MOD["guided_grad_cam"].guided_grad_cam_textbook(model, x, [7, 2, 1, 0]),
        guided_grad_cam(model, x, [7, 2, 1, 0]),
    )


def test_textbook_leaves_no_hooks_and_no_parameter_grads(small_cnn, x):
    MOD["guided_backprop"].guided_backprop_textbook(small_cnn, x, 3)
    MOD["grad_cam"].grad_cam_textbook(small_cnn, x, 3)
    for m in small_cnn.modules():
        assert not m._forward_hooks and not m._backward_hooks
    assert all(p.grad is None for p in small_cnn.parameters())


def test_show_prints_formula_and_textbook_not_departures(capsys):
    import course_utils

    course_utils.show(integrated_gradients)
    out = capsys.readouterr().out
    assert "def integrated_gradients_textbook" in out
    assert "for alpha, weight in zip(*quadrature(method, n_steps)):" in out
    assert "IG(x) = (x − x₀) ⊙ ∫₀¹" in out  # the formula header
    assert "Departures" not in out and "Captum:" not in out
    assert len(out.splitlines()) < 40
    course_utils.show(occlusion, batched=True)
    out = capsys.readouterr().out
    assert "grid_chunks" in out and "def occlusion(" in out
    assert "Departures" not in out
    course_utils.show(MOD["integrated_gradients"].quadrature)  # any other function
    assert "def quadrature" in capsys.readouterr().out
