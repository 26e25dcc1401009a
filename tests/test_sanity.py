"""Sanity checks (Adebayo et al., 2018): randomization tests and similarity measures.

Properties asserted on the shipped models are the lecture's, seen in a probe:
after the full cascade the signed gradient map is uncorrelated with the
trained one, its absolute map less so, guided backprop barely changes when
the logits layer is randomized, and a random-label model's gradient maps
differ more from the true model's than a re-seeded true-label model's do.
"""

from functools import partial
from typing import ClassVar

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity

from course_utils import data, models, sanity
from course_utils import saliency as sal

N_IMAGES = 8
FAST = {"gradient": sal.gradient, "guided_backprop": sal.guided_backprop}


def _snapshot(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        {n: m.training for n, m in model.named_modules()},
        {n: p.requires_grad for n, p in model.named_parameters()},
    )


def _assert_unchanged(model, snap):
    state, modes, flags = snap
    now = model.state_dict()
    assert set(now) == set(state)
    for k, v in state.items():
        assert torch.equal(now[k], v), f"{k} changed"
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    for m in model.modules():
        assert not m._forward_hooks and not m._backward_hooks
        assert not m._forward_pre_hooks


@pytest.fixture(scope="module")
def cnn_cascade(small_cnn, digits):
    x, y = digits
    snap = _snapshot(small_cnn)
    result = sanity.cascading_randomization(small_cnn, x, y, FAST, progress=False)
    _assert_unchanged(small_cnn, snap)
    return result


@pytest.fixture(scope="module")
def resnet_cascade(resnet_small, digits):
    x, y = digits
    snap = _snapshot(resnet_small)
    result = sanity.cascading_randomization(resnet_small, x, y, FAST, progress=False)
    _assert_unchanged(resnet_small, snap)
    return result


def _mean(result, label, method, metric):
    t = result.table
    row = t[(t[result.key] == label) & (t.method == method) & (t.metric == metric)]
    assert len(row) == 1
    return float(row["mean"].iloc[0])


# ------------------------------------------------------------------ layers


def test_default_layers_are_the_parameterised_blocks_in_order():
    assert sanity.randomization_layers(models.SmallCNN()) == [
        "conv1",
        "conv2",
        "fc1",
        "fc2",
    ]
    assert sanity.randomization_layers(models.ResNetSmall()) == [
        "stem",
        "layer1",
        "layer2",
        "layer3",
        "fc",
    ]


def test_randomize_touches_only_the_named_block_of_a_copy(small_cnn):
    snap = _snapshot(small_cnn)
    rnd = sanity.randomize(small_cnn, "fc2", seed=3)
    _assert_unchanged(small_cnn, snap)
    for name, p in rnd.named_parameters():
        same = torch.equal(p, small_cnn.get_parameter(name))
        assert same == (not name.startswith("fc2.")), name
    again = sanity.randomize(small_cnn, "fc2", seed=3)
    other = sanity.randomize(small_cnn, "fc2", seed=4)
    assert torch.equal(rnd.fc2.weight, again.fc2.weight)
    assert not torch.equal(rnd.fc2.weight, other.fc2.weight)
    # "reset" = the layer's own init: Kaiming-uniform bound 1/sqrt(fan_in).
    assert float(rnd.fc2.weight.detach().abs().max()) <= 1 / np.sqrt(32) + 1e-6
    # The global RNG is left alone.
    torch.manual_seed(0)
    a = torch.rand(3)
    torch.manual_seed(0)
    sanity.randomize(small_cnn, ["fc1", "fc2"])
    assert torch.equal(torch.rand(3), a)


def test_normal_rule_draws_weights_with_sigma(small_cnn):
    rnd = sanity.randomize(small_cnn, "fc1", rule="normal", sigma=0.05, seed=0)
    w = rnd.fc1.weight
    assert abs(float(w.detach().mean())) < 0.005
    assert float(w.detach().std()) == pytest.approx(0.05, rel=0.05)
    assert float(rnd.fc1.bias.detach().std()) == pytest.approx(0.05, rel=0.3)


