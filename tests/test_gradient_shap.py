"""Expected gradients / GradientSHAP: what it is on a linear model, and Captum parity.

* On a linear model the gradient is constant, so each sample's term is
  (x̃ − x₀) ⊙ w: with one baseline and no noise EG equals IG exactly, and with
  a distribution it is x ⊙ w minus the drawn baselines' mean, per sample —
  Σ EG = f(x) − mean f(x₀) (efficiency over the drawn baselines);
* given Captum's own draws (baseline indices, noise, α) the maps equal
  Captum's `GradientShap` on the shipped CNNs, with and without noise;
* the default draws are repeatable; bad arguments are named.
"""

import pytest
import torch
from torch import nn

from course_utils import reference as ref
from course_utils import saliency as sal
from course_utils.saliency.gradient_shap import GradientShapDraws, draw


def linear_model(seed=0):
    gen = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 4))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(4, 28 * 28, generator=gen) * 0.1)
    return model.eval()


def test_one_baseline_no_noise_equals_integrated_gradients_on_a_linear_model(digits):
    x, _ = digits
    model = linear_model()
    base = torch.full((1, 1, 28, 28), 0.3)
    eg = sal.gradient_shap(model, x[:3], 2, baselines=base, n_samples=7)
    ig = sal.integrated_gradients(model, x[:3], 2, baseline=0.3, n_steps=5)
    torch.testing.assert_close(eg, ig, atol=1e-6, rtol=1e-5)


def test_a_distribution_subtracts_the_drawn_baselines_mean(digits, test_split):
    x, _ = digits
    model = linear_model(1)
    dist = test_split.x[100:110]
    draws = draw(x[:2], len(dist), 6, 0.0, torch.Generator().manual_seed(3))
    eg = sal.gradient_shap(model, x[:2], 1, baselines=dist, n_samples=6, draws=draws)
    w = model[1].weight[1].view(1, 28, 28)
    mean_base = dist[draws.index].view(2, 6, 1, 28, 28).mean(1)
    torch.testing.assert_close(eg, (x[:2] - mean_base) * w, atol=1e-6, rtol=1e-5)
    with torch.no_grad():
        f_x = model(x[:2])[:, 1]
        f_b = model(dist[draws.index])[:, 1].view(2, 6).mean(1)
    torch.testing.assert_close(eg.sum((1, 2, 3)), f_x - f_b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("noise_level", [0.0, 0.1])
def test_equals_captum_given_captums_draws(
    small_cnn, resnet_small, digits, noise_level
):
    x, y = digits
    for model, n, n_samples, seed in [(small_cnn, 1, 10, 0), (resnet_small, 3, 6, 4)]:
        target = y[:n] if n > 1 else 3
        theirs, draws = ref.gradient_shap(
            model,
            x[:n],
            target,
            n_samples=n_samples,
            noise_level=noise_level,
            seed=seed,
        )
        ours = sal.gradient_shap(
            model, x[:n], target, n_samples=n_samples, draws=draws, batch_size=7
        )
        scale = float(theirs.abs().max())
        torch.testing.assert_close(ours, theirs, atol=1e-5 * scale, rtol=1e-4)


def test_draws_are_repeatable_and_the_generator_matters(small_cnn, digits):
    x, y = digits
    a = sal.gradient_shap(small_cnn, x[:2], y[:2], n_samples=5, noise_level=0.1)
    b = sal.gradient_shap(small_cnn, x[:2], y[:2], n_samples=5, noise_level=0.1)
    c = sal.gradient_shap(
        small_cnn,
        x[:2],
        y[:2],
        n_samples=5,
        noise_level=0.1,
        generator=torch.Generator().manual_seed(9),
    )
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    assert sal.METHODS["gradient_shap"] is sal.gradient_shap


def test_more_samples_approach_the_expectation(small_cnn, digits):
    """Averages over more draws scatter less (Monte Carlo error ~ 1/√S)."""
    x, y = digits
    spread = {}
    for s in (4, 64):
        maps = torch.stack(
            [
                sal.gradient_shap(
                    small_cnn,
                    x[:1],
                    y[:1],
                    n_samples=s,
                    generator=torch.Generator().manual_seed(k),
                )
                for k in range(4)
            ]
        )
        spread[s] = float(maps.std(0).norm() / maps.mean(0).norm())
    assert spread[64] < 0.5 * spread[4], spread


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"baselines": "black"}, ValueError, r"baselines must be 'train' or an"),
        ({"baselines": 0.0}, TypeError, r"baselines must be 'train' or an"),
        (
            {"baselines": torch.zeros(3, 1, 8, 8)},
            ValueError,
            r"baselines must have shape \(M, 1, 28, 28\)",
        ),
        ({"n_samples": 0}, ValueError, r"n_samples must be an int ≥ 1"),
        ({"noise_level": -0.1}, ValueError, r"noise_level must be a finite number"),
        ({"noise_level": "0.1"}, TypeError, r"noise_level must be a number"),
        ({"generator": 3}, TypeError, r"generator must be a torch.Generator"),
        ({"draws": (1, 2, 3)}, TypeError, r"draws must be GradientShapDraws"),
        (
            {
                "draws": GradientShapDraws(
                    torch.zeros(2, dtype=torch.long),
                    torch.zeros(2, 1, 28, 28),
                    torch.zeros(2),
                )
            },
            ValueError,
            r"draws.index must have shape \(5,\)",
        ),
        ({"batch_size": 0}, ValueError, r"batch_size must be an int ≥ 1"),
    ],
)
def test_bad_arguments_are_named(small_cnn, digits, kwargs, error, message):
    x, _ = digits
    with pytest.raises(error, match=message):
        sal.gradient_shap(small_cnn, x[:1], 0, **{"n_samples": 5, **kwargs})


def test_train_baselines_need_digits():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    with pytest.raises(ValueError, match=r"baselines='train' holds 1×28×28 digits"):
        sal.gradient_shap(model, torch.rand(1, 1, 8, 8), 0)
