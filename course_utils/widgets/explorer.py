"""The explorers' shared base class, with its helpers and slider/choice builders.

The concrete explorers are in `method_explorers` and `method_browser`: move a
slider, the saliency map is recomputed and redrawn.

Each explorer is a small class with

* ``view``      the displayable widget (put it last in a cell, or ``display(e.view)``);
* ``controls``  dict of its ipywidgets by name (set ``.value`` from Python to
  drive it, as a test or a notebook cell would);
* ``result``    the last attribution tensor (1, C, H, W) — `MethodBrowser`:
  a dict {method name: tensor};
* ``chart``     the last Altair chart;
* ``update()``  recompute and redraw with the current control values.

One change → one recompute. Controls that constrain each other (occlusion's
stride ≤ patch, IG's trapezoid rule needing n_steps ≥ 2) are adjusted inside a
guard while the explorer updates, so the dependent slider's own change event
does not trigger a second computation. ``n_updates`` counts updates.

Results are cached per (digit, target, settings), and dropped when the
model's parameters change (their version counters): moving a slider back or
browsing ← → to a digit seen before redraws without recomputing
(``timings["cached"]``). A setting expected to take longer than
``BUSY_AFTER_S`` (0.3 s, estimated from the seconds per model evaluation of
earlier computes) first shows "computing… (~t s)" in the status read-out.

The chart is shown in an ``ipywidgets.Output`` as a Vega-Lite 5 display bundle
(`plotting.mimebundle`), which JupyterLab draws offline with its built-in
Vega viewer. Charts are built from PNG image marks (`plotting.panels`,
`plotting.grid`), so a redraw costs a few milliseconds in Python.

Every widget carries a stable CSS class for browser tests: "sal-explorer" plus
"sal-occlusion" / "sal-ig" / "sal-smoothgrad" / "sal-methods" on the view;
"sal-chart" (the Output); "sal-prev", "sal-next", "sal-index", "sal-target";
per control "sal-<name>" with "_" → "-" ("sal-patch", "sal-stride",
"sal-n-steps", "sal-baseline", "sal-method", "sal-noise-level",
"sal-n-samples", "sal-kind", "sal-explain"); text read-outs "sal-prediction",
"sal-confidence", "sal-patch-size", "sal-forward-passes", "sal-delta",
"sal-status" (errors from a callback are shown there, not raised).
"""

from __future__ import annotations

import collections
import contextlib
import html
import itertools
import numbers
import time
from collections.abc import Sequence

import ipywidgets as widgets
import torch
from torch import nn

from .. import plotting
from .. import saliency as sal
from ..saliency.baselines import BASELINE_LABELS
from ..saliency.core import eval_mode
from ..saliency.validate import check_model
from .view import View

PREDICTED = "predicted"
# The options come from the modules that own them (never copied here).
IG_BASELINES = tuple((label, name) for name, label in BASELINE_LABELS.items())
IG_RULES = sal.QUADRATURE_RULES
SMOOTHGRAD_KINDS = sal.SMOOTHGRAD_KINDS
# label → name of the function in course_utils.saliency (looked up per call)
SMOOTHGRAD_EXPLAIN = (
    ("gradient", "gradient"),
    ("input × gradient", "input_x_gradient"),
    ("guided backprop", "guided_backprop"),
)


def _check_images(images: object) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise TypeError(
            f"images must be a torch.Tensor (N, C, H, W), got {type(images).__name__}"
        )
    if images.dim() != 4:
        raise ValueError(
            f"images must have shape (N, C, H, W), got {tuple(images.shape)}"
        )
    if images.shape[0] == 0:
        raise ValueError("images must hold at least one image, got an empty batch")
    if not images.is_floating_point():
        raise TypeError(f"images must be floating point in [0, 1], got {images.dtype}")
    if not bool(torch.isfinite(images).all()):
        raise ValueError("images must be finite; they hold NaN or Inf values")
    return images.detach()


