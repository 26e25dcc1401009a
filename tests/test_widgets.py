"""course_utils.widgets: controls give the maps of direct calls, computed once."""

import functools

import pytest
import torch

from course_utils import plotting
from course_utils import saliency as sal
from course_utils import widgets as W

V5 = "application/vnd.vegalite.v5+json"


@pytest.fixture
def count(monkeypatch):
    """count("occlusion") wraps sal.occlusion; returns a list that grows per call.

    Direct calls in a test go through `calls.original`, so they are not counted.
    """

    class Calls(list):
        original = None

    def install(name):
        calls = Calls()
        original = calls.original = getattr(sal, name)

        @functools.wraps(original)
        def counting(*args, **kwargs):
            calls.append(kwargs)
            return original(*args, **kwargs)

        monkeypatch.setattr(sal, name, counting)
        return calls

    return install


def shown_spec(explorer):
    """The Vega-Lite spec on display, less its "$schema" (v5 there, v6 in Altair)."""
    (out,) = explorer._out.outputs
    assert out["output_type"] == "display_data"
    spec = dict(out["data"][V5])
    assert spec.pop("$schema").endswith("/v5.json")
    return spec


def chart_spec(explorer):
    spec = explorer.chart.to_dict(validate=True)
    del spec["$schema"]
    return spec


def classes(widget):
    return set(widget._dom_classes)


def text(explorer, name):
    return explorer.outputs[name].value


# ---------------------------------------------------------------- occlusion


def test_occlusion_controls_match_direct_calls(small_cnn, digits, count):
    x, y = digits
    e = W.OcclusionExplorer(small_cnn, x, y, patch=7)
    calls = count("occlusion")
    first_chart = e.chart
    e.controls["patch"].value = 5
    assert len(calls) == 1
    target = int(small_cnn(x[:1]).argmax())
    expected = calls.original(small_cnn, x[:1], target, patch=5, stride=5)
    torch.testing.assert_close(e.result, expected)
    assert e.chart is not first_chart and e.chart.to_dict() != first_chart.to_dict()
    assert shown_spec(e) == chart_spec(e)
    e.controls["stride"].value = 2
    torch.testing.assert_close(
        e.result, calls.original(small_cnn, x[:1], target, patch=5, stride=2)
    )
    passes = sal.forward_passes_occlusion((1, 28, 28), 5, 2)
    assert f">{passes}<" in text(e, "forward_passes")
    assert "5×5" in text(e, "patch_size")
    assert "confidence" in text(e, "confidence") and "%" in text(e, "confidence")
    assert f"label {int(y[0])}" in text(e, "prediction")


def test_occlusion_patch_change_clamps_stride_with_one_recompute(
    small_cnn, digits, count
):
    x, y = digits
    e = W.OcclusionExplorer(small_cnn, x, y, patch=7, stride=7)
    calls = count("occlusion")
    n = e.n_updates
    e.controls["patch"].value = 3  # stride 7 > 3 is clamped to 3 by the bounds change
    assert len(calls) == 1 and e.n_updates == n + 1
    assert e.controls["stride"].max == 3 and e.controls["stride"].value == 3
    assert calls[0]["patch"] == 3 and calls[0]["stride"] == 3
    e.controls["patch"].value = 7  # bounds grow, stride keeps its value
    assert len(calls) == 2 and e.controls["stride"].value == 3


def test_browsing_wraps_and_target_choice(small_cnn, digits, count):
    x, y = digits
    e = W.OcclusionExplorer(small_cnn, x, y, patch=7)
    calls = count("occlusion")
    e.prev()
    assert e.index == len(x) - 1 and len(calls) == 1
    e.next()  # back to digit 0, seen first: redrawn from the cache
    assert e.index == 0 and len(calls) == 1 and e.timings["cached"]
    e.controls["next"].click()
    assert e.index == 1 and len(calls) == 2
    torch.testing.assert_close(
        e.result,
        calls.original(small_cnn, x[1:2], int(small_cnn(x[1:2]).argmax()), patch=7),
    )
    e.controls["target"].value = 3
    assert e.target == 3 and len(calls) == 3
    torch.testing.assert_close(e.result, calls.original(small_cnn, x[1:2], 3, patch=7))
    assert "class 3" in text(e, "confidence")


