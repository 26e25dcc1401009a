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
from functools import lru_cache

import numpy as np
import torch
from PIL import Image, ImageOps

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
