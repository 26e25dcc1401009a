"""A shortcut on purpose: digits with a tag, and a model that reads the tag.

The lecture's cautionary tale is a chest X-ray classifier that scored well by
reading the hospital's marker in the image corner rather than the lungs
(Zech et al., 2018, "Variable generalization performance of a deep learning
model to detect pneumonia in chest radiographs"). This module rebuilds that on
digits:

* `stamp_tag` puts a bright `TAG_SIZE`×`TAG_SIZE` square (the "tag") in a
  corner of every image it is given (always on a copy);
* `make_tagged` stamps it on a fraction `p_tagged` of one class's digits
  (`TAG_CLASS`) and a much smaller fraction `p_other` (default none) of every
  other class: exactly `round(p · n)` digits of each class, chosen with a seed;
* `train_shortcut_model` trains the course's `SmallCNN` on the tagged training
  digits with the same recipe as the clean `small_cnn`; the result ships as
  `weights/small_cnn_shortcut.pt` (`course train small_cnn_shortcut`);
* `shortcut_report` and `flip_rate` measure what the model actually learned:
  accuracy on tagged and untagged digits, and how often stamping the tag on
  other digits turns them into `TAG_CLASS`.

`models.CHECKPOINTS` declares the checkpoint (architecture and the dotted path
of `train_shortcut_model`); importing this module changes no registry.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from . import data, models
from .modes import eval_mode

NAME = "small_cnn_shortcut"
TAG_CLASS = 3
TAG_SIZE = 3
TAG_MARGIN = 1
TAG_CORNER = "top_left"
TAG_VALUE = 1.0
P_TAGGED = 0.9
P_OTHER = 0.0
TRAIN_SEED = 0
TEST_SEED = 1
CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")


@dataclass(frozen=True)
class TaggedSplit(data.Split):
    """A `data.Split` in which some digits carry the tag.

    Attributes:
        x, y, index: as in `data.Split` (x is a new tensor, tags stamped).
        tagged: (N,) bool, True where the tag was stamped.
        tag_class: the class most of whose digits are tagged.
    """

    tagged: torch.Tensor
    tag_class: int


def _check_tag_args(size: int, corner: str, margin: int, shape=data.IMAGE_SHAPE[1:]):
    h, w = shape
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be an int ≥ 1, got {size!r}")
    if corner not in CORNERS:
        raise ValueError(f"corner must be one of {CORNERS}, got {corner!r}")
    if not isinstance(margin, int) or margin < 0:
        raise ValueError(f"margin must be an int ≥ 0, got {margin!r}")
    if size + margin > min(h, w):
        raise ValueError(
            f"size + margin must be ≤ {min(h, w)} (the image side), got {size + margin}"
        )


def tag_mask(
    size: int = TAG_SIZE,
    corner: str = TAG_CORNER,
    margin: int = TAG_MARGIN,
    shape: tuple[int, int] = data.IMAGE_SHAPE[1:],
) -> torch.Tensor:
    """Where the tag goes: a (1, 1, H, W) bool mask, True on the tag's pixels.

    Args:
        size: side of the square tag in pixels (default 3).
        corner: "top_left" (default), "top_right", "bottom_left" or
            "bottom_right".
        margin: pixels between the tag and the image border (default 1).
        shape: (H, W) of the images (default 28×28).
    """
    _check_tag_args(size, corner, margin, shape)
    h, w = shape
    top = margin if corner.startswith("top") else h - margin - size
    left = margin if corner.endswith("left") else w - margin - size
    mask = torch.zeros(1, 1, h, w, dtype=torch.bool)
    mask[..., top : top + size, left : left + size] = True
    return mask


def stamp_tag(
    x: torch.Tensor,
    size: int = TAG_SIZE,
    corner: str = TAG_CORNER,
    margin: int = TAG_MARGIN,
    value: float = TAG_VALUE,
) -> torch.Tensor:
    """A copy of `x` with the tag stamped on every image: x̃ = x on ¬M, `value` on M.

    Args:
        x: (N, C, H, W) raw intensities in [0, 1]; never modified.
        size, corner, margin: where the tag goes (see `tag_mask`).
        value: the tag's intensity (default 1.0, the brightest ink).
    Returns:
        (N, C, H, W) new tensor.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"x must have shape (N, C, H, W), got {tuple(x.shape)}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"value must be in [0, 1], got {value!r}")
    mask = tag_mask(size, corner, margin, tuple(x.shape[-2:])).to(x.device)
    return torch.where(mask, torch.as_tensor(value, dtype=x.dtype, device=x.device), x)


