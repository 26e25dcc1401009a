"""The ImageNet photo model (EfficientNet-Lite0) and its photos, against Captum.

The checkpoint is pinned by sha256 and loads strictly; the bundled photos'
top-1 classes are pinned (measured on this model: see `TOP1`); every saliency
method equals Captum's on a real photo; guided backprop really applies its
rule (the reason the model writes ReLU6 as nn.ReLU + clamp); Grad-CAM on the
cat-and-coffee photo is class-discriminative. Settings are small (IG 4 steps,
SmoothGrad 2 samples, occlusion 56-px windows) to keep the file fast.
"""

import copy
import io

import numpy as np
import pytest
import torch
from model_state import assert_unchanged, snapshot
from PIL import Image
from torch import nn

from course_utils import models, photos
from course_utils import photo_model as pm
from course_utils import reference as ref
from course_utils import saliency as sal
from course_utils.sanity.randomize import check_layers

# Measured with photos.load(name) (centre square, bicubic 224 px): top-1 class
# and its softmax probability.
TOP1 = {
    "chelsea": ("Egyptian cat", 0.385),
    "coffee": ("espresso", 0.940),
    "rocket": ("missile", 0.223),
    "astronaut": ("bobsled", 0.197),
    "motorcycle": ("moped", 0.722),
    "china": ("palace", 0.301),
    "flower": ("daisy", 0.228),
    "cat_and_coffee": ("Egyptian cat", 0.523),
}
TIGER_CAT, EGYPTIAN_CAT, TABBY, ESPRESSO = 282, 285, 281, 967
KWARGS = {
    "integrated_gradients": {"n_steps": 4},
    "smoothgrad": {"n_samples": 2},
    "occlusion": {"patch": 56, "stride": 56},
}


@pytest.fixture(scope="module")
def model():
    return models.load_pretrained("efficientnet_lite0")


@pytest.fixture(scope="module")
def cat():
    return photos.load("chelsea")


def test_checkpoint_is_the_pinned_file():
    assert pm.sha256(pm.checkpoint_path()) == pm.SHA256


def test_strict_load_and_architecture(model):
    state = torch.load(pm.checkpoint_path(), weights_only=True)
    own = {k for k in model.state_dict() if not k.startswith("normalize.")}
    assert own == set(state) and len(state) == 296
    assert sum(p.numel() for p in model.parameters()) == 4_652_008
    assert not model.training
    assert isinstance(model, pm.EfficientNetLite0)
    # one nn.ReLU per use (stem, 31 in the blocks, head), no ReLU6 module
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == len({id(m) for m in relus}) == 33
    assert not any(isinstance(m, nn.ReLU6) for m in model.modules())
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 for m in bns)
    # (255·x − 127) / 128 inside the model
    x = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(model.normalize(x), (255 * x - 127) / 128)


def test_tensorflow_same_padding_is_asymmetric_for_stride_two():
    torch.manual_seed(0)
    conv = pm.Conv2dSame(2, 3, 5, stride=2)
    x = torch.randn(1, 2, 224, 224)
    # TF pads 3 in total: 1 before, 2 after
    want = nn.functional.conv2d(nn.functional.pad(x, (1, 2, 1, 2)), conv.weight,
                                stride=2)
    torch.testing.assert_close(conv(x), want)
    assert conv(torch.randn(1, 2, 225, 223)).shape[-2:] == (113, 112)
    stem = pm.Conv2dSame(2, 3, 3, stride=1)  # stride 1: symmetric
    want = nn.functional.conv2d(nn.functional.pad(x, (1, 1, 1, 1)), stem.weight)
    torch.testing.assert_close(stem(x), want)


def test_default_layer_is_the_last_activation(model, cat):
    assert sal.default_layer(model) == "_relu_head"
    seen = {}

    def record(_module, _inputs, output):
        seen["shape"] = tuple(output.shape)

    handle = model._relu_head.register_forward_hook(record)
    try:
        with torch.no_grad():
            model(cat)
    finally:
        handle.remove()
    assert seen["shape"] == (1, 1280, 7, 7)
    assert check_layers(model, list(pm.CASCADE_LAYERS)) == list(pm.CASCADE_LAYERS)
    assert len(pm.CASCADE_LAYERS) == pm.N_BLOCKS + 5


def test_top1_of_the_bundled_photos(model):
    names = pm.categories()
    assert len(names) == 1000 and names[ESPRESSO] == "espresso"
    for name, (label, prob) in TOP1.items():
        top = pm.top_k(model, photos.load(name))
        print(name, [(c, round(p, 3)) for _, c, p in top])
        assert top[0][1] == label, (name, top)
        assert top[0][2] == pytest.approx(prob, abs=0.01), (name, top)
    cat_top3 = {c for _, c, _ in pm.top_k(model, photos.load("chelsea"), 3)}
    assert cat_top3 == {"tiger cat", "Egyptian cat", "tabby"}