def test_batchnorm_is_reset_without_nans(resnet_small, digits):
    x, _ = digits
    rnd = sanity.randomize(
        resnet_small,
        ["stem", "layer1", "layer2", "layer3", "fc"],
        rule="normal",
        sigma=0.01,
    )
    bn = rnd.layer1.bn1
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert torch.equal(bn.running_var, torch.ones_like(bn.running_var))
    assert torch.equal(bn.weight, torch.ones_like(bn.weight))
    assert torch.isfinite(rnd(x)).all()
    assert torch.isfinite(sal.gradient(rnd, x, 0)).all()
    # The trained net's statistics are untouched.
    assert not torch.equal(
        resnet_small.layer1.bn1.running_var, torch.ones_like(bn.running_var)
    )


# ------------------------------------------------------------------ similarity


def test_spearman_matches_scipy_and_separates_sign():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 1, 6, 6, generator=gen)
    b = torch.randn(3, 1, 6, 6, generator=gen)
    got = sanity.spearman(a, b)
    for i in range(3):
        want = spearmanr(a[i].flatten(), b[i].flatten()).statistic
        assert got[i] == pytest.approx(want, abs=1e-12)
    # Any increasing transform keeps the ranks; a sign flip reverses them, and
    # only the signed version sees it.
    assert sanity.spearman(a, torch.exp(a)) == pytest.approx([1, 1, 1])
    assert sanity.spearman(a, -a) == pytest.approx([-1, -1, -1])
    assert sanity.spearman(a, -a, absolute=True) == pytest.approx([1, 1, 1])
    assert sanity.similarity(a, -a, "spearman_abs") == pytest.approx([1, 1, 1])


def test_ssim_and_hog_use_normalised_absolute_maps():
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(2, 1, 28, 28, generator=gen)
    b = torch.randn(2, 1, 28, 28, generator=gen)
    # |E| / max|E| makes both invariant to scale and sign.
    assert sanity.ssim(a, -3 * a) == pytest.approx([1, 1])
    assert sanity.hog_similarity(a, 5 * a) == pytest.approx([1, 1])
    a64, b64 = a.double().abs(), b.double().abs()
    ua = (a64 / a64.amax(dim=(1, 2, 3), keepdim=True))[:, 0].numpy()
    ub = (b64 / b64.amax(dim=(1, 2, 3), keepdim=True))[:, 0].numpy()
    want = [structural_similarity(p, q, data_range=1.0) for p, q in zip(ua, ub)]
    assert sanity.ssim(a, b) == pytest.approx(want, abs=1e-12)
    assert np.all(np.abs(sanity.hog_similarity(a, b)) < 0.5)


def test_constant_maps_get_the_documented_values_never_nan():
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(2, 1, 28, 28, generator=gen)
    zero = torch.zeros_like(a)
    for metric in sanity.METRICS:
        one = sanity.similarity(a, zero, metric)
        both = sanity.similarity(zero, 7 + zero, metric)
        assert np.all(one == sanity.ONE_CONSTANT), metric
        assert np.all(both == sanity.BOTH_CONSTANT), metric
    # Signed maps ±c are not constant, but their absolute maps are.
    pm = torch.where(a > 0, 1.0, -1.0)
    assert np.isfinite(sanity.spearman(a, pm)).all()
    assert np.all(sanity.spearman(a, pm, absolute=True) == sanity.ONE_CONSTANT)


def test_constant_maps_are_flagged_in_the_tables(small_cnn, digits):
    x, y = digits
    trained_w = small_cnn.fc2.weight.detach().clone()

    def dies_when_randomized(model, x, target):
        if torch.equal(model.fc2.weight, trained_w):
            return sal.gradient(model, x, target)
        return torch.zeros_like(x)

    res = sanity.cascading_randomization(
        small_cnn,
        x[:4],
        y[:4],
        {"dies": dies_when_randomized},
        layers=["fc1", "fc2"],
        progress=False,
    )
    t = res.table
    assert not t["mean"].isna().any() and not res.per_image["value"].isna().any()
    rnd = t[t.layer != "original"]
    assert (rnd["mean"] == sanity.ONE_CONSTANT).all()
    assert (rnd["n_constant"] == 4).all()
    assert (t[t.layer == "original"]["n_constant"] == 0).all()


