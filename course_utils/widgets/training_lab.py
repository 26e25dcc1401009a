"""The lab's live loop: train SmallCNN from scratch and watch its saliency maps form.

* `LiveTrainer`: a SmallCNN, its Adam optimiser and a seeded stream of
  training batches; `train_steps(n)` advances it n optimiser steps. The same
  seed gives the same model at the same step, whether it was trained in one
  call, in many, or by the widget's background thread.
* `TrainingLab` (ipywidgets): **Train** / **Pause** run the trainer in a
  background thread (the pattern of ipywidgets' "Asynchronous widgets" page:
  a `threading.Thread` that updates widgets while the kernel stays free for
  other cells and clicks), a step counter, live test accuracy, a
  **Saliency** button and an auto-refresh every N steps drawing the current
  model's occlusion and gradient maps for the current digit, ← → to browse
  the test digits.
* `ink_share`, `map_entropy`, `measure_training`: the lab says a diffuse
  map is "a sign of insufficient training"; these put numbers on it — the
  share of |gradient| on the digit's ink and the entropy of the occlusion
  map's positive drops, at chosen training steps.

The maps are drawn on the signed scale (blue–white–red, as notebook 05 draws
occlusion): a negative drop, a patch whose hiding *raises* the class
probability, is blue, never painted as the most important patch.

CSS classes for browser tests: the view has "sal-training-lab"; buttons
"sal-train", "sal-pause", "sal-saliency", "sal-prev", "sal-next"; "sal-auto"
(checkbox), "sal-every"; read-outs "sal-step", "sal-accuracy", "sal-loss",
"sal-digit", "sal-status"; the chart "sal-chart".
"""

from __future__ import annotations

import html
import math
import numbers
import threading
import time
from collections.abc import Sequence

import ipywidgets as widgets
import pandas as pd
import torch
from torch import nn

from .. import data, metrics, models, plotting
from .. import saliency as sal
from .view import View

__all__ = [
    "INK_THRESHOLD",
    "MEASURE_STEPS",
    "LiveTrainer",
    "TrainingLab",
    "ink_share",
    "map_entropy",
    "measure_training",
]

# A pixel is "ink" (part of the stroke) above this intensity; MNIST strokes are
# near 1, anti-aliased rims in between, the background exactly 0.
INK_THRESHOLD = 0.5
MEASURE_STEPS = (0, 50, 200, 1000)
DEFAULT_LR = 1e-3  # Adam's default: test accuracy ≈ 0.84 at step 50, 0.94 at 200
DEFAULT_BATCH = 64


# ------------------------------------------------------------------ measures


