"""UnitBrowser: pick a layer and a unit, see its top patches and their projections.

For the chosen unit: the k test patches that activate it most
(`visualize.top_activations`) and, below them, the unit's activation
projected back to the pixels with the deconvnet, guided-backprop and
plain-gradient rules (`visualize.unit_projection`), each cropped to the
unit's receptive field — the layout of Zeiler & Fergus's Fig. 2.

CSS classes: "sal-unit-browser" on the view; "sal-layer", "sal-unit",
"sal-prev", "sal-next", "sal-field", "sal-status", "sal-chart".
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import ipywidgets as widgets
import torch
from torch import nn

from .. import plotting
from .. import visualize as vis
from ..saliency.core import get_layer
from ..saliency.validate import check_int
from .view import View

__all__ = ["UnitBrowser"]


class UnitBrowser(View):
    """Browse a model's units: top-k patches and three projections each.

    Args:
        model: maps (N, 1, H, W) to logits (out-of-place nn.ReLU modules).
        images: (N, C, H, W) the digits to search (e.g. the test split).
        layers: layer names offered in the drop-down (each with (N, D, h, w)
            output), in order. Default ("conv1", "conv2").
        layer, unit: shown first. Defaults: the first layer, unit 0.
        k: patches per unit, 1 … 12. Default 9.
        size: width of each cell in pixels. Default 120 (15 px per pixel of
            an 8 × 8 conv2 patch); nine patches wrap onto two blocks of
            columns to fit the notebook column. Every cell is framed on a dark
            ground, so a patch's white strokes at its border stay visible.

    Attributes: `view`, `controls` ({"layer", "unit", "prev", "next"}),
    `result` (the `TopActivations`), `projections` ({rule: (k, C, s, s)}
    cropped projections), `chart`, `n_updates`. `update()` recomputes.
    """

    RULES = ("deconvnet", "guided", "gradient")

    def __init__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        layers: Sequence[str] = ("conv1", "conv2"),
        *,
        layer: str | None = None,
        unit: int = 0,
        k: int = 9,
        size: int = 120,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"model must be a torch.nn.Module, got {type(model).__name__}"
            )
        if isinstance(layers, str) or not isinstance(layers, Sequence) or not layers:
            raise ValueError("layers must be a non-empty list of layer names")
        if not isinstance(k, numbers.Integral) or not 1 <= k <= 12:
            raise ValueError(f"k must be an int in 1..12, got {k!r}")
        self.model, self.images, self.k = model, images, int(k)
        self.size = plotting._check_size(size)
        self.channels = {}
        for name in layers:  # checks each name, and counts its units
            vis.receptive_field(model, name)
            self.channels[name] = vis.layer_channels(
                model, get_layer(model, name), name, images
            )
        layer = layers[0] if layer is None else layer
        if layer not in self.channels:
            raise ValueError(f"layer must be one of {list(layers)}, got {layer!r}")
        self.result = self.projections = self.chart = None
        self.n_updates = 0
        self._cache: dict = {}
        self._busy = False
        self.controls = {
            "layer": widgets.Dropdown(options=list(layers), value=layer,
                                      description="layer"),
            "unit": widgets.IntSlider(value=0, min=0, max=self.channels[layer] - 1,
                                      description="unit", continuous_update=False),
            "prev": widgets.Button(description="←", layout={"width": "40px"}),
            "next": widgets.Button(description="→", layout={"width": "40px"}),
        }  # fmt: skip
        self.controls["unit"].value = check_int(
            unit, "unit", 0, self.channels[layer] - 1
        )
        self.field = widgets.HTML()
        self.status = widgets.HTML()
        self._out = widgets.Output()
        for name, w in {**self.controls, "field": self.field,
                        "status": self.status}.items():  # fmt: skip
            w.add_class("sal-" + name)
        self._out.add_class("sal-chart")
        self.controls["layer"].observe(self._on_layer, names="value")
        self.controls["unit"].observe(lambda _: self._safely(), names="value")
        self.controls["next"].on_click(lambda _: self._step(+1))
        self.controls["prev"].on_click(lambda _: self._step(-1))
        c = self.controls
        self.view = widgets.VBox(
            [
                widgets.HBox([c["layer"], c["prev"], c["unit"], c["next"]]),
                self.field,
                self._out,
                self.status,
            ]
        ).add_class("sal-unit-browser")
        self.update()

    def _on_layer(self, change) -> None:
        unit = self.controls["unit"]
        self._busy = True  # the unit's clamp below must not redraw on its own
        try:
            unit.max = self.channels[change["new"]] - 1
        finally:
            self._busy = False
        self._safely()

    def _step(self, delta: int) -> None:
        unit = self.controls["unit"]
        unit.value = (unit.value + delta) % (unit.max + 1)

    def _safely(self) -> None:
        if self._busy:
            return
        try:
            self.update()
        except (ValueError, TypeError) as err:
            self._show_error(str(err))

    def compute(self, layer: str, unit: int):
        """(TopActivations, {rule: cropped projections}) for one unit (cached)."""
        key = (layer, int(unit))
        if key not in self._cache:
            top = vis.top_activations(
                self.model, layer, unit, self.images, k=self.k, progress=False
            )
            x = self.images[top.indices]
            proj = {
                rule: vis.crop(
                    vis.unit_projection(self.model, x, layer, unit, rule=rule,
                                        position=top.positions, progress=False),
                    top.boxes.tolist(),
                )
                for rule in self.RULES
            }  # fmt: skip
            self._cache[key] = (top, proj)
        return self._cache[key]

    def update(self):
        """Recompute (or fetch) the current unit's patches and projections; redraw."""
        layer = self.controls["layer"].value
        unit = int(self.controls["unit"].value)
        top, proj = self.compute(layer, unit)
        cols = [f"#{int(i)}" for i in top.indices]
        chart, spec = plotting.grid(
            {rule: dict(zip(cols, p, strict=True)) for rule, p in proj.items()},
            image=top.patches,
            show_input=True,
            overlay=False,
            scale="row",
            size=self.size,
            frame=True,
            title=f"{layer} unit {unit}: top-{self.k} patches and their projections",
            return_spec=True,
        )
        s = top.field.size
        self.field.value = (
            f"receptive field <b>{s[0]}×{s[1]}</b> px, stride {top.field.jump[0]}; "
            f"strongest activation {float(top.values[0]):.2f}"
        )
        self.result, self.projections, self.chart = top, proj, chart
        self._show(plotting.mimebundle(spec))
        return self.result
