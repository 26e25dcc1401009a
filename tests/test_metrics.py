"""Faithfulness metrics: deletion / insertion curves, completeness, mass share.

Known-answer model: `PixelReader` reads a fixed set of pixels with positive
weights, logit₀ = Σ_p w_p x_p, logit₁ = 0. Its exact attribution is
a_p = w_p x_p (IG from black = input × gradient), every deletion to black
removes a non-negative contribution (so any deletion curve falls, any
insertion curve rises), and removing the largest contributions first gives
the lowest possible curve at every step.
"""

import math

import pytest
import torch
from torch import nn

from course_utils import metrics
from course_utils import saliency as sal

SIDE = 8


class PixelReader(nn.Module):
    """logits = [Σ_p w_p x_p, 0] on (N, 1, SIDE, SIDE) images; w ≥ 0 on a few pixels."""

    def __init__(self, n_read: int = 12, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        weight = torch.zeros(SIDE * SIDE)
        read = torch.randperm(SIDE * SIDE, generator=gen)[:n_read]
        weight[read] = 0.5 + torch.rand(n_read, generator=gen)
        self.register_buffer("weight", weight)

    def forward(self, x):
        logit = x.flatten(1) @ self.weight
        return torch.stack([logit, torch.zeros_like(logit)], dim=1)


@pytest.fixture
def reader():
    return PixelReader()


@pytest.fixture
def images():
    return torch.rand(5, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(1))


def exact_attr(model, x):
    return x * model.weight.view(1, 1, SIDE, SIDE)


@pytest.mark.parametrize("n_steps", [1, 7, 50, SIDE * SIDE])
def test_pixel_counts_go_from_none_to_all_monotonically(reader, images, n_steps):
    curve = metrics.deletion(reader, images, 0, exact_attr(reader, images),
                             n_steps=n_steps)
    counts = curve.n_changed
    assert counts.shape == (n_steps + 1,) and curve.scores.shape == (5, n_steps + 1)
    assert counts[0] == 0 and counts[-1] == SIDE * SIDE
    assert torch.all(counts[1:] >= counts[:-1])
    assert torch.allclose(curve.fraction, counts.float() / (SIDE * SIDE))


def test_deletion_logits_equal_hand_computed_values(reader, images):
    # With one pixel per step the k-th logit is the total minus the k largest
    # contributions w_p x_p.
    attr = exact_attr(reader, images)
    curve = metrics.deletion(reader, images, 0, attr, n_steps=SIDE * SIDE,
                             output="logit")
    contrib = attr.flatten(1).sort(dim=1, descending=True).values
    expected = contrib.sum(1, keepdim=True) - torch.cat(
        [torch.zeros(5, 1), contrib.cumsum(1)], dim=1)
    assert torch.allclose(curve.scores, expected, atol=1e-5)


@pytest.mark.parametrize("kind", ["deletion", "insertion"])
@pytest.mark.parametrize("output", ["prob", "logit"])
def test_curves_are_monotone_on_the_known_answer_model(reader, images, kind, output):
    for attr in (exact_attr(reader, images), metrics.random_attr(images)):
        curve = metrics.perturbation_curve(reader, images, 0, attr, kind=kind,
                                           n_steps=16, output=output)
        step = curve.scores[:, 1:] - curve.scores[:, :-1]
        if kind == "deletion":
            assert torch.all(step <= 1e-6)
        else:
            assert torch.all(step >= -1e-6)


def test_true_map_beats_random_order_pointwise_and_in_auc(reader, images):
    attr = exact_attr(reader, images)
    rand = metrics.random_attr(images, seed=3)
    for output in ("logit", "prob"):
        true_del = metrics.deletion(reader, images, 0, attr, output=output)
        rand_del = metrics.deletion(reader, images, 0, rand, output=output)
        true_ins = metrics.insertion(reader, images, 0, attr, output=output)
        rand_ins = metrics.insertion(reader, images, 0, rand, output=output)
        # Greedy removal of the largest contributions is optimal at every step.
        assert torch.all(true_del.scores <= rand_del.scores + 1e-5)
        assert torch.all(true_ins.scores >= rand_ins.scores - 1e-5)
        assert torch.all(true_del.auc < rand_del.auc)
        assert torch.all(true_ins.auc > rand_ins.auc)
    # The opposite order (least relevant first) is the worst.
    worst = metrics.deletion(reader, images, 0, -attr, output="logit")
    assert torch.all(worst.auc > rand_del.auc)


def test_curve_endpoints_are_the_input_and_the_baseline(small_cnn, digits):
    x, y = digits
    attr = metrics.random_attr(x)
    grey = float(small_cnn.normalize.mean)
    probs = torch.softmax(small_cnn(x), 1).gather(1, y[:, None])[:, 0].detach()
    base = torch.softmax(small_cnn(torch.full_like(x, grey)), 1)
    base = base.gather(1, y[:, None])[:, 0].detach()
    dele = metrics.deletion(small_cnn, x, y, attr, n_steps=5, baseline="grey")
    ins = metrics.insertion(small_cnn, x, y, attr, n_steps=5, baseline="grey")
    assert torch.allclose(dele.scores[:, 0], probs, atol=1e-5)
    assert torch.allclose(dele.scores[:, -1], base, atol=1e-5)
    assert torch.allclose(ins.scores[:, 0], base, atol=1e-5)
    assert torch.allclose(ins.scores[:, -1], probs, atol=1e-5)


@pytest.mark.parametrize("baseline", ["grey", "black"])
@pytest.mark.parametrize("kind", ["deletion", "insertion"])
def test_perturb_shows_the_images_behind_each_point(small_cnn, digits, kind, baseline):
    # Every point of the curve is the model's probability on the image
    # `perturb` builds, also where the curve skips repeated images (black
    # baseline: steps that only blacken black background).
    x, y = digits
    attr = sal.gradient(small_cnn, x, y)
    x0 = x.clone()
    base = float(small_cnn.normalize.mean) if baseline == "grey" else 0.0
    curve = metrics.perturbation_curve(small_cnn, x, y, attr, kind=kind, n_steps=10,
                                       baseline=baseline)
    for step, count in enumerate(curve.n_changed.tolist()):
        seen = metrics.perturb(small_cnn, x, attr, count, kind=kind, baseline=baseline)
        start = x if kind == "deletion" else torch.full_like(x, base)
        changed = (seen != start).flatten(1).sum(1)
        assert torch.all(changed <= count)  # only the pixels it says it changes
        probs = torch.softmax(small_cnn(seen), 1).gather(1, y[:, None])[:, 0]
        assert torch.allclose(probs.detach(), curve.scores[:, step], atol=1e-5)
    assert torch.equal(x, x0)
    n_points = len(x) * 11
    if baseline == "grey":  # every pixel differs from grey: every image is new
        assert curve.n_evaluated == n_points
    else:  # the gradient ranks background pixels too: some steps repeat
        assert curve.n_evaluated < n_points
    top = metrics.pixel_order(attr)[:, :10]
    deleted = metrics.perturb(small_cnn, x, attr, 10).flatten(1)
    assert torch.all(deleted.gather(1, top) == 0)  # the 10 most relevant went black


def test_chunking_does_not_change_the_curve(small_cnn, digits):
    x, y = digits
    attr = sal.gradient(small_cnn, x, y)
    one = metrics.insertion(small_cnn, x, y, attr, n_steps=10, batch_size=7)
    big = metrics.insertion(small_cnn, x, y, attr, n_steps=10, batch_size=1000)
    assert torch.allclose(one.scores, big.scores, atol=1e-5)
    assert torch.allclose(one.auc, big.auc, atol=1e-6)


def test_ig_beats_random_on_the_trained_cnn(small_cnn, test_split):
    # Measured on 100 test digits, black baseline, 50 steps: deletion AUC
    # IG 0.13 vs random 0.63; insertion 0.96 vs 0.61.
    x, y = test_split.x[:32], test_split.y[:32]
    attr = sal.integrated_gradients(small_cnn, x, y, n_steps=16)
    rand = metrics.random_attr(x)
    assert metrics.deletion(small_cnn, x, y, attr).mean_auc + 0.3 < (
        metrics.deletion(small_cnn, x, y, rand).mean_auc)
    assert metrics.insertion(small_cnn, x, y, attr).mean_auc > 0.2 + (
        metrics.insertion(small_cnn, x, y, rand).mean_auc)


def test_nothing_is_modified_in_place(small_cnn, digits):
    x, y = digits
    attr = sal.gradient(small_cnn, x, y)
    x0, attr0 = x.clone(), attr.clone()
    state = {k: v.clone() for k, v in small_cnn.state_dict().items()}
    small_cnn.train()
    try:
        metrics.deletion(small_cnn, x, y, attr, n_steps=4)
        metrics.insertion(small_cnn, x, y, attr, n_steps=4, baseline="blur")
        metrics.completeness_gap(small_cnn, x, y, attr)
        metrics.mass_share(attr, torch.ones(1, 1, 28, 28, dtype=torch.bool))
        metrics.faithfulness_table(small_cnn, x, y, {"gradient": attr}, n_steps=4)
        assert small_cnn.training  # mode restored
        assert all(m.training for m in small_cnn.modules())
    finally:
        small_cnn.eval()
    assert torch.equal(x, x0) and torch.equal(attr, attr0)
    assert all(torch.equal(v, state[k]) for k, v in small_cnn.state_dict().items())
    assert all(p.requires_grad for p in small_cnn.parameters())


def test_ties_are_broken_at_random_not_top_left_first():
    flat = torch.zeros(2, 1, SIDE, SIDE)
    order = metrics.pixel_order(flat, seed=0)
    assert not torch.equal(order[0], torch.arange(SIDE * SIDE))
    assert sorted(order[0].tolist()) == list(range(SIDE * SIDE))
    assert torch.equal(order, metrics.pixel_order(flat, seed=0))  # reproducible
    distinct = torch.randperm(SIDE * SIDE).float().view(1, 1, SIDE, SIDE)
    assert torch.equal(metrics.pixel_order(distinct)[0],
                       distinct.flatten().argsort(descending=True))
    signed = torch.tensor([[[[-3.0, 1.0, 2.0]]]])
    assert metrics.pixel_order(signed).tolist() == [[2, 1, 0]]
    assert metrics.pixel_order(signed, absolute=True).tolist() == [[0, 2, 1]]


def test_completeness_gap(reader, images, small_cnn, digits):
    # Linear, bias-free model: input × gradient is exactly complete; the
    # gradient alone is not.
    ixg = metrics.completeness_gap(reader, images, 0, exact_attr(reader, images))
    assert torch.allclose(ixg, torch.zeros(5), atol=1e-5)
    weight = reader.weight.view(1, 1, SIDE, SIDE).expand(5, -1, -1, -1)
    grad = metrics.completeness_gap(reader, images, 0, weight)
    assert grad.abs().min() > 0.1
    # On the CNN it is IG's own delta.
    x, y = digits
    attr, delta = sal.integrated_gradients(small_cnn, x, y, n_steps=20,
                                           return_delta=True)
    gap = metrics.completeness_gap(small_cnn, x, y, attr)
    assert torch.allclose(gap, delta, atol=1e-4)


def test_mass_share_by_hand():
    attr = torch.zeros(2, 1, 4, 4)
    attr[0, 0, 0, 0], attr[0, 0, 3, 3] = -3.0, 1.0  # signs do not matter
    attr[1] = 1.0
    region = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    region[..., 0, 0] = True
    share = metrics.mass_share(attr, region)
    assert share.tolist() == pytest.approx([0.75, 1 / 16])
    assert math.isnan(float(metrics.mass_share(torch.zeros(1, 1, 4, 4), region)[0]))


def test_faithfulness_table_ranks_and_includes_random(reader, images):
    table, curves = metrics.faithfulness_table(
        reader, images, 0,
        {"exact": exact_attr(reader, images),
         "reversed": lambda m, x, t: -exact_attr(m, x)},
        n_steps=16,
    )
    assert table["method"].tolist() == ["exact", "random", "reversed"]
    assert table["ins_minus_del"].is_monotonic_decreasing
    exact = table.set_index("method").loc["exact"]
    assert exact.completeness_gap == pytest.approx(0.0, abs=1e-5)
    assert math.isnan(table.set_index("method").loc["random", "completeness_gap"])
    assert set(curves["kind"]) == {"deletion", "insertion"}
    assert len(curves) == 3 * 2 * 17


@pytest.mark.parametrize("kwargs, match", [
    ({"kind": "erase"}, "kind"), ({"n_steps": 0}, "n_steps"),
    ({"n_steps": SIDE * SIDE + 1}, "n_steps"), ({"output": "softmax"}, "output"),
    ({"baseline": "white"}, "baseline"), ({"batch_size": 0}, "batch_size"),
])
def test_bad_arguments_name_themselves(reader, images, kwargs, match):
    attr = exact_attr(reader, images)
    with pytest.raises(ValueError, match=match):
        metrics.perturbation_curve(reader, images, 0, attr, **kwargs)


def test_bad_target_is_rejected(reader, images):
    attr = exact_attr(reader, images)
    with pytest.raises(ValueError, match="target"):
        metrics.deletion(reader, images, 2, attr)  # the reader has 2 classes
    with pytest.raises(ValueError, match="target"):
        metrics.completeness_gap(reader, images, [0, 1], attr)  # 2 targets, 5 rows


def test_bad_attr_is_rejected(reader, images):
    with pytest.raises(ValueError, match="attr"):
        metrics.deletion(reader, images, 0, torch.zeros(5, 1, 4, 4))
    with pytest.raises(ValueError, match="attr"):
        metrics.deletion(reader, images, 0, torch.full_like(images, math.nan))
    with pytest.raises(TypeError, match="attr"):
        metrics.deletion(reader, images, 0, images.numpy())


# ------------------------------------------------ map comparison numbers


def test_map_correlation_scale_free_sign_and_constant():
    a = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    r = metrics.map_correlation(a, 5 * a)
    torch.testing.assert_close(r, torch.ones(3))
    torch.testing.assert_close(metrics.map_correlation(a, -a), -torch.ones(3))
    b = a.clone()
    b[1] = 2.0
    assert math.isnan(float(metrics.map_correlation(a, b)[1]))
    with pytest.raises(ValueError, match="same shape"):
        metrics.map_correlation(a, a[:2])


def test_total_variation_by_hand():
    m = torch.zeros(2, 1, 4, 4)
    m[0, 0, 1, 1] = 2.0  # one spike: 4 neighbours differ by 2 → TV 8, mass 2
    m[1] = 1.0  # constant: TV 0
    torch.testing.assert_close(metrics.total_variation(m), torch.tensor([4.0, 0.0]))
    torch.testing.assert_close(
        metrics.total_variation(10 * m), metrics.total_variation(m)
    )
    assert math.isnan(float(metrics.total_variation(torch.zeros(1, 1, 4, 4))[0]))


def test_diffuseness_extremes():
    m = torch.zeros(3, 1, 4, 4)
    m[0, 0, 2, 2] = -3.0  # all mass on one pixel
    m[1] = 0.5  # evenly spread
    m[2, 0, :2] = 1.0  # half of the pixels: log 8 / log 16
    torch.testing.assert_close(
        metrics.diffuseness(m), torch.tensor([0.0, 1.0, math.log(8) / math.log(16)])
    )
    with pytest.raises(ValueError, match="attr"):
        metrics.diffuseness(torch.zeros(4, 4))