def test_single_image_browsing_redraws(small_cnn, digits, count):
    x, y = digits
    e = W.OcclusionExplorer(small_cnn, x[:1], y[:1], patch=7)
    calls = count("occlusion")
    n = e.n_updates
    e.next()  # redrawn (from the cache: the same digit and settings)
    assert e.index == 0 and e.n_updates == n + 1 and not calls


def test_css_classes_for_browser_tests(small_cnn, digits):
    x, y = digits
    e = W.OcclusionExplorer(small_cnn, x, y, patch=7)
    assert {"sal-explorer", "sal-occlusion"} <= classes(e.view)
    assert "sal-chart" in classes(e._out)
    assert "sal-prev" in classes(e.controls["prev"])
    assert "sal-next" in classes(e.controls["next"])
    assert "sal-patch" in classes(e.controls["patch"])
    assert "sal-forward-passes" in classes(e.outputs["forward_passes"])
    assert "sal-confidence" in classes(e.outputs["confidence"])

    def walk(w):
        yield w
        for child in getattr(w, "children", ()):
            yield from walk(child)

    shown = {id(w) for w in walk(e.view)}
    for w in [*e.controls.values(), *e.outputs.values(), e._out, e.status]:
        assert id(w) in shown


@pytest.mark.parametrize(
    "images, labels, kwargs, err, match",
    [
        (torch.zeros(0, 1, 28, 28), None, {}, ValueError, "at least one image"),
        (
            torch.zeros(3, 1, 28, 28),
            [1, 2],
            {},
            ValueError,
            "labels must have one entry",
        ),
        (torch.zeros(3, 28, 28), None, {}, ValueError, "images must have shape"),
        ([[0.0]], None, {}, TypeError, "images must be a torch.Tensor"),
        (torch.zeros(2, 1, 28, 28), None, {"patch": 15}, ValueError, "patch must be"),
        (torch.zeros(2, 1, 8, 8), None, {"patch": 10}, ValueError, "the image is 8×8"),
        (
            torch.zeros(2, 1, 28, 28),
            None,
            {"patch": 4, "stride": 5},
            ValueError,
            "stride must be",
        ),
        (torch.zeros(2, 1, 28, 28), None, {"index": 2}, ValueError, "index"),
        (torch.zeros(2, 1, 28, 28), None, {"target": 10}, ValueError, "target"),
    ],
)
def test_occlusion_explorer_rejects_bad_input(
    small_cnn, images, labels, kwargs, err, match
):
    with pytest.raises(err, match=match):
        W.OcclusionExplorer(small_cnn, images, labels, **kwargs)


def test_model_must_be_a_module(digits):
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        W.IGExplorer(lambda x: x, digits[0])


def test_callback_errors_show_in_status(small_cnn, digits, monkeypatch):
    x, y = digits
    e = W.OcclusionExplorer(small_cnn, x, y, patch=7)

    def broken(*args, **kwargs):
        raise ValueError("stride must be nice")

    monkeypatch.setattr(sal, "occlusion", broken)
    e.controls["patch"].value = 4  # from the UI: shown, not raised
    assert "stride must be nice" in e.status.value
    monkeypatch.undo()
    e.controls["patch"].value = 6
    assert e.status.value == ""


# ---------------------------------------------------------------- IG


