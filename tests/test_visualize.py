"""course_utils.visualize: class models, receptive fields, top activations, projections.

Worked out by hand where possible: a linear model's class model converges to
grey + w / (2λ); a unit's receptive field equals the support of its gradient
on a net where nothing masks the gradient (positive weights, average pooling);
a conv1 unit's projection is its kernel under every rule.
"""

import pytest
import torch
from test_saliency_side_effects import Busy, assert_unchanged, snapshot
from torch import nn

from course_utils import visualize as vis
from course_utils.saliency.guided_backprop import relu_rule

# ---------------------------------------------------------------- class models


class Linear(nn.Module):
    """f(x) = W · flatten(x): ∇ₓ f_c = W_c everywhere. Grey = 0.25."""

    def __init__(self):
        super().__init__()
        self.normalize = nn.Module()
        self.normalize.register_buffer("mean", torch.tensor(0.25))
        torch.manual_seed(0)
        self.fc = nn.Linear(16, 3, bias=False)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_class_model_one_step_is_grey_plus_lr_gradient():
    model = Linear()
    out = vis.class_model(model, [0, 2], steps=1, lr=0.5, l2=3.0, shape=(1, 4, 4),
                          clamp=None, progress=False)  # fmt: skip
    w = model.fc.weight.detach()
    want = 0.25 + 0.5 * w[[0, 2]].view(2, 1, 4, 4)  # the L2 term is 0 at grey
    torch.testing.assert_close(out.images, want)
    torch.testing.assert_close(out.scores[0], (0.25 * w[[0, 2]]).sum(1))
    torch.testing.assert_close(out.final_scores, (want.flatten(1) * w[[0, 2]]).sum(1))


def test_class_model_converges_to_the_l2_optimum():
    """max w·x − λ‖x − g‖²  ⇒  x* = g + w / (2λ)."""
    model = Linear()
    out = vis.class_model(model, None, steps=400, lr=0.1, l2=2.0, shape=(1, 4, 4),
                          clamp=None, progress=False)  # fmt: skip
    want = 0.25 + model.fc.weight.detach().view(3, 1, 4, 4) / 4.0
    torch.testing.assert_close(out.images, want, atol=1e-5, rtol=1e-5)
    assert out.targets.tolist() == [0, 1, 2]
    assert out.scores.shape == (400, 3)


def test_class_model_on_small_cnn_raises_each_class(small_cnn):
    out = vis.class_model(small_cnn, steps=30, progress=False)
    assert out.images.shape == (10, 1, 28, 28)
    assert (out.final_scores > out.scores[0] + 5).all()
    assert out.final_logits.argmax(1).tolist() == list(range(10))
    assert 0 <= float(out.images.min()) and float(out.images.max()) <= 1


def test_class_model_is_seeded_and_regularisers_act(small_cnn):
    kw = {"steps": 20, "jitter": 2, "blur_every": 4, "progress": False}
    state = torch.random.get_rng_state()
    a = vis.class_model(small_cnn, [3, 8], seed=1, **kw)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched
    b = vis.class_model(small_cnn, [3, 8], seed=1, **kw)
    c = vis.class_model(small_cnn, [3, 8], seed=2, **kw)
    plain = vis.class_model(small_cnn, [3, 8], steps=20, progress=False)
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)

    # blur removes high frequencies: neighbouring pixels differ less
    def roughness(img):
        return float((img[..., 1:, :] - img[..., :-1, :]).abs().mean())

    assert roughness(a.images) < 0.8 * roughness(plain.images)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"steps": 0}, "steps must be an int ≥ 1"),
        ({"lr": 0}, "lr must be a finite number > 0"),
        ({"l2": -1}, "l2 must be"),
        ({"jitter": -1}, "jitter must be"),
        ({"target": 10}, "target must hold classes in 0..9"),
        ({"shape": (28, 28)}, "shape must be"),
    ],
)
def test_class_model_bad_input(small_cnn, kwargs, match):
    with pytest.raises(ValueError, match=match):
        vis.class_model(small_cnn, **{"steps": 2, "progress": False, **kwargs})