# ------------------------------------------------------------------ model tests


@pytest.mark.parametrize("fixture", ["cnn_cascade", "resnet_cascade"])
def test_cascade_properties_on_shipped_models(fixture, request):
    res = request.getfixturevalue(fixture)
    order = res.order
    assert order[0] == "original" and len(order) == len(res.settings["layers"]) + 1
    assert order[1:] == list(reversed(res.settings["layers"]))
    last, top = order[-1], order[1]
    # Step 0 compares the trained map with itself.
    assert _mean(res, "original", "gradient", "spearman") == pytest.approx(1.0)
    # Full cascade: the signed gradient map is unrelated to the trained one…
    signed = _mean(res, last, "gradient", "spearman")
    assert signed < 0.2
    # …while the absolute map keeps more (magnitudes share the digit's layout).
    assert _mean(res, last, "gradient", "spearman_abs") > signed
    # Guided backprop hardly notices the randomized logits layer.
    assert _mean(res, top, "guided_backprop", "spearman") > 0.5
    assert _mean(res, top, "guided_backprop", "spearman_abs") > 0.5
    assert _mean(res, top, "guided_backprop", "spearman") > _mean(
        res, top, "gradient", "spearman"
    )


def test_table_is_tidy_and_complete(cnn_cascade):
    t = cnn_cascade.table
    assert list(t.columns) == [
        "step",
        "layer",
        "method",
        "metric",
        "mean",
        "std",
        "n",
        "n_constant",
    ]
    assert len(t) == 5 * len(FAST) * len(sanity.METRICS)
    assert (t["n"] == N_IMAGES).all()
    assert len(cnn_cascade.per_image) == len(t) * N_IMAGES
    assert t["mean"].between(-1, 1).all() and (t["std"] >= 0).all()
    piv = cnn_cascade.pivot("spearman")
    assert list(piv.columns) == cnn_cascade.order
    assert piv.loc["gradient", "original"] == pytest.approx(1.0)


def test_independent_randomizes_one_layer_at_a_time(small_cnn, digits, cnn_cascade):
    x, y = digits
    snap = _snapshot(small_cnn)
    res = sanity.independent_randomization(
        small_cnn,
        x,
        y,
        {"gradient": sal.gradient},
        metrics=["spearman"],
        progress=False,
    )
    _assert_unchanged(small_cnn, snap)
    assert res.order == ["original", "fc2", "fc1", "conv2", "conv1"]
    # Step 1 is the same model in both tests (the same re-initialised fc2)…
    assert torch.equal(res.maps["fc2"]["gradient"], cnn_cascade.maps["fc2"]["gradient"])
    # …later steps differ: only conv1 is random here, everything above it in
    # the cascade.
    assert not torch.equal(
        res.maps["conv1"]["gradient"], cnn_cascade.maps["conv1"]["gradient"]
    )
    expected = sal.gradient(sanity.randomize(small_cnn, "conv2"), x, y)
    assert torch.equal(res.maps["conv2"]["gradient"], expected)


def test_results_are_reproducible_for_a_seed(small_cnn, digits):
    x, y = digits[0][:4], digits[1][:4]
    methods = {"smoothgrad": partial(sal.smoothgrad, n_samples=4)}
    run = partial(
        sanity.cascading_randomization,
        small_cnn,
        x,
        y,
        methods,
        layers=["fc1", "fc2"],
        metrics=["spearman"],
        progress=False,
    )
    a, b, c = run(seed=5), run(seed=5), run(seed=6)
    assert a.per_image.equals(b.per_image)
    for label in a.order:
        assert torch.equal(a.maps[label]["smoothgrad"], b.maps[label]["smoothgrad"])
    assert not torch.equal(a.maps["fc2"]["smoothgrad"], c.maps["fc2"]["smoothgrad"])


