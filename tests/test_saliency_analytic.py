"""Saliency maps against answers worked out by hand.

* linear model f(x) = W x + b: gradient = W_target, input × gradient and IG
  with a zero baseline = x ⊙ W_target, SmoothGrad = W_target, VarGrad = 0;
* quadratic model f(x) = Σ a x²: each IG rule's Σ w_k α_k, worked out per
  rule, and the sign of IG's delta;
* IG's completeness gap shrinks as n_steps grows (shipped SmallCNN);
* occlusion on a model that reads one pixel lights exactly the windows over
  it, averaged per pixel as worked out by enumerating the windows;
* Grad-CAM on a conv → global-average-pool → linear net equals CAM;
* guided backprop and deconvnet on f = V relu(U x), by hand.
"""

import itertools
import math

import pytest
import torch
from torch import nn

from course_utils import saliency as sal
from course_utils.saliency import QUADRATURE_RULES as IG_RULES
from course_utils.saliency.smoothgrad import noisy_copies

SHAPE = (3, 2, 5, 6)  # N, C, H, W


@pytest.fixture
def x():
    return torch.rand(SHAPE, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def linear():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(2 * 5 * 6, 4)).eval()


def w_rows(model, target):
    return model[1].weight.detach()[target].view(-1, *SHAPE[1:])


