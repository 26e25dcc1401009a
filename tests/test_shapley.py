"""Shapley values: the axioms on models with a known answer, KernelSHAP, Captum parity.

* exact values obey efficiency, symmetry, dummy and additivity on constructed
  models whose Shapley values can be written down (additive models: φ_i is
  feature i's own term; a product x₀·x₁ splits its credit in half; a feature
  the model never reads gets 0), and equal the textbook subset loop;
* KernelSHAP's error to the exact values shrinks as samples grow;
* KernelSHAP equals Captum's `KernelShap` fed the same coalitions (the same
  seeded draws: identical coalitions, not statistics);
* no side effects; clear errors for bad arguments.
"""

import copy
import math

import pytest
import torch
from torch import nn

from course_utils import reference as ref
from course_utils import saliency as sal
from course_utils import shapley


class Table(nn.Module):
    """(N, D) → (N, 2): logit 0 = fn(x), logit 1 = −fn(x)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        out = self.scale * self.fn(x)
        return torch.stack([out, -out], 1)


class PatchAdditive(nn.Module):
    """Digits → (N, 2): logit 0 = Σ_j c_j · tanh(sum of patch j's pixels)."""

    def __init__(self, grid=3):
        super().__init__()
        self.register_buffer("ids", shapley.patch_ids(28, 28, grid))
        p = int(self.ids.max()) + 1
        self.register_buffer("c", torch.linspace(-1.0, 2.0, p))

    def patch_terms(self, x):
        return shapley.patch_sums(x, self.ids).float()

    def forward(self, x):
        out = (self.c * torch.tanh(self.patch_terms(x) / 10)).sum(1)
        return torch.stack([out, -out], 1)


def rows(n=3, d=5, seed=1):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ axioms


def test_additive_table_model_gets_each_features_own_term():
    """f(x) = Σ g_i(x_i) ⇒ φ_i = g_i(x_i) − g_i(b_i) (additivity, efficiency)."""
    w = torch.tensor([1.0, -2.0, 0.5, 3.0, 0.0])

    def terms(x):
        return w * torch.sin(x) + x**2

    model = Table(lambda x: terms(x).sum(1))
    x, base = rows(), torch.tensor([0.3, -0.1, 0.0, 1.0, 2.0])
    result = shapley.exact_features(model, x, 0, baseline=base)
    expected = (terms(x) - terms(base)).double()
    torch.testing.assert_close(result.values, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(result.gap, torch.zeros(3, dtype=torch.float64))
    # target 1 is −f: every value flips sign
    flipped = shapley.exact_features(model, x, 1, baseline=base)
    torch.testing.assert_close(flipped.values, -expected, rtol=1e-5, atol=1e-6)


def test_interaction_is_split_between_symmetric_features_and_dummy_gets_zero():
    """f = x₀·x₁ + x₂ on baseline 0: φ₀ = φ₁ = x₀x₁/2, φ₂ = x₂, φ₃ = 0 (unread)."""
    model = Table(lambda x: x[:, 0] * x[:, 1] + x[:, 2])
    x = torch.tensor([[2.0, 3.0, -1.0, 7.0], [1.5, -4.0, 0.5, -3.0]])
    result = shapley.exact_features(model, x, 0)
    half = (x[:, 0] * x[:, 1] / 2).double()
    expected = torch.stack([half, half, x[:, 2].double(), torch.zeros(2).double()], 1)
    torch.testing.assert_close(result.values, expected, rtol=1e-6, atol=1e-6)
    assert result.values[:, 3].abs().max() < 1e-12  # dummy: zero up to round-off


def test_symmetric_features_of_a_nonlinear_model_get_equal_values():
    """max(x₀, x₁) with x₀ = x₁: the two are interchangeable, so φ₀ = φ₁."""
    model = Table(lambda x: torch.maximum(x[:, 0], x[:, 1]) * torch.tanh(x[:, 2]))
    x = torch.tensor([[1.3, 1.3, 0.7], [-0.4, -0.4, 2.0]])
    values = shapley.exact_features(model, x, 0, baseline=-1.0).values
    torch.testing.assert_close(values[:, 0], values[:, 1])
    assert (values[:, 0].abs() > 1e-3).all()


def test_groups_are_players():
    """Grouping features of an additive model sums their terms."""
    w = torch.tensor([1.0, -2.0, 0.5, 3.0])
    model = Table(lambda x: (w * x).sum(1))
    x = rows(2, 4)
    grouped = shapley.exact_features(model, x, 0, groups=[0, 1, 1, 0])
    expected = torch.stack(
        [(w[[0, 3]] * x[:, [0, 3]]).sum(1), (w[[1, 2]] * x[:, [1, 2]]).sum(1)], 1
    )
    torch.testing.assert_close(grouped.values, expected.double(), rtol=1e-5, atol=1e-6)


def test_batched_exact_values_equal_the_textbook_loop():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).eval()
    x = rows(2, 5, seed=4)
    base = torch.tensor([0.1, 0.0, -0.2, 0.3, 0.5])
    result = shapley.exact_features(net, x, [2, 0], baseline=base, output="prob")
    for i, target in enumerate([2, 0]):

        def value(s, i=i, target=target):
            keep = torch.tensor([j in s for j in range(5)])
            z = torch.where(keep, x[i], base)
            with torch.no_grad():
                return torch.softmax(net(z[None]), 1)[0, target].item()

        expected = shapley.shapley_textbook(value, 5)
        torch.testing.assert_close(
            result.values[i],
            torch.tensor(expected, dtype=torch.float64),
            atol=1e-6,
            rtol=1e-5,
        )


def test_patch_players_on_an_additive_image_model():
    """Logit = Σ_j c_j tanh(patch sum_j / 10) ⇒ φ_j = c_j [tanh(s_j/10) − tanh(b_j/10)]."""
    model = PatchAdditive(grid=3).eval()
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    result = shapley.exact(model, x, 0, grid=3, baseline=0.2)
    own = model.c * torch.tanh(model.patch_terms(x) / 10)
    base = model.c * torch.tanh(model.patch_terms(torch.full_like(x, 0.2)) / 10)
    torch.testing.assert_close(
        result.values, (own - base).double(), atol=1e-5, rtol=1e-4
    )
    # the map holds each patch's value on its pixels
    assert result.maps.shape == (2, 1, 28, 28)
    torch.testing.assert_close(
        result.maps[:, 0, 0, 0].double(), result.values[:, 0], atol=1e-6, rtol=1e-6
    )
    assert result.n_evaluations == 512 and result.coalitions.shape == (512, 9)


def test_efficiency_on_the_digit_model_and_ig_completeness_agrees(small_cnn, digits):
    """Σφ = f(x) − f(grey) (exact), and IG from grey to x sums to the same number."""
    x, y = digits
    result = shapley.exact(small_cnn, x[:2], y[:2], grid=3)
    with torch.no_grad():
        logits = small_cnn(x[:2])[torch.arange(2), y[:2]]
        grey = small_cnn(torch.full_like(x[:2], float(small_cnn.normalize.mean)))
    torch.testing.assert_close(result.f_x.float(), logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        result.values.sum(1).float(),
        logits - grey[torch.arange(2), y[:2]],
        atol=1e-4,
        rtol=1e-4,
    )
    ig = sal.integrated_gradients(small_cnn, x[:2], y[:2], baseline="grey", n_steps=200)
    sums = shapley.patch_sums(ig, result.patch_ids)
    torch.testing.assert_close(sums.sum(1), result.values.sum(1), atol=0.05, rtol=0.02)


def test_a_wrong_weight_matrix_is_caught_by_the_efficiency_check(monkeypatch):
    true = shapley.shapley_matrix(3)
    monkeypatch.setattr(shapley.game, "shapley_matrix", lambda p: true * 1.01)
    model = Table(lambda x: x.sum(1) ** 2)
    with pytest.raises(RuntimeError, match="efficiency violated"):
        shapley.exact_features(model, rows(1, 3), 0)


def test_shapley_matrix_weights():
    w = shapley.shapley_matrix(4)
    # each player's weights over the coalitions containing it sum to 1
    member = shapley.coalitions(4)
    assert torch.allclose((w * member).sum(0), torch.ones(4, dtype=torch.float64))
    assert torch.allclose(w.sum(0), torch.zeros(4, dtype=torch.float64))
    assert w[0, 0] == -1 / 4 and w[-1, 0] == 1 / 4  # 0!3!/4! and 3!0!/4!
    assert math.isclose(w[1, 0].item(), 1 / 4)  # {0}: 0!·3!/4!


# -------------------------------------------------------------- KernelSHAP


def test_kernel_shap_error_shrinks_with_samples(small_cnn, digits):
    x, y = digits
    exact = shapley.exact(small_cnn, x[:1], y[:1], grid=3).values
    errors = {}
    for n_samples in (30, 150, 1500):
        errs = []
        for seed in range(4):
            gen = torch.Generator().manual_seed(seed)
            est = shapley.kernel_shap(
                small_cnn, x[:1], y[:1], grid=3, n_samples=n_samples, generator=gen
            )
            errs.append(float((est.values - exact).norm() / exact.norm()))
        errors[n_samples] = sum(errs) / len(errs)
    assert errors[30] > errors[150] > errors[1500], errors
    assert errors[1500] < 0.1, errors


def test_kernel_shap_with_every_coalition_is_nearly_efficient(small_cnn, digits):
    x, y = digits
    est = shapley.kernel_shap(small_cnn, x[:2], y[:2], grid=2, n_samples=400)
    assert est.gap.abs().max() < 1e-3  # the 10⁶ end weights
    exact = shapley.exact(small_cnn, x[:2], y[:2], grid=2).values
    assert ((est.values - exact).norm() / exact.norm()) < 0.05


@pytest.mark.parametrize("output", ["logit", "prob"])
def test_kernel_shap_equals_captums_with_the_same_coalitions(small_cnn, digits, output):
    x, y = digits
    for seed, grid, n_samples in [(0, 3, 60), (5, (2, 4), 40)]:
        torch.manual_seed(seed)
        ours = shapley.kernel_shap(
            small_cnn, x[:2], y[:2], grid=grid, output=output, n_samples=n_samples
        )
        theirs = ref.kernel_shap(
            small_cnn,
            x[:2],
            y[:2],
            grid=grid,
            output=output,
            n_samples=n_samples,
            seed=seed,
        )
        scale = float(theirs.abs().max())
        torch.testing.assert_close(ours.values, theirs, atol=2e-5 * scale, rtol=1e-4)


def test_kernel_shap_draws_follow_the_shapley_kernel():
    """|S| of the random draws ∝ (P−1)/(k(P−k)); the first two are all and none."""
    member = shapley._draw_coalitions(6, 20002, torch.Generator().manual_seed(0))
    assert member[0].all() and not member[1].any()
    sizes = member[2:].sum(1)
    k = torch.arange(1, 6, dtype=torch.float)
    expected = (5 / (k * (6 - k))) / (5 / (k * (6 - k))).sum()
    observed = torch.bincount(sizes, minlength=6)[1:].float() / len(sizes)
    assert (observed - expected).abs().max() < 0.015


# --------------------------------------------------- side effects and errors


def test_no_side_effects(small_cnn, digits):
    x, y = digits
    model = copy.deepcopy(small_cnn).train()
    next(model.parameters()).requires_grad_(False)
    flags = {n: m.training for n, m in model.named_modules()}
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []
    handle = model.normalize.register_forward_hook(lambda *a: calls.append(1))
    before = x[:1].clone()
    shapley.exact(model, x[:1], y[:1], grid=2)
    shapley.kernel_shap(model, x[:1], y[:1], grid=2, n_samples=10)
    assert calls
    handle.remove()
    assert {n: m.training for n, m in model.named_modules()} == flags
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert torch.equal(x[:1], before)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"grid": 0}, ValueError, r"grid must be an int in 1..28, got 0"),
        ({"grid": 5}, ValueError, r"grid must have at most 20 patches.*25"),
        ({"grid": "4"}, TypeError, r"grid must be an int or a \(rows, cols\) pair"),
        ({"grid": (2, 30)}, ValueError, r"grid must be an int in 1..28, got 30"),
        (
            {"output": "softmax"},
            ValueError,
            r"output must be one of \['logit', 'prob'\]",
        ),
        ({"baseline": "blue"}, ValueError, r"baseline must be a number, a tensor"),
        ({"batch_size": 0}, ValueError, r"batch_size must be an int ≥ 1"),
    ],
)
def test_exact_and_kernel_shap_name_the_bad_argument(
    small_cnn, digits, kwargs, error, message
):
    x, y = digits
    for fn in (shapley.exact, shapley.kernel_shap):
        with pytest.raises(error, match=message):
            fn(small_cnn, x[:1], y[:1], **kwargs)


