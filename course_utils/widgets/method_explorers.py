"""The three explorers of one saliency method each: occlusion, IG and SmoothGrad.

Every slider recomputes and redraws the map; what the explorers share
(browsing, caching, the busy state, CSS classes) is `widgets.explorer`'s.
"""

from __future__ import annotations

import numbers

import ipywidgets as widgets
import torch

from .. import plotting
from .. import saliency as sal
from ..saliency.baselines import resolve_baseline
from .explorer import (
    IG_BASELINES,
    IG_RULES,
    SMOOTHGRAD_EXPLAIN,
    SMOOTHGRAD_KINDS,
    _check_images,
    _choice,
    _Explorer,
    _html,
    _int_slider,
    _int_slider_value,
)

__all__ = ["IGExplorer", "OcclusionExplorer", "SmoothGradExplorer"]


class OcclusionExplorer(_Explorer):
    """Occlusion sensitivity with patch / stride sliders and a digit browser.

    Shows the digit, the map (drop of the target's softmax probability when a
    grey patch hides each region, `sal.occlusion`), the overlay, the
    prediction and confidence, and how many forward passes the setting costs
    (`sal.forward_passes_occlusion`).

    Args:
        model: maps (N, C, H, W) to (N, K) logits.
        images: (N, C, H, W) digits in [0, 1], N ≥ 1 (e.g. the test split).
        labels: optional N true labels (shown next to the prediction).
        patch: initial patch side, 1 … min(14, H, W). Default 4.
        stride: initial stride, 1 … patch; default patch.
        index: first digit shown. Default 0.
        target: "predicted" (default) or a class index.
        size: panel width in pixels. batch_size: passed to `sal.occlusion`.

    Controls: "patch", "stride" (its maximum follows patch), "index", "prev",
    "next", "target". Read-outs: "patch_size", "forward_passes",
    "prediction", "confidence".
    """

    css = "sal-occlusion"
    MAX_PATCH = 14

    def __init__(self, model, images, labels=None, *, patch=4, stride=None, **kwargs):
        images = _check_images(images)
        h, w = images.shape[-2:]
        self._max_patch = min(self.MAX_PATCH, h, w)
        self._patch0 = _int_slider_value(
            "patch", patch, 1, self._max_patch, f"the image is {h}×{w}"
        )
        self._stride0 = (
            self._patch0
            if stride is None
            else _int_slider_value("stride", stride, 1, self._patch0, "at most patch")
        )
        super().__init__(model, images, labels, **kwargs)

    def _method_controls(self):
        return {
            "patch": _int_slider("patch", self._patch0, 1, self._max_patch, "patch"),
            "stride": _int_slider("stride", self._stride0, 1, self._patch0, "stride"),
        }

    def _method_outputs(self):
        return {"patch_size": widgets.HTML(), "forward_passes": widgets.HTML()}

    def _sync(self):
        patch, stride = self.controls["patch"], self.controls["stride"]
        if stride.max != patch.value:
            stride.max = patch.value  # clamps stride.value; event is ignored

    def _settings(self):
        return int(self.controls["patch"].value), int(self.controls["stride"].value)

    def _evals(self, x):
        patch, stride = self._settings()
        return float(sal.forward_passes_occlusion(tuple(x.shape[1:]), patch, stride))

    def _compute(self, x, target):
        patch, stride = self._settings()
        return sal.occlusion(
            self.model,
            x,
            target,
            patch=patch,
            stride=stride,
            batch_size=self.batch_size,
        )

    def _draw(self, x, target, result):
        patch, stride = self._settings()
        passes = sal.forward_passes_occlusion(tuple(x.shape[1:]), patch, stride)
        self.forward_passes = passes
        self.outputs["patch_size"].value = _html(
            "patch", f"{patch}×{patch} px, stride {stride}"
        )
        self.outputs["forward_passes"].value = _html("forward passes", f"{passes}")
        return plotting.panels(
            x[0],
            result[0],
            size=self.size,
            title=f"{self._title(target)} (occlusion, {passes} forward passes)",
            legend_title="probability drop",
            return_spec=True,
        )