# ---------------------------------------------------------------- receptive fields


def test_receptive_fields_of_the_course_models(small_cnn, resnet_small):
    rf = vis.receptive_field
    assert rf(small_cnn, "conv1") == vis.ReceptiveField((3, 3), (1, 1), (0.0, 0.0))
    assert rf(small_cnn, "conv2") == vis.ReceptiveField((8, 8), (2, 2), (0.5, 0.5))
    assert rf(small_cnn, "relu2") == rf(small_cnn, "conv2")
    assert rf(small_cnn, "pool2").size == (10, 10)
    assert rf(resnet_small, "layer3").size == (25, 25)  # 3+2+2 | +2+4 | +4+8 (union)
    assert rf(resnet_small, "layer2").size == (13, 13)
    assert rf(resnet_small, "layer2.conv1") == vis.ReceptiveField(
        (9, 9), (2, 2), (0, 0)
    )
    assert rf(small_cnn, "conv2").box(0, 0) == (-3, -3, 5, 5)
    assert rf(small_cnn, "conv2").box(3, 1) == (3, -1, 11, 7)


class Positive(nn.Module):
    """Convs, average pooling, a strided and a dilated conv, a residual branch.

    All weights positive and inputs positive: every ReLU is active and no
    pooling routes the gradient, so ∂A_ij/∂x is non-zero on exactly the
    receptive field.
    """

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool = nn.AvgPool2d(2)
        self.conv2 = nn.Conv2d(2, 2, 3, stride=2, padding=2, dilation=2)
        self.short = nn.Conv2d(2, 2, 1, stride=2)
        self.relu2 = nn.ReLU()
        for p in self.parameters():
            p.data = p.data.abs() + 0.1

    def forward(self, x):
        a = self.pool(self.relu1(self.conv1(x)))
        return self.relu2(self.conv2(a) + self.short(a))


def _support(model, layer, i, j, shape=(1, 1, 32, 32)):
    x = torch.rand(shape) + 0.5
    x.requires_grad_(True)
    store = {}
    h = vis.get_layer(model, layer).register_forward_hook(
        lambda m, a, out: store.update(out=out)
    )
    try:
        model(x)
    finally:
        h.remove()
    (g,) = torch.autograd.grad(store["out"][0, 0, i, j], x)
    nz = g[0, 0] != 0
    rows, cols = nz.any(1).nonzero()[:, 0], nz.any(0).nonzero()[:, 0]
    return int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1


@pytest.mark.parametrize("layer", ["conv1", "pool", "conv2", "relu2"])
def test_receptive_field_is_the_gradient_support(layer):
    torch.manual_seed(0)
    model = Positive()
    field = vis.receptive_field(model, layer)
    for i, j in ((2, 3), (4, 1)):
        top, left, bottom, right = field.box(i, j)
        clipped = (max(top, 0), max(left, 0), min(bottom, 32), min(right, 32))
        assert _support(model, layer, i, j) == clipped, (layer, i, j, field)


def test_max_pool_gradient_stays_inside_the_box(small_cnn):
    field = vis.receptive_field(small_cnn, "relu2")
    for i, j in ((5, 6), (9, 2)):
        top, left, bottom, right = _support(small_cnn, "conv2", i, j, (1, 1, 28, 28))
        b = field.box(i, j)
        assert b[0] <= top and b[1] <= left and bottom <= b[2] and right <= b[3]


def test_receptive_field_errors(small_cnn):
    with pytest.raises(ValueError, match="not found"):
        vis.receptive_field(small_cnn, "conv9")

    class Resize(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3)

        def forward(self, x):
            return self.conv(nn.functional.interpolate(x, scale_factor=2.0))

    with pytest.raises(ValueError, match="no known geometry"):
        vis.receptive_field(Resize(), "conv")


