"""Every method on six torchvision architectures, against Captum, with no side effects.

The nets students bring after the course: resnet18, vgg11_bn,
mobilenet_v3_small, densenet121, efficientnet_b0 and squeezenet1_1, built
with random weights (`weights=None`: nothing is downloaded). Their BatchNorm
statistics are calibrated on random images (a few train-mode passes with
momentum=None, a cumulative average) so activations are O(1), not ~1e-7 as
with a fresh BatchNorm's running statistics on random weights. Most of them
use in-place ReLUs (guided backprop, deconvnet) and in-place ops after the
Grad-CAM layer (ResNet's `out += identity`, densenet's in-place ReLU after
`features`), the cases where keeping hooks correct is hard. Inputs are
2×3×64×64, the smallest size every one of them accepts.
"""

import pytest
import torch
from model_state import assert_unchanged, snapshot
from torch import nn

from course_utils import reference as ref
from course_utils import saliency as sal

torchvision = pytest.importorskip("torchvision")

ARCHS = (
    "resnet18",
    "vgg11_bn",
    "mobilenet_v3_small",
    "densenet121",
    "efficientnet_b0",
    "squeezenet1_1",
)
TARGET = [3, 7]
# Cheap settings: each method runs a handful of forward passes.
KWARGS = {
    "integrated_gradients": {"n_steps": 4, "batch_size": 4},
    # σ = 2 % of the range: these nets have random weights and BatchNorm calibrated
    # on 24 random images, and at the default 15 % the noisy copies leave that range:
    # efficientnet_b0's gradients grow 10⁴-fold (max 87,820 vs 8.2 on x) and the
    # batch-size-dependent summation order of float32 convolutions (ours: one call
    # of 4 rows; Captum: one of 2 per image) shows as 1.2 % of the scale. At 2 %:
    # 3e-6 of the scale, within the tolerance (resnet18: equal at every σ).
    "smoothgrad": {"n_samples": 2, "noise_level": 0.02},
    "occlusion": {"patch": 16},
    # expected gradients over a small baseline set of the nets' own input shape
    # (its default baselines are 1×28×28 training digits)
    "gradient_shap": {
        "baselines": torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(3)),
        "n_samples": 2,
    },
}
# Grad-CAM layers with an in-place op right after them (plus the defaults).
LAYERS = {"resnet18": "layer4.1.bn2", "densenet121": "features"}


def calibrated(name: str) -> nn.Module:
    torch.manual_seed(0)
    net = getattr(torchvision.models, name)(weights=None, num_classes=10)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration passes
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(8, 3, 64, 64))
    return net.eval()


@pytest.fixture(scope="module", params=ARCHS)
def net(request):
    return request.param, calibrated(request.param)


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def call(module, name, model, x, **extra):
    kwargs = {**KWARGS.get(name, {}), **extra}
    if name == "smoothgrad":
        kwargs["generator"] = torch.Generator().manual_seed(2)
    return getattr(module, name)(model, x, TARGET, **kwargs)


@pytest.mark.parametrize("method", list(sal.METHODS))
def test_matches_captum(net, x, method):
    _, model = net
    if method == "gradient_shap":  # Captum's draws, replayed by ours one for one
        theirs, draws = call(ref, method, model, x)
        ours = call(sal, method, model, x, draws=draws)
    else:
        ours = call(sal, method, model, x)
        theirs = call(ref, method, model, x)
    scale = theirs.abs().max()
    assert scale > 1e-4, "activations too small for a meaningful comparison"
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=2e-5 * float(scale))


def test_grad_cam_at_a_layer_modified_in_place_downstream(net, x):
    name, model = net
    layer = LAYERS.get(name, sal.default_layer(model))
    ours = sal.grad_cam(model, x, TARGET, layer=layer, relu=False, upsample=False)
    theirs = ref.grad_cam(model, x, TARGET, layer=layer, relu=False, upsample=False)
    scale = float(theirs.abs().max())
    assert scale > 0
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5 * scale)


def test_guided_rules_differ_from_the_plain_gradient(net, x):
    """The modified backward rules are really applied (also on in-place ReLUs)."""
    _, model = net
    plain = sal.gradient(model, x, TARGET)
    guided = sal.guided_backprop(model, x, TARGET)
    deconv = sal.deconvnet(model, x, TARGET)
    if not any(isinstance(m, nn.ReLU) for m in model.modules()):
        # efficientnet_b0 has only SiLU: no nn.ReLU to modify, as in Captum.
        torch.testing.assert_close(guided, plain)
        torch.testing.assert_close(deconv, plain)
        return
    assert not torch.allclose(plain, guided)
    assert not torch.allclose(guided, deconv)


def test_no_side_effects_after_success_and_failure(net, x):
    _, model = net
    model.train()  # methods run in eval mode and restore every flag
    first = next(model.parameters())
    first.requires_grad_(False)
    seen = []
    handle = model.register_forward_hook(lambda *args: seen.append(1))
    try:
        before = snapshot(model, x)
        for method in sal.METHODS:
            call(sal, method, model, x)
            assert_unchanged(before, model, x)
            with pytest.raises(ValueError, match="target must be a class index"):
                getattr(sal, method)(model, x, 10, **KWARGS.get(method, {}))
            assert_unchanged(before, model, x)
        assert seen, "the user's hook stays active during the calls"
    finally:
        handle.remove()
        first.requires_grad_(True)
        model.eval()


def test_channels_last(net, x):
    """A channels_last input, and a channels_last model, give the same maps.

    Single gradients agree to round-off. IG sums a few path points, and at a
    point where a pre-activation sits at ReLU's kink (or a max-pool window
    ties) round-off from a different conv kernel can flip one unit, moving
    that point's gradient by a few per cent; a layout bug would scramble the
    map entirely. So IG is compared at 3 % of its scale.
    """
    _, model = net
    kwargs = {**KWARGS["integrated_gradients"], "baseline": 0.5 * x}
    cl = x.to(memory_format=torch.channels_last)
    expected = [
        sal.gradient(model, x, TARGET),
        sal.integrated_gradients(model, x, TARGET, **kwargs),
    ]
    got_input = [
        sal.gradient(model, cl, TARGET),
        sal.integrated_gradients(model, cl, TARGET, **kwargs),
    ]
    model.to(memory_format=torch.channels_last)
    try:
        got_model = [
            sal.gradient(model, x, TARGET),
            sal.integrated_gradients(model, x, TARGET, **kwargs),
        ]
    finally:
        model.to(memory_format=torch.contiguous_format)
    for got in (got_input, got_model):
        for value, want, tol in zip(got, expected, (1e-4, 3e-2), strict=True):
            scale = float(want.abs().max())
            torch.testing.assert_close(value, want, rtol=1e-4, atol=tol * scale)