def test_other_bad_arguments(small_cnn, digits):
    x, _ = digits
    with pytest.raises(ValueError, match=r"x must have 4 dims"):
        shapley.exact(small_cnn, x[0], 0)
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module"):
        shapley.exact(lambda z: z, x[:1], 0)
    with pytest.raises(ValueError, match=r"target must be a class index in 0..9"):
        shapley.exact(small_cnn, x[:1], 12, grid=1)
    with pytest.raises(ValueError, match=r"n_samples must be an int ≥ 2"):
        shapley.kernel_shap(small_cnn, x[:1], 0, n_samples=1)
    with pytest.raises(TypeError, match=r"generator must be a torch.Generator"):
        shapley.kernel_shap(small_cnn, x[:1], 0, generator=3)
    table = Table(lambda z: z.sum(1))
    with pytest.raises(ValueError, match=r"x must have shape \(N, D\)"):
        shapley.exact_features(table, x[:1], 0)
    with pytest.raises(ValueError, match=r"at most 20 .*groups="):
        shapley.exact_features(table, torch.zeros(1, 21), 0)
    with pytest.raises(ValueError, match=r"groups must use every id"):
        shapley.exact_features(table, torch.zeros(1, 3), 0, groups=[0, 2, 2])
    with pytest.raises(ValueError, match=r"baseline must be broadcastable"):
        shapley.exact_features(table, torch.zeros(1, 3), 0, baseline=torch.zeros(4))
    with pytest.raises(TypeError, match=r"value must be a function"):
        shapley.shapley_textbook(3, 2)