def _check_labels(labels: object, n: int) -> list | None:
    if labels is None:
        return None
    if isinstance(labels, torch.Tensor):
        labels = labels.tolist()
    elif isinstance(labels, str) or not isinstance(labels, Sequence):
        raise TypeError(
            f"labels must be None, a 1-D tensor or a list, got {type(labels).__name__}"
        )
    labels = list(labels)
    if len(labels) != n:
        raise ValueError(
            f"labels must have one entry per image ({n}), got {len(labels)}"
        )
    return labels


def _model_version(model: nn.Module) -> int:
    """Changes when any parameter or buffer is updated in place (training).

    The sum of the tensors' version counters (each in-place write bumps its
    tensor's) and their ids (a replaced tensor is a new object): part of the
    explorers' cache key, so a model trained further is recomputed.
    """
    total = 0
    for t in itertools.chain(model.parameters(), model.buffers()):
        total += t._version + id(t)
    return total


def _html(label: str, value: str) -> str:
    return (
        f'<span class="sal-label">{html.escape(label)}</span>: '
        f'<b class="sal-value">{html.escape(value)}</b>'
    )


def _css(name: str) -> str:
    return "sal-" + name.replace("_", "-")


def _browse_controls(index: int, n: int, n_classes: int, target) -> dict:
    """The controls every explorer has: digit slider, ← →, the class explained."""
    return {
        "index": widgets.IntSlider(
            value=index, min=0, max=n - 1, description="digit", continuous_update=False
        ),
        "prev": widgets.Button(
            description="←", tooltip="previous digit", layout={"width": "40px"}
        ),
        "next": widgets.Button(
            description="→", tooltip="next digit", layout={"width": "40px"}
        ),
        "target": widgets.Dropdown(
            options=[("predicted class", PREDICTED)]
            + [(f"class {k}", k) for k in range(n_classes)],
            value=target if target == PREDICTED else int(target),
            description="explain",
        ),
    }