# ---------------------------------------------------------------- top activations


def test_top_activations_are_the_brute_force_maxima(small_cnn, test_split):
    x = test_split.x[:300]
    top = vis.top_activations(small_cnn, "conv2", 5, x, k=9, batch_size=64,
                              progress=False)  # fmt: skip
    with torch.no_grad():
        a = small_cnn.conv2(small_cnn.pool1(small_cnn.relu1(small_cnn.conv1(
            small_cnn.normalize(x)))))[:, 5]  # fmt: skip
    best = a.flatten(1).max(1).values
    values, order = best.topk(9)
    assert top.indices.tolist() == order.tolist()
    torch.testing.assert_close(top.values, values)
    for n, (i, j), box, patch in zip(top.indices, top.positions, top.boxes, top.patches,
                                     strict=True):  # fmt: skip
        assert float(a[n, i, j]) == pytest.approx(float(best[n]))
        assert tuple(box.tolist()) == top.field.box(int(i), int(j))
        t, left, b, r = box.tolist()
        padded = nn.functional.pad(x[n], (8, 8, 8, 8))
        torch.testing.assert_close(patch, padded[:, t + 8 : b + 8, left + 8 : r + 8])
    assert top.patches.shape == (9, 1, 8, 8)


@pytest.mark.parametrize(
    "args,match",
    [
        (("conv9", 0), "not found"),
        (("conv2", 32), r"unit must be an int in 0..31"),
        (("conv2", -1), r"unit must be an int in 0..31"),
        (("fc1", 0), r"must output \(N, D, h, w\)"),
    ],
)
def test_top_activations_bad_input(small_cnn, test_split, args, match):
    with pytest.raises(ValueError, match=match):
        vis.top_activations(small_cnn, *args, test_split.x[:5], k=3, progress=False)


def test_top_activations_k_range(small_cnn, test_split):
    with pytest.raises(ValueError, match=r"k must be an int in 1..5"):
        vis.top_activations(small_cnn, "conv1", 0, test_split.x[:5], k=6)


# ---------------------------------------------------------------- projections


def test_conv1_projection_is_the_kernel_for_every_rule(small_cnn, digits):
    """Below conv1 there is no ReLU: ∂A_ij/∂x = W_unit / std on the 3 × 3 window."""
    x, _ = digits
    w = small_cnn.conv1.weight.detach()[4, 0] / small_cnn.normalize.std
    for rule in vis.PROJECTION_RULES:
        p = vis.unit_projection(small_cnn, x[:2], "conv1", 4, rule=rule,
                                position=(10, 12), progress=False)  # fmt: skip
        torch.testing.assert_close(p[:, 0, 9:12, 11:14], w.expand(2, 3, 3))
        assert float(p.abs().sum()) == pytest.approx(float(w.abs().sum()) * 2, rel=1e-5)


def test_gradient_rule_is_the_plain_gradient_of_the_strongest_activation(
    small_cnn, digits
):
    x, _ = digits
    p = vis.unit_projection(small_cnn, x, "relu2", 7, rule="gradient", batch_size=3,
                            progress=False)  # fmt: skip
    for n in range(len(x)):
        leaf = x[n : n + 1].clone().requires_grad_(True)
        a = small_cnn.relu2(small_cnn.conv2(small_cnn.pool1(small_cnn.relu1(
            small_cnn.conv1(small_cnn.normalize(leaf))))))[0, 7]  # fmt: skip
        (g,) = torch.autograd.grad(a.max(), leaf)
        torch.testing.assert_close(p[n : n + 1], g)


