"""Our saliency maps equal Captum's (course_utils.reference) on three models.

Models: the shipped SmallCNN and ResNetSmall on 28×28 digits, and a small
3-channel CNN (defined here) on non-square 20×24 inputs. Batches of 1 and 5,
an int target and one target per row.

Tolerances (float32 round-off; max |ours − Captum| ≤ REL · max |Captum|,
with max |Captum| floored at 1):

* gradient, input × gradient, guided backprop, deconvnet, Grad-CAM, guided
  Grad-CAM: REL_GRAD = 1e-5 (the same operations; only chunking differs).
* integrated gradients (and its delta): REL_IG = 2e-5 (sums over up to 50
  steps in a different order).
* SmoothGrad, SmoothGrad²: REL_SG = 1e-5 (identical noise, see
  reference.smoothgrad); VarGrad: REL_VAR = 1e-4 (Captum's E[a²] − E[a]²
  cancels; ours is the two-pass variance).
* occlusion: REL_OCC = 1e-5 (drops folded with a matmul vs Captum's sum).
"""

import pytest
import torch
from torch import nn

from course_utils import reference as ref
from course_utils import saliency as sal
from course_utils.saliency import QUADRATURE_RULES as IG_RULES

REL_GRAD = 1e-5
REL_IG = 2e-5
REL_SG = 1e-5
REL_VAR = 1e-4
REL_OCC = 1e-5


def assert_parity(ours, theirs, rel):
    assert ours.shape == theirs.shape
    scale = max(1.0, float(theirs.abs().max()))
    err = float((ours - theirs).abs().max())
    assert err <= rel * scale, f"max |ours − Captum| = {err:.3g} > {rel * scale:.3g}"


class Tiny3(nn.Module):
    """3-channel CNN for (N, 3, 20, 24) inputs, 4 classes, no `normalize`."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d((2, 3))
        self.fc = nn.Linear(8 * 6, 4)

    def forward(self, x):
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool(self.relu2(self.conv2(x)))
        return self.fc(torch.flatten(x, 1))


@pytest.fixture(scope="module")
def tiny3():
    torch.manual_seed(1)
    return Tiny3().eval()


@pytest.fixture(scope="module")
def tiny3_x():
    return torch.rand(5, 3, 20, 24, generator=torch.Generator().manual_seed(2))


# name -> (model fixture, input fixture, the two Grad-CAM layers)
CASES = {
    "small_cnn": ("small_cnn", "digits", ("relu2", "conv1")),
    "resnet_small": ("resnet_small", "digits", ("layer3", "layer2.conv1")),
    "tiny3": ("tiny3", "tiny3_x", ("relu2", "conv1")),
}


@pytest.fixture(params=list(CASES))
def case(request):
    model_name, x_name, layers = CASES[request.param]
    model = request.getfixturevalue(model_name)
    x = request.getfixturevalue(x_name)
    x = x[0] if isinstance(x, tuple) else x
    return model, x[:5].clone(), layers


def targets(n):
    """An int target and one target per row (a list)."""
    return [3, [(2 * i + 1) % 4 for i in range(n)]]


SIMPLE = ["gradient", "input_x_gradient", "guided_backprop", "deconvnet"]


@pytest.mark.parametrize("n", [1, 5])
def test_gradient_family(case, n):
    model, x, _ = case
    for target in targets(n):
        for name in SIMPLE:
            ours = sal.METHODS[name](model, x[:n], target)
            assert_parity(ours, ref.METHODS[name](model, x[:n], target), REL_GRAD)
        ours = sal.gradient(model, x[:n], target, absolute=True)
        assert_parity(ours, ref.gradient(model, x[:n], target, absolute=True), REL_GRAD)


@pytest.mark.parametrize("n", [1, 5])
def test_grad_cam_two_layers(case, n):
    model, x, layers = case
    for target in targets(n):
        for layer in layers:
            for relu, upsample in [(True, True), (False, False)]:
                ours = sal.grad_cam(model, x[:n], target, layer, relu, upsample)
                theirs = ref.grad_cam(model, x[:n], target, layer, relu, upsample)
                assert_parity(ours, theirs, REL_GRAD)
            ours = sal.guided_grad_cam(model, x[:n], target, layer)
            theirs = ref.guided_grad_cam(model, x[:n], target, layer)
            assert_parity(ours, theirs, REL_GRAD)


def test_grad_cam_default_layer_and_module(small_cnn, digits):
    x, y = digits
    assert sal.default_layer(small_cnn) == "relu2"
    ours = sal.METHODS["grad_cam"](small_cnn, x[:3], y[:3])
    assert_parity(
        ours, ref.grad_cam(small_cnn, x[:3], y[:3], small_cnn.relu2), REL_GRAD
    )


# Every rule with 1, 7 and 50 steps where Captum allows it (it refuses
# n_steps=1 for the Riemann rules and has no Clenshaw–Curtis rule; ours is
# checked by hand there, see test_saliency_analytic.py and test_quadrature.py).
IG_GRID = [
    (m, n)
    for m in IG_RULES
    if m != "clenshaw_curtis"
    for n in (1, 7, 50)
    if n > 1 or m == "gausslegendre"
]


@pytest.mark.parametrize("method,n_steps", IG_GRID)
def test_integrated_gradients_rules(case, method, n_steps):
    model, x, _ = case
    rows = 5 if n_steps < 50 else 2  # keeps the 50-step ResNet runs short
    target = targets(rows)[1]
    ours, delta = sal.integrated_gradients(
        model,
        x[:rows],
        target,
        n_steps=n_steps,
        method=method,
        batch_size=3 if n_steps == 7 else 64,  # 3 < rows: a step split across calls
        return_delta=True,
    )
    theirs, their_delta = ref.integrated_gradients(
        model, x[:rows], target, n_steps=n_steps, method=method, return_delta=True
    )
    assert_parity(ours, theirs, REL_IG)
    assert_parity(delta, their_delta, REL_IG)


def test_integrated_gradients_batch1_baselines(case):
    model, x, _ = case
    for baseline in ["black", "grey", "blur", "noise", 0.3, x[4:5] * 0.5]:
        ours = sal.integrated_gradients(model, x[:1], 2, baseline=baseline, n_steps=7)
        theirs = ref.integrated_gradients(
            model, x[:1], 2, baseline=baseline, n_steps=7, batch_size=3
        )
        assert_parity(ours, theirs, REL_IG)


def test_trapezoid_departure_is_the_weight_sum(small_cnn, digits):
    """Captum's trapezoid result is exactly ours × (n − 1)/n (see reference)."""
    from captum.attr import IntegratedGradients

    x, y = digits
    ours = sal.integrated_gradients(small_cnn, x[:2], y[:2], n_steps=7)
    captum = IntegratedGradients(small_cnn).attribute(
        x[:2], target=y[:2], n_steps=7, method="riemann_trapezoid"
    )
    assert_parity(ours * 6 / 7, captum, REL_IG)