def test_target_mode_chooses_the_class_explained(small_cnn, digits):
    x, y = digits
    res = sanity.cascading_randomization(
        small_cnn,
        x,
        y,
        {"gradient": sal.gradient},
        layers=["fc2"],
        target_mode="argmax",
        metrics=["spearman"],
        progress=False,
    )
    rnd = sanity.randomize(small_cnn, "fc2")
    own = models.predict(rnd, x).argmax(1)
    assert not torch.equal(own, y)  # the randomized net predicts other classes
    assert torch.equal(res.maps["fc2"]["gradient"], sal.gradient(rnd, x, own))
    default = sanity.cascading_randomization(
        small_cnn,
        x,
        y,
        {"gradient": sal.gradient},
        layers=["fc2"],
        metrics=["spearman"],
        progress=False,
    )
    assert torch.equal(default.maps["fc2"]["gradient"], sal.gradient(rnd, x, y))
    # target=None explains the trained model's prediction.
    pred = models.predict(small_cnn, x).argmax(1)
    none = sanity.cascading_randomization(
        small_cnn,
        x,
        None,
        {"gradient": sal.gradient},
        layers=["fc2"],
        metrics=["spearman"],
        progress=False,
    )
    assert torch.equal(none.target, pred)


def test_bad_arguments_are_named(small_cnn, digits):
    x, y = digits
    run = partial(sanity.cascading_randomization, small_cnn, x, y, progress=False)
    with pytest.raises(ValueError, match="layers"):
        run(FAST, layers=["fc3"])
    with pytest.raises(ValueError, match="layers"):
        run(FAST, layers=["relu1"])
    with pytest.raises(ValueError, match="layers"):
        run(FAST, layers=[""])
    with pytest.raises(ValueError, match="rule"):
        run(FAST, rule="uniform")
    with pytest.raises(ValueError, match="sigma"):
        run(FAST, rule="normal", sigma=0.0)
    with pytest.raises(ValueError, match="target_mode"):
        run(FAST, target_mode="true")
    with pytest.raises(ValueError, match="target"):
        sanity.cascading_randomization(small_cnn, x, 10, FAST, progress=False)
    with pytest.raises(ValueError, match="target"):
        sanity.cascading_randomization(small_cnn, x, y[:3], FAST, progress=False)
    with pytest.raises(TypeError, match="target"):
        sanity.cascading_randomization(small_cnn, x, y.float(), FAST, progress=False)
    with pytest.raises(ValueError, match="methods"):
        run(["gradient", "lrp"])
    with pytest.raises(ValueError, match="metrics"):
        run(FAST, metrics=["pearson"])
    with pytest.raises(TypeError, match="model"):
        sanity.cascading_randomization("small_cnn", x, y, FAST)
    with pytest.raises(ValueError, match="x"):
        sanity.cascading_randomization(small_cnn, x[0], y, FAST)
    with pytest.raises(ValueError, match="metric"):
        sanity.similarity(x, x, "mse")
    with pytest.raises(ValueError, match="same shape"):
        sanity.similarity(x, x[:2])


# ------------------------------------------------------------------ labels


def test_random_label_checkpoint_memorised_its_labels():
    model = models.load_pretrained(sanity.RANDOM_LABELS_NAME)
    meta = model.meta
    x, y_random = sanity.random_labels(meta["n_train"], meta["seed"])
    y_true = data.load_split("train").y[: meta["n_train"]]
    assert (y_random != y_true).float().mean() > 0.8  # labels really permuted
    acc = float((models.predict(model, x).argmax(1) == y_random).float().mean())
    assert acc >= sanity.RANDOM_LABELS_THRESHOLD
    assert models.evaluate(model) < 0.2  # nothing learned about digits