class Quadratic(nn.Module):
    """f_k(x) = Σ_p a_kp x_p²; ∇f_k = 2 a_k ⊙ x."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.randn(4, *SHAPE[1:]))

    def forward(self, x):
        return torch.einsum("nchw,kchw->nk", x * x, self.a)


TARGET = [0, 3, 1]


def test_gradient_of_linear_model_is_w(linear, x):
    w = w_rows(linear, TARGET)
    torch.testing.assert_close(sal.gradient(linear, x, TARGET), w)
    torch.testing.assert_close(sal.gradient(linear, x, TARGET, absolute=True), w.abs())
    torch.testing.assert_close(sal.input_x_gradient(linear, x, TARGET), x * w)
    # int target = the same class for every row
    torch.testing.assert_close(sal.gradient(linear, x, 2), w_rows(linear, [2, 2, 2]))


def rule_grid(steps):
    """Every rule with every n_steps it accepts (the trapezoid needs ≥ 2)."""
    return [
        (m, n) for m in IG_RULES for n in steps if n > 1 or m != "riemann_trapezoid"
    ]


@pytest.mark.parametrize("method,n_steps", rule_grid([1, 2, 7]))
def test_ig_of_linear_model_is_x_times_w(linear, x, method, n_steps):
    w = w_rows(linear, TARGET)
    attr, delta = sal.integrated_gradients(
        linear,
        x,
        TARGET,
        baseline="black",
        n_steps=n_steps,
        method=method,
        batch_size=4,
        return_delta=True,
    )
    torch.testing.assert_close(attr, x * w, atol=1e-6, rtol=1e-5)
    assert delta.abs().max() < 1e-5
    base = torch.full_like(x[:1], 0.25)
    # batch_size < N: the rows of one step are split across calls
    attr = sal.integrated_gradients(
        linear, x, TARGET, baseline=base, n_steps=n_steps, method=method, batch_size=2
    )
    torch.testing.assert_close(attr, (x - 0.25) * w, atol=1e-6, rtol=1e-5)


# Σ_k w_k α_k of each rule with n points, worked out by hand (exact: 1/2).
def expected_weighted_alpha(method, n):
    return {
        "riemann_left": (n - 1) / (2 * n),
        "riemann_right": (n + 1) / (2 * n),
        "riemann_middle": 0.5,
        "riemann_trapezoid": 0.5,
        "gausslegendre": 0.5,
        "clenshaw_curtis": 0.5,  # n = 1 is the midpoint; n ≥ 2 holds both ends
    }[method]


@pytest.mark.parametrize("method,n_steps", rule_grid([1, 3, 8]))
def test_ig_rules_on_quadratic_model(x, method, n_steps):
    torch.manual_seed(1)
    model = Quadratic()
    a = model.a.detach()[TARGET]
    # IG(x) = x ⊙ Σ_k w_k ∇f(α_k x) = 2 a x² Σ_k w_k α_k; exact: a x².
    factor = expected_weighted_alpha(method, n_steps)
    attr, delta = sal.integrated_gradients(
        model, x, TARGET, n_steps=n_steps, method=method, return_delta=True
    )
    torch.testing.assert_close(attr, 2 * a * x * x * factor, atol=1e-6, rtol=1e-5)
    # delta = Σ attr − (f(x) − f(0)) = (2·factor − 1) Σ a x²  (Captum's sign).
    total = (a * x * x).flatten(1).sum(1)
    torch.testing.assert_close(delta, (2 * factor - 1) * total, atol=1e-5, rtol=1e-4)


def test_ig_completeness_gap_shrinks_with_n_steps(small_cnn, digits):
    x, y = digits
    gaps = []
    for n_steps in (2, 8, 32, 128):
        _, delta = sal.integrated_gradients(
            small_cnn, x[:4], y[:4], n_steps=n_steps, return_delta=True
        )
        gaps.append(float(delta.abs().mean()))
    assert all(later < earlier for earlier, later in itertools.pairwise(gaps)), gaps
    assert gaps[-1] < 0.02 * gaps[0]
    # delta is the completeness gap: Σ attr − (f(x) − f(x0)) computed by hand
    attr, delta = sal.integrated_gradients(
        small_cnn, x[:2], y[:2], baseline="grey", n_steps=16, return_delta=True
    )
    with torch.no_grad():
        grey = torch.full_like(x[:2], float(small_cnn.normalize.mean))
        f_x = small_cnn(x[:2]).gather(1, y[:2, None])[:, 0]
        f_0 = small_cnn(grey).gather(1, y[:2, None])[:, 0]
    torch.testing.assert_close(
        delta, attr.flatten(1).sum(1) - (f_x - f_0), atol=1e-4, rtol=1e-4
    )


class OnePixel(nn.Module):
    """Logits [v·x[c, r, col], 0]: the model reads a single pixel."""

    def __init__(self, c, r, col, v=3.0):
        super().__init__()
        self.c, self.r, self.col, self.v = c, r, col, v
        self.rows_seen = 0

    def forward(self, x):
        self.rows_seen += x.shape[0]
        pixel = self.v * x[:, self.c, self.r, self.col]
        return torch.stack([pixel, torch.zeros_like(pixel)], dim=1)


def expected_occlusion(h, w, patch, stride, r, col, drop):
    """Average drop per pixel over the windows covering it, by enumeration.

    Windows start at 0, stride, 2·stride, … while start < size − patch + stride,
    i.e. until one reaches the border (it may be cut off there).
    """
    starts_r = list(range(0, h - patch + stride, stride))
    starts_c = list(range(0, w - patch + stride, stride))
    total = torch.zeros(h, w)
    count = torch.zeros(h, w)
    for a in starts_r:
        for b in starts_c:
            covers = a <= r < a + patch and b <= col < b + patch
            total[a : a + patch, b : b + patch] += drop if covers else 0.0
            count[a : a + patch, b : b + patch] += 1
    return total / count, len(starts_r) * len(starts_c)


@pytest.mark.parametrize("patch,stride", [(2, None), (3, 2), (4, 1), (3, 3), (5, 4)])
@pytest.mark.parametrize("batch_size", [1, 10])
def test_occlusion_lights_exactly_the_windows_over_the_pixel(patch, stride, batch_size):
    h, w, r, col = 9, 11, 4, 7
    x = 0.5 + torch.rand(2, 2, h, w, generator=torch.Generator().manual_seed(0))
    model = OnePixel(1, r, col)
    attr = sal.occlusion(
        model,
        x,
        0,
        patch=patch,
        stride=stride,
        baseline=0.0,
        output="logit",
        batch_size=batch_size,
    )
    step = patch if stride is None else stride
    for i in range(2):
        drop = model.v * float(x[i, 1, r, col])
        expected, n_windows = expected_occlusion(h, w, patch, step, r, col, drop)
        for c in range(2):  # the window covers every channel
            torch.testing.assert_close(attr[i, c], expected, atol=1e-5, rtol=1e-5)
        lit = attr[i, 0] != 0
        union = torch.zeros(h, w, dtype=torch.bool)
        for a in range(0, h - patch + step, step):
            for b in range(0, w - patch + step, step):
                if a <= r < a + patch and b <= col < b + patch:
                    union[a : a + patch, b : b + patch] = True
        assert torch.equal(lit, union)
    # cost: one evaluation per window plus the clean input, per row
    assert model.rows_seen == 2 * (n_windows + 1)
    assert sal.forward_passes_occlusion(x.shape, patch, stride) == 2 * (n_windows + 1)
    assert sal.forward_passes_occlusion((h, w), patch, stride) == n_windows + 1


def test_occlusion_probability_drop():
    x = torch.full((1, 1, 6, 6), 0.8)
    model = OnePixel(0, 2, 3, v=2.0)
    attr = sal.occlusion(model, x, 0, patch=3, baseline="black")
    # windows over the pixel: p = sigmoid(v·x) → 1/2 when the pixel is black
    drop = 1 / (1 + math.exp(-1.6)) - 0.5
    expected = torch.zeros(6, 6)
    expected[0:3, 3:6] = drop
    torch.testing.assert_close(attr[0, 0], expected)
    assert sal.forward_passes_occlusion((28, 28), 4) == 50
    assert sal.forward_passes_occlusion((1, 28, 28), 4, 1) == 626


def test_smoothgrad_of_linear_model(linear, x):
    w = w_rows(linear, TARGET)
    gen = torch.Generator().manual_seed(0)
    torch.testing.assert_close(
        sal.smoothgrad(linear, x, TARGET, n_samples=7, batch_size=5, generator=gen), w
    )
    sq = sal.smoothgrad(linear, x, TARGET, n_samples=7, kind="smoothgrad_sq")
    torch.testing.assert_close(sq, w * w)
    var = sal.smoothgrad(linear, x, TARGET, n_samples=7, kind="vargrad")
    assert var.abs().max() < 1e-10


def test_noise_level_is_a_fraction_of_each_rows_range():
    x = torch.zeros(2, 1, 40, 40)
    x[0, 0, 0, 0], x[1, 0, 0, 0] = 1.0, 4.0  # ranges 1 and 4
    noisy = noisy_copies(x, 20, 0.1, torch.Generator().manual_seed(0))
    noise = (noisy - x.repeat_interleave(20, 0)).view(2, -1)
    torch.testing.assert_close(
        noise.std(1), torch.tensor([0.1, 0.4]), rtol=0.02, atol=0
    )


def test_vargrad_on_quadratic_model_is_4a2sigma2():
    a = torch.tensor([0.5, -2.0, 1.0])

    class Quad(nn.Module):
        def forward(self, x):
            return (a * x.flatten(1) ** 2).sum(1, keepdim=True)

    x = torch.tensor([[[[0.0, 1.0, 0.5]]]])  # range 1 → σ = noise_level
    var = sal.smoothgrad(
        Quad(),
        x,
        0,
        n_samples=4000,
        noise_level=0.2,
        kind="vargrad",
        batch_size=1000,
        generator=torch.Generator().manual_seed(0),
    )
    # ∇f = 2a(x + σε): Var = 4a²σ²
    torch.testing.assert_close(var.flatten(), 4 * a**2 * 0.04, rtol=0.08, atol=0)
    mean = sal.smoothgrad(
        Quad(),
        x,
        0,
        n_samples=4000,
        noise_level=0.2,
        batch_size=1000,
        generator=torch.Generator().manual_seed(0),
    )
    torch.testing.assert_close(mean.flatten(), 2 * a * x.flatten(), atol=0.03, rtol=0)


class GapNet(nn.Module):
    """conv → ReLU → global average pool → linear: Grad-CAM equals CAM here."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(3, 4)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.act(self.conv(x))), 1))