def test_ig_controls_match_direct_calls_and_gap_shrinks(small_cnn, digits, count):
    x, y = digits
    e = W.IGExplorer(small_cnn, x, y, n_steps=2, index=2)
    calls = count("integrated_gradients")
    t = e.target
    gap_2 = abs(e.delta)
    e.controls["n_steps"].value = 64
    assert len(calls) == 1
    attr, delta = calls.original(small_cnn, x[2:3], t, n_steps=64, return_delta=True)
    torch.testing.assert_close(e.result, attr)
    assert e.delta == pytest.approx(float(delta[0]))
    assert abs(e.delta) < gap_2
    assert f"{e.delta:+.4f}" in text(e, "delta")
    e.controls["baseline"].value = "blur"
    e.controls["method"].value = "gausslegendre"
    assert len(calls) == 3
    torch.testing.assert_close(
        e.result,
        calls.original(
            small_cnn, x[2:3], t, baseline="blur", n_steps=64, method="gausslegendre"
        ),
    )
    spec = shown_spec(e)
    assert spec["facet"]["column"]["sort"] == ["input", "baseline", "map", "overlay"]


def test_ig_noise_baseline_is_reproducible(small_cnn, digits):
    x, y = digits
    e = W.IGExplorer(small_cnn, x, y, n_steps=8, baseline="noise")
    first = e.result.clone()
    e.update()
    torch.testing.assert_close(e.result, first)
    torch.testing.assert_close(
        e.result,
        sal.integrated_gradients(
            small_cnn, x[:1], e.target, baseline="noise", n_steps=8
        ),
    )


def test_ig_trapezoid_needs_two_steps_with_one_recompute(small_cnn, digits, count):
    x, y = digits
    e = W.IGExplorer(small_cnn, x, y, n_steps=1, method="riemann_left")
    calls = count("integrated_gradients")
    e.controls["method"].value = "riemann_trapezoid"  # n_steps 1 → clamped to 2
    assert len(calls) == 1
    assert calls[0]["n_steps"] == 2 and e.controls["n_steps"].min == 2
    e.controls["method"].value = "riemann_middle"
    assert e.controls["n_steps"].min == 1 and len(calls) == 2
    with pytest.raises(ValueError, match="n_steps must be an int in 2..300"):
        W.IGExplorer(small_cnn, x, n_steps=1)
    with pytest.raises(ValueError, match="baseline must be one of"):
        W.IGExplorer(small_cnn, x, baseline="white")


# ---------------------------------------------------------------- SmoothGrad


def test_smoothgrad_controls_match_seeded_direct_calls(small_cnn, digits, count):
    x, y = digits
    e = W.SmoothGradExplorer(small_cnn, x, y, n_samples=4, seed=3)
    calls = count("smoothgrad")
    e.controls["noise_level"].value = 0.3
    e.controls["kind"].value = "vargrad"
    e.controls["n_samples"].value = 6
    assert len(calls) == 3
    expected = calls.original(
        small_cnn,
        x[:1],
        e.target,
        explain=sal.gradient,
        n_samples=6,
        noise_level=0.3,
        kind="vargrad",
        generator=torch.Generator().manual_seed(3),
    )
    torch.testing.assert_close(e.result, expected)
    first = e.result.clone()
    e.controls["n_samples"].value = 5
    e.controls["n_samples"].value = 6  # same settings → the same map
    torch.testing.assert_close(e.result, first)
    e.controls["explain"].value = "input_x_gradient"
    expected = calls.original(
        small_cnn,
        x[:1],
        e.target,
        explain=sal.input_x_gradient,
        n_samples=6,
        noise_level=0.3,
        kind="vargrad",
        generator=torch.Generator().manual_seed(3),
    )
    torch.testing.assert_close(e.result, expected)


def test_smoothgrad_rejects_bad_settings(small_cnn, digits):
    x, _ = digits
    with pytest.raises(ValueError, match="noise_level"):
        W.SmoothGradExplorer(small_cnn, x, noise_level=0.8)
    with pytest.raises(ValueError, match="n_samples"):
        W.SmoothGradExplorer(small_cnn, x, n_samples=0)
    with pytest.raises(ValueError, match="kind must be one of"):
        W.SmoothGradExplorer(small_cnn, x, n_samples=2, kind="median")