# ---------------------------------------------------------- beyond pixels


def test_wine_example_trains_offline_and_ig_nearly_matches_shapley():
    """Notebook 10's table: accurate, repeatable, and IG ≈ exact Shapley near the mean."""
    wine = shapley.wine_example()
    again = shapley.wine_example()
    assert wine.test_accuracy >= 0.9 and len(wine.feature_names) == 13
    x = wine.x_test[:4]
    torch.testing.assert_close(wine.model(x), again.model(x))
    target = wine.model(x).argmax(1)
    exact = shapley.exact_features(wine.model, x, target)
    assert exact.n_evaluations == 2**13 and exact.gap.abs().max() < 1e-9
    ig = sal.integrated_gradients(
        shapley.RowsAsImages(wine.model), x.view(4, 1, 1, 13), target, n_steps=100
    ).view(4, 13)
    rel = (ig.double() - exact.values).norm(dim=1) / exact.values.norm(dim=1)
    assert rel.max() < 0.25, rel
    assert all(p.grad is None for p in wine.model.parameters())


def test_patch_map_puts_each_value_on_its_pixels():
    ids = shapley.patch_ids(28, 28, (2, 4))
    values = torch.arange(16.0).view(2, 8)
    maps = shapley.patch_map(values, ids)
    assert maps.shape == (2, 1, 28, 28)
    assert maps[1, 0, 0, 0] == 8 and maps[1, 0, 27, 27] == 15 and maps[0, 0, 0, 7] == 1
    torch.testing.assert_close(
        shapley.patch_sums(maps, ids), values.double() * (14 * 7)
    )
    with pytest.raises(ValueError, match=r"values has 3 columns; ids has 8 patches"):
        shapley.patch_map(torch.zeros(1, 3), ids)