# ------------------------------------------------------------ preprocessing


def _jpeg(im: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=95, **kwargs)
    return buf.getvalue()


def test_preprocess_every_mode_gives_the_model_input():
    rgb = Image.fromarray(photos.load("coffee", 64)[0].mul(255).byte()
                          .permute(1, 2, 0).numpy())
    grey16 = Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257)
    assert grey16.mode.startswith("I;16")
    cases = {
        "RGB": rgb, "L": rgb.convert("L"), "RGBA": rgb.convert("RGBA"),
        "CMYK": rgb.convert("CMYK"), "P": rgb.convert("P"), "I;16": grey16,
        "jpeg bytes": _jpeg(rgb), "uint16 array": np.asarray(rgb, np.uint16) * 257,
        "float array": np.asarray(rgb, np.float32) / 255,
    }
    base = photos.preprocess(rgb, 32)
    for name, image in cases.items():
        x = photos.preprocess(image, 32)
        assert x.shape == (1, 3, 32, 32) and x.dtype == torch.float32, name
        assert 0 <= float(x.min()) and float(x.max()) <= 1, name
        tol = {"RGB": 0, "uint16 array": 0, "float array": 0, "RGBA": 0}.get(name, 0.2)
        grey = name in ("L", "I;16")
        want = base.mean(1, keepdim=True).expand_as(base) if grey else base
        assert float((x - want).abs().mean()) <= tol + 0.02, name
    torch.testing.assert_close(photos.preprocess(cases["L"], 32),
                               photos.preprocess(grey16, 32), atol=2 / 255, rtol=0)


def test_preprocess_transparency_over_white_and_centre_crop():
    clear = Image.new("RGBA", (30, 10), (0, 0, 0, 0))
    assert float(photos.preprocess(clear, 8).min()) == 1.0
    wide = Image.new("RGB", (300, 100), (255, 0, 0))
    wide.paste((0, 0, 255), (100, 0, 200, 100))  # the centre square is blue
    x = photos.preprocess(wide, 16)
    assert float(x[0, 2].min()) > 0.99 and float(x[0, 0].max()) < 0.01


def test_preprocess_honours_exif_orientation():
    im = Image.new("RGB", (40, 20), (0, 0, 0))
    im.paste((255, 255, 255), (0, 0, 20, 20))  # white on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view"
    rotated = Image.open(io.BytesIO(_jpeg(im, exif=exif.tobytes())))
    want = im.transpose(Image.Transpose.ROTATE_270)  # white on top
    assert rotated.size == (40, 20)
    x = photos.preprocess(rotated, 20)[0, 0]
    assert float(x[:8].mean()) > 0.9 and float(x[12:].mean()) < 0.1
    torch.testing.assert_close(x, photos.preprocess(want, 20)[0, 0], atol=0.06,
                               rtol=0)


def test_preprocess_refuses_what_is_not_an_image():
    with pytest.raises(Exception, match="cannot identify image"):
        photos.preprocess(b"not an image at all")
    with pytest.raises(TypeError, match="image must be"):
        photos.preprocess(42)
    with pytest.raises(ValueError, match="name must be one of"):
        photos.load("camera")  # fetched at run time by skimage: not bundled


# ------------------------------------------------------- saliency vs Captum


def call(module, name, model, x, target, **extra):
    kwargs = {**KWARGS.get(name, {}), **extra}
    if name == "smoothgrad":
        kwargs["generator"] = torch.Generator().manual_seed(2)
    return getattr(module, name)(model, x, target, **kwargs)


PARITY = [m for m in sal.METHODS if m != "gradient_shap"]


@pytest.mark.parametrize("method", PARITY)
def test_every_method_matches_captum_on_a_photo(model, cat, method):
    x = cat if method == "occlusion" else torch.cat([cat, photos.load("coffee")])
    target = TIGER_CAT if method == "occlusion" else [TIGER_CAT, ESPRESSO]
    ours = call(sal, method, model, x, target)
    theirs = call(ref, method, model, x, target)
    scale = float(theirs.abs().max())
    assert scale > 1e-6
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=2e-5 * scale)


def test_grad_cam_at_another_layer_matches_captum(model, cat):
    for layer in ("_blocks.15", "_blocks.10._relu1"):
        ours = sal.grad_cam(model, cat, TIGER_CAT, layer=layer, upsample=False)
        theirs = ref.grad_cam(model, cat, TIGER_CAT, layer=layer, upsample=False)
        torch.testing.assert_close(ours, theirs, rtol=1e-4,
                                   atol=1e-5 * float(theirs.abs().max()))


