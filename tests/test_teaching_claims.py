"""The phenomena the lecture notebooks teach, asserted on the shipped SmallCNN.

Each test is a sentence a notebook says to students (01–05, 07). If a change
to the model, the data or a method breaks one of them, the lesson no longer
matches what students will see, and the build fails here rather than in a
classroom. The tests use the first 200 test digits; the two integrated-gradients
tests that need 84–128 path points per digit use the first 64 of them (and of
the confident ones) to stay within the module's time budget.
"""

import pytest
import torch
from torch import nn

from course_utils import saliency as sal

N_DIGITS = 200
N_IG = 64  # digits for the integrated-gradients tests (84–128 gradients each)
FAR = 3  # a pixel is "far from the ink" if no ink pixel lies within FAR pixels
RATIO = 3.0  # maps must be this much stronger on the ink than far from it


@pytest.fixture(scope="module")
def batch(test_split):
    """The first 200 test digits, their labels, and the ink / far-from-ink masks."""
    x, y = test_split.x[:N_DIGITS].clone(), test_split.y[:N_DIGITS].clone()
    ink = x > 0
    near = nn.functional.max_pool2d(ink.float(), 2 * FAR + 1, stride=1, padding=FAR) > 0
    return x, y, ink, ~near


@pytest.fixture(scope="module")
def prob_model(small_cnn):
    return nn.Sequential(small_cnn, nn.Softmax(dim=1))


@pytest.fixture(scope="module")
def confident(small_cnn, batch):
    """Rows of `batch` the model gets right with probability > 0.99."""
    x, y, _, _ = batch
    with torch.no_grad():
        p = torch.softmax(small_cnn(x), dim=1)
    mask = (p.argmax(1) == y) & (p[torch.arange(len(y)), y] > 0.99)
    assert mask.sum() >= 100, "the lessons need a model that is sure of most digits"
    return mask


def ink_ratio(attr, ink, far):
    """Mean |attr| on ink pixels / mean |attr| far from any ink, pooled over digits."""
    a = attr.abs()
    return float(a[ink].mean() / a[far].mean())


# ------------------------------------------------------- maps sit on the ink
# 01, 03, 04, 05: "the hottest pixels lie on the ink and at its edges".

MAPS_ON_INK = {
    "gradient": lambda m, x, y: sal.gradient(m, x, y),
    # The black baseline would make this trivial (IG is exactly 0 where x = 0).
    "integrated_gradients(grey)": lambda m, x, y: sal.integrated_gradients(
        m, x, y, baseline="grey", n_steps=16
    ),
    "smoothgrad": lambda m, x, y: sal.smoothgrad(
        m,
        x,
        y,
        n_samples=16,
        noise_level=0.15,
        generator=torch.Generator().manual_seed(0),
    ),
    "occlusion": lambda m, x, y: sal.occlusion(m, x, y, patch=4),
}


@pytest.mark.parametrize("name", list(MAPS_ON_INK))
def test_maps_sit_on_the_ink(name, small_cnn, batch):
    x, y, ink, far = batch
    assert far.sum() > 0.3 * far.numel()  # plenty of background far from the digits
    ratio = ink_ratio(MAPS_ON_INK[name](small_cnn, x, y), ink, far)
    assert ratio >= RATIO, (
        f"{name}: mean |attr| on the ink is only {ratio:.1f}× the mean far from it "
        f"(the notebooks say the map sits on the strokes; need ≥ {RATIO}×)"
    )


# ---------------------------------------------- input × gradient and black
# 02: "exactly zero where x = 0 — not small: zero — whatever the gradient".


def test_input_x_gradient_is_exactly_zero_on_black_pixels(small_cnn, batch):
    x, y, _, _ = batch
    black = x == 0
    grad = sal.gradient(small_cnn, x, y)
    attr = sal.input_x_gradient(small_cnn, x, y)
    assert black.float().mean() > 0.5  # the digits' background is black, exactly 0
    assert bool((attr[black] == 0).all())
    # ... although the gradient there is not zero: the zero comes from x.
    assert float(grad[black].abs().mean()) > 1e-3
    assert bool((attr[~black] != 0).any())


# -------------------------------------------------------- saturation and IG
# 01, 03: "the probability gradient of a confident digit is near zero
# everywhere; IG of the probability still adds up to p(x*) − p(x0)".


def test_probability_gradient_of_confident_digits_is_tiny(
    small_cnn, prob_model, batch, confident
):
    x, y, _, _ = batch
    xc, yc = x[confident], y[confident]
    grad_logit = sal.gradient(small_cnn, xc, yc).abs().amax(dim=(1, 2, 3))
    grad_prob = sal.gradient(prob_model, xc, yc).abs().amax(dim=(1, 2, 3))
    ratio = grad_prob / grad_logit
    assert float(ratio.max()) < 0.05, (
        f"largest ∇p / ∇logit ratio {float(ratio.max()):.3g}"
    )
    assert float(ratio.median()) < 0.005, (
        f"median ∇p / ∇logit ratio {float(ratio.median()):.3g}"
    )


def test_ig_of_the_probability_is_complete(prob_model, batch, confident):
    x, y, _, _ = batch
    xc, yc = x[confident][:N_IG], y[confident][:N_IG]
    attr, delta = sal.integrated_gradients(
        prob_model, xc, yc, baseline="black", n_steps=128, return_delta=True
    )
    with torch.no_grad():
        rows = torch.arange(len(yc))
        rise = prob_model(xc)[rows, yc] - prob_model(torch.zeros_like(xc))[rows, yc]
    assert float(rise.min()) > 0.5  # the probability really rises along the path
    rel = delta.abs() / rise
    assert float(rel.max()) < 0.01, (
        f"completeness gap up to {float(rel.max()):.2%} of p(x*) − p(x0)"
    )
    torch.testing.assert_close(attr.sum(dim=(1, 2, 3)), rise, atol=0.01, rtol=0)


def test_ig_completeness_gap_shrinks_with_n_steps(small_cnn, batch):
    x, y = batch[0][:N_IG], batch[1][:N_IG]
    gaps = []
    for n_steps in (4, 16, 64):
        _, delta = sal.integrated_gradients(
            small_cnn, x, y, n_steps=n_steps, return_delta=True
        )
        gaps.append(float(delta.abs().mean()))
    assert gaps[0] > gaps[1] > gaps[2], f"mean |δ| for 4, 16, 64 steps: {gaps}"
    assert gaps[2] < gaps[0] / 20, f"mean |δ| for 4, 16, 64 steps: {gaps}"
    assert gaps[2] < 0.05  # logit units; f(x*) − f(x0) is about 5–15


# ------------------------------------------------ class-discrimination (07)
# 07: "the gradient changes completely with the class; guided backprop
# barely changes".


def test_guided_backprop_barely_depends_on_the_class(small_cnn, batch):
    x, y, _, _ = batch
    with torch.no_grad():
        logits = small_cnn(x)
    runner_up = logits.scatter(1, y[:, None], float("-inf")).argmax(dim=1)

    def mean_correlation(method):
        a, b = (
            method(small_cnn, x, y).flatten(1),
            method(small_cnn, x, runner_up).flatten(1),
        )
        a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
        return float(((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))).mean())

    assert mean_correlation(sal.guided_backprop) > 0.7
    assert abs(mean_correlation(sal.gradient)) < 0.3