def test_random_label_maps_differ_more_than_a_reseeded_models(small_cnn, digits):
    x, y = digits
    snap = _snapshot(small_cnn)
    res = sanity.label_randomization(
        small_cnn,
        x,
        y,
        {"gradient": sal.gradient},
        control_model=sanity.RESEEDED_NAME,
        progress=False,
    )
    _assert_unchanged(small_cnn, snap)
    assert res.order == ["original", "random labels", "true labels (re-seeded)"]
    for metric in ("spearman", "spearman_abs", "ssim"):
        rand = _mean(res, "random labels", "gradient", metric)
        control = _mean(res, "true labels (re-seeded)", "gradient", metric)
        assert rand < control, metric
    assert _mean(res, "random labels", "gradient", "spearman") < 0.2
    spec = sanity.label_chart(res).to_dict()
    rows = spec["datasets"][next(iter(spec["datasets"]))]
    assert {r["model"] for r in rows} == {"random labels", "true labels (re-seeded)"}
    with pytest.raises(ValueError, match="label_randomization"):
        sanity.label_chart(
            sanity.independent_randomization(
                small_cnn, x[:2], y[:2], "gradient", layers=["fc2"], progress=False
            )
        )


def test_train_random_labels_reaches_threshold_or_fails_clearly():
    model, report = sanity.train_random_labels(
        n_train=64, batch_size=16, max_epochs=80, progress=False
    )
    x, y = sanity.random_labels(64, 0)
    acc = float((models.predict(model, x).argmax(1) == y).float().mean())
    assert acc == pytest.approx(report["train_accuracy"])
    assert acc >= 0.95 and 1 <= report["epochs"] <= 80
    with pytest.raises(RuntimeError, match="max_epochs"):
        sanity.train_random_labels(
            n_train=64, batch_size=16, max_epochs=1, threshold=1.0, progress=False
        )
    with pytest.raises(ValueError, match="threshold"):
        sanity.train_random_labels(threshold=1.5)


def test_checkpoints_are_registered_for_load_and_course_train():
    for name in (sanity.RANDOM_LABELS_NAME, sanity.RESEEDED_NAME):
        assert name in models.TRAINERS and name in models.known_models()
        assert isinstance(models.load_pretrained(name), models.SmallCNN)
    assert models.evaluate(models.load_pretrained(sanity.RESEEDED_NAME)) >= 0.97


# ------------------------------------------------------------------ pictures


def test_charts_hold_every_step_and_method(cnn_cascade):
    spec = sanity.cascade_curve(cnn_cascade).to_dict()
    rows = spec["datasets"][spec["data"]["name"]]
    assert {r["layer"] for r in rows} == set(cnn_cascade.order)
    assert {r["method"] for r in rows} == set(FAST)
    # One panel per metric: the facet's data reaches every layer (no layer
    # carries its own copy of all metrics).
    assert spec["facet"]["field"] == "metric" and spec["columns"] == 2  # wraps
    # the legend's swatches are opaque, not the band's 12 % opacity
    assert all(
        layer["encoding"]["color"]["legend"]["symbolOpacity"] == 1
        for layer in spec["spec"]["layer"]
    )
    assert len({r["metric"] for r in rows}) == len(sanity.METRICS)
    assert all("data" not in layer for layer in spec["spec"]["layer"])
    assert len(rows) == len(cnn_cascade.table)
    grid = sanity.cascade_grid(cnn_cascade, image=1).to_dict()
    cells = grid["data"]["values"]
    assert {(c["row"], c["col"]) for c in cells} == {
        (m, s) for m in FAST for s in cnn_cascade.order
    }
    with pytest.raises(ValueError, match="image"):
        sanity.cascade_grid(cnn_cascade, image=N_IMAGES)


def test_verdict_passes_only_below_threshold_on_every_metric(cnn_cascade):
    top = sanity.verdict(cnn_cascade, at="fc2")
    assert list(top.columns) == [*sanity.VERDICT_METRICS, "passes"]
    # Guided backprop keeps its map when only the logits are random: it fails.
    assert not top.loc["guided_backprop", "passes"]
    full = sanity.verdict(cnn_cascade)  # last step = the full cascade
    assert full.loc["gradient", "passes"]
    low = sanity.verdict(cnn_cascade, metrics=["spearman"], threshold=-0.5)
    assert not low["passes"].any()
    with pytest.raises(ValueError, match="at"):
        sanity.verdict(cnn_cascade, at="fc3")