class IGExplorer(_Explorer):
    """Integrated gradients with n_steps, baseline and quadrature-rule controls.

    Shows the digit, the baseline x₀, the map, the overlay and the completeness
    gap δ = Σ attr − (f(x) − f(x₀)) (from ``return_delta=True``), which shrinks
    as n_steps grows.

    Args:
        model, images, labels, index, target, size, batch_size: as in
            `OcclusionExplorer` (batch_size goes to `sal.integrated_gradients`).
        n_steps: initial steps, 1 … 300 (≥ 2 for "riemann_trapezoid").
            Default 50.
        baseline: "black" (default), "grey", "blur" or "noise" (see
            `sal.integrated_gradients`; the noise baseline is seeded, so it is
            the same image every time).
        method: quadrature rule, one of `IG_RULES`. Default "riemann_trapezoid".

    Controls: "n_steps", "baseline", "method" plus browsing. Read-outs:
    "delta", "prediction", "confidence". Attribute ``delta``: the last gap.
    """

    css = "sal-ig"
    MAX_STEPS = 300

    def __init__(
        self,
        model,
        images,
        labels=None,
        *,
        n_steps=50,
        baseline="black",
        method="riemann_trapezoid",
        **kwargs,
    ):
        low = 2 if method == "riemann_trapezoid" else 1
        self._init = (
            _int_slider_value(
                "n_steps", n_steps, low, self.MAX_STEPS, f"rule {method!r}"
            ),
            baseline,
            method,
        )
        self.delta = None
        self._baselines: dict[tuple[int, str], torch.Tensor] = {}
        super().__init__(model, images, labels, **kwargs)

    def _method_controls(self):
        n_steps, baseline, method = self._init
        low = 2 if method == "riemann_trapezoid" else 1
        return {
            "n_steps": _int_slider("n_steps", n_steps, low, self.MAX_STEPS, "n_steps"),
            "baseline": _choice("baseline", baseline, IG_BASELINES, "baseline"),
            "method": _choice("method", method, IG_RULES, "rule"),
        }

    def _method_outputs(self):
        return {"delta": widgets.HTML()}

    def _sync(self):
        low = 2 if self.controls["method"].value == "riemann_trapezoid" else 1
        if self.controls["n_steps"].min != low:
            self.controls["n_steps"].min = low  # clamps n_steps; event is ignored

    def _settings(self):
        c = self.controls
        return int(c["n_steps"].value), c["baseline"].value, c["method"].value

    def _evals(self, x):
        return float(self._settings()[0] + 2)  # the path, then f(x) and f(x₀)

    def _state(self):
        return self.delta, self._gap_of

    def _restore(self, state):
        self.delta, self._gap_of = state

    def _compute(self, x, target):
        n_steps, baseline, method = self._settings()
        attr, delta = sal.integrated_gradients(
            self.model,
            x,
            target,
            baseline=baseline,
            n_steps=n_steps,
            method=method,
            batch_size=self.batch_size,
            return_delta=True,
        )
        self.delta = float(delta[0])
        self._gap_of = float(attr.sum()) - self.delta  # f(x) − f(x₀)
        return attr

    def baseline_image(self) -> torch.Tensor:
        """The current baseline x₀ as a (1, C, H, W) tensor (cached per digit)."""
        _, baseline, _ = self._settings()
        key = (self.index, baseline)
        if key not in self._baselines:
            x = self.images[self.index : self.index + 1]
            base = resolve_baseline(baseline, x, self.model)
            self._baselines[key] = base.expand_as(x)
        return self._baselines[key]

    def _draw(self, x, target, result):
        n_steps, _, method = self._settings()
        diff = self._gap_of
        rel = abs(self.delta) / abs(diff) if diff != 0 else float("inf")
        self.outputs["delta"].value = _html(
            "completeness gap Σattr − (f(x) − f(x₀))",
            f"{self.delta:+.4f} ({100 * rel:.2f} % of f(x) − f(x₀) = {diff:.3f})",
        )
        return plotting.panels(
            x[0],
            result[0],
            extra={"baseline": self.baseline_image()[0]},
            size=self.size,
            title=f"{self._title(target)} (IG, {n_steps} steps, {method})",
            return_spec=True,
        )