def make_tagged(
    split: data.Split | str = "train",
    tag_class: int = TAG_CLASS,
    p_tagged: float = P_TAGGED,
    p_other: float = P_OTHER,
    seed: int | None = None,
    **tag,
) -> TaggedSplit:
    """Stamp the tag on `p_tagged` of one class's digits and `p_other` of the rest.

    In every class k exactly round(p_k · n_k) digits are tagged, chosen at
    random with `seed`, where p_k = `p_tagged` for k = `tag_class` and
    `p_other` otherwise. Labels are unchanged: the tag is a spurious
    feature that merely co-occurs with one class, like a hospital's marker
    on the X-rays of the hospital that sees the sickest patients.

    Args:
        split: a `data.Split`, or "train" / "test".
        tag_class: the class that mostly carries the tag (0–9; default 3).
        p_tagged: fraction of `tag_class` digits tagged, in [0, 1] (default 0.9).
        p_other: fraction of each other class tagged, in [0, 1] (default 0.0).
            Zero makes the shortcut as clean as possible; measured with the
            shipped recipe, tagging even one digit of every other class
            (p_other=0.0025, 9 digits) lets the model learn the exception and
            cuts the flip rate from 0.85 to 0.28.
        seed: picks which digits; default 0 for "train" or a `Split`, 1 for
            "test" (so the test digits' tags are drawn independently of the
            training ones).
        **tag: size, corner, margin, value for `stamp_tag`.
    Returns:
        A `TaggedSplit` with new x (the input split is not modified) and the
        (N,) bool `tagged`.
    """
    if isinstance(split, str):
        name = split
        split = data.load_split(split)
        default_seed = TEST_SEED if name == "test" else TRAIN_SEED
    elif isinstance(split, data.Split):
        default_seed = TRAIN_SEED
    else:
        raise TypeError(
            f"split must be a data.Split or one of {data.SPLITS}, "
            f"got {type(split).__name__}"
        )
    if not isinstance(tag_class, int) or not 0 <= tag_class < data.N_CLASSES:
        raise ValueError(
            f"tag_class must be an int in 0..{data.N_CLASSES - 1}, got {tag_class!r}"
        )
    for arg, p in (("p_tagged", p_tagged), ("p_other", p_other)):
        if isinstance(p, bool) or not isinstance(p, numbers.Real):
            raise TypeError(f"{arg} must be a number in [0, 1], got {type(p).__name__}")
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"{arg} must be in [0, 1], got {p!r}")
    gen = torch.Generator().manual_seed(default_seed if seed is None else seed)
    tagged = torch.zeros(len(split.y), dtype=torch.bool)
    for k in range(data.N_CLASSES):
        rows = torch.nonzero(split.y == k).flatten()
        p = p_tagged if k == tag_class else p_other
        n_tag = round(float(p) * len(rows))
        chosen = rows[torch.randperm(len(rows), generator=gen)[:n_tag]]
        tagged[chosen] = True
    x = split.x.clone()
    x[tagged] = stamp_tag(split.x[tagged], **tag)
    return TaggedSplit(x=x, y=split.y.clone(), index=split.index.clone(),
                       tagged=tagged, tag_class=tag_class)


def train_shortcut_model(progress: bool = True, **overrides) -> tuple[nn.Module, dict]:
    """Train `SmallCNN` on the tagged training digits (`make_tagged("train")`).

    Same architecture and recipe as the clean `small_cnn` (epochs, lr, seed,
    shift augmentation); only the data differ. Deterministic for a seed.

    Args:
        progress: show a progress bar.
        overrides: epochs, lr, seed, augment replacing `small_cnn`'s recipe.
    Returns:
        (model in eval mode, report) with "seconds", "train_accuracy",
        "losses", "test_accuracy" (on the tagged test digits) and
        "clean_test_accuracy".
    """
    settings = models.recipe_settings("small_cnn", overrides)
    torch.manual_seed(settings["seed"])
    model = models.SmallCNN()
    train_data = make_tagged("train")
    report = models.train(model, train_data, progress=progress, **settings)
    report["test_accuracy"] = models.evaluate(model, make_tagged("test"))
    report["clean_test_accuracy"] = models.evaluate(model, "test")
    report.update(tag_class=TAG_CLASS, p_tagged=P_TAGGED, p_other=P_OTHER,
                  tag_size=TAG_SIZE, tag_corner=TAG_CORNER)
    return model, report


def load_shortcut_model() -> nn.Module:
    """The shipped shortcut model (`load_pretrained("small_cnn_shortcut")`)."""
    return models.load_pretrained(NAME)