def test_grad_cam_equals_cam_on_gap_net(x):
    torch.manual_seed(3)
    model = GapNet().eval()
    with torch.no_grad():
        acts = model.act(model.conv(x))  # (N, 3, 5, 6)
    w = model.fc.weight.detach()[TARGET]  # (N, 3)
    # α_k = ∂f/∂A^k averaged over the 5·6 positions = w_k / 30 … and the
    # average of a constant is itself, so Grad-CAM = Σ_k (w_k/30) A^k.
    cam = (w[:, :, None, None] / 30 * acts).sum(1, keepdim=True)
    for layer in ["act", model.act]:
        ours = sal.grad_cam(model, x, TARGET, layer, relu=False, upsample=False)
        torch.testing.assert_close(ours, cam)
    relu = sal.grad_cam(model, x, TARGET, "act", upsample=False)
    torch.testing.assert_close(relu, cam.clamp(min=0))
    assert sal.default_layer(model) == "act"
    up = sal.grad_cam(model, x, TARGET, "act")
    assert up.shape == (3, 1, 5, 6)  # layer already at input size: unchanged
    torch.testing.assert_close(up, cam.clamp(min=0))


def test_grad_cam_upsampling_is_bilinear():
    model = nn.Sequential(
        nn.Conv2d(1, 1, 2, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4, 1)
    )
    with torch.no_grad():
        model[0].weight.fill_(0.25)
        model[0].bias.zero_()
        model[3].weight.fill_(1.0)
    x = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    small = sal.grad_cam(model, x, 0, "1", upsample=False)
    big = sal.grad_cam(model, x, 0, "1")
    expected = nn.functional.interpolate(
        small, size=(4, 4), mode="bilinear", align_corners=False
    )
    torch.testing.assert_close(big, expected)
    # each layer unit's ∂f/∂A = 1, so α = 1 and the map is A itself
    torch.testing.assert_close(small, nn.functional.avg_pool2d(x, 2))