class _Explorer(View):
    """Shared machinery: browsing, target choice, prediction, guard, display."""

    css = "sal-explorer"
    CACHE_SIZE = 256  # results kept (one digit's map is a few kB)
    BUSY_AFTER_S = 0.3  # show "computing…" when a compute should take longer

    def __init__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: Sequence | torch.Tensor | None = None,
        *,
        index: int = 0,
        target: int | str = PREDICTED,
        size: int = 140,
        batch_size: int | None = None,
    ):
        self.model = check_model(model)
        self.images = _check_images(images)
        n = self.images.shape[0]
        self.labels = _check_labels(labels, n)
        if not isinstance(index, numbers.Integral) or not 0 <= index < n:
            raise ValueError(f"index must be an int in 0..{n - 1}, got {index!r}")
        self.size = plotting._check_size(size)
        self.batch_size = batch_size
        self._probs: dict[int, torch.Tensor] = {}
        self.n_classes = int(self._probabilities(int(index)).shape[0])
        if target != PREDICTED and (
            not isinstance(target, numbers.Integral)
            or isinstance(target, bool)
            or not 0 <= target < self.n_classes
        ):
            raise ValueError(
                f"target must be {PREDICTED!r} or a class in 0..{self.n_classes - 1}, "
                f"got {target!r}"
            )
        self.result = None
        self.chart = None
        self.n_updates = 0
        self.timings: dict[str, float] = {}
        self._busy = False
        # Results by (digit, target, settings, model version): moving back to
        # a setting or digit seen before redraws without recomputing.
        self._results: collections.OrderedDict = collections.OrderedDict()
        self._sec_per_eval: float | None = None  # learned from past computes

        self.controls: dict[str, widgets.Widget] = _browse_controls(
            int(index), n, self.n_classes, target
        )
        self.controls["prev"].on_click(lambda _: self.prev())
        self.controls["next"].on_click(lambda _: self.next())
        self.controls.update(self._method_controls())
        self.outputs = {
            "prediction": widgets.HTML(),
            "confidence": widgets.HTML(),
            **self._method_outputs(),
        }
        self.status = widgets.HTML().add_class("sal-status")
        self._out = widgets.Output().add_class("sal-chart")
        for name, w in {**self.controls, **self.outputs}.items():
            w.add_class(_css(name))
        for name, w in self.controls.items():
            if not isinstance(w, widgets.Button):
                w.observe(self._on_change, names="value")
        self.view = self._layout()
        self.update()

    def _layout(self) -> widgets.VBox:
        """Browsing row, the method's controls, read-outs, chart, status."""
        c = self.controls
        browse = [c["prev"], c["index"], c["next"], c["target"]]
        own = [w for k, w in c.items() if k not in ("index", "prev", "next", "target")]
        return (
            widgets.VBox(
                [
                    widgets.HBox(browse),
                    widgets.HBox(own),
                    widgets.HBox(list(self.outputs.values())),
                    self._out,
                    self.status,
                ],
            )
            .add_class("sal-explorer")
            .add_class(self.css)
        )

    # ------------------------------------------------------------ subclass API

    def _method_controls(self) -> dict[str, widgets.Widget]:
        return {}

    def _method_outputs(self) -> dict[str, widgets.Widget]:
        return {}

    def _sync(self) -> None:
        """Adjust dependent controls (runs with change events suppressed)."""

    def _settings(self) -> tuple:
        """The method's control values (part of the result cache's key)."""
        return ()

    def _evals(self, x: torch.Tensor) -> float:
        """Model evaluations the current settings cost (for the busy estimate)."""
        return 1.0

    def _state(self):
        """Extra results of `_compute` to cache with its return value."""

    def _restore(self, state) -> None:
        """Put back what `_state` returned (a cache hit skips `_compute`)."""

    def _compute(self, x: torch.Tensor, target: int):
        raise NotImplementedError

    def _draw(self, x: torch.Tensor, target: int, result):
        raise NotImplementedError

    # ------------------------------------------------------------ browsing

    @property
    def index(self) -> int:
        """Row of `images` being explained."""
        return int(self.controls["index"].value)

    def next(self) -> None:
        """Show the next digit (wraps around to the first)."""
        n = self.images.shape[0]
        self._set_index((self.index + 1) % n)

    def prev(self) -> None:
        """Show the previous digit (wraps around to the last)."""
        n = self.images.shape[0]
        self._set_index((self.index - 1) % n)

    def _set_index(self, i: int) -> None:
        if i == self.index:  # one image: no value change, redraw anyway
            self._on_change(None)
        else:
            self.controls["index"].value = i

    # ------------------------------------------------------------ prediction

    def _probabilities(self, i: int) -> torch.Tensor:
        if i not in self._probs:
            with eval_mode(self.model), torch.no_grad():
                logits = self.model(self.images[i : i + 1])
            self._probs[i] = torch.softmax(logits[0].double(), dim=0)
        return self._probs[i]

    @property
    def target(self) -> int:
        """The class explained now: the prediction, or the chosen class."""
        t = self.controls["target"].value
        return int(self._probabilities(self.index).argmax()) if t == PREDICTED else t

    # ------------------------------------------------------------ updating

    def _on_change(self, change) -> None:
        if self._busy:
            return
        try:
            self.update()
        except (ValueError, TypeError) as err:
            self.view.remove_class("sal-busy")
            self._show_error(str(err))

    def update(self):
        """Recompute the map for the current controls and redraw (once).

        Returns:
            `result`.
        """
        with self._guard():
            with contextlib.ExitStack() as stack:
                for w in self.controls.values():
                    stack.enter_context(w.hold_trait_notifications())
                self._sync()
            i, target = self.index, self.target
            x = self.images[i : i + 1]
            t0 = time.perf_counter()
            key = (i, target, self._settings(), _model_version(self.model))
            cached = key in self._results
            if cached:
                self._results.move_to_end(key)
                result, state = self._results[key]
                self._restore(state)
            else:
                self._show_busy(x)
                result = self._compute(x, target)
                self._results[key] = (result, self._state())
                if len(self._results) > self.CACHE_SIZE:
                    self._results.popitem(last=False)
            t1 = time.perf_counter()
            if not cached:
                evals = max(self._evals(x), 1e-9)
                self._sec_per_eval = (t1 - t0) / evals
            chart, spec = self._draw(x, target, result)
            bundle = plotting.mimebundle(spec)
            t2 = time.perf_counter()
            self.result, self.chart = result, chart
            # Read-outs first, the chart last (`_show`).
            self._show_prediction(i, target)
            self.view.remove_class("sal-busy")
            self._show(bundle)
            self.timings = {
                "compute": t1 - t0,
                "chart": t2 - t1,
                "total": time.perf_counter() - t0,
                "cached": cached,
            }
        return self.result

    def _show_busy(self, x: torch.Tensor) -> None:
        """Show "computing…" first when the setting is expected to be slow.

        The estimate is the seconds per model evaluation measured on earlier
        computes times `_evals` for the new setting; above BUSY_AFTER_S the
        status read-out says "computing… (~t s)" and the view gets the CSS
        class "sal-busy" until the new chart is shown. (Widget changes are
        sent to the page as they are made, so the message arrives before the
        computation starts.)
        """
        if self._sec_per_eval is None or not hasattr(self, "view"):
            return
        expected = self._sec_per_eval * self._evals(x)
        if expected > self.BUSY_AFTER_S:
            self.status.value = (
                '<span class="sal-computing" style="color:#555">'
                f"computing… (~{expected:.1f} s)</span>"
            )
            self.view.add_class("sal-busy")

    def _show_prediction(self, i: int, target: int) -> None:
        probs = self._probabilities(i)
        pred = int(probs.argmax())
        text = f"{pred}"
        if self.labels is not None:
            text += f" (label {self.labels[i]})"
        self.outputs["prediction"].value = _html("prediction", text)
        conf = f"{100 * float(probs[pred]):.1f} %"
        if target != pred:
            conf += f"; class {target}: {100 * float(probs[target]):.1f} %"
        self.outputs["confidence"].value = _html("confidence", conf)

    def _title(self, target: int) -> str:
        i = self.index
        label = "" if self.labels is None else f", label {self.labels[i]}"
        return f"digit #{i}{label}: explaining class {target}"