@pytest.mark.parametrize("kind", ["smoothgrad", "smoothgrad_sq", "vargrad"])
@pytest.mark.parametrize("n", [1, 5])
def test_smoothgrad_kinds(case, kind, n):
    model, x, _ = case
    rel = REL_VAR if kind == "vargrad" else REL_SG
    for target in targets(n):
        gen_ours, gen_ref = (
            torch.Generator().manual_seed(7),
            torch.Generator().manual_seed(7),
        )
        ours = sal.smoothgrad(
            model,
            x[:n],
            target,
            n_samples=10,
            noise_level=0.2,
            kind=kind,
            batch_size=16,
            generator=gen_ours,
        )
        theirs = ref.smoothgrad(
            model,
            x[:n],
            target,
            n_samples=10,
            noise_level=0.2,
            kind=kind,
            generator=gen_ref,
        )
        assert_parity(ours, theirs, rel)
        # Both consumed the same draws: the generators end in the same state.
        assert torch.equal(gen_ours.get_state(), gen_ref.get_state())


def test_smoothgrad_other_explainers(small_cnn, digits):
    x, y = digits
    for explain in [sal.input_x_gradient, sal.guided_backprop]:
        ours = sal.smoothgrad(
            small_cnn,
            x[:3],
            y[:3],
            explain=explain,
            n_samples=6,
            generator=torch.Generator().manual_seed(3),
        )
        theirs = ref.smoothgrad(
            small_cnn,
            x[:3],
            y[:3],
            explain=explain,
            n_samples=6,
            generator=torch.Generator().manual_seed(3),
        )
        assert_parity(ours, theirs, REL_SG)


def test_smoothgrad_global_generator(small_cnn, digits):
    x, y = digits
    torch.manual_seed(11)
    ours = sal.smoothgrad(small_cnn, x[:2], y[:2], n_samples=5)
    torch.manual_seed(11)
    theirs = ref.smoothgrad(small_cnn, x[:2], y[:2], n_samples=5)
    assert_parity(ours, theirs, REL_SG)


# (patch, stride): tiling, stride < patch, windows that don't divide 28 / 20×24
OCCLUSION = [(4, None), (5, 3), (6, 4), (7, None), (9, 5)]


@pytest.mark.parametrize("patch,stride", OCCLUSION)
def test_occlusion_windows(case, patch, stride):
    model, x, _ = case
    for n, target, output in [(1, 1, "prob"), (5, targets(5)[1], "logit")]:
        batch_size = 3 if patch == 5 else None  # 3 < 5 rows: a window split
        ours = sal.occlusion(
            model, x[:n], target, patch, stride, output=output, batch_size=batch_size
        )
        theirs = ref.occlusion(
            model, x[:n], target, patch, stride, output=output, batch_size=256
        )
        assert_parity(ours, theirs, REL_OCC)


def test_occlusion_stride_one(small_cnn, digits):
    x, y = digits
    ours = sal.occlusion(small_cnn, x[:1], y[:1], patch=3, stride=1)
    assert_parity(
        ours, ref.occlusion(small_cnn, x[:1], y[:1], 3, 1, batch_size=700), REL_OCC
    )


def test_occlusion_baselines_and_defaults(case):
    model, x, _ = case
    for baseline in ["black", "grey", 0.7, x[3:4].flip(-1)]:
        ours = sal.occlusion(
            model,
            x[:2],
            [0, 1],
            patch=6,
            stride=5,
            baseline=baseline,
            output="logit",
            batch_size=17,
        )
        theirs = ref.occlusion(
            model,
            x[:2],
            [0, 1],
            patch=6,
            stride=5,
            baseline=baseline,
            output="logit",
            batch_size=64,
        )
        assert_parity(ours, theirs, REL_OCC)