# ---------------------------------------------------------------- methods


def test_method_browser_matches_direct_calls(small_cnn, digits, monkeypatch):
    x, y = digits
    names = ["gradient", "grad_cam", "smoothgrad"]
    e = W.MethodBrowser(small_cnn, x, y, methods=names)
    calls = []
    for name in names:
        original = sal.METHODS[name]

        def counting(*args, _f=original, _n=name, **kwargs):
            calls.append(_n)
            return _f(*args, **kwargs)

        monkeypatch.setitem(sal.METHODS, name, counting)
    e.next()
    assert calls == names and e.index == 1
    t = e.target
    torch.testing.assert_close(e.result["gradient"], sal.gradient(small_cnn, x[1:2], t))
    torch.testing.assert_close(e.result["grad_cam"], sal.grad_cam(small_cnn, x[1:2], t))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        expected = sal.smoothgrad(small_cnn, x[1:2], t)
    torch.testing.assert_close(e.result["smoothgrad"], expected)
    spec = shown_spec(e)
    signed, magnitude = spec["vconcat"]  # Grad-CAM (≥ 0) on its own scale, below
    assert signed["facet"]["column"]["sort"] == ["input", "gradient", "SmoothGrad"]
    assert magnitude["facet"]["column"]["sort"] == ["Grad-CAM"]
    assert spec["resolve"] == {"scale": {"color": "independent"}}

    def ranges(part):
        return [l["encoding"]["color"]["scale"] for l in part["spec"]["layer"]
                if "color" in l.get("encoding", {})]

    assert all(r["range"] == list(plotting.SIGNED_COLORS) for r in ranges(signed))
    assert all(r["range"] == list(plotting.MAGNITUDE_COLORS) for r in ranges(magnitude))
    assert signed["spec"]["layer"][0]["mark"]["width"] == 120  # panels ≥ 120 px
    e.prev()  # digit 0 again: from the cache
    e.prev()
    assert e.index == len(x) - 1 and len(calls) == 2 * len(names)


def test_method_browser_rejects_unknown_methods(small_cnn, digits):
    with pytest.raises(ValueError, match="unknown"):
        W.MethodBrowser(small_cnn, digits[0], methods=["gradient", "lime"])
    with pytest.raises(ValueError, match="non-empty"):
        W.MethodBrowser(small_cnn, digits[0], methods=[])


def test_ig_baseline_panel_shows_the_baseline(small_cnn, digits):
    x, y = digits
    e = W.IGExplorer(small_cnn, x, y, n_steps=4)
    torch.testing.assert_close(e.baseline_image(), torch.zeros(1, 1, 28, 28))
    e.controls["baseline"].value = "grey"
    grey = float(small_cnn.normalize.mean)
    torch.testing.assert_close(e.baseline_image(), torch.full((1, 1, 28, 28), grey))
    e.controls["baseline"].value = "blur"
    blurred = e.baseline_image()
    assert blurred.shape == (1, 1, 28, 28)
    assert 0 < float(blurred.std()) < float(x[:1].std())  # smoother than the digit


def test_prediction_leaves_the_model_mode_alone(resnet_small, digits):
    x, y = digits
    resnet_small.train()
    try:
        before = resnet_small.layer1.bn1.running_mean.clone()
        e = W.OcclusionExplorer(resnet_small, x, y, patch=7)
        assert resnet_small.training and resnet_small.layer1.bn1.training
        torch.testing.assert_close(resnet_small.layer1.bn1.running_mean, before)
        resnet_small.eval()
        with torch.no_grad():
            probs = torch.softmax(resnet_small(x[:1]).double(), 1)[0]
        assert f"{100 * float(probs.max()):.1f} %" in e.outputs["confidence"].value
    finally:
        resnet_small.eval()
