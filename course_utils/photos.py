"""Photos for the ImageNet model: the bundled ones, and any image turned into its input.

`preprocess(image)` takes a PIL image, a file path, raw file bytes or an
array, honours the EXIF orientation, handles every PIL mode (greyscale, RGBA
and palette with transparency over white, CMYK, 16-bit), crops the centre
square of the short side and resizes it to 224 × 224 (bicubic), giving a
(1, 3, 224, 224) float tensor in [0, 1], the input `photo_model` expects.

Bundled photos (`load(name)`; nothing is fetched at run time, all of them ship
inside the scikit-image and scikit-learn wheels):

* "chelsea" (a cat; Stefan van der Walt, CC0), "coffee" (Rachel Michetti for
  Pikolo Espresso Bar, CC0) — `skimage.data`;
* "rocket" (Falcon 9 launching DSCOVR; SpaceX, public domain) and
  "astronaut" (Eileen Collins; NASA, public domain) — `skimage.data`;
* "motorcycle" (the left image of `skimage.data.stereo_motorcycle`, from the
  Middlebury 2014 stereo benchmark, Scharstein et al., GCPR 2014);
* "china" (danielbuechele on Flickr, photo 6061409035) and "flower"
  (vultilion on Flickr, photo 6056698931; scikit-learn's README names
  danielbuechele for both, its link is vultilion's) — scikit-learn's sample
  images, both CC BY 2.0 (https://creativecommons.org/licenses/by/2.0/);
* "cat_and_coffee": chelsea (left half) and coffee (right half) side by side,
  each the centre 1:2 portrait strip of its photo, for class-discriminative
  maps (Grad-CAM) on a photo with two objects.

Other `skimage.data` images are downloaded on first use and fail offline: do
not add them.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

SIZE = 224
PHOTOS = ("chelsea", "coffee", "rocket", "astronaut", "motorcycle", "china", "flower",
          "cat_and_coffee")
SOURCES = {
    "chelsea": "skimage.data.chelsea — Stefan van der Walt, CC0",
    "coffee": "skimage.data.coffee — Rachel Michetti (Pikolo Espresso Bar), CC0",
    "rocket": "skimage.data.rocket — SpaceX, public domain",
    "astronaut": "skimage.data.astronaut — NASA, public domain",
    "motorcycle": "skimage.data.stereo_motorcycle (left) — Middlebury 2014 stereo",
    "china": "sklearn china.jpg — danielbuechele (Flickr), CC BY 2.0",
    "flower": "sklearn flower.jpg — vultilion (Flickr), CC BY 2.0",
    "cat_and_coffee": "chelsea | coffee, centre strips side by side (CC0)",
}
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _open(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, (bytes, bytearray, memoryview)):
        return Image.open(io.BytesIO(bytes(image)))
    if isinstance(image, (str, os.PathLike)):
        return Image.open(image)
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
        if image.ndim == 4 and image.shape[0] == 1:
            image = image[0]
        if image.ndim == 3 and image.shape[0] in (1, 3):
            image = np.moveaxis(image, 0, -1)
    if isinstance(image, np.ndarray):
        return Image.fromarray(_to_uint8(image))
    raise TypeError(
        "image must be a PIL image, a path, file bytes, a numpy array or a tensor, "
        f"got {type(image).__name__}"
    )


def _to_uint8(a: np.ndarray) -> np.ndarray:
    """An (H, W) or (H, W, 1|3|4) array as uint8: floats are read as [0, 1]."""
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
        raise ValueError(
            f"image array must have shape (H, W) or (H, W, 3|4), got {a.shape}"
        )
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.uint16:
        return (a // 257).astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise ValueError("image array must be finite")
        return np.rint(np.clip(a, 0.0, 1.0) * 255).astype(np.uint8)
    raise TypeError(f"image array must be uint8, uint16 or float, got {a.dtype}")


def to_rgb(image) -> Image.Image:
    """Any image as an upright 8-bit RGB PIL image (EXIF orientation applied)."""
    im = _open(image)
    im = ImageOps.exif_transpose(im)
    if im.mode in _SIXTEEN_BIT or im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        a = a / 65535.0 if im.mode != "F" else a
        im = Image.fromarray(np.rint(np.clip(a, 0, 1) * 255).astype(np.uint8), "L")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im)
    return im.convert("RGB")


def center_square(im: Image.Image) -> Image.Image:
    """The centred square whose side is the image's short side."""
    w, h = im.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return im.crop((left, top, left + s, top + s))