def ink_share(attr: torch.Tensor, x: torch.Tensor, threshold: float = INK_THRESHOLD):
    """Share of a map's |mass| on the ink pixels x > threshold, per image: (N,).

    share = Σ_{p: x_p > t} |a_p| / Σ_p |a_p| (`metrics.mass_share` with the
    ink as region). A map that ignores the strokes scores about the ink's
    share of the pixels (`(x > t).mean()`, ≈ 0.13 for these digits).
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError("x must be a (N, C, H, W) tensor of images in [0, 1]")
    return metrics.mass_share(attr, (x > threshold).any(1, keepdim=True))


def map_entropy(attr: torch.Tensor, positive: bool = False) -> torch.Tensor:
    """Normalised entropy of a map's mass as a distribution over pixels: (N,).

    p = w / Σ w with w = |a| (default) or, with ``positive=True``, w =
    max(a, 0): only the evidence *for* the class (an occlusion drop > 0; a
    negative drop, hiding a patch that raises the probability, is
    counter-evidence and not counted). Channels are summed first.
    H = −Σ p log p / log(H·W): 1 for a perfectly uniform (diffuse) map, 0 for
    all mass on one pixel. NaN for a map with no mass (all zero, or no
    positive value).
    """
    if not isinstance(attr, torch.Tensor) or attr.dim() != 4:
        raise ValueError("attr must be a (N, C, H, W) tensor")
    if not isinstance(positive, bool):
        raise TypeError(f"positive must be True or False, got {positive!r}")
    summed = attr.detach().sum(1).flatten(1).double()
    mass = summed.clamp(min=0) if positive else summed.abs()
    total = mass.sum(1, keepdim=True)
    p = mass / total
    terms = torch.where(p > 0, -p * p.log(), torch.zeros_like(p))
    h = terms.sum(1) / math.log(mass.shape[1])
    return torch.where(total[:, 0] > 0, h, torch.full_like(h, math.nan)).float()


# ------------------------------------------------------------------ trainer


class LiveTrainer:
    """A SmallCNN trained one Adam step at a time on seeded batches.

    Step s uses the s-th batch of `batch_size` rows of a stream that
    shuffles the training split afresh (seeded) every epoch; the learning
    rate is constant (the loop has no planned end, so no cosine schedule as in
    `models.train`). The model is built under `torch.manual_seed(seed)`
    inside `torch.random.fork_rng` (the global RNG is left as it was).

    Thread safety: `lock` is held during each step and should be held by
    anyone reading the model while a thread trains it (`TrainingLab` does).

    Args:
        seed: int ≥ 0 (model initialisation and batch order). Default 0.
        lr: Adam learning rate (> 0). Default 1e-3.
        batch_size: rows per step. Default 64.
        train_data: a `data.Split` or (x, y); default the train split.
    """

    def __init__(
        self, seed=0, lr=DEFAULT_LR, batch_size=DEFAULT_BATCH, train_data=None
    ):
        if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be an int ≥ 0, got {seed!r}")
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not lr > 0:
            raise ValueError(f"lr must be a number > 0, got {lr!r}")
        if not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"batch_size must be an int ≥ 1, got {batch_size!r}")
        if train_data is None:
            train_data = data.load_split("train")
        if isinstance(train_data, data.Split):
            self.x, self.y = train_data.x, train_data.y
        else:
            self.x, self.y = train_data
        if len(self.x) != len(self.y) or len(self.x) < 1:
            raise ValueError("train_data must hold as many labels as images (≥ 1)")
        self.seed, self.lr, self.batch_size = int(seed), float(lr), int(batch_size)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.model = models.SmallCNN().eval()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.lr)
        self.generator = torch.Generator().manual_seed(self.seed)
        self._order = torch.empty(0, dtype=torch.long)
        self._pos = 0
        self.step = 0
        self.loss = math.nan
        self.lock = threading.RLock()

    def _batch(self) -> torch.Tensor:
        if self._pos + self.batch_size > len(self._order):
            self._order = torch.randperm(len(self.x), generator=self.generator)
            self._pos = 0
        rows = self._order[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        return rows

    def train_steps(self, n: int, should_stop=None) -> int:
        """Advance `n` optimiser steps (fewer if `should_stop()` turns true).

        Returns:
            The step count after training.
        """
        if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 0:
            raise ValueError(f"n must be an int ≥ 0, got {n!r}")
        loss_fn = nn.CrossEntropyLoss()
        for _ in range(int(n)):
            if should_stop is not None and should_stop():
                break
            with self.lock:
                rows = self._batch()
                self.model.train()
                try:
                    loss = loss_fn(self.model(self.x[rows]), self.y[rows])
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    self.optimizer.step()
                finally:
                    self.model.eval()
                self.step += 1
                self.loss = float(loss.detach())
        return self.step

    def train_to(self, step: int) -> int:
        """Train until the step count reaches `step` (no-op if already there)."""
        return self.train_steps(max(0, int(step) - self.step))

    def accuracy(self, split: data.Split | str = "test") -> float:
        """Test accuracy of the current model."""
        with self.lock:
            return models.evaluate(self.model, split)

    def maps(self, x: torch.Tensor, target) -> dict[str, torch.Tensor]:
        """The current model's occlusion (patch 4, grey, probability drop) and
        gradient maps for x: {"occlusion": (N, 1, H, W), "gradient": (N, 1, H, W)}."""
        with self.lock:
            return {
                "occlusion": sal.occlusion(self.model, x, target),
                "gradient": sal.gradient(self.model, x, target),
            }


def measure_training(
    steps: Sequence[int] = MEASURE_STEPS,
    x: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
    seed: int = 0,
    progress: bool = True,
    trainer: LiveTrainer | None = None,
    **trainer_kwargs,
) -> pd.DataFrame:
    """How concentrated the maps are at given training steps, for fixed digits.

    Trains one `LiveTrainer` (seeded) through the steps in increasing order;
    at each, for the digits x explained for their labels y: the mean
    `ink_share` of |gradient|, the mean `map_entropy` of the occlusion map's
    positive drops (the patches whose hiding lowers the class probability),
    and the test accuracy.

    Args:
        steps: training steps at which to measure (ints ≥ 0, increasing).
            Default (0, 50, 200, 1000).
        x, y: digits and labels; default the first 100 test digits.
        seed: the trainer's seed. trainer_kwargs: lr, batch_size, train_data.
        progress: a tqdm bar over the steps.
        trainer: continue training this `LiveTrainer` (e.g. a `TrainingLab`'s
            `.trainer`) instead of a fresh one; steps before its current step
            are refused.
    Returns:
        A DataFrame, one row per step: step, test_accuracy, ink_share (mean,
        with ink_share_chance = the share of ink pixels), occlusion_entropy.
    """
    from tqdm.auto import tqdm

    steps = [int(s) for s in steps]
    if not steps or any(s < 0 for s in steps) or steps != sorted(set(steps)):
        raise ValueError(f"steps must be increasing ints ≥ 0, got {steps!r}")
    if x is None:
        test = data.load_split("test")
        x, y = test.x[:100], test.y[:100]
    if trainer is None:
        trainer = LiveTrainer(seed=seed, **trainer_kwargs)
    elif steps[0] < trainer.step:
        raise ValueError(
            f"steps must start at or after the trainer's step {trainer.step}, "
            f"got {steps}"
        )
    chance = float((x > INK_THRESHOLD).float().mean())
    rows = []
    for s in tqdm(steps, desc="training and measuring", disable=not progress):
        trainer.train_to(s)
        maps = trainer.maps(x, y)
        rows.append(
            {
                "step": s,
                "test_accuracy": trainer.accuracy(),
                "ink_share": float(ink_share(maps["gradient"], x).mean()),
                "ink_share_chance": chance,
                "occlusion_entropy": float(
                    map_entropy(maps["occlusion"], positive=True).nanmean()
                ),
            }
        )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ widget


def _labelled_digits(images, labels) -> tuple[torch.Tensor, list[int]]:
    """The checked digits and their int labels; default the first 100 test digits."""
    if images is None:
        test = data.load_split("test")
        images, labels = test.x[:100], test.y[:100]
    images = data.check_images(images, "images")
    n = images.shape[0]
    if labels is None:
        raise ValueError("labels must be given with images (the maps explain them)")
    labels = labels.tolist() if isinstance(labels, torch.Tensor) else list(labels)
    if len(labels) != n:
        raise ValueError(
            f"labels must have one entry per image ({n}), got {len(labels)}"
        )
    return images, [int(v) for v in labels]


def _lab_controls(auto: bool, refresh_every: int) -> dict:
    """The lab's buttons, auto-refresh checkbox and period, by name."""
    return {
        "train": widgets.Button(description="Train", icon="play",
                                button_style="success"),
        "pause": widgets.Button(description="Pause", icon="pause", disabled=True),
        "saliency": widgets.Button(description="Saliency", icon="eye",
                                   button_style="info"),
        "prev": widgets.Button(description="←", tooltip="previous digit",
                               layout={"width": "40px"}),
        "next": widgets.Button(description="→", tooltip="next digit",
                               layout={"width": "40px"}),
        "auto": widgets.Checkbox(value=bool(auto), description="auto-refresh every",
                                 indent=False, layout={"width": "150px"}),
        "every": widgets.BoundedIntText(value=int(refresh_every), min=1,
                                        max=100_000, layout={"width": "80px"}),
    }  # fmt: skip