def predicted(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N,) predicted classes, in eval mode; the model's mode is restored."""
    with eval_mode(model):
        return models.predict(model, x).argmax(1)


def flip_rate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    tag_class: int = TAG_CLASS,
    **tag,
) -> float:
    """Fraction of other-class digits that stamping the tag turns into `tag_class`.

    Over the digits with y ≠ `tag_class`: mean of [argmax f(stamp_tag(x)) =
    tag_class]. A model that ignores the tag scores ≈ 0; one that reads only
    the tag scores 1.

    Args:
        model: maps (N, 1, 28, 28) to (N, 10) logits.
        x: (N, 1, 28, 28) untagged digits (not modified); y: (N,) labels.
        tag_class: the class the tag stands for.
        **tag: size, corner, margin, value for `stamp_tag`.
    """
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} images but y has {len(y)} labels")
    others = y != tag_class
    if not others.any():
        raise ValueError(f"y must hold digits other than tag_class={tag_class}")
    pred = predicted(model, stamp_tag(x[others], **tag))
    return float((pred == tag_class).float().mean())


def shortcut_report(
    model_or_models: nn.Module | dict[str, nn.Module],
    split: data.Split | str = "test",
    tag_class: int = TAG_CLASS,
) -> pd.DataFrame:
    """Accuracy on tagged and untagged digits, and the tag's flip rate.

    Rows (one per model, indexed by name):
        tagged_test: accuracy on `make_tagged(split)` (the data as the
            model was trained on: most `tag_class` digits tagged);
        clean_test: accuracy on the untagged split;
        class_tagged / class_untagged: accuracy on the `tag_class` digits
            with and without the tag;
        others_clean: accuracy on the other classes, untagged;
        flip_rate: `flip_rate` on the other classes.

    Args:
        model_or_models: one model, or {name: model}.
        split: a clean `data.Split` or "train" / "test" (default "test").
        tag_class: the tagged class.
    """
    if isinstance(model_or_models, nn.Module):
        model_or_models = {"model": model_or_models}
    if isinstance(split, str):
        clean = data.load_split(split)
    else:
        clean = split
    tagged = make_tagged(split, tag_class=tag_class)
    is_k = clean.y == tag_class
    x_k_tagged = stamp_tag(clean.x[is_k])
    rows = {}
    for name, model in model_or_models.items():
        pred_clean = predicted(model, clean.x)
        pred_tagged = predicted(model, tagged.x)
        pred_k_tagged = predicted(model, x_k_tagged)
        rows[name] = {
            "tagged_test": float((pred_tagged == tagged.y).float().mean()),
            "clean_test": float((pred_clean == clean.y).float().mean()),
            "class_tagged": float((pred_k_tagged == tag_class).float().mean()),
            "class_untagged": float((pred_clean[is_k] == tag_class).float().mean()),
            "others_clean": float((pred_clean[~is_k] == clean.y[~is_k]).float().mean()),
            "flip_rate": flip_rate(model, clean.x, clean.y, tag_class),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def tag_mass_table(
    models_: dict[str, nn.Module],
    x: torch.Tensor,
    methods: dict[str, Callable],
    target: int = TAG_CLASS,
    region: torch.Tensor | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Mean share of each map's absolute mass on the tag, per method and model.

    For every model and method, computes the map of `x` for `target` and
    averages `metrics.mass_share(attr, region)` over the images. By chance a
    map puts |region| / (H·W) of its mass there (9 / 784 ≈ 1.1 % for the
    default 3×3 tag).

    Args:
        models_: {name: model}, e.g. {"clean": ..., "shortcut": ...}.
        x: (N, 1, 28, 28) tagged digits (see `stamp_tag`); not modified.
        methods: {name: f(model, x, target)}, e.g. from `saliency.METHODS`.
        target: the class explained (default `TAG_CLASS`).
        region: bool mask (1, 1, H, W); default `tag_mask()`.
        progress: a tqdm bar, one tick per (model, method) map (default off).
    Returns:
        DataFrame indexed by method, one column per model.
    """
    from tqdm.auto import tqdm

    from . import metrics

    region = tag_mask() if region is None else region
    pairs = [(m, f) for m in models_ for f in methods]
    table: dict = {name: {} for name in models_}
    for model_name, method in tqdm(pairs, desc="maps", disable=not progress, leave=False):
        attr = methods[method](models_[model_name], x, target)
        table[model_name][method] = float(metrics.mass_share(attr, region).mean())
    out = pd.DataFrame(table)
    out.index.name = "method"
    return out