class SmoothGradExplorer(_Explorer):
    """SmoothGrad / SmoothGrad² / VarGrad with noise and sample-count sliders.

    The noise comes from a `torch.Generator` seeded with `seed` on every
    recompute, so the same settings always give the same map (and moving a
    slider back restores the earlier picture).

    Args:
        model, images, labels, index, target, size, batch_size: as in
            `OcclusionExplorer` (batch_size goes to `sal.smoothgrad`).
        noise_level: σ as a fraction of the input's range, 0 … 0.5. Default 0.15.
        n_samples: noisy copies, 1 … 100. Default 50.
        kind: "smoothgrad" (default), "smoothgrad_sq" or "vargrad".
        explain: the map being smoothed: "gradient" (default),
            "input_x_gradient" or "guided_backprop".
        seed: the generator's seed. Default 0.

    Controls: "noise_level", "n_samples", "kind", "explain" plus browsing.
    """

    css = "sal-smoothgrad"
    MAX_SAMPLES = 100
    MAX_NOISE = 0.5

    def __init__(
        self,
        model,
        images,
        labels=None,
        *,
        noise_level=0.15,
        n_samples=50,
        kind="smoothgrad",
        explain="gradient",
        seed=0,
        **kwargs,
    ):
        if (
            not isinstance(noise_level, numbers.Real)
            or isinstance(noise_level, bool)
            or not 0 <= noise_level <= self.MAX_NOISE
        ):
            raise ValueError(
                f"noise_level must be a number in 0..{self.MAX_NOISE}, "
                f"got {noise_level!r}"
            )
        if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        self.seed = int(seed)
        self._init = (
            float(noise_level),
            _int_slider_value("n_samples", n_samples, 1, self.MAX_SAMPLES, "samples"),
            kind,
            explain,
        )
        super().__init__(model, images, labels, **kwargs)

    def _method_controls(self):
        noise_level, n_samples, kind, explain = self._init
        return {
            "noise_level": widgets.FloatSlider(
                value=noise_level,
                min=0.0,
                max=self.MAX_NOISE,
                step=0.01,
                description="noise level",
                readout_format=".2f",
                continuous_update=False,
            ),
            "n_samples": _int_slider(
                "n_samples", n_samples, 1, self.MAX_SAMPLES, "samples"
            ),
            "kind": _choice("kind", kind, SMOOTHGRAD_KINDS, "kind"),
            "explain": _choice("explain", explain, SMOOTHGRAD_EXPLAIN, "smooth"),
        }

    def generator(self) -> torch.Generator:
        """A fresh generator seeded with `seed`, on the images' device."""
        return torch.Generator(device=self.images.device).manual_seed(self.seed)

    def _settings(self):
        c = self.controls
        return (
            float(c["noise_level"].value),
            int(c["n_samples"].value),
            c["kind"].value,
            c["explain"].value,
        )

    def _evals(self, x):
        return float(self._settings()[1])

    def _compute(self, x, target):
        noise_level, n_samples, kind, explain = self._settings()
        return sal.smoothgrad(
            self.model,
            x,
            target,
            explain=getattr(sal, explain),
            n_samples=n_samples,
            noise_level=noise_level,
            kind=kind,
            batch_size=self.batch_size,
            generator=self.generator(),
        )

    def _draw(self, x, target, result):
        noise_level, n_samples, kind, explain = self._settings()
        return plotting.panels(
            x[0],
            result[0],
            size=self.size,
            title=(
                f"{self._title(target)} ({kind} of {explain}, noise level {noise_level:.2f}, "
                f"{n_samples} samples)"
            ),
            return_spec=True,
        )