# ------------------------------------------------------------------ structure


def test_similarities_are_pure_functions_and_the_constant_rule_lives_in_compare():
    import importlib

    # the module (the package's `similarity` is the function of the same name)
    S = importlib.import_module("course_utils.sanity.similarity")

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 49)), rng.normal(size=(3, 49))
    a[1] = 2.0  # a constant row
    raw = S.pearson_rows(a, b)  # the pure function: undefined where constant
    assert np.isnan(raw[1]) and np.isfinite(raw[[0, 2]]).all()
    assert raw[0] == pytest.approx(np.corrcoef(a[0], b[0])[0, 1])
    maps_a, maps_b = a.reshape(3, 7, 7), b.reshape(3, 7, 7)
    # the registered measure + the rule, applied once in compare
    vals, const = S.compare("spearman", S.Prepared(maps_a, "a"), S.Prepared(maps_b, "b"))
    assert list(const) == [False, True, False]
    assert vals[1] == sanity.ONE_CONSTANT
    vals, _ = S.compare("spearman", S.Prepared(maps_a, "a"), S.Prepared(maps_a, "a"))
    assert vals[1] == sanity.BOTH_CONSTANT
    assert set(sanity.SIMILARITIES) == set(sanity.METRICS)
    for name, measure in sanity.SIMILARITIES.items():
        assert callable(measure.fn), name


class _CountingCNN(models.SmallCNN):
    """SmallCNN that records the number of rows of every forward call."""

    calls: ClassVar[list] = []

    def forward(self, x):
        _CountingCNN.calls.append(len(x))
        return super().forward(x)


def test_a_given_target_costs_no_forward_pass_of_the_inputs(small_cnn, digits):
    x, y = digits
    model = _CountingCNN()
    model.load_state_dict(small_cnn.state_dict())
    blank = {"none": lambda m, x_, t: torch.zeros_like(x_)}  # never calls the model
    _CountingCNN.calls.clear()
    res = sanity.cascading_randomization(
        model, x, y, blank, layers=["fc2"], metrics=["spearman"], progress=False
    )
    assert _CountingCNN.calls == [1]  # one row, to check the targets against K
    assert torch.equal(res.target, y.cpu()) and res.target.dtype == torch.long
    _CountingCNN.calls.clear()
    res = sanity.cascading_randomization(
        model, x, 3, blank, layers=["fc2"], metrics=["spearman"], progress=False
    )
    assert _CountingCNN.calls == [1] and res.target.tolist() == [3] * len(x)
    _CountingCNN.calls.clear()
    sanity.cascading_randomization(
        model, x, None, blank, layers=["fc2"], metrics=["spearman"], progress=False
    )
    assert _CountingCNN.calls == [len(x)]  # None: the trained model's prediction


def test_cascading_and_independent_share_one_engine_and_settings(small_cnn, digits):
    x, y = digits
    kwargs = {"methods": "gradient", "layers": ["fc1", "fc2"], "metrics": ["spearman"],
              "progress": False, "seed": 3, "rule": "normal", "sigma": 0.05}
    casc = sanity.cascading_randomization(small_cnn, x, y, **kwargs)
    ind = sanity.independent_randomization(small_cnn, x, y, **kwargs)
    assert casc.settings == ind.settings == {
        "layers": ["fc1", "fc2"], "rule": "normal", "sigma": 0.05, "seed": 3,
        "target_mode": "original", "methods": ["gradient"],
    }
    # Step 1 (fc2 alone) is the same model in both tests.
    assert torch.equal(casc.maps["fc2"]["gradient"], ind.maps["fc2"]["gradient"])
    s = sanity.Settings.checked("independent", "layer", "gradient", None, 0,
                                "original", False)
    with pytest.raises(AttributeError):
        s.seed = 1  # frozen
    for bad in ({"target_mode": "true"}, {"seed": -1}):
        with pytest.raises(ValueError):
            sanity.Settings.checked(
                "cascading", "layer", "gradient", None,
                bad.get("seed", 0), bad.get("target_mode", "original"), False
            )
