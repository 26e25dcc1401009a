"""Explain your own photo: `photos.explain` and `widgets.PhotoExplainer`, good and bad files."""

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from test_photo_model import TOP1

from course_utils import models, photos
from course_utils import photo_model as pm
from course_utils import saliency as sal
from course_utils import widgets as W

V5 = "application/vnd.vegalite.v5+json"
FAST = {"n_steps": 2, "n_samples": 2}


@pytest.fixture(scope="module")
def model():
    return models.load_pretrained("efficientnet_lite0")


@pytest.fixture(scope="module")
def coffee_rgb():
    return Image.fromarray(photos.load("coffee")[0].mul(255).round().byte()
                           .permute(1, 2, 0).numpy())


def _bytes(im: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width × height pixels (8-bit RGB), with no pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


def _bad_files(coffee_rgb) -> dict[str, tuple[bytes, str]]:
    """{case: (file bytes, words the error must contain)}."""
    jpeg = _bytes(coffee_rgb, "JPEG", quality=90)
    return {
        "random bytes": (np.random.default_rng(0).bytes(2000), "not an image"),
        "text file": (b"my holiday notes, not a photo\n" * 20, "not an image"),
        "truncated JPEG": (jpeg[: len(jpeg) // 2], "truncated"),
        "enormous PNG header": (_png_header(100_000, 100_000), "too large"),
        "large PNG header": (_png_header(9_000, 9_000), "81,000,000 pixels"),
        "empty file": (b"", "empty"),
    }


# ------------------------------------------------------------ the function


def test_explain_a_bundled_photo_matches_the_pinned_top1_and_direct_calls(model):
    x = photos.load("chelsea")
    rgb = Image.fromarray(x[0].mul(255).round().byte().permute(1, 2, 0).numpy())
    e = photos.explain(rgb, model=model, **FAST)
    label, prob = TOP1["chelsea"]
    assert e.classes[0] == label and e.target_name == label
    assert e.probabilities[0] == pytest.approx(prob, abs=0.01)
    assert len(e.top5) == 5 and e.probabilities == sorted(e.probabilities, reverse=True)
    assert list(e.maps) == [*photos.FAST_METHODS, *photos.SLOW_METHODS]
    assert e.size == (224, 224) and e.x.shape == (1, 3, 224, 224)
    torch.testing.assert_close(e.maps["gradient"], sal.gradient(model, e.x, e.target))
    torch.testing.assert_close(e.maps["grad_cam"], sal.grad_cam(model, e.x, e.target))
    ig = sal.integrated_gradients(model, e.x, e.target, n_steps=2, method="clenshaw_curtis")
    torch.testing.assert_close(e.maps["integrated_gradients"], ig)
    assert e.chart() is not None


def test_explain_target_by_name_or_index(model, tmp_path, coffee_rgb):
    path = tmp_path / "coffee.jpg"
    coffee_rgb.save(path, quality=95)
    names = pm.categories()
    e = photos.explain(path, target="TABBY", methods=("grad_cam",), model=model)
    assert e.target == names.index("tabby") and e.target_name == "tabby"
    assert e.classes[0] == "espresso" and list(e.maps) == ["grad_cam"]
    assert photos.explain(path.read_bytes(), target=3, methods="gradient",
                          model=model).target == 3
    with pytest.raises(ValueError, match="did you mean.*Siamese cat"):
        photos.explain(path, target="siamese", methods=("gradient",), model=model)
    with pytest.raises(ValueError, match="class index in 0..999"):
        photos.explain(path, target=1000, methods=("gradient",), model=model)
    with pytest.raises(ValueError, match="unknown.*'nope'"):
        photos.explain(path, methods=("nope",), model=model)


def test_repeated_class_names_are_told_apart():
    names = pm.categories()
    labels = photos.class_labels(names)
    assert len(set(labels)) == 1000
    with pytest.raises(ValueError, match="names 2 classes"):
        photos.find_class("cardigan", names)
    i = photos.find_class(labels[names.index("cardigan")], names)
    assert names[i] == "cardigan"


def test_each_bad_file_raises_a_clear_value_error(model, coffee_rgb, tmp_path):
    for case, (data, words) in _bad_files(coffee_rgb).items():
        with pytest.raises(ValueError, match=words) as err:
            photos.explain(data, methods=("gradient",), model=model)
        message = str(err.value)
        assert message.startswith("image must be a JPEG, PNG"), case
        path = tmp_path / "file.bin"
        path.write_bytes(data)
        with pytest.raises(ValueError, match=words):
            photos.read_image(path)
    with pytest.raises(ValueError, match="not a file"):
        photos.read_image(tmp_path / "missing.jpg")
    with pytest.raises(TypeError, match="image must be"):
        photos.explain(42, model=model)


def test_too_many_bytes_are_refused_before_decoding(monkeypatch, coffee_rgb):
    monkeypatch.setattr(photos, "MAX_BYTES", 1000)
    with pytest.raises(ValueError, match="MiB"):
        photos.read_image(_bytes(coffee_rgb, "PNG"))


def _modes(coffee_rgb) -> dict[str, bytes]:
    """The same photo as files of many kinds and shapes."""
    portrait = coffee_rgb.resize((150, 300))
    landscape = coffee_rgb.resize((400, 200))
    grey16 = Image.fromarray(np.asarray(coffee_rgb.convert("L"), np.uint16) * 257)
    return {
        "portrait JPEG": _bytes(portrait, "JPEG", quality=95),
        "landscape PNG": _bytes(landscape, "PNG"),
        "greyscale PNG": _bytes(coffee_rgb.convert("L"), "PNG"),
        "RGBA PNG": _bytes(coffee_rgb.convert("RGBA"), "PNG"),
        "CMYK JPEG": _bytes(coffee_rgb.convert("CMYK"), "JPEG", quality=95),
        "16-bit PNG": _bytes(grey16, "PNG"),
    }


def test_explain_every_kind_of_file(model, coffee_rgb):
    for case, data in _modes(coffee_rgb).items():
        e = photos.explain(data, methods=("grad_cam",), model=model)
        assert e.x.shape == (1, 3, 224, 224), case
        assert e.maps["grad_cam"].shape == (1, 1, 224, 224), case
        if "grey" not in case and "16" not in case:
            assert e.classes[0] == "espresso", case
    assert photos.explain(_modes(coffee_rgb)["portrait JPEG"], methods=(),
                          model=model).size == (150, 300)


# ------------------------------------------------------------ the widget


def upload(widget, name: str, data: bytes, kind: str = "image/png") -> None:
    """What the browser sends when a file is chosen (ipywidgets 8: a list of dicts,
    deserialised by the FileUpload into its value, a tuple of dicts)."""
    widget.controls["upload"].set_state({"value": [
        {"name": name, "type": kind, "size": len(data), "content": memoryview(data),
         "last_modified": 1_700_000_000_000}]})


def shown(output) -> dict:
    (out,) = output.outputs
    return out["data"]


@pytest.fixture(scope="module")
def explainer(model):
    return W.PhotoExplainer(model, photo="chelsea", **FAST)


def test_widget_shows_the_top5_and_maps_of_a_bundled_photo(explainer):
    w = explainer
    assert w.top5[0][1] == TOP1["chelsea"][0] and w.target == w.top5[0][0]
    assert TOP1["chelsea"][0] in w.outputs["top5"].value
    assert [v for _, v in w.controls["target"].options] == [i for i, _, _ in w.top5]
    assert list(w.result) == [*photos.FAST_METHODS, *photos.SLOW_METHODS]
    assert V5 in shown(w._out) and V5 in shown(w._out_slow)
    assert w.status.value == "" and "sal-busy" not in w.view._dom_classes
    assert "sal-photo-explainer" in w.view._dom_classes
    assert w.controls["upload"].accept == "image/*"
    assert not w.controls["upload"].multiple


def test_upload_good_bad_good(explainer, coffee_rgb):
    w = explainer
    w.controls["photo"].value = "chelsea"
    before = w.n_updates
    upload(w, "coffee.jpg", _bytes(coffee_rgb, "JPEG", quality=95), "image/jpeg")
    assert w.top5[0][1] == "espresso" and w.status.value == ""
    assert w.n_updates == before + 1
    assert w.controls["photo"].value.startswith("upload:")
    assert "espresso" in w.outputs["top5"].value
    assert "coffee.jpg" in w.outputs["photo_info"].value
    spec = shown(w._out)[V5]
    assert "espresso" in str(spec["title"])
    assert w.controls["upload"].value == ()  # cleared: the same file can come again
    good = (w.controls["photo"].value, w.n_updates, w.charts["fast"])
    for case, (data, words) in _bad_files(coffee_rgb).items():
        upload(w, f"{case}.png", data)
        assert words in w.status.value and case in w.status.value, case
        assert "b2182b" in w.status.value, case  # shown in red
        # the last good photo stays on display
        assert (w.controls["photo"].value, w.n_updates, w.charts["fast"]) == good
    chelsea = photos.load("chelsea")[0].mul(255).round().byte().permute(1, 2, 0)
    upload(w, "cat.png", _bytes(Image.fromarray(chelsea.numpy()), "PNG"))
    assert w.status.value == "" and w.top5[0][1] == TOP1["chelsea"][0]
    assert w.n_updates == good[1] + 1 and w.charts["fast"] is not good[2]


def test_upload_every_kind_of_file(explainer, coffee_rgb):
    w = explainer
    for case, data in _modes(coffee_rgb).items():
        before = w.n_updates
        upload(w, f"{case}.img", data)
        assert w.status.value == "" and w.n_updates == before + 1, case
        assert w.photo["x"].shape == (1, 3, 224, 224), case
        if "grey" not in case and "16" not in case:
            assert w.top5[0][1] == "espresso", case
    w.controls["photo"].value = "coffee"
    assert w.top5[0][1] == "espresso"


def test_target_from_top5_or_search_and_the_cache(explainer, count_calls):
    w = explainer
    w.controls["photo"].value = "chelsea"
    names = pm.categories()
    second = w.top5[1][0]
    calls = count_calls("grad_cam")
    w.controls["target"].value = second
    assert len(calls) == 1 and w.target == second
    assert names[second] in str(shown(w._out)[V5]["title"])
    w.controls["search"].value = "Espresso"
    espresso = names.index("espresso")
    assert w.target == espresso and len(calls) == 2
    assert w.controls["target"].options[-1][1] == espresso  # added to the choices
    torch.testing.assert_close(
        w.result["grad_cam"], sal.grad_cam(w.model, photos.load("chelsea"), espresso))
    w.controls["search"].value = "no such class"
    assert "ImageNet class" in w.status.value and w.target == espresso
    w.controls["target"].value = second  # seen before: from the cache
    assert len(calls) == 2 and w.timings["computed"] == 0
    guided = count_calls("guided_backprop")
    w.controls["n_steps"].value = 3
    assert len(calls) == 2 and not guided  # only IG is recomputed
    assert w.timings["computed"] == 1
    w.controls["n_steps"].value = 2
    assert w.timings["computed"] == 0  # and going back is free


def test_cascade_button_shows_the_curve(model):
    w = W.PhotoExplainer(model, photo="coffee", methods=("gradient",),
                         cascade_methods=("gradient",))
    w.controls["cascade"].click()
    assert w.status.value == "" and w.cascade is not None
    t = w.cascade.pivot("spearman_abs").T
    assert list(t.index) == ["original", *reversed(pm.CASCADE_LAYERS)]
    assert float(t.loc["_fc", "gradient"]) < 0.5  # the lecture's check, on this photo
    assert V5 in shown(w._out_cascade)


def test_widget_rejects_bad_arguments(model):
    with pytest.raises(ValueError, match="photo must be one of"):
        W.PhotoExplainer(model, photo="camera")
    with pytest.raises(ValueError, match="unknown"):
        W.PhotoExplainer(model, methods=("nope",))
    with pytest.raises(ValueError, match="cascade_methods must be a list of 1–2"):
        W.PhotoExplainer(model, cascade_methods=("gradient", "grad_cam", "smoothgrad"))


@pytest.fixture
def count_calls(monkeypatch):
    """count_calls("grad_cam") wraps sal.METHODS[name]; returns the list of calls."""

    def install(name):
        calls = []
        original = sal.METHODS[name]

        def counting(*args, **kwargs):
            calls.append(kwargs)
            return original(*args, **kwargs)

        monkeypatch.setitem(sal.METHODS, name, counting)
        return calls

    return install


@pytest.fixture
def rows_seen(model):
    """Rows of every forward call of the model (a forward pre-hook), cleared on demand."""
    rows = []
    handle = model.register_forward_pre_hook(lambda m, args: rows.append(len(args[0])))
    yield rows
    handle.remove()


def test_smoothgrad_samples_reuse_the_gradients_computed_before(model, rows_seen):
    w = W.PhotoExplainer(model, photo="chelsea", methods=("smoothgrad",), n_samples=4)
    x, target = photos.load("chelsea"), w.target
    rows = rows_seen
    for n, new_rows in ((2, 0), (6, 2), (3, 0), (6, 0)):
        rows.clear()
        w.controls["n_samples"].value = n
        assert sum(rows) == new_rows, n
        want = sal.smoothgrad(model, x, target, n_samples=n, noise_level=0.15,
                              batch_size=16, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(w.result["smoothgrad"], want, rtol=0,
                                   atol=1e-5 * float(want.abs().max()))
    assert w.timings["computed"] == 0  # 6 samples were computed before: no "computing…"


def test_ig_steps_reuse_the_gradients_along_the_path(model, rows_seen):
    w = W.PhotoExplainer(model, photo="coffee", methods=("integrated_gradients",),
                         n_steps=9)
    x, target = photos.load("coffee"), w.target
    assert sum(rows_seen) == 1 + 9  # the top-5, then IG's 9 points
    assert w.controls["n_steps"].options == (2, 3, 5, 9, 17, 33, 65)
    for n, new in ((5, 0), (2, 0), (17, 8), (3, 0), (33, 16), (9, 0), (33, 0)):
        rows_seen.clear()
        w.controls["n_steps"].value = n
        assert sum(rows_seen) == new, n  # a coarser n: no model call; finer: new points
        assert w.timings["computed"] == (new > 0)
        want, delta = sal.integrated_gradients(model, x, target, n_steps=n,
                                               method="clenshaw_curtis",
                                               return_delta=True)
        torch.testing.assert_close(w.result["integrated_gradients"], want, rtol=1e-4,
                                   atol=1e-5 * float(want.abs().max()))
        text = w.outputs["ig_delta"].value
        assert f"IG, {n} points" in text
        assert f"completeness error {float(delta):+.2f}" in text, (text, float(delta))
    assert "33 of 65 points on IG&#x27;s path" in w.outputs["cache"].value
    with pytest.raises(ValueError, match=r"n_steps must be one of \[2, 3, 5, 9, 17, 33"):
        W.PhotoExplainer(model, n_steps=16)
    with pytest.raises(ValueError, match="n_samples must be an int in 2…50"):
        W.PhotoExplainer(model, n_samples=64)


def test_upload_honours_exif_orientation(explainer, coffee_rgb):
    """A phone's portrait photo: stored landscape, with EXIF "rotate 90° to view"."""
    w = explainer
    upright = coffee_rgb.resize((150, 300))  # portrait, as the student sees it
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # 300 × 150 on disk
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to view
    data = _bytes(stored, "JPEG", quality=95, exif=exif.tobytes())
    assert Image.open(io.BytesIO(data)).size == (300, 150)
    upload(w, "portrait.jpg", data, "image/jpeg")
    assert w.status.value == "" and w.photo["size"] == (150, 300)
    assert "150 × 300 px" in w.outputs["photo_info"].value
    want = photos.preprocess(Image.open(io.BytesIO(_bytes(upright, "JPEG", quality=95))))
    assert (w.photo["x"] - want).abs().mean() < 0.02  # two JPEG encodings apart
    unrotated = photos.preprocess(stored)
    assert (w.photo["x"] - unrotated).abs().mean() > 0.05
    assert w.top5[0][1] == "espresso"