def test_guided_and_deconvnet_use_relu_rule(small_cnn, digits):
    """Same numbers as differentiating the activation inside `relu_rule`."""
    x, _ = digits
    for rule, name in (("guided", "guided"), ("deconvnet", "deconvnet")):
        p = vis.unit_projection(small_cnn, x[:3], "conv2", 2, rule=rule,
                                position=(6, 6), progress=False)  # fmt: skip
        leaf = x[:3].clone().requires_grad_(True)
        with relu_rule(small_cnn, name):
            a = small_cnn.conv2(small_cnn.pool1(small_cnn.relu1(small_cnn.conv1(
                small_cnn.normalize(leaf)))))[:, 2, 6, 6]  # fmt: skip
            (g,) = torch.autograd.grad(a.sum(), leaf)
        torch.testing.assert_close(p, g)
    guided = vis.unit_projection(small_cnn, x[:3], "conv2", 2, rule="guided",
                                 position=(6, 6), progress=False)  # fmt: skip
    plain = vis.unit_projection(small_cnn, x[:3], "conv2", 2, rule="gradient",
                                position=(6, 6), progress=False)  # fmt: skip
    assert not torch.allclose(guided, plain)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"layer": "nope"}, "not found"),
        ({"unit": 16}, r"unit must be an int in 0..15"),
        ({"rule": "lrp"}, "rule must be one of"),
        ({"position": (28, 0)}, "position must be None"),
        ({"position": torch.zeros(3, 2, dtype=torch.long)}, "one row per image"),
        ({"position": torch.zeros(8, 2)}, "position must be None"),
    ],
)
def test_unit_projection_bad_input(small_cnn, digits, kwargs, match):
    x, _ = digits
    args = {"layer": "conv1", "unit": 0, "progress": False, **kwargs}
    with pytest.raises(ValueError, match=match):
        vis.unit_projection(small_cnn, x, **args)


# ---------------------------------------------------------------- side effects


@pytest.fixture
def busy():
    torch.manual_seed(0)
    model = Busy().train()
    model.drop.eval()
    model.conv1.weight.requires_grad_(False)
    model.fc.weight.grad = torch.full_like(model.fc.weight, 0.5)
    model.relu1.register_forward_hook(lambda *args: None)
    return model


CALLS = {
    "class_model": lambda m, x: vis.class_model(
        m, [0, 2], steps=3, jitter=1, blur_every=2, shape=(1, 8, 8), progress=False
    ),
    "top_activations": lambda m, x: vis.top_activations(m, "conv2", 1, x, k=2,
                                                        progress=False),
    "unit_projection": lambda m, x: vis.unit_projection(m, x, "relu2", 3,
                                                        rule="guided", progress=False),
    "deconvnet": lambda m, x: vis.unit_projection(m, x, "conv2", 0, rule="deconvnet",
                                                  progress=False),
}  # fmt: skip
FAILING = {
    "class_model": lambda m, x: vis.class_model(m, 5, steps=2, shape=(1, 8, 8),
                                                progress=False),
    "top_activations": lambda m, x: vis.top_activations(m, "conv2", 6, x,
                                                        progress=False),
    "unit_projection": lambda m, x: vis.unit_projection(m, x, "relu2", 0,
                                                        position=(9, 9), progress=False),
    "deconvnet": lambda m, x: vis.unit_projection(m, x, "fc", 0, progress=False),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CALLS))
def test_no_side_effects_also_after_errors(busy, name):
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    before = snapshot(busy, x)
    CALLS[name](busy, x)
    assert_unchanged(before, busy, x)
    with pytest.raises(ValueError):
        FAILING[name](busy, x)
    assert_unchanged(before, busy, x)
    busy.explode = True  # the model itself raises mid-forward, inside the hooks
    with pytest.raises(RuntimeError, match="boom"):
        CALLS[name](busy, x)
    busy.explode = False
    assert_unchanged(before, busy, x)