def _readout(label: str, value: str) -> str:
    return f"{html.escape(label)}: <b>{html.escape(value)}</b>"


class TrainingLab(View):
    """Train / Pause / Saliency / ← →: the lab's live loop as a widget.

    Click **Train**: a background thread trains a fresh SmallCNN
    (`LiveTrainer`), the step counter and loss follow, the test accuracy is
    re-measured every `eval_every` steps. With "auto" ticked the maps are
    redrawn every `refresh_every` steps; **Saliency** redraws them now. ← →
    browse the digits. **Pause** stops the thread after its current step;
    **Train** resumes from there.

    Drive it from code (tests, notebook cells): `train_steps(n)` trains in
    the foreground, `start(until=…)` / `pause()` / `join()` run the thread,
    `update()` recomputes and redraws the maps, `next()` / `prev()` browse.

    Args:
        images, labels: digits (N, 1, 28, 28) in [0, 1] and their labels;
            default the first 100 test digits.
        index: first digit shown. Default 0.
        seed, lr, batch_size: passed to `LiveTrainer`.
        refresh_every: auto-refresh period in steps (≥ 1). Default 50.
        eval_every: test-accuracy period in steps (≥ 1). Default 50.
        auto: auto-refresh on at start. Default True.
        size: width of each panel in pixels (≥ 120 recommended). Default 120.

    Attributes: `trainer`, `view`, `controls` (dict of widgets), `result`
    (the last maps, {"occlusion", "gradient"}: (1, 1, H, W)), `shown_step`
    (the step they were computed at), `chart`, `n_updates`, `accuracy`,
    `history` (list of (step, test accuracy)).
    """

    def __init__(
        self,
        images: torch.Tensor | None = None,
        labels: Sequence | torch.Tensor | None = None,
        *,
        index: int = 0,
        seed: int = 0,
        lr: float = DEFAULT_LR,
        batch_size: int = DEFAULT_BATCH,
        refresh_every: int = 50,
        eval_every: int = 50,
        auto: bool = True,
        size: int = 120,
        train_data=None,
    ):
        self.images, self.labels = _labelled_digits(images, labels)
        n = self.images.shape[0]
        if not isinstance(index, numbers.Integral) or not 0 <= index < n:
            raise ValueError(f"index must be an int in 0..{n - 1}, got {index!r}")
        for name, v in (("refresh_every", refresh_every), ("eval_every", eval_every)):
            if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an int ≥ 1, got {v!r}")
        self.size = plotting._check_size(size)
        self.eval_every = int(eval_every)
        self.trainer = LiveTrainer(seed, lr, batch_size, train_data)
        self.index = int(index)
        self.result = None
        self.chart = None
        self.shown_step = None
        self.n_updates = 0
        self.accuracy = math.nan
        self.history: list[tuple[int, float]] = []
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._draw_lock = threading.RLock()

        c = self.controls = _lab_controls(auto, refresh_every)
        self.outputs = {
            "step": widgets.HTML(),
            "accuracy": widgets.HTML(),
            "loss": widgets.HTML(),
            "digit": widgets.HTML(),
        }
        self.status = widgets.HTML()
        self._out = widgets.Output()
        for name, w in {**c, **self.outputs, "status": self.status}.items():
            w.add_class("sal-" + name)
        self._out.add_class("sal-chart")
        c["train"].on_click(lambda _: self.start())
        c["pause"].on_click(lambda _: self.pause())
        c["saliency"].on_click(lambda _: self._safely(self.update))
        c["next"].on_click(lambda _: self._safely(self.next))
        c["prev"].on_click(lambda _: self._safely(self.prev))
        self.view = self._layout()
        self._measure_accuracy()
        self.update()

    def _layout(self) -> widgets.VBox:
        """Buttons, counters, the digit's row with ← →, chart, status."""
        c, out = self.controls, self.outputs
        return widgets.VBox(
            [
                widgets.HBox([c["train"], c["pause"], c["saliency"], c["auto"],
                              c["every"], widgets.HTML("steps")]),
                widgets.HBox([out["step"], out["accuracy"], out["loss"]],
                             layout={"justify_content": "space-between",
                                     "width": "420px"}),
                widgets.HBox([c["prev"], out["digit"], c["next"]]),
                self._out,
                self.status,
            ]
        ).add_class("sal-training-lab")  # fmt: skip

    # ------------------------------------------------------------ training

    @property
    def step(self) -> int:
        """Optimiser steps taken so far."""
        return self.trainer.step

    @property
    def running(self) -> bool:
        """True while the background thread trains."""
        return self._thread is not None and self._thread.is_alive()

    def train_steps(self, n: int) -> int:
        """Train n steps in the foreground (accuracy and auto-refresh as the thread)."""
        for _ in range(int(n)):
            self._one_step()
        return self.step

    def _one_step(self) -> None:
        self.trainer.train_steps(1)
        s = self.step
        if s % self.eval_every == 0:
            self._measure_accuracy()
        else:
            self._show_counters()
        if self.controls["auto"].value and s % int(self.controls["every"].value) == 0:
            self.update()

    def start(self, until: int | None = None) -> None:
        """Train in a background thread until `pause()` (or step `until`)."""
        if self.running:
            return
        if until is not None and (not isinstance(until, numbers.Integral) or until < 0):
            raise ValueError(f"until must be None or an int ≥ 0, got {until!r}")
        self._stop.clear()
        self.error = None
        self.controls["train"].disabled = True
        self.controls["pause"].disabled = False
        self._thread = threading.Thread(
            target=self._run, args=(until,), name="TrainingLab", daemon=True
        )
        self._thread.start()

    def _run(self, until) -> None:
        try:
            while not self._stop.is_set() and (until is None or self.step < until):
                self._one_step()
                time.sleep(0)  # let the kernel's own threads run between steps
        except Exception as err:  # noqa: BLE001 - shown in the widget, kept in .error
            self.error = err
            self._show_error(f"training stopped: {type(err).__name__}: {err}")
        finally:
            self.controls["train"].disabled = False
            self.controls["pause"].disabled = True
            self._measure_accuracy()

    def measure(self, steps: Sequence[int] = (0, 50, 200), progress: bool = True):
        """`measure_training` on this lab's digits, continuing its own trainer.

        Trains (in the foreground) through `steps` (none before the current
        step), measuring ink share and occlusion entropy on `images` for their
        labels at each; then refreshes the read-outs and the maps.

        Returns:
            The DataFrame of `measure_training`.
        """
        if self.running:
            raise RuntimeError("pause the training before measuring")
        table = measure_training(
            steps,
            self.images,
            torch.tensor(self.labels),
            progress=progress,
            trainer=self.trainer,
        )
        self._measure_accuracy()
        self.update()
        return table

    def pause(self) -> None:
        """Ask the thread to stop after its current step, and wait for it."""
        self._stop.set()
        self.join()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread; True if it has finished."""
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        return not self.running

    def _measure_accuracy(self) -> None:
        self.accuracy = self.trainer.accuracy()
        if not self.history or self.history[-1][0] != self.step:
            self.history.append((self.step, self.accuracy))
        self._show_counters()

    def _show_counters(self) -> None:
        self.outputs["step"].value = _readout("step", f"{self.step}")
        acc_step = self.history[-1][0] if self.history else 0
        self.outputs["accuracy"].value = _readout(
            "test accuracy", f"{100 * self.accuracy:.1f} % (step {acc_step})"
        )
        loss = self.trainer.loss
        self.outputs["loss"].value = _readout(
            "loss", "–" if math.isnan(loss) else f"{loss:.3f}"
        )

    # ------------------------------------------------------------ maps

    def next(self) -> None:
        """Show the next digit (wraps around) and redraw its maps."""
        self.index = (self.index + 1) % self.images.shape[0]
        self.update()

    def prev(self) -> None:
        """Show the previous digit (wraps around) and redraw its maps."""
        self.index = (self.index - 1) % self.images.shape[0]
        self.update()

    def _safely(self, fn) -> None:
        try:
            fn()
        except (ValueError, TypeError, RuntimeError) as err:
            self._show_error(str(err))

    def update(self) -> dict:
        """Compute the current model's maps for the current digit and redraw.

        Returns:
            `result`: {"occlusion": (1, 1, H, W), "gradient": (1, 1, H, W)}.
        """
        with self._draw_lock:
            i = self.index
            x = self.images[i : i + 1]
            label = self.labels[i]
            with self.trainer.lock:
                step = self.step
                maps = self.trainer.maps(x, label)
                with torch.no_grad():
                    probs = torch.softmax(self.trainer.model(x)[0], 0)
            pred = int(probs.argmax())
            share = float(ink_share(maps["gradient"], x)[0])
            entropy = float(map_entropy(maps["occlusion"], positive=True)[0])
            chart, spec = plotting.grid(
                {
                    f"step {step}": {
                        "occlusion (drop)": maps["occlusion"][0],
                        "gradient": maps["gradient"][0],
                    }
                },
                image=x[0],
                show_input=True,
                signed=True,  # a negative drop (counter-evidence) is blue
                scale="independent",
                size=self.size,
                title=(
                    f"digit #{i} (label {label}), step {step}: |grad| on ink "
                    f"{100 * share:.0f} %, entropy of the positive drops "
                    f"{entropy:.2f}"
                ),
                return_spec=True,
            )
            self.outputs["digit"].value = _readout(
                f"digit #{i}",
                f"label {label}, predicted {pred} ({100 * float(probs[pred]):.0f} %)",
            )
            self.result, self.chart, self.shown_step = maps, chart, step
            self._show(plotting.mimebundle(spec))
        return self.result