def to_tensor(im: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a (1, 3, H, W) float32 tensor in [0, 1]."""
    a = np.array(im.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(a).permute(2, 0, 1)[None].contiguous()


def preprocess(image, size: int = SIZE) -> torch.Tensor:
    """Centre square of the short side, bicubic resize: (1, 3, size, size) in [0, 1].

    Args:
        image: a PIL image, a path, a file's bytes, an (H, W) / (H, W, 3|4)
            array (uint8, uint16 or float in [0, 1]) or a (3, H, W) tensor.
        size: output side in pixels (default 224, what the model was trained on).
    """
    im = center_square(to_rgb(image))
    return to_tensor(im.resize((size, size), Image.Resampling.BICUBIC))


def _strip(im: Image.Image, size: int) -> Image.Image:
    """The centred portrait strip (height = 2 × width) resized to size × size/2."""
    w, h = im.size
    s = min(h, 2 * w)
    left, top = (w - s // 2) // 2, (h - s) // 2
    strip = im.crop((left, top, left + s // 2, top + s))
    return strip.resize((size // 2, size), Image.Resampling.BICUBIC)


def _raw(name: str) -> np.ndarray:
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{name}.jpg")
    import skimage.data

    if name == "motorcycle":
        return skimage.data.stereo_motorcycle()[0]
    return getattr(skimage.data, name)()


@lru_cache(maxsize=32)
def _load(name: str, size: int) -> torch.Tensor:
    if name == "cat_and_coffee":
        canvas = Image.new("RGB", (size, size))
        canvas.paste(_strip(Image.fromarray(_raw("chelsea")), size), (0, 0))
        canvas.paste(_strip(Image.fromarray(_raw("coffee")), size), (size // 2, 0))
        return to_tensor(canvas)
    return preprocess(_raw(name), size)


def load(name: str, size: int = SIZE) -> torch.Tensor:
    """A bundled photo as the model's input, (1, 3, size, size) in [0, 1] (a copy).

    Args:
        name: one of `PHOTOS`.
        size: side in pixels (default 224).
    """
    if name not in PHOTOS:
        raise ValueError(f"name must be one of {list(PHOTOS)}, got {name!r}")
    return _load(name, int(size)).clone()


def load_all(size: int = SIZE) -> dict[str, torch.Tensor]:
    """{name: (1, 3, size, size) photo} for every name in `PHOTOS`."""
    return {name: load(name, size) for name in PHOTOS}


# ------------------------------------------------------------ explain a photo

MAX_BYTES = 50 * 2**20  # 50 MiB: a larger upload is refused before it is decoded
MAX_PIXELS = 64_000_000  # 8000 × 8000: below PIL's own bomb limit (≈ 89 M pixels)
ACCEPTED = ("a JPEG, PNG, GIF, BMP, TIFF or WebP file (as a path or its bytes), "
            "a PIL image, or an (H, W) / (H, W, 3|4) array")
FAST_METHODS = ("gradient", "grad_cam")
SLOW_METHODS = ("integrated_gradients", "smoothgrad", "guided_backprop",
                "guided_grad_cam")
METHOD_TITLES = {
    "gradient": "gradient", "grad_cam": "Grad-CAM",
    "integrated_gradients": "integrated gradients", "smoothgrad": "SmoothGrad",
    "guided_backprop": "guided backprop", "guided_grad_cam": "guided Grad-CAM",
}


def _refuse(name: str, what: str, accepted: str = ACCEPTED) -> ValueError:
    return ValueError(f"{name} must be {accepted}; got {what}")


def read_image(image, name: str = "image", accepted: str = ACCEPTED) -> Image.Image:
    """Open and fully decode an image, refusing what is not one, truncated or too big.

    Args:
        image: a path, a file's bytes, a PIL image or an array (see `ACCEPTED`).
        name, accepted: the argument's name and what it accepts, for error
            messages (a widget says "an image file" rather than "a path").
    Returns:
        The decoded PIL image (mode and EXIF as in the file; `to_rgb` converts).
    Raises:
        ValueError: the bytes are empty, not an image PIL can read, truncated,
            over `MAX_BYTES`, or the image has more than `MAX_PIXELS` pixels
            (checked from the header, before decoding: a decompression bomb
            is never decoded).
        TypeError: `image` is none of the accepted types.
    """

    def refuse(what: str) -> ValueError:
        return _refuse(name, what, accepted)

    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if not os.path.isfile(path):
            raise refuse(f"{path!r}, which is not a file")
        size = os.path.getsize(path)
        if size > MAX_BYTES:
            raise refuse(f"a file of {size / 2**20:.0f} MiB "
                                f"(at most {MAX_BYTES // 2**20} MiB)")
        with open(path, "rb") as f:
            image = f.read()
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        if not data:
            raise refuse("an empty file (0 bytes)")
        if len(data) > MAX_BYTES:
            raise refuse(f"{len(data) / 2**20:.0f} MiB of data "
                                f"(at most {MAX_BYTES // 2**20} MiB)")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as err:
            raise refuse(f"an image too large to decode ({err})") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            raise refuse(f"{len(data):,} bytes that are not an image "
                                f"(starting {data[:8]!r})") from None
    else:
        im = _open(image)  # a PIL image or an array; TypeError for the rest
    w, h = im.size
    if w * h > MAX_PIXELS:
        raise refuse(f"an image of {w} × {h} = {w * h:,} pixels "
                            f"(at most {MAX_PIXELS:,})")
    if w == 0 or h == 0:
        raise refuse(f"an image of {w} × {h} pixels")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im.load()
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise refuse(f"a {im.format or 'image'} file that is truncated or "
                            f"corrupt ({err})") from None
    return im


@dataclass
class PhotoExplanation:
    """What `explain` returns: the model's input, its top-5 and the maps.

    Attributes:
        x: (1, 3, 224, 224) input in [0, 1] (the centre square of the photo).
        size: (width, height) of the photo before cropping (EXIF applied).
        top5: [(class index, class name, probability)], most probable first.
        target: the class explained; target_name: its name.
        maps: {method name: (1, C, 224, 224) attribution} (Grad-CAM C = 1).
    """

    x: torch.Tensor
    size: tuple[int, int]
    top5: list[tuple[int, str, float]]
    target: int
    target_name: str
    maps: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        """The top-5 class names."""
        return [name for _, name, _ in self.top5]

    @property
    def probabilities(self) -> list[float]:
        """The top-5 softmax probabilities."""
        return [p for _, _, p in self.top5]

    def chart(self, size: int = 168):
        """The photo and its maps side by side (`plotting.rgb.photo_maps`)."""
        from .plotting.rgb import AGGREGATION, photo_maps

        return photo_maps(
            self.x, {METHOD_TITLES.get(k, k): v for k, v in self.maps.items()},
            size=size, title=f"explaining '{self.target_name}': {AGGREGATION}",
        )


def class_labels(names: list[str]) -> list[str]:
    """One unique label per class: its name, or "name (index)" where names repeat.

    (ImageNet has two "crane"s, a bird and a machine, and two "maillot"s.)
    """
    counts: dict[str, int] = {}
    for n in names:
        counts[n.lower()] = counts.get(n.lower(), 0) + 1
    return [n if counts[n.lower()] == 1 else f"{n} ({i})" for i, n in enumerate(names)]


def find_class(target, names: list[str], name: str = "target") -> int:
    """A class index from an int or a name (case-insensitive, or "name (index)")."""
    n = len(names)
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        if not 0 <= int(target) < n:
            raise ValueError(f"{name} must be a class index in 0..{n - 1} or a class "
                             f"name, got {int(target)}")
        return int(target)
    if not isinstance(target, str):
        raise TypeError(f"{name} must be None, a class index or a class name, "
                        f"got {type(target).__name__}")
    wanted = " ".join(target.split()).lower()
    labels = class_labels(names)
    hits = [i for i, (c, label) in enumerate(zip(names, labels, strict=True))
            if wanted in (c.lower(), label.lower())]
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise ValueError(f"{name} {target!r} names {len(hits)} classes: give one of "
                         + ", ".join(repr(labels[i]) for i in hits))
    close = [c for c in names if wanted and wanted in c.lower()][:5]
    hint = f"; did you mean one of {close}?" if close else ""
    raise ValueError(f"{name} must be an ImageNet class name or index, got "
                     f"{target!r}{hint}")


def method_kwargs(name: str, n_steps: int, n_samples: int, seed: int) -> dict:
    """The settings `explain` passes to each method (IG: Clenshaw–Curtis points,
    as `widgets.PhotoExplainer`, whose grids of 2^k + 1 points nest)."""
    if name == "integrated_gradients":
        return {"n_steps": n_steps, "method": "clenshaw_curtis"}
    if name == "smoothgrad":
        return {"n_samples": n_samples, "noise_level": 0.15,
                "batch_size": min(n_samples, 16),
                "generator": torch.Generator().manual_seed(seed)}
    return {}


def explain(image, target=None, methods=FAST_METHODS + SLOW_METHODS, model=None, *,
            n_steps: int = 33, n_samples: int = 8, seed: int = 0) -> PhotoExplanation:
    """The ImageNet model's top-5 for any photo and the saliency maps of one class.

    Args:
        image: a path, a file's bytes, a PIL image or an array (`ACCEPTED`);
            any size and orientation (EXIF honoured; the centre square is used).
        target: None (default: the top-1 class), a class index, or a class
            name matched case-insensitively ("tabby"; "crane (134)" where a
            name repeats).
        methods: names from `saliency.METHODS`, computed in order.
        model: the photo model; None loads `efficientnet_lite0`.
        n_steps: IG's Clenshaw–Curtis points (default 33; its completeness
            error on the bundled photos is of the size of 33 Gauss–Legendre
            points', notebook 11 section 2). n_samples: SmoothGrad's noisy
            copies (σ = 0.15, noise drawn from a generator seeded by `seed`).
    Returns:
        A `PhotoExplanation` (`.top5`, `.target`, `.maps`, `.chart()`).
    Raises:
        ValueError: see `read_image`; an unknown class or method name.
    """
    from . import models
    from . import photo_model as pm
    from . import saliency as sal

    if isinstance(methods, str):
        methods = (methods,)
    unknown = [m for m in methods if m not in sal.METHODS]
    if unknown:
        raise ValueError(f"methods must be names from {list(sal.METHODS)}, "
                         f"got unknown {unknown}")
    im = read_image(image)
    rgb = to_rgb(im)
    x = preprocess(rgb)
    if model is None:
        model = models.load_pretrained(pm.NAME)
    names = pm.categories()
    top5 = pm.top_k(model, x, k=5)
    t = top5[0][0] if target is None else find_class(target, names)
    maps = {m: sal.METHODS[m](model, x, t, **method_kwargs(m, n_steps, n_samples, seed))
            for m in methods}
    return PhotoExplanation(x, rgb.size, top5, t, names[t], maps)