def test_guided_backprop_needs_relu_modules_not_relu6(model, cat):
    plain = sal.gradient(model, cat, TIGER_CAT)
    guided = sal.guided_backprop(model, cat, TIGER_CAT)
    rel = float((guided - plain).abs().max() / plain.abs().max())
    print(f"max |guided − gradient| / max |gradient| = {rel:.3f}")
    assert rel > 0.5
    assert not torch.allclose(guided, sal.deconvnet(model, cat, TIGER_CAT))
    # The same network with nn.ReLU6 modules: Captum hooks only nn.ReLU and
    # silently returns the plain gradient.
    relu6 = copy.deepcopy(model)
    for name, module in list(relu6.named_modules()):
        if isinstance(module, nn.ReLU):
            parent, _, leaf = name.rpartition(".")
            setattr(relu6.get_submodule(parent), leaf, nn.ReLU6())
    torch.testing.assert_close(relu6(cat), model(cat))
    captum_relu6 = ref.guided_backprop(relu6, cat, TIGER_CAT)
    assert torch.equal(captum_relu6, ref.gradient(relu6, cat, TIGER_CAT))


def test_no_side_effects_after_success_and_failure(model, cat):
    x = cat.clone()
    model.train()  # the methods run in eval mode and restore every flag
    try:
        before = snapshot(model, x)
        for method in PARITY:
            call(sal, method, model, x, TIGER_CAT)
            assert_unchanged(before, model, x, method)
            with pytest.raises(ValueError, match="target must be a class index"):
                call(sal, method, model, x, 1000)
            assert_unchanged(before, model, x, method)
    finally:
        model.eval()


# ------------------------------------------------- Grad-CAM on two objects


# Measured: mass of the Grad-CAM map on the cat (left) half.
LEFT_MASS = {TIGER_CAT: 0.934, EGYPTIAN_CAT: 0.937, TABBY: 0.933, ESPRESSO: 0.121}


def test_grad_cam_separates_the_cat_from_the_coffee(model):
    x = photos.load("cat_and_coffee")
    for target, want in LEFT_MASS.items():
        cam = sal.grad_cam(model, x, target)
        left = float(cam[..., : x.shape[-1] // 2].sum() / cam.sum())
        print(f"{pm.categories()[target]}: {left:.3f} on the cat half, "
              f"{1 - left:.3f} on the coffee half")
        assert left == pytest.approx(want, abs=0.01)
    assert min(LEFT_MASS[t] for t in (TIGER_CAT, EGYPTIAN_CAT, TABBY)) > 0.9
    assert 1 - LEFT_MASS[ESPRESSO] > 0.85


# ------------------------------------------------------------ colour plots


def test_photo_maps_aggregate_mean_abs_over_channels(model, cat):
    from course_utils.plotting import rgb

    attr = torch.tensor([[[[1.0, -2.0]], [[-3.0, 0.0]], [[2.0, 2.0]]]])  # (1, 3, 1, 2)
    np.testing.assert_allclose(rgb.channel_map(attr), [[2.0, 4 / 3]])
    with pytest.raises(ValueError, match="one map"):
        rgb.channel_map(torch.zeros(2, 3, 4, 4))
    grad = sal.gradient(model, cat, TIGER_CAT)
    cam = sal.grad_cam(model, cat, TIGER_CAT, upsample=False)  # 7×7: upsampled
    spec = rgb.photo_maps(cat, {"gradient": grad, "Grad-CAM": cam}).to_dict()
    cells = [v for v in spec["data"]["values"] if "url" in v]
    assert [v["col"] for v in cells] == ["photo", "gradient", "Grad-CAM"]
    assert all(v["url"].startswith("data:image/png;base64,") for v in cells)
    # a map drawn ahead (`picture`) gives the same chart
    ahead = rgb.photo_maps(cat, {"gradient": rgb.picture(cat, grad),
                                 "Grad-CAM": rgb.picture(cat, cam)}).to_dict()
    assert ahead == spec
    other = rgb.photo_maps(cat, {"gradient": rgb.picture(cat, grad, opacity=0.3)})
    assert other.to_dict()["data"]["values"][1]["url"] != cells[1]["url"]
    grid = rgb.photo_maps(cat, {"a": {"g": grad}, "b": {"g": grad}}, overlay=False)
    rows = {v.get("row") for v in grid.to_dict()["data"]["values"] if "url" in v}
    assert rows == {"a", "b"}
    # the overlay: grey photo where the map is 0, the top colour at vmax
    pixel = rgb.photo_overlay_rgb(np.ones((1, 2, 3)), np.array([[0.0, 1.0]]), 1.0,
                                  opacity=1.0)
    assert pixel[0, 0].tolist() == [round(255 * rgb.PHOTO_BRIGHTNESS)] * 3
    assert pixel[0, 1].tolist() == rgb.colorize(np.ones((1, 1)), 1.0, False)[0, 0].tolist()
