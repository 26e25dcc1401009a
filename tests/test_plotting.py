"""course_utils.plotting: valid Vega-Lite, centred scales, export, orientation."""

import base64
import io

import altair as alt
import numpy as np
import pytest
import torch
from PIL import Image

from course_utils import plotting as P

SIGNED_RGB = np.array(
    [[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in P.SIGNED_COLORS]
)
MAG_RGB = np.array(
    [[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in P.MAGNITUDE_COLORS]
)


# ---------------------------------------------------------------- helpers


def spec_of(chart):
    return chart.to_dict(validate=True)


def find(obj, key):
    """Every value stored under `key` anywhere in a nested spec."""
    found = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == key:
                found.append(v)
            found += find(v, key)
    elif isinstance(obj, list):
        for v in obj:
            found += find(v, key)
    return found


def inline_rows(spec):
    """Row counts of every inline dataset in a spec."""
    rows = [
        len(d["values"])
        for d in find(spec, "data")
        if isinstance(d, dict) and isinstance(d.get("values"), list)
    ]
    rows += [len(v) for d in find(spec, "datasets") for v in d.values()]
    return rows


def records(spec):
    """The (single) inline dataset of a spec."""
    datasets = find(spec, "datasets")
    if datasets:
        (values,) = datasets[0].values()
        return values
    (data,) = [d for d in find(spec, "data") if isinstance(d, dict) and "values" in d]
    return data["values"]


def decode(url):
    assert url.startswith("data:image/png;base64,")
    png = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def color_scales(spec):
    return [
        e["scale"]
        for e in find(spec, "color")
        if isinstance(e, dict)
        and isinstance(e.get("scale"), dict)
        and "range" in e["scale"]
        and e["scale"]["range"] in (list(P.SIGNED_COLORS), list(P.MAGNITUDE_COLORS))
    ]


@pytest.fixture(scope="module")
def blob():
    """A signed map: a positive blob top-left, a negative one bottom-right."""
    m = torch.zeros(1, 28, 28)
    m[0, 2:6, 3:7] = 2.0
    m[0, 20:24, 21:25] = -1.0
    return m


@pytest.fixture(scope="module")
def seven(test_split):
    i = int(torch.nonzero(test_split.y == 7)[0])
    return test_split.x[i]


# ---------------------------------------------------------------- arrays


def test_to_map_reductions():
    a = torch.tensor([[[1.0, -2.0]], [[-3.0, 0.5]]])  # (C=2, H=1, W=2)
    np.testing.assert_allclose(P.to_map(a, "sum"), [[-2.0, -1.5]])
    np.testing.assert_allclose(P.to_map(a, "abs_sum"), [[4.0, 2.5]])
    np.testing.assert_allclose(P.to_map(a, "max_abs"), [[3.0, 2.0]])
    np.testing.assert_allclose(P.to_map(a[None]), [[-2.0, -1.5]])  # (1, C, H, W)
    np.testing.assert_allclose(P.to_map(np.ones((3, 4))), np.ones((3, 4)))


@pytest.mark.parametrize(
    "bad, err",
    [
        (torch.zeros(2, 1, 4, 4), ValueError),  # a batch of two maps
        (torch.zeros(4), ValueError),
        (torch.full((4, 4), float("nan")), ValueError),
        ([[0.0]], TypeError),
    ],
)
def test_to_map_rejects_bad_input(bad, err):
    with pytest.raises(err, match="attr"):
        P.to_map(bad)


def test_to_map_rejects_unknown_reduction():
    with pytest.raises(ValueError, match="reduce must be one of"):
        P.to_map(torch.zeros(4, 4), "mean")


def test_color_limit_is_captums_outlier_rule():
    from captum.attr._utils.visualization import _cumulative_sum_threshold

    values = np.arange(1.0, 11.0)  # total 55
    assert P.color_limit(values, 2) == 10.0  # 98 % of 55 = 53.9 → needs 10
    assert P.color_limit(values, 20) == 9.0  # 80 % = 44 → cumsum 45 at 9
    assert P.color_limit(-values, 0) == 10.0  # max |value|
    rng = np.random.default_rng(0)
    for perc in (1, 2, 5, 30):
        v = rng.standard_normal((28, 28)) ** 3
        assert P.color_limit(v, perc) == _cumulative_sum_threshold(
            np.abs(v), 100 - perc
        )
    assert P.color_limit(np.zeros((3, 3))) == 1.0  # never an empty scale
    with pytest.raises(ValueError, match="outlier_perc"):
        P.color_limit(values, 100)


def test_colorize_ends_centre_and_clamping():
    m = np.array([[-2.0, -1.0, 0.0, 1.0, 2.0]])
    rgb = P.colorize(m, 1.0, signed=True)
    np.testing.assert_array_equal(rgb[0, 0], SIGNED_RGB[0])  # clamped
    np.testing.assert_array_equal(rgb[0, 1], SIGNED_RGB[0])  # -vmax: blue
    np.testing.assert_array_equal(rgb[0, 2], [255, 255, 255])  # 0: white
    np.testing.assert_array_equal(rgb[0, 3], SIGNED_RGB[-1])  # +vmax: red
    assert rgb[0, 3, 0] > rgb[0, 3, 2] and rgb[0, 1, 2] > rgb[0, 1, 0]
    mag = P.colorize(np.array([[0.0, 1.0]]), 1.0, signed=False)
    np.testing.assert_array_equal(mag[0, 0], MAG_RGB[0])  # low: cool
    np.testing.assert_array_equal(mag[0, 1], MAG_RGB[-1])  # high: warm
    assert mag[0, 0, 2] > mag[0, 0, 0] and mag[0, 1, 0] > mag[0, 1, 2]
    # halfway between two stops is their RGB mean, as Vega's "rgb" interpolation
    half = 0.5 / (len(P.SIGNED_COLORS) - 1) * 2  # half a stop in [-1, 1] units
    mid = P.colorize(np.array([[-1.0 + half]]), 1.0, signed=True)[0, 0]
    np.testing.assert_allclose(mid, (SIGNED_RGB[0] + SIGNED_RGB[1]) / 2, atol=0.51)


def test_blend_shows_the_digit_where_attribution_is_zero():
    img = np.zeros((2, 2))
    img[0, 0] = 1.0
    m = np.array([[0.0, 1.0], [0.0, 0.0]])
    out = P.blend(img, m, 1.0, signed=True, opacity=0.5)
    grey = round(255 * P.OVERLAY_BRIGHTNESS)
    np.testing.assert_array_equal(out[0, 0], [grey] * 3)  # no attribution: digit
    np.testing.assert_array_equal(out[1, 1], [0, 0, 0])
    np.testing.assert_allclose(out[0, 1], SIGNED_RGB[-1] * 0.5, atol=0.51)
    flat = P.blend(img, m, 1.0, signed=True, opacity=0.5, fade=False)
    np.testing.assert_allclose(flat[0, 0], grey * 0.5 + 255 * 0.5, atol=0.51)


# ---------------------------------------------------------------- heatmap


def test_heatmap_signed_is_valid_centred_and_row_zero_on_top(blob):
    spec = spec_of(P.heatmap(blob, title="blob"))
    (scale,) = color_scales(spec)
    lo, hi = scale["domain"]
    assert lo == -hi and hi > 0 and scale["domainMid"] == 0
    assert scale["range"] == list(P.SIGNED_COLORS)
    values = records(spec)
    assert len(values) == 28 * 28
    by_pixel = {(v["row"], v["col"]): v["attr"] for v in values}
    assert by_pixel[(3, 4)] == 2.0 and by_pixel[(21, 22)] == -1.0
    assert spec["encoding"]["y"]["field"] == "row"
    assert spec["encoding"]["y"]["scale"]["domain"] == list(range(28))  # 0 at top
    assert {t["field"] for t in spec["encoding"]["tooltip"]} == {"row", "col", "attr"}


def test_heatmap_magnitude_scale_and_pixel_tooltip(seven):
    spec = spec_of(P.heatmap(seven.abs() * 3, seven, reduce="max_abs"))
    (scale,) = color_scales(spec)
    assert scale["domain"][0] == 0 and scale["domain"][1] > 0
    assert scale["range"] == list(P.MAGNITUDE_COLORS)
    assert "pixel" in {t["field"] for t in spec["encoding"]["tooltip"]}
    assert all("pixel" in v for v in records(spec))


def test_heatmap_shared_vmax_and_options(blob):
    spec = spec_of(P.heatmap(blob, vmax=5.0, signed=True))
    assert color_scales(spec)[0]["domain"] == [-5.0, 5.0]
    spec = spec_of(P.heatmap(-blob.abs(), signed=False))  # forced magnitude: |map|
    assert all(v["attr"] >= 0 for v in records(spec))
    with pytest.raises(ValueError, match="vmax"):
        P.heatmap(blob, vmax=0)
    with pytest.raises(TypeError, match="signed"):
        P.heatmap(blob, signed="yes")
    with pytest.raises(ValueError, match="image must have the map's size"):
        P.heatmap(blob, torch.zeros(1, 14, 14))


def test_large_maps_switch_to_one_image_mark():
    big = torch.randn(1, 3, 100, 100)
    spec = spec_of(P.heatmap(big))
    assert max(inline_rows(spec)) < 10
    assert "image" in [
        m["type"] if isinstance(m, dict) else m for m in find(spec, "mark")
    ]
    spec = spec_of(P.overlay(torch.rand(1, 100, 100), big[0, :1]))
    assert max(inline_rows(spec)) < 10


# ---------------------------------------------------------------- overlay


def _all_rows(spec):
    rows = [v for d in find(spec, "datasets") for vs in d.values() for v in vs]
    return rows + [
        v for d in find(spec, "data") if isinstance(d, dict) for v in d.get("values", [])
    ]


def test_overlay_is_one_picture_with_pixel_tooltips_and_fades(seven, blob):
    chart = P.overlay(seven, blob, opacity=0.6)
    spec = spec_of(chart)
    assert len(spec["layer"]) == 3  # the picture (one image: no seams), legend, tips
    values = [v for v in _all_rows(spec) if "alpha" in v]
    assert len(values) == 28 * 28
    alphas = np.array([v["alpha"] for v in values])
    assert alphas.min() == 0.0 and 0.59 < alphas.max() <= 0.6
    assert {v["pixel"] for v in values} >= {0.0}
    (url,) = [v["url"] for v in _all_rows(spec) if v.get("url")]
    rgb = decode(url)  # signed: the map at full colour, the digit as an outline
    k = P.OUTLINE_UPSAMPLE
    assert rgb.shape == (28 * k, 28 * k, 3)
    flat = [v for v in _all_rows(spec_of(P.overlay(seven, blob, opacity=0.3,
                                                   fade=False))) if "alpha" in v]
    assert {v["alpha"] for v in flat} == {0.3}


def test_outline_overlay_white_zero_and_outline_on_the_ink_edge():
    img = np.zeros((8, 8))
    img[2:6, 2:6] = 1.0
    m = np.zeros((8, 8))
    m[0, 0] = 1.0
    k = P.OUTLINE_UPSAMPLE
    rgb = P.outline_overlay(img, m, 1.0, signed=True)
    edge = P.outline(img)
    assert rgb.shape == (8 * k, 8 * k, 3) and edge.shape == (8 * k, 8 * k)
    np.testing.assert_array_equal(rgb[edge], np.tile(P.OUTLINE_RGB, (edge.sum(), 1)))
    # zero attribution is white on the ink and off it: ink cannot pass for zero
    inside, outside = rgb[4 * k + 1, 4 * k + 1], rgb[7 * k, 7 * k]
    np.testing.assert_array_equal(inside, [255, 255, 255])
    np.testing.assert_array_equal(outside, [255, 255, 255])
    np.testing.assert_array_equal(rgb[0, 0], SIGNED_RGB[-1])  # the map at full colour
    # the outline is a closed line around the square, not the filled square
    assert not edge[4 * k, 4 * k] and edge[2 * k, 4 * k]
    with pytest.raises(ValueError, match="same"):
        P.outline_overlay(img, m[:4], 1.0, True)


def test_grid_wraps_to_the_notebook_column(digits):
    import vl_convert as vlc

    x, _ = digits
    maps = {"gradient": torch.randn(8, 1, 28, 28), "IG": torch.randn(8, 1, 28, 28)}
    _, spec = P.grid(maps, image=x, show_input=True, return_spec=True)
    svg = vlc.vegalite_to_svg(spec)
    width = float(svg.split('width="', 1)[1].split('"', 1)[0])
    assert width <= P.COLUMN_WIDTH
    blocks = spec["vconcat"]
    assert [b["facet"]["column"]["sort"] for b in blocks] == [
        ["0", "1", "2", "3"], ["4", "5", "6", "7"]
    ]
    got = [(v["row"], v["col"]) for v in _all_rows(spec) if v.get("url")]
    assert sorted(got) == sorted(
        (r, str(c)) for r in ("input", "gradient", "IG") for c in range(8)
    )
    assert len(find(spec, "legend")) >= 1
    # a narrow grid stays one facet chart
    assert "facet" in spec_of(P.grid({"g": torch.randn(3, 1, 28, 28)}))


def test_overlay_rejects_bad_input(seven, blob):
    with pytest.raises(ValueError, match="opacity"):
        P.overlay(seven, blob, opacity=1.5)
    with pytest.raises(TypeError, match="image"):
        P.overlay(None, blob)
    with pytest.raises(ValueError, match="image must have the map's size"):
        P.overlay(torch.zeros(1, 20, 20), blob)


# ---------------------------------------------------------------- grids


def cells(spec):
    return {(v["row"], v["col"]): v for v in records(spec) if v.get("url")}


def legend_values(spec):
    return sorted(v["_legend"] for v in records(spec) if v.get("_legend") is not None)


def test_grid_methods_by_images(digits, blob):
    x, _ = digits
    x = x[:6]
    maps = {"a": torch.randn(6, 1, 28, 28), "b": torch.randn(6, 1, 28, 28)}
    spec = spec_of(P.grid(maps, image=x, show_input=True, title="methods"))
    assert spec["facet"]["row"]["sort"] == ["input", "a", "b"]  # given order
    assert spec["facet"]["column"]["sort"] == [str(i) for i in range(6)]
    got = cells(spec)
    assert len(got) == 3 * 6
    np.testing.assert_array_equal(  # the input row shows the digit as it is
        decode(got[("input", "3")]["url"])[..., 0],
        np.rint(x[3, 0].numpy() * 255).astype(np.uint8),
    )
    lo, hi = legend_values(spec)
    assert lo == -hi  # signed: centred
    (scale,) = color_scales(spec)
    assert scale["domainMid"] == 0 and "domain" not in scale


def test_grid_cascade_dict_of_dicts_scales_and_orientation(blob, seven):
    maps = {
        "trained": {"gradient": blob, "Grad-CAM": blob.abs()},
        "fc2": {"gradient": blob * 10, "Grad-CAM": blob.abs() * 10},
    }
    shared = cells(spec_of(P.grid(maps, scale="shared")))
    row = spec_of(P.grid(maps, scale="row"))
    assert (
        shared[("trained", "gradient")]["vmax"] == shared[("fc2", "gradient")]["vmax"]
    )
    rcells = cells(row)
    assert (
        rcells[("fc2", "gradient")]["vmax"]
        == 10 * rcells[("trained", "gradient")]["vmax"]
    )
    assert legend_values(row) == [-1.0, 1.0]  # per-row scales: legend in vmax units
    # orientation: the positive blob (rows 2-5, cols 3-6) is red at the top left
    rgb = decode(rcells[("fc2", "gradient")]["url"])
    np.testing.assert_array_equal(rgb[3, 4], SIGNED_RGB[-1])
    np.testing.assert_array_equal(
        rgb[22, 23], P.colorize(np.array([[-10.0]]), 20.0, True)[0, 0]
    )
    np.testing.assert_array_equal(rgb[14, 14], [255, 255, 255])
    # one digit for the whole grid: the input becomes a first column
    spec = spec_of(P.grid(maps, image=seven, show_input=True, scale="independent"))
    assert spec["facet"]["column"]["sort"] == ["input", "gradient", "Grad-CAM"]
    assert ("fc2", "input") in cells(spec)


def test_grid_accepts_lists_of_pairs_and_magnitude_maps(blob):
    spec = spec_of(P.grid([("r1", [("c1", blob.abs()), ("c2", blob.abs() * 2)])]))
    lo, hi = legend_values(spec)
    assert lo == 0 and hi > 0
    assert color_scales(spec)[0]["range"] == list(P.MAGNITUDE_COLORS)


def test_grid_of_ninety_digit_maps_stays_small(digits):
    x, _ = digits
    maps = {
        f"step {r}": {f"img {c}": torch.randn(1, 28, 28) for c in range(9)}
        for r in range(10)
    }
    spec = spec_of(P.grid(maps, image=x[0]))
    # 90 cells + 2 legend rows per block, not 70,560 pixel rows
    assert max(inline_rows(spec)) < 100
    assert len(str(spec)) < 400_000  # upsampled outline overlays: palette PNGs


def test_grid_states_each_maps_scale_and_greys_out_negligible_maps(seven, blob):
    maps = {"drop": {"big": blob, "tiny": 1e-5 * blob, "zero": 0 * blob}}
    spec = spec_of(P.grid(maps, image=seven, scale="independent"))
    got = cells(spec)
    # each map its own scale: the legend is in vmax units, each map says its vmax
    assert legend_values(spec) == [-1.0, 1.0]
    assert got[("drop", "big")]["scale"] == f"vmax {got[('drop', 'big')]['vmax']:.3g}"
    # 1e-5 of the grid's largest: not stretched to full colour, greyed, "≈ 0"
    assert got[("drop", "tiny")]["scale"] == "≈ 0 (max 2e-05)"
    assert got[("drop", "zero")]["scale"] == "= 0"
    tiny = decode(got[("drop", "tiny")]["url"])
    assert (tiny.max(axis=2) - tiny.min(axis=2)).max() == 0  # grey: no colour at all
    assert tiny.min() >= 228 - 45 and tiny.max() <= 228
    big = decode(got[("drop", "big")]["url"])
    assert (big.max(axis=2) - big.min(axis=2)).max() > 100  # coloured
    # the scale text is drawn under each picture (the cell is taller than it)
    inner = spec["spec"]
    assert inner["height"] > 120 and any(
        l["mark"].get("type") == "text" for l in inner["layer"]
    )
    # negligible=0 greys out only the all-zero map
    kept = cells(spec_of(P.grid(maps, image=seven, scale="independent", negligible=0)))
    assert kept[("drop", "tiny")]["scale"].startswith("vmax")
    assert kept[("drop", "zero")]["scale"] == "= 0"
    # one scale for all: the legend shows the magnitudes, no text, nothing greyed
    shared = cells(spec_of(P.grid(maps, image=seven)))
    assert all("scale" not in v for v in shared.values())
    with pytest.raises(ValueError, match="negligible"):
        P.grid(maps, negligible=1.5)


def test_grid_frame_draws_each_picture_on_a_dark_ground(seven):
    spec = spec_of(P.grid({"r": {"a": seven}}, frame=True, overlay=False,
                          scale="row"))
    layers = spec["spec"]["layer"]
    ground = layers[0]
    assert ground["mark"]["type"] == "rect" and ground["mark"]["color"] == "#3b3b3b"
    image = next(l for l in layers if l["mark"]["type"] == "image")
    assert image["mark"]["width"] == 120 and image["encoding"]["x"] == {"value": 3}
    assert ground["encoding"]["x2"] == {"value": 126} and spec["spec"]["width"] == 126


@pytest.mark.parametrize(
    "maps, kwargs, err, match",
    [
        ({}, {}, ValueError, "maps must not be empty"),
        ("maps", {}, TypeError, "maps must be a dict"),
        (
            {"a": torch.zeros(4, 1, 28, 28)},
            {"image": torch.zeros(3, 1, 28, 28)},
            ValueError,
            "one image per column",
        ),
        (
            {"a": {"x": torch.zeros(28, 28), "y": torch.zeros(14, 14)}},
            {},
            ValueError,
            "same \\(H, W\\)",
        ),
        ({"a": torch.zeros(2, 1, 28, 28)}, {"scale": "global"}, ValueError, "scale"),
        (
            {"a": torch.zeros(2, 1, 28, 28)},
            {"show_input": True},
            ValueError,
            "show_input",
        ),
        (
            {"a": torch.zeros(2, 1, 28, 28)},
            {"image": {"0": torch.zeros(28, 28)}},
            ValueError,
            "no entry for the columns",
        ),
    ],
)
def test_grid_rejects_bad_input(maps, kwargs, err, match):
    with pytest.raises(err, match=match):
        P.grid(maps, **kwargs)


def test_panels_spec_equals_chart_and_order(seven, blob):
    chart, spec = P.panels(
        seven,
        blob,
        extra={"baseline": torch.zeros(28, 28)},
        title="t",
        return_spec=True,
    )
    assert spec == chart.to_dict(validate=True)
    assert spec["facet"]["column"]["sort"] == ["input", "baseline", "map", "overlay"]
    assert spec["title"] == "t"
    lo, hi = legend_values(spec)
    assert lo == -hi
    # a second call reuses the cached layout but never the first call's data
    chart2 = P.panels(seven, -blob)
    assert chart.to_dict() != chart2.to_dict()
    assert chart.to_dict() == spec
    with pytest.raises(ValueError, match="extra"):
        P.panels(seven, blob, extra={"map": seven})


# ---------------------------------------------------------------- others


def test_digits_grid(digits):
    x, y = digits
    spec = spec_of(P.digits(x, y, predictions=y, columns=4))
    values = records(spec)
    assert [v["caption"] for v in values][:2] == [
        f"#0: {int(y[0])} → {int(y[0])}",
        f"#1: {int(y[1])} → {int(y[1])}",
    ]
    assert spec["columns"] == 4
    # by default 120 px digits, as many to a row as fit the notebook column
    default = spec_of(P.digits(x, y))
    assert default["spec"]["mark"]["width"] == 120 and default["columns"] == 7
    # text labels stand alone: "black", not "#0 black" (which reads like a digit)
    named = records(spec_of(P.digits(x[:2], ["black", "grey"])))
    assert [v["caption"] for v in named] == ["black", "grey"]
    with pytest.raises(ValueError, match="labels must have one entry per image"):
        P.digits(x, y[:3])
    with pytest.raises(ValueError, match="at least one image"):
        P.digits(torch.zeros(0, 1, 28, 28))


def test_confusion_matrix():
    cm = torch.tensor([[5, 1], [0, 4]])
    spec = spec_of(P.confusion_matrix(cm, labels=["cat", "dog"], normalize=True))
    values = records(spec)
    assert len(values) == 4
    cell = next(v for v in values if v["true"] == "cat" and v["predicted"] == "dog")
    assert cell["count"] == 1 and cell["fraction"] == pytest.approx(1 / 6, abs=1e-4)
    with pytest.raises(ValueError, match="square"):
        P.confusion_matrix(torch.zeros(2, 3))


# ---------------------------------------------------------------- curves


def test_error_vs_cost_curve_guide_points_and_png(tmp_path):
    pd = pytest.importorskip("pandas")
    errors = pd.Series([0.4, 0.3, 0.1], index=[25, 100, 400])
    chart = P.error_vs_cost(
        errors, "KernelSHAP", {"occlusion": (17, 0.5)}, title="error vs cost"
    )
    spec = spec_of(chart)
    lines, dots = spec["layer"]
    rows = spec["datasets"][lines["data"]["name"]]
    curve = [(r["evaluations"], r["mean"]) for r in rows if r["method"] == "KernelSHAP"]
    assert curve == [(25, 0.4), (100, 0.3), (400, 0.1)]
    # the guide ∝ 1/√n starts at the curve's first point: 0.4 · √(25 / n)
    guide = {r["evaluations"]: r["mean"] for r in rows if r["method"] == P.curves.GUIDE}
    assert guide[25] == pytest.approx(0.4) and guide[400] == pytest.approx(0.1)
    assert spec["datasets"][dots["data"]["name"]] == [
        {"evaluations": 17, "mean": 0.5, "method": "occlusion"}
    ]
    assert lines["mark"] == {"type": "line", "point": True}
    assert dots["mark"]["shape"] == "diamond"
    for layer in (lines, dots):
        enc = layer["encoding"]
        assert enc["x"]["scale"] == {"type": "log"} == enc["y"]["scale"]
        assert (enc["x"]["field"], enc["y"]["field"]) == ("evaluations", "mean")
    dash = lines["encoding"]["strokeDash"]
    assert dash["condition"]["value"] == [4, 3] and dash["value"] == [1, 0]
    assert spec["title"] == "error vs cost" and spec["width"] == 480
    # renders: a PNG wider than the 480 px plot, not one flat colour
    img = np.asarray(Image.open(P.save(chart, tmp_path / "c.png")).convert("RGB"))
    assert img.shape[1] > 480 and len(np.unique(img.reshape(-1, 3), axis=0)) > 10


# ---------------------------------------------------------------- export


def test_save_png_size_scale_colours_and_orientation(tmp_path, blob):
    chart = P.heatmap(blob, size=112)
    one = P.save(chart, tmp_path / "one.png")
    two = P.save(chart, tmp_path / "sub" / "two.png", scale=2)
    a = np.asarray(Image.open(one).convert("RGB")).astype(int)
    b = np.asarray(Image.open(two).convert("RGB"))
    assert (
        abs(b.shape[1] - 2 * a.shape[1]) <= 2 and abs(b.shape[0] - 2 * a.shape[0]) <= 2
    )
    assert a.shape[1] >= 112 and a.shape[0] >= 112
    assert len(np.unique(a.reshape(-1, 3), axis=0)) > 10  # not one flat colour
    # the reddest pixel lies in the upper left (the positive blob), the bluest
    # in the lower right: row 0 of the map is drawn at the top
    plot = a[:, :118]  # the map (112 px plus padding), not the legend
    red = plot[..., 0] - plot[..., 2]
    r, c = np.unravel_index(np.argmax(red), red.shape)
    blue = plot[..., 2] - plot[..., 0]
    r2, c2 = np.unravel_index(np.argmax(blue), blue.shape)
    assert r < 40 and c < 40 and r2 > 70 and c2 > 70


def test_save_svg_and_bad_paths(tmp_path, blob):
    chart = P.heatmap(blob, size=84)
    svg = P.save(chart, tmp_path / "m.svg").read_text()
    svg2 = P.save(chart, tmp_path / "m2.svg", scale=2).read_text()
    assert svg.lstrip().startswith("<svg")
    import re

    w1 = float(re.search(r'<svg[^>]*\bwidth="([0-9.]+)"', svg).group(1))
    w2 = float(re.search(r'<svg[^>]*\bwidth="([0-9.]+)"', svg2).group(1))
    assert w2 == pytest.approx(2 * w1)
    with pytest.raises(ValueError, match=r"\.png or \.svg"):
        P.save(chart, tmp_path / "m.pdf")
    with pytest.raises(ValueError, match="scale"):
        P.save(chart, tmp_path / "m.png", scale=0)
    with pytest.raises(TypeError, match="Altair chart"):
        P.save({"mark": "point"}, tmp_path / "m.png")


def test_mimebundle_renders_with_vega_lite_5(seven, blob, digits):
    """JupyterLab 4 ships a Vega-Lite 5 viewer; every chart kind must compile there."""
    import vl_convert as vlc

    x, y = digits
    charts = [
        P.heatmap(blob, seven),
        P.overlay(seven, blob),
        P.panels(seven, blob),
        P.grid({"g": torch.randn(8, 1, 28, 28)}, image=x, show_input=True),
        P.digits(x, y),
        P.confusion_matrix(torch.eye(3)),
    ]
    for chart in charts:
        bundle = P.mimebundle(chart)
        spec = bundle["application/vnd.vegalite.v5+json"]
        assert spec["$schema"].endswith("/v5.json")
        vega = vlc.vegalite_to_vega(spec, vl_version="5.8")
        assert vega["marks"]
    assert P.mimebundle(P.panels(seven, blob, return_spec=True)[1])


def test_enable_renderer_emits_the_v5_bundle(blob):
    old = alt.renderers.active
    try:
        P.enable_renderer()
        assert alt.renderers.active == "course"
        bundle = alt.renderers.get()(P.heatmap(blob).to_dict())
        assert "application/vnd.vegalite.v5+json" in bundle
    finally:
        alt.renderers.enable(old)


# ---------------------------------------------------------------- Altair


def test_altair_is_the_locked_version_and_charts_validate(seven, blob):
    """The charts use Altair's public API only; pin the test to the lock so an
    Altair upgrade re-runs it against the new schema (and the lock says which)."""
    from pathlib import Path

    lock = (Path(__file__).resolve().parents[1] / "requirements.lock").read_text()
    pins = [ln.split(";")[0].strip() for ln in lock.splitlines()
            if ln.lower().startswith("altair==")]
    assert pins == [f"altair=={alt.__version__}"]
    s = seven.reshape(1, 28, 28)
    x = torch.stack([s, s.flip(-1)])
    charts = [
        P.heatmap(blob, seven),
        P.overlay(seven, blob),
        P.panels(seven, blob, extra={"baseline": torch.zeros(28, 28)}, title="t"),
        P.grid({"a": x, "b": -x}, image=x, show_input=True, scale="row", title="g"),
        P.grid({"a": {"x": blob}}, image=seven, show_input=True, scale="independent"),
        P.digits(x, [7, 7]),
        P.confusion_matrix(torch.eye(3) * 5),
    ]
    for chart in charts:
        chart.to_dict(validate=True)  # raises on a spec the schema rejects
    # A chart built from a cached layout equals its spec.
    chart, spec = P.grid({"a": x}, image=x, return_spec=True, title="g")
    assert isinstance(chart, alt.FacetChart) and chart.to_dict(validate=True) == spec
    alt.FacetChart.from_dict(spec, validate=True)  # the raw spec validates too


def test_plotting_uses_no_altair_internals():
    from pathlib import Path

    root = Path(P.__file__).parent
    for path in root.glob("*.py"):
        src = path.read_text()
        for private in ("_kwds", "SchemaBase", "schemapi", "__new__"):
            assert private not in src, f"{path.name} uses Altair internal {private}"


def test_facet_layout_is_a_frozen_cache_key(blob):
    layout = P.FacetLayout(True, "attribution", 40, 40, cols=("a", "b"))
    with pytest.raises(AttributeError):
        layout.width = 50
    rows = [{"col": "a", "url": "data:,"}, {"col": "b", "url": "data:,"}]
    chart1, spec1 = P.facet_chart(layout, rows, "one")
    chart2, spec2 = P.facet_chart(
        P.FacetLayout(True, "attribution", 40, 40, cols=("a", "b")), rows[:1], None
    )
    assert spec1["title"] == "one" and "title" not in spec2
    assert spec2["data"]["values"] == rows[:1]  # same layout, its own data
    assert chart1.to_dict() == spec1 and chart2.to_dict() == spec2
    assert spec1["facet"]["column"]["sort"] == ["a", "b"]


def test_photo_maps_state_each_maps_vmax_and_grey_only_what_is_asked():
    from course_utils.plotting.rgb import photo_maps

    photo = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    big = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    maps = {"big": big, "tiny": 1e-6 * big, "zero": torch.zeros(1, 1, 4, 4)}

    def scales(**kw):
        spec = photo_maps(photo, maps, size=120, **kw).to_dict()
        return {v["col"]: v.get("scale") for v in records(spec) if v.get("url")}

    # default: a cascade's shrunken map keeps its colours, only zeros are grey
    got = scales()
    assert got["photo"] is None and got["big"].startswith("vmax")
    assert got["tiny"].startswith("vmax") and got["zero"] == "= 0"
    assert scales(negligible=1e-3)["tiny"].startswith("≈ 0 (max 9")  # mean over channels
    with pytest.raises(ValueError, match="negligible"):
        photo_maps(photo, maps, negligible=-1)
