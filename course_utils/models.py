"""Small CNNs with named layers, their training loop and shipped checkpoints.

Every model takes raw [0, 1] intensities and normalises inside: its first
module `normalize` holds the train split's mean and std as buffers. Every
ReLU is its own `nn.ReLU` module (never in-place, never `F.relu`) so guided
backprop and deconvnet can hook them, and the blocks have names so the
sanity checks can walk them top down.

* `SmallCNN`: normalize, conv1, relu1, pool1, conv2, relu2, pool2, fc1,
  relu3, fc2 (about 55k parameters).
* `ResNetSmall`: normalize, stem, layer1, layer2, layer3, pool, fc
  (BatchNorm, residual blocks).

`load_pretrained(name)` loads the checkpoint that `course train NAME` wrote to
`course_utils/weights/NAME.pt`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from . import data
from .modes import eval_mode

WEIGHTS_DIR = Path(__file__).parent / "weights"


class Normalize(nn.Module):
    """(x − mean) / std with the train split's statistics held as buffers."""

    def __init__(self, mean: float | None = None, std: float | None = None):
        super().__init__()
        mean = data.train_mean() if mean is None else mean
        std = data.train_std() if std is None else std
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class SmallCNN(nn.Module):
    """Two conv blocks and two linear layers; (N, 1, 28, 28) → (N, 10) logits."""

    def __init__(self, n_classes: int = 10, channels: tuple[int, int] = (16, 32),
                 hidden: int = 32):
        super().__init__()
        c1, c2 = channels
        self.normalize = Normalize()
        self.conv1 = nn.Conv2d(1, c1, kernel_size=3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(c2 * 7 * 7, hidden)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = torch.flatten(x, 1)
        return self.fc2(self.relu3(self.fc1(x)))


class BasicBlock(nn.Module):
    """conv-bn-relu-conv-bn plus a shortcut, then relu2 (two ReLU modules)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                nn.BatchNorm2d(c_out),
            )
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNetSmall(nn.Module):
    """A small ResNet-style net; (N, 1, 28, 28) → (N, 10) logits."""

    def __init__(self, n_classes: int = 10, widths: tuple[int, int, int] = (16, 32, 48)):
        super().__init__()
        w1, w2, w3 = widths
        self.normalize = Normalize()
        self.stem = nn.Sequential(
            nn.Conv2d(1, w1, 3, padding=1, bias=False), nn.BatchNorm2d(w1), nn.ReLU()
        )
        self.layer1 = BasicBlock(w1, w1)
        self.layer2 = BasicBlock(w1, w2, stride=2)
        self.layer3 = BasicBlock(w2, w3, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w3, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


class LinearPlusProduct(nn.Module):
    """A table model with one interaction, for ps5's visible tests.

    logit_k(x) = w_k · x + c_k · ∏_{j ∈ product} x_j for x of shape (N, D) →
    (N, K); by default the product is x₀ · x₁. With a product of three or more
    features the Shapley values differ from the Banzhaf values (which weight
    every coalition alike); with two they coincide. Its Shapley values have a
    closed form, which the grader keeps in `grading.closed_form` (the answer is
    not written here: this module ships to students). It lives in `models`,
    not in a test cell, so a grading case that holds one can be loaded in the
    sandbox.

    Args:
        w: (K, D) linear weights.
        c: (K,) product weights.
        product: the distinct features of the product term, at least two.
    """

    product: tuple[int, ...] = (0, 1)  # the default of models pickled before it

    def __init__(self, w: torch.Tensor, c: torch.Tensor, product=(0, 1)):
        super().__init__()
        product = tuple(int(j) for j in product)
        if len(set(product)) != len(product) or len(product) < 2 or not all(
            0 <= j < w.shape[1] for j in product
        ):
            raise ValueError(
                f"product must name at least two distinct features in 0 … "
                f"{w.shape[1] - 1}, got {product}"
            )
        self.w, self.c = nn.Parameter(w), nn.Parameter(c)
        self.product = product

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w.T + self.c * x[:, list(self.product)].prod(1, keepdim=True)


@dataclass(frozen=True)
class Recipe:
    """How a shipped checkpoint is built: architecture and training settings."""

    build: Callable[[], nn.Module]
    epochs: int
    lr: float
    seed: int
    augment: int
    description: str


RECIPES: dict[str, Recipe] = {
    "small_cnn": Recipe(SmallCNN, epochs=10, lr=3e-3, seed=0, augment=2,
                        description="SmallCNN on the 4,000 training digits"),
    "resnet_small": Recipe(ResNetSmall, epochs=10, lr=3e-3, seed=0, augment=2,
                           description="ResNetSmall on the 4,000 training digits"),
}


@dataclass(frozen=True)
class Checkpoint:
    """One shipped checkpoint: its architecture and the recipe that trains it.

    Attributes:
        build: the untrained architecture (a class or zero-argument callable).
        trainer: dotted path "package.module:function" of the training
            function fn(progress=True, **overrides) -> (model, report with
            "seconds" and "test_accuracy"); imported only when training is
            asked for (`trainer_for`), so loading a checkpoint never imports the
            module that trains it (sanity, shortcut, plotting, ...).
        defaults: keyword arguments bound first, e.g. the recipe name or a seed;
            overrides given at call time win.
    """

    build: Callable[[], nn.Module]
    trainer: str
    defaults: tuple[tuple[str, object], ...] = ()


# Every checkpoint `load_pretrained` loads and `course train NAME` rebuilds: the
# one registry. Names must match sanity.RANDOM_LABELS_NAME / RESEEDED_NAME and
# shortcut.NAME (a test checks it).
CHECKPOINTS: dict[str, Checkpoint] = {
    "small_cnn": Checkpoint(
        SmallCNN, "course_utils.models:build_and_train", (("name", "small_cnn"),)
    ),
    "resnet_small": Checkpoint(
        ResNetSmall, "course_utils.models:build_and_train", (("name", "resnet_small"),)
    ),
    # Adebayo et al.'s data randomization test: SmallCNN memorising permuted labels.
    "small_cnn_random_labels": Checkpoint(
        SmallCNN, "course_utils.sanity.labels:train_random_labels_checkpoint"
    ),
    # The small_cnn recipe with seed 1 (a different initialisation and order): the
    # label test's control.
    "small_cnn_seed1": Checkpoint(
        SmallCNN,
        "course_utils.models:build_and_train",
        (("name", "small_cnn"), ("seed", 1)),
    ),
    # The model that learned the tag (course_utils.shortcut).
    "small_cnn_shortcut": Checkpoint(
        SmallCNN, "course_utils.shortcut:train_shortcut_model"
    ),
}

# Checkpoint names beyond RECIPES: name -> builder of the untrained net (read-only
# view kept for older code; the registry is CHECKPOINTS).
EXTRA_MODELS: dict[str, Callable[[], nn.Module]] = {
    name: c.build for name, c in CHECKPOINTS.items() if name not in RECIPES
}


def trainer_for(name: str) -> Callable[..., tuple[nn.Module, dict]]:
    """The training function of checkpoint `name`, imported on demand.

    Returns fn(progress=True, **overrides) -> (model, report); the registry's
    `defaults` are bound, overrides (e.g. epochs, seed) replace them.
    """
    import importlib

    _check_name(name)
    entry = CHECKPOINTS[name]
    module, _, attr = entry.trainer.partition(":")
    fn = getattr(importlib.import_module(module), attr)
    return partial(fn, **dict(entry.defaults)) if entry.defaults else fn


class _Trainers(Mapping):
    """`TRAINERS[name]`: `trainer_for(name)`; membership and iteration read the
    registry without importing any trainer's module."""

    def __getitem__(self, name: str):
        if name not in CHECKPOINTS:
            raise KeyError(name)
        return trainer_for(name)

    def __contains__(self, name: object) -> bool:
        return name in CHECKPOINTS

    def __iter__(self):
        return iter(CHECKPOINTS)

    def __len__(self) -> int:
        return len(CHECKPOINTS)


# Every checkpoint `course train NAME` can rebuild: name -> fn(progress, **overrides)
# returning (model, report with "seconds" and "test_accuracy"). Resolved lazily.
TRAINERS: Mapping[str, Callable[..., tuple[nn.Module, dict]]] = _Trainers()


def known_models() -> list[str]:
    """Names `load_pretrained` accepts."""
    return sorted(CHECKPOINTS)


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by its own random (dy, dx) in −max_shift … max_shift.

    Pixels shifted in from outside are black (0). x: (N, C, H, W) → same shape.
    """
    n, _, h, w = x.shape
    padded = nn.functional.pad(x, (max_shift,) * 4)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator)
    rows = torch.arange(h)[None, :] + dy[:, None]  # (N, H)
    cols = torch.arange(w)[None, :] + dx[:, None]  # (N, W)
    batch = torch.arange(n)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def train(
    model: nn.Module,
    train_data: data.Split | tuple[torch.Tensor, torch.Tensor] | None = None,
    epochs: int = 8,
    lr: float = 2e-3,
    seed: int = 0,
    batch_size: int = 64,
    augment: int = 0,
    progress: bool = True,
    *,
    schedule: str = "cosine",
    stop: Callable[[nn.Module, int], bool] | None = None,
    desc: str = "training",
) -> dict:
    """Train `model` in place with Adam and cross-entropy; deterministic per seed.

    The learning rate follows a cosine decay from `lr` to 0 over all steps
    (`schedule="cosine"`, default) or stays at `lr` (`schedule="constant"`).

    Args:
        model: any module mapping (N, 1, 28, 28) to (N, 10) logits.
        train_data: a `Split` or an (x, y) pair; default the train split.
        epochs: passes over the data (≥ 1).
        lr: Adam learning rate (> 0).
        seed: seeds the shuffling and, when the model is freshly built after
            `torch.manual_seed(seed)`, nothing else: build the model under the
            same seed for bit-identical runs (as `build_and_train` does).
        batch_size: rows per optimiser step.
        augment: shift each training digit by up to this many pixels (0 = off).
        progress: show a tqdm bar (one tick per batch).
        schedule: "cosine" (default) or "constant" learning rate.
        stop: optional stop(model, epoch) -> bool called after each epoch
            (epoch counts from 1) with the model in eval mode; True ends
            training early (e.g. a train-accuracy threshold, as the label
            randomization test uses). Default None: all `epochs` run.
        desc: the progress bar's label.
    Returns:
        {"seconds": training time, "train_accuracy": on the last epoch's batches,
         "losses": mean loss per epoch (one entry per epoch run)}.
    """
    from tqdm.auto import tqdm

    x, y = _training_data(train_data, epochs, lr, schedule)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n_batches = (len(x) + batch_size - 1) // batch_size
    sched = (
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * n_batches)
        if schedule == "cosine"
        else None
    )
    losses = []
    start = time.perf_counter()
    model.train()
    bar = tqdm(total=epochs * n_batches, desc=desc, disable=not progress)
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(x), generator=gen)
        batches = [order[b * batch_size : (b + 1) * batch_size] for b in range(n_batches)]
        mean_loss, accuracy = _epoch(model, x, y, batches, opt, sched, augment, gen, bar)
        losses.append(mean_loss)
        bar.set_postfix(loss=f"{mean_loss:.3f}", acc=f"{accuracy:.3f}")
        if stop is not None:
            model.eval()
            done = stop(model, epoch)
            model.train()
            if done:
                break
    bar.close()
    model.eval()
    return {
        "seconds": time.perf_counter() - start,
        "train_accuracy": accuracy,
        "losses": losses,
    }


def _training_data(train_data, epochs, lr, schedule) -> tuple[torch.Tensor, torch.Tensor]:
    """`train`'s arguments checked, and its (x, y) (default: the train split)."""
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an int ≥ 1, got {epochs!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
    if train_data is None:
        train_data = data.load_split("train")
    x, y = (train_data.x, train_data.y) if isinstance(train_data, data.Split) else train_data
    if len(x) != len(y):
        raise ValueError(f"train_data has {len(x)} images but {len(y)} labels")
    return x, y


def _epoch(model, x, y, batches, opt, sched, augment, gen, bar) -> tuple[float, float]:
    """One pass of Adam steps over `batches` (row indices): (mean loss, accuracy)."""
    loss_fn = nn.CrossEntropyLoss()
    total, correct, seen = 0.0, 0, 0
    for rows in batches:
        xb = x[rows] if not augment else random_shift(x[rows], augment, gen)
        logits = model(xb)
        loss = loss_fn(logits, y[rows])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        total += loss.item() * len(rows)
        correct += int((logits.argmax(1) == y[rows]).sum())
        seen += len(rows)
        bar.update(1)
    return total / seen, correct / seen


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits for `x` (N, C, H, W), in chunks, without touching the model's mode."""
    outs = [model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return torch.cat(outs)


def evaluate(model: nn.Module, split: data.Split | str = "test") -> float:
    """Accuracy of `model` (in eval mode) on a split; restores its mode after."""
    if isinstance(split, str):
        split = data.load_split(split)
    with eval_mode(model):
        pred = predict(model, split.x).argmax(1)
    return float((pred == split.y).float().mean())


def confusion_matrix(model: nn.Module, split: data.Split | str = "test") -> torch.Tensor:
    """(10, 10) counts: row = true class, column = predicted class."""
    if isinstance(split, str):
        split = data.load_split(split)
    pred = predict(model.eval(), split.x).argmax(1)
    cm = torch.zeros(10, 10, dtype=torch.long)
    cm.index_put_((split.y, pred), torch.ones_like(pred), accumulate=True)
    return cm


def build(name: str) -> nn.Module:
    """A freshly initialised (untrained) model of a known architecture name."""
    _check_name(name)
    return CHECKPOINTS[name].build()


def recipe_settings(name: str, overrides: Mapping) -> dict:
    """A recipe's epochs, lr, seed and augment, with `overrides` replacing them.

    Raises ValueError for an unknown recipe name or override key.
    """
    if name not in RECIPES:
        raise ValueError(f"name must be one of {sorted(RECIPES)}, got {name!r}")
    unknown = set(overrides) - {"epochs", "lr", "seed", "augment"}
    if unknown:
        raise ValueError(
            f"overrides must be among epochs, lr, seed, augment; got {sorted(unknown)}"
        )
    recipe = RECIPES[name]
    settings = {"epochs": recipe.epochs, "lr": recipe.lr, "seed": recipe.seed,
                "augment": recipe.augment}
    settings.update(overrides)
    return settings


def build_and_train(name: str, progress: bool = True, **overrides) -> tuple[nn.Module, dict]:
    """Build and train a model by recipe name, deterministically for its seed.

    Args:
        name: a key of `RECIPES`.
        overrides: epochs, lr, seed or augment replacing the recipe's.
    Returns:
        (trained model in eval mode, train() report with "test_accuracy").
    """
    settings = recipe_settings(name, overrides)
    torch.manual_seed(settings["seed"])
    model = RECIPES[name].build()
    report = train(model, None, progress=progress, **settings)
    report["test_accuracy"] = evaluate(model)
    return model, report


def checkpoint_path(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}.pt"


def save_checkpoint(model: nn.Module, name: str, meta: dict | None = None) -> Path:
    """Write `model`'s state dict (and metadata) to weights/NAME.pt."""
    path = checkpoint_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "meta": meta or {}}, path)
    return path


def _check_name(name: str) -> None:
    if name not in CHECKPOINTS:
        raise ValueError(f"unknown model {name!r}; known models: {known_models()}")


# Pretrained nets whose weights ship in a package, not trained by `course train`:
# name -> "module:function" returning the eval-mode model (imported on demand).
PACKAGED: dict[str, str] = {"efficientnet_lite0": "course_utils.photo_model:load"}


def load_pretrained(name: str = "small_cnn") -> nn.Module:
    """Load a shipped checkpoint as an eval-mode model.

    Args:
        name: one of `known_models()` ("small_cnn", "resnet_small", …) or of
            `PACKAGED` ("efficientnet_lite0", the ImageNet photo model).
    Raises:
        ValueError: unknown name (the message lists the known ones).
        FileNotFoundError: checkpoint missing (the message gives the
            `course train NAME` command that rebuilds it).
    """
    if name in PACKAGED:
        import importlib

        module, _, attr = PACKAGED[name].partition(":")
        return getattr(importlib.import_module(module), attr)()
    _check_name(name)
    path = checkpoint_path(name)
    if not path.exists():
        raise FileNotFoundError(
            f"checkpoint {path} is missing; rebuild it with `course train {name}`"
        )
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = build(name)
    model.load_state_dict(ckpt["state_dict"])
    model.meta = ckpt.get("meta", {})
    return model.eval()