def test_receptive_field_with_same_and_valid_padding():
    class Same(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 1, 5, padding="same", dilation=2)
            self.conv2 = nn.Conv2d(1, 1, 3, padding="valid")
            for p in self.parameters():
                p.data = p.data.abs() + 0.1

        def forward(self, x):
            return self.conv2(self.conv1(x))

    torch.manual_seed(0)
    model = Same()
    for layer in ("conv1", "conv2"):
        field = vis.receptive_field(model, layer)
        top, left, bottom, right = field.box(10, 12)
        assert _support(model, layer, 10, 12) == (top, left, bottom, right), field
    assert vis.receptive_field(model, "conv2").size == (11, 11)


# ---------------------------------------------------------------- the unit browser


def test_unit_browser_shows_direct_results_once_per_change(small_cnn, test_split):
    from course_utils import widgets as W

    x = test_split.x[:200]
    ub = W.UnitBrowser(small_cnn, x, layers=("conv1", "conv2"), layer="conv2", unit=20)
    assert ub.n_updates == 1 and ub.controls["unit"].max == 31
    direct = vis.top_activations(small_cnn, "conv2", 20, x, k=9, progress=False)
    assert ub.result.indices.tolist() == direct.indices.tolist()
    i = 4
    full = vis.unit_projection(small_cnn, x[direct.indices[i : i + 1]], "conv2", 20,
                               rule="guided",
                               position=tuple(direct.positions[i].tolist()),
                               progress=False)  # fmt: skip
    want = vis.crop(full, [direct.boxes[i].tolist()])
    torch.testing.assert_close(ub.projections["guided"][i : i + 1], want)
    assert "8×8" in ub.field.value
    ub.controls["layer"].value = "conv1"  # clamps unit 20 → 15: one redraw only
    assert ub.n_updates == 2 and ub.controls["unit"].value == 15
    assert ub.result.patches.shape == (9, 1, 3, 3)
    ub.controls["next"].click()
    assert ub.controls["unit"].value == 0 and ub.n_updates == 3  # wraps around
    assert "sal-unit-browser" in ub.view._dom_classes
    # 120 px cells, each picture on a dark ground (white strokes at a patch's
    # border stay visible on the white page), every map's vmax written under it
    (out,) = ub._out.outputs
    spec = out["data"]["application/vnd.vegalite.v5+json"]
    blocks = spec.get("vconcat", [spec])
    for block in blocks:
        ground, image = block["spec"]["layer"][:2]
        assert ground["mark"]["type"] == "rect" and image["mark"]["width"] == 120
    maps = [v for b in blocks for v in b["data"]["values"]
            if v.get("url") and v.get("vmax") is not None]
    assert len(maps) == 3 * 9 and all(v["scale"].startswith("vmax") for v in maps)


def test_unit_browser_bad_input(small_cnn, test_split):
    from course_utils import widgets as W

    x = test_split.x[:20]
    with pytest.raises(ValueError, match="not found"):
        W.UnitBrowser(small_cnn, x, layers=("conv1", "conv7"))
    with pytest.raises(ValueError, match=r"unit must be an int in 0..15"):
        W.UnitBrowser(small_cnn, x, layers=("conv1",), unit=16)
    with pytest.raises(ValueError, match="layer must be one of"):
        W.UnitBrowser(small_cnn, x, layers=("conv1",), layer="conv2")


def test_per_image_positions_equal_one_call_per_image(small_cnn, test_split):
    x = test_split.x[:6]
    pos = torch.tensor([[0, 0], [3, 4], [13, 13], [7, 2], [5, 5], [9, 11]])
    batched = vis.unit_projection(small_cnn, x, "relu2", 1, rule="guided",
                                  position=pos, batch_size=4, progress=False)  # fmt: skip
    for n in range(6):
        one = vis.unit_projection(small_cnn, x[n : n + 1], "relu2", 1, rule="guided",
                                  position=tuple(pos[n].tolist()), progress=False)  # fmt: skip
        torch.testing.assert_close(batched[n : n + 1], one)