def _int_slider_value(name, value, lo, hi, why=""):
    if (
        not isinstance(value, numbers.Integral)
        or isinstance(value, bool)
        or not lo <= value <= hi
    ):
        why = f" ({why})" if why else ""
        raise ValueError(f"{name} must be an int in {lo}..{hi}{why}, got {value!r}")
    return int(value)


def _int_slider(name, value, lo, hi, description):
    # The default track (about 120 px) gives each of 299 values under half a
    # pixel; long ranges get a track of about 2 px per value, up to 480 px.
    width = f"{min(480, 200 + 2 * (hi - lo))}px" if hi - lo > 40 else None
    return widgets.IntSlider(
        value=_int_slider_value(name, value, lo, hi),
        min=lo,
        max=hi,
        description=description,
        continuous_update=False,
        layout={"width": width} if width else {},
    )


def _choice(name, value, options, description):
    values = [v if not isinstance(v, tuple) else v[1] for v in options]
    if value not in values:
        raise ValueError(f"{name} must be one of {values}, got {value!r}")
    labels = [str(v[0] if isinstance(v, tuple) else v) for v in options]
    # Wide enough for the longest label (≈ 7.5 px a character + description),
    # so "grey (mean, 0 after normalisation)" is not cut off.
    width = max(300, 100 + round(7.5 * max(map(len, labels))) + 30)
    return widgets.Dropdown(
        options=list(options),
        value=value,
        description=description,
        layout={"width": f"{width}px"},
    )