class TwoLayer(nn.Module):
    """f = V relu(U x) on flattened (1, 1, 2, 2) inputs."""

    def __init__(self):
        super().__init__()
        self.flat = nn.Flatten()
        self.u = nn.Linear(4, 3, bias=False)
        self.relu = nn.ReLU()
        self.v = nn.Linear(3, 2, bias=False)
        with torch.no_grad():
            self.u.weight.copy_(
                torch.tensor(
                    [
                        [1.0, -1.0, 0.5, 0.0],
                        [-1.0, 2.0, 0.0, 1.0],
                        [0.5, 0.5, -3.0, 1.0],
                    ]
                )
            )
            self.v.weight.copy_(torch.tensor([[2.0, -1.0, 3.0], [-1.0, 1.0, 1.0]]))

    def forward(self, x):
        return self.v(self.relu(self.u(self.flat(x))))


def test_guided_backprop_and_deconvnet_by_hand():
    model = TwoLayer()
    x = torch.tensor([1.0, 0.5, 1.0, 0.25]).view(1, 1, 2, 2)
    u, v = model.u.weight.detach(), model.v.weight.detach()[0]
    active = (u @ x.flatten() > 0).float()  # [1, 1, 0]
    assert active.tolist() == [1.0, 1.0, 0.0]
    plain = u.T @ (v * active)
    guided = u.T @ (v.clamp(min=0) * active)
    deconv = u.T @ v.clamp(min=0)
    torch.testing.assert_close(sal.gradient(model, x, 0).flatten(), plain)
    torch.testing.assert_close(sal.guided_backprop(model, x, 0).flatten(), guided)
    torch.testing.assert_close(sal.deconvnet(model, x, 0).flatten(), deconv)


def test_guided_grad_cam_is_guided_backprop_times_grad_cam(
    small_cnn, resnet_small, digits
):
    x, y = digits
    for model, layer in [(small_cnn, "conv2"), (resnet_small, "layer2")]:
        ours = sal.guided_grad_cam(model, x[:3], y[:3], layer)
        expected = sal.guided_backprop(model, x[:3], y[:3]) * sal.grad_cam(
            model, x[:3], y[:3], layer
        )
        torch.testing.assert_close(ours, expected, atol=1e-6, rtol=1e-5)


def test_default_and_named_layers(small_cnn, resnet_small):
    assert sal.default_layer(small_cnn) == "relu2"
    assert sal.default_layer(resnet_small) == "layer3"
    assert sal.get_layer(resnet_small, "layer2.conv1") is resnet_small.layer2.conv1
    assert sal.get_layer(small_cnn, small_cnn.conv1) is small_cnn.conv1


def test_input_x_gradient_is_zero_on_black_background(small_cnn, digits):
    x, y = digits
    attr = sal.input_x_gradient(small_cnn, x[:2], y[:2])
    assert bool((attr[x[:2] == 0] == 0).all())
    assert attr.abs().sum() > 0


class CallLog(nn.Module):
    """A linear model that records how many rows each call gets."""

    def __init__(self, n_in):
        super().__init__()
        self.fc = nn.Linear(n_in, 3)
        self.calls = []

    def forward(self, x):
        self.calls.append(x.shape[0])
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("batch_size", [2, 7, None])
def test_batched_methods_respect_batch_size(x, batch_size):
    model = CallLog(2 * 5 * 6)
    # The default is sized on the model (one 1-row forward, then cached).
    limit = batch_size or sal.default_batch_size(x, model)
    n = x.shape[0]
    runs = [
        (
            lambda: sal.integrated_gradients(
                model, x, 1, n_steps=5, batch_size=batch_size
            ),
            n * 5,
        ),
        (
            lambda: sal.smoothgrad(model, x, 1, n_samples=4, batch_size=batch_size),
            n * 4,
        ),
        (
            lambda: sal.occlusion(model, x, 1, patch=3, batch_size=batch_size),
            n * sal.forward_passes_occlusion(x.shape[1:], 3),
        ),
    ]
    for run, rows in runs:
        model.calls.clear()
        run()
        assert max(model.calls) <= limit
        assert sum(model.calls) == rows


def test_default_batch_size_scales_with_what_a_row_costs():
    # Flatten + Identity: a row costs 2·C·H·W activation values
    model = nn.Sequential(nn.Flatten(), nn.Identity())
    assert sal.default_batch_size(torch.zeros(1, 1, 28, 28), model) == 256
    assert sal.default_batch_size(torch.zeros(1, 3, 64, 64), model) == 256
    # 2²⁴ / (2·3·512²) ≈ 10.7 → 8 rows; 2²⁴ / (2·3·1024²) ≈ 2.7 → at least 4
    assert sal.default_batch_size(torch.zeros(1, 3, 512, 512), model) == 8
    assert sal.default_batch_size(torch.zeros(1, 3, 1024, 1024), model) == 4
