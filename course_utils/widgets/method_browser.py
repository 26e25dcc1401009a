"""`MethodBrowser`: every saliency method side by side for one digit, browsable ← →."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch

from .. import plotting
from .. import saliency as sal
from .explorer import _Explorer

__all__ = ["MethodBrowser"]


class MethodBrowser(_Explorer):
    """Every method of `sal.METHODS` side by side for one digit, browsable ← →.

    Each map has its own colour scale (methods differ by orders of magnitude),
    so the grid shows attribution / vmax per map, with each map's vmax written
    under it. Signed methods share the diverging scale; Grad-CAM (≥ 0 by
    construction, `sal.MAGNITUDE_METHODS`) gets the magnitude scale in a row
    of its own, as in every Grad-CAM chart of the course. Columns are headed
    with the methods' names (`sal.METHOD_TITLES`). Methods that draw random
    numbers (SmoothGrad) run under a fixed seed (`torch.random.fork_rng`, the
    global generator is restored afterwards), so a digit always gets the same
    maps.

    Args:
        model, images, labels, index, target, batch_size: as in
            `OcclusionExplorer`.
        methods: names from `sal.METHODS` to show, in order. Default: all.
        seed: seed for methods that draw noise. Default 0.
        size: width of each map in pixels. Default 120 (the grid wraps onto
            several rows of maps to fit the notebook column).

    ``result`` is a dict {method name: (1, C, H, W) or (1, 1, H, W) tensor}.
    Maps are cached per digit and target (like every explorer's results), so
    ← → back to a digit seen before redraws at once.
    """

    css = "sal-methods"

    def __init__(
        self, model, images, labels=None, *, methods=None, seed=0, size=120, **kwargs
    ):
        if methods is None:
            methods = list(sal.METHODS)
        if isinstance(methods, str) or not isinstance(methods, Sequence) or not methods:
            raise ValueError(
                f"methods must be a non-empty list of names from {list(sal.METHODS)}"
            )
        unknown = [m for m in methods if m not in sal.METHODS]
        if unknown:
            raise ValueError(
                f"methods must be names from {list(sal.METHODS)}, got unknown {unknown}"
            )
        if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        self.methods = list(methods)
        self.seed = int(seed)
        super().__init__(model, images, labels, size=size, **kwargs)

    def _settings(self):
        return tuple(self.methods), self.seed

    def _evals(self, x):
        # gradient-like methods cost one evaluation; the batched ones their
        # defaults (occlusion's forward passes cost about half a gradient)
        batched = {
            "integrated_gradients": 50.0,
            "smoothgrad": 50.0,
            "occlusion": 0.5 * sal.forward_passes_occlusion(tuple(x.shape[1:]), 4),
        }
        return sum(batched.get(name, 1.0) for name in self.methods)

    def _compute(self, x, target):
        maps = {}
        for name in self.methods:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                maps[name] = sal.METHODS[name](self.model, x, target)
        return maps

    def _draw(self, x, target, result):
        signed = [m for m in result if m not in sal.MAGNITUDE_METHODS]
        magnitude = [m for m in result if m in sal.MAGNITUDE_METHODS]
        parts = []
        for names, kind, is_signed in ((signed, "signed", True),
                                       (magnitude, "≥ 0 (magnitude)", False)):
            if not names:
                continue
            parts.append(plotting.grid(
                {kind: {sal.METHOD_TITLES[k]: result[k][0] for k in names}},
                image=x[0],
                overlay=False,
                show_input=not parts,  # the digit once, first
                signed=is_signed,
                scale="independent",
                size=self.size,
                legend_title="attribution" if is_signed else "|attribution|",
                return_spec=True,
            ))
        return plotting.stack(parts, title=self._title(target))
