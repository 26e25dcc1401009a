"""`PhotoExplainer`: upload a photo, see the ImageNet model's top-5 and its saliency maps.

The same flow as `photos.explain`, in a widget: a bundled photo or an uploaded
JPEG/PNG (any size or orientation; a bad file gets a message, the widget keeps
its last photo), the top-5 classes, the class to explain (one of the top-5, or
any ImageNet class found by name), the fast maps (gradient, Grad-CAM) first
and the slower ones (IG, SmoothGrad, guided backprop, guided Grad-CAM) after
a visible "computing…", and one button for the cascading randomization check.

Every map is cached per (photo, class, method, its setting): switching class
or photo back, or moving IG's steps to a value seen before, redraws at once;
moving IG's steps recomputes IG only. SmoothGrad keeps the running sums of its
per-sample gradients (sample k's noise is the same for every n: one seeded
`torch.randn((n, 3, H, W))` draw, whose first rows do not depend on n), so
fewer samples than computed before cost nothing and more cost only the new
ones. (IG uses Gauss–Legendre points, far better than a uniform grid on this
model, notebook 11 section 2; their grids do not nest, so IG is cached per n.)

CSS classes for browser tests: "sal-photo-explainer" on the view, "sal-photo",
"sal-upload", "sal-target", "sal-search", "sal-n-steps", "sal-n-samples",
"sal-cascade" (the button), "sal-top5", "sal-photo-info", "sal-chart" (fast
maps), "sal-chart-slow", "sal-cascade-chart", "sal-status" (errors), and
"sal-busy" on the view while something is computed.
"""

from __future__ import annotations

import collections
import hashlib
import html
import time
from collections.abc import Sequence
from functools import partial

import ipywidgets as widgets
import torch
from traitlets import TraitError

from .. import models, photos, plotting
from .. import photo_model as pm
from .. import saliency as sal
from ..plotting.rgb import AGGREGATION, photo_maps
from ..saliency.core import eval_mode
from ..saliency.smoothgrad import noisy_copies
from .view import View

__all__ = ["PhotoExplainer"]

UPLOAD = "upload:"  # prefix of an uploaded photo's key in the photo dropdown
UPLOAD_ACCEPTED = "an image file (JPEG, PNG, GIF, BMP, TIFF or WebP)"


def _html_output(text: str) -> tuple:
    """Outputs of an `ipywidgets.Output` showing one line of grey text."""
    return ({"output_type": "display_data", "metadata": {},
             "data": {"text/html": f'<i class="sal-computing" style="color:#555">'
                                   f"{html.escape(text)}</i>",
                      "text/plain": text}},)


class PhotoExplainer(View):
    """Explain a bundled or uploaded photo with the pretrained ImageNet model.

    Args:
        model: the photo model; None loads `efficientnet_lite0`.
        photo: the bundled photo shown first (`photos.PHOTOS`).
        methods: `saliency.METHODS` names to show; those in
            `photos.FAST_METHODS` are drawn first. Default: the six of
            `photos.explain`.
        n_steps: IG's Gauss–Legendre points (slider 2…64). n_samples:
            SmoothGrad's noisy copies (slider 2…50).
        cascade_methods: one or two method names for the cascade button
            (default gradient and guided backprop: one that fails the check,
            one that passes it).
        seed: SmoothGrad's noise. size: width of each map in pixels.

    ``controls`` (set ``.value`` from code to drive it), ``result`` ({method:
    map} on display), ``charts`` ({"fast", "slow", "cascade"}: the Altair
    charts), ``top5``, ``target``, ``cascade`` (the last `SanityResult`),
    ``n_updates`` and ``timings``.
    """

    css = "sal-photo-explainer"
    CACHE_SIZE = 96  # maps kept (one map of a 224 px photo is 0.6 MB)

    def __init__(self, model=None, *, photo: str = "chelsea",
                 methods: Sequence[str] = photos.FAST_METHODS + photos.SLOW_METHODS,
                 n_steps: int = 16, n_samples: int = 8,
                 cascade_methods: Sequence[str] = ("gradient", "guided_backprop"),
                 seed: int = 0, size: int = 168):
        _check_args(photo, methods, cascade_methods)
        self.model = model if model is not None else models.load_pretrained(pm.NAME)
        self.methods = list(methods)
        self.cascade_methods = list(cascade_methods)
        self.seed = int(seed)
        self.size = plotting._check_size(size)
        self.names = pm.categories()
        self.labels = photos.class_labels(self.names)
        self._photos: dict[str, dict] = {}  # key → {"x", "probs", "size", "name"}
        self._maps: collections.OrderedDict = collections.OrderedDict()
        self._cascades: dict = {}
        self._sg_sums: collections.OrderedDict = collections.OrderedDict()
        self._busy = False
        self.result: dict[str, torch.Tensor] = {}
        self.charts: dict = {}
        self.cascade = None
        self.n_updates = 0
        self.timings: dict[str, float] = {}

        c = self.controls = self._make_controls(photo, n_steps, n_samples)
        self.outputs = {"top5": widgets.HTML(), "photo_info": widgets.HTML()}
        self.status = widgets.HTML().add_class("sal-status")
        self._out = widgets.Output().add_class("sal-chart")
        self._out_slow = widgets.Output().add_class("sal-chart-slow")
        self._out_cascade = widgets.Output().add_class("sal-cascade-chart")
        for name, w in {**c, **self.outputs}.items():
            w.add_class("sal-" + name.replace("_", "-"))
        c["photo"].observe(self._callback(self._on_photo), names="value")
        c["upload"].observe(self._callback(self._on_upload), names="value")
        c["target"].observe(self._callback(self._on_setting), names="value")
        c["search"].observe(self._callback(self._on_search), names="value")
        c["n_steps"].observe(self._callback(self._on_setting), names="value")
        c["n_samples"].observe(self._callback(self._on_setting), names="value")
        c["cascade"].on_click(self._callback(lambda _: self.run_cascade()))
        self.view = widgets.VBox([
            widgets.HBox([c["photo"], c["upload"]]),
            self.outputs["photo_info"],
            widgets.HBox([self.outputs["top5"],
                          widgets.VBox([c["target"], c["search"]])]),
            self._out,
            widgets.HBox([c["n_steps"], c["n_samples"]]),
            self._out_slow,
            c["cascade"],
            self._out_cascade,
            self.status,
        ]).add_class("sal-explorer").add_class(self.css)
        self._select(photo)

    def _make_controls(self, photo: str, n_steps: int, n_samples: int) -> dict:
        """The widget's inputs: photo, upload, class, search, IG/SG sliders, cascade."""
        return {
            "photo": widgets.Dropdown(options=[(p, p) for p in photos.PHOTOS], value=photo,
                                      description="photo"),
            "upload": widgets.FileUpload(accept="image/*", multiple=False,
                                         description="upload a photo"),
            "target": widgets.Dropdown(description="explain",
                                       layout={"width": "360px"}),
            "search": widgets.Combobox(options=self.labels, ensure_option=False,
                                       continuous_update=False,
                                       placeholder="any ImageNet class, by name",
                                       description="or class",
                                       layout={"width": "360px"}),
            "n_steps": widgets.IntSlider(value=n_steps, min=2, max=64,
                                         description="IG steps",
                                         continuous_update=False),
            "n_samples": widgets.IntSlider(value=n_samples, min=2, max=50,
                                           description="SG samples",
                                           continuous_update=False),
            "cascade": widgets.Button(
                description="run the cascade check",
                tooltip="cascading randomization: "
                        + ", ".join(photos.METHOD_TITLES.get(m, m)
                                    for m in self.cascade_methods),
                layout={"width": "220px"}),
        }

    # ------------------------------------------------------------ photos

    @property
    def photo(self) -> dict:
        """The photo on display: {"x", "probs", "size", "name"}."""
        return self._photos[self.controls["photo"].value]

    @property
    def top5(self) -> list[tuple[int, str, float]]:
        """(class index, name, probability) of the photo's five most probable classes."""
        probs = self.photo["probs"]
        values, indices = probs.topk(5)
        return [(int(i), self.names[int(i)], float(p))
                for p, i in zip(values, indices, strict=True)]

    @property
    def target(self) -> int:
        """The class explained now."""
        return int(self.controls["target"].value)

    def _add_photo(self, key: str, x: torch.Tensor, size, name: str) -> None:
        with eval_mode(self.model), torch.no_grad():
            probs = torch.softmax(self.model(x).double()[0], dim=0)
        self._photos[key] = {"x": x, "probs": probs, "size": size, "name": name}

    def _select(self, key: str) -> None:
        """Show photo `key` (adding a bundled one on first use), explaining its top-1."""
        if key not in self._photos:
            self._add_photo(key, photos.load(key), None, key)
        with self._guard():
            self.controls["photo"].value = key
            self.controls["search"].value = ""
            self._target_options(self.top5[0][0])
        self._show_photo_info()
        self.update()

    def _target_options(self, target: int) -> None:
        probs = self.photo["probs"]
        wanted = [i for i, _, _ in self.top5]
        if target not in wanted:
            wanted.append(target)
        self.controls["target"].options = [
            (f"{self.labels[i]} ({float(probs[i]):.3f})", i) for i in wanted]
        self.controls["target"].value = target

    def _show_photo_info(self) -> None:
        p = self.photo
        if p["size"] is None:
            text = f"bundled photo '{p['name']}': {photos.SOURCES[p['name']]}"
        else:
            w, h = p["size"]
            s = min(w, h)
            text = (f"uploaded '{p['name']}': {w} × {h} px; the model sees its centre "
                    f"{s} × {s} square, resized to 224 × 224")
        self.outputs["photo_info"].value = html.escape(text)
        top = "".join(
            f"<tr><td>{html.escape(name)}</td><td style='text-align:right'>"
            f"{p_:.3f}</td></tr>" for _, name, p_ in self.top5)
        self.outputs["top5"].value = (
            "<table class='sal-top5-table'><tr><th>top-5 class</th>"
            f"<th>probability</th></tr>{top}</table>")

    # ------------------------------------------------------------ callbacks

    def _callback(self, fn):
        """`fn` run only outside a guard, its errors shown in the status read-out."""
        def run(change):
            if self._busy:
                return
            try:
                fn(change)
            except (ValueError, TypeError, OSError, TraitError) as err:
                self._show_error(str(err))
            finally:
                self.view.remove_class("sal-busy")
        return run

    def _on_photo(self, change) -> None:
        self._select(change["new"])

    def _on_setting(self, change) -> None:
        self.update()

    def _on_upload(self, change) -> None:
        files = change["new"]
        if not files:
            return
        f = files[0]
        name = str(f.get("name", "upload"))
        content = bytes(f["content"])
        with self._guard():
            self.controls["upload"].value = ()  # the same file can be sent again
        key = UPLOAD + hashlib.sha256(content).hexdigest()[:16]
        if key not in self._photos:
            im = photos.read_image(content, name=f"the uploaded file {name!r}",
                                   accepted=UPLOAD_ACCEPTED)
            rgb = photos.to_rgb(im)
            self._add_photo(key, photos.preprocess(rgb), rgb.size, name)
            options = list(self.controls["photo"].options)
            with self._guard():
                self.controls["photo"].options = [*options, (f"uploaded: {name}", key)]
        self._select(key)

    def _on_search(self, change) -> None:
        text = change["new"].strip()
        if not text:
            return
        target = photos.find_class(text, self.names, name="the class")
        with self._guard():
            self._target_options(target)
        self.update()

    # ------------------------------------------------------------ maps

    def _setting(self, method: str):
        if method == "integrated_gradients":
            return int(self.controls["n_steps"].value)
        if method == "smoothgrad":
            return int(self.controls["n_samples"].value)
        return None

    def _key(self, method: str) -> tuple:
        return (self.controls["photo"].value, self.target, method, self._setting(method))

    def _cached(self, method: str) -> bool:
        if method == "smoothgrad":
            sums = self._sg_sums.get(self._key(method)[:2])
            return sums is not None and len(sums) >= self._setting(method)
        return self._key(method) in self._maps

    def _smoothgrad(self) -> torch.Tensor:
        """SmoothGrad, (1/n) Σ_{k<n} ∇f(x + σε_k), from the running sums of the
        per-sample gradients: only samples not computed before are computed.

        Equals `photos.explain`'s map (`sal.smoothgrad` with the same seed,
        σ = 0.15 × range) up to round-off.
        """
        n = self._setting("smoothgrad")
        key = self._key("smoothgrad")[:2]
        sums = self._sg_sums.get(key)
        have = 0 if sums is None else len(sums)
        if n > have:
            x = self.photo["x"]
            noisy = noisy_copies(x, n, 0.15, torch.Generator().manual_seed(self.seed))
            grads = torch.cat([sal.gradient(self.model, noisy[k : k + 16], self.target)
                               for k in range(have, n, 16)])
            new = grads.double().cumsum(0)
            if sums is not None:
                new += sums[-1]
            sums = new if sums is None else torch.cat([sums, new])
            self._sg_sums[key] = sums
        self._sg_sums.move_to_end(key)
        while len(self._sg_sums) > 2:  # 50 samples of a 224 px photo: 60 MB
            self._sg_sums.popitem(last=False)
        return (sums[n - 1 : n] / n).float()

    def _map(self, method: str) -> torch.Tensor:
        key = self._key(method)
        if method == "smoothgrad":
            return self._smoothgrad()
        if key in self._maps:
            self._maps.move_to_end(key)
            return self._maps[key]
        kwargs = photos.method_kwargs(method, int(self.controls["n_steps"].value),
                                      int(self.controls["n_samples"].value), self.seed)
        attr = sal.METHODS[method](self.model, self.photo["x"], self.target, **kwargs)
        self._maps[key] = attr
        if len(self._maps) > self.CACHE_SIZE:
            self._maps.popitem(last=False)
        return attr

    def _chart(self, methods: list[str], show_photo: bool, title: str | None):
        maps = {photos.METHOD_TITLES.get(m, m): self.result[m] for m in methods}
        return photo_maps(self.photo["x"], maps, show_photo=show_photo, size=self.size,
                          title=title)

    def _display(self, out: widgets.Output, chart) -> None:
        out.outputs = ({"output_type": "display_data", "metadata": {},
                        "data": plotting.mimebundle(chart)},)

    def update(self) -> dict[str, torch.Tensor]:
        """Compute (or take from the cache) every map for the current settings, and
        draw them: the fast methods first, then the slow ones.

        Returns:
            `result`, {method: map}.
        """
        t0 = time.perf_counter()
        fast = [m for m in self.methods if m in photos.FAST_METHODS]
        slow = [m for m in self.methods if m not in photos.FAST_METHODS]
        self.result = {m: self._map(m) for m in fast}
        title = f"explaining '{self.labels[self.target]}': {AGGREGATION}"
        if fast:
            self.charts["fast"] = self._chart(fast, True, title)
            self._display(self._out, self.charts["fast"])
        t1 = time.perf_counter()
        pending = [m for m in slow if not self._cached(m)]
        if pending:
            names = ", ".join(photos.METHOD_TITLES.get(m, m) for m in pending)
            self._out_slow.outputs = _html_output(f"computing {names}…")
            self.status.value = (f'<span class="sal-computing" style="color:#555">'
                                 f"computing {html.escape(names)}…</span>")
            self.view.add_class("sal-busy")
        for m in slow:
            self.result[m] = self._map(m)
        if slow:
            self.charts["slow"] = self._chart(slow, not fast, None if fast else title)
            self._display(self._out_slow, self.charts["slow"])
        self.view.remove_class("sal-busy")
        self.status.value = ""
        self.n_updates += 1
        self.timings = {"fast": t1 - t0, "total": time.perf_counter() - t0,
                        "computed": float(len(pending))}
        return self.result

    # ------------------------------------------------------------ cascade

    def run_cascade(self):
        """Cascading randomization (`sanity.cascading_randomization`) on the photo and
        class on display, for `cascade_methods`, its curve shown below the maps.

        Returns:
            The `SanityResult` (also in ``cascade``); None where the hand-out does
            not have `course_utils.sanity` yet (the status line says so).
        """
        try:  # imported on use: a hand-out may withhold it until ps4's deadline
            from .. import sanity
        except ImportError:
            self.status.value = (
                '<span style="color:#b00">the cascade check needs course_utils.sanity, '
                "which ships after ps4's deadline</span>")
            return None
        key = (self.controls["photo"].value, self.target, tuple(self.cascade_methods),
               int(self.controls["n_steps"].value), int(self.controls["n_samples"].value))
        if key not in self._cascades:
            self.status.value = (
                '<span class="sal-computing" style="color:#555">computing the cascade '
                f"({len(pm.CASCADE_LAYERS)} steps)…</span>")
            self._out_cascade.outputs = _html_output("computing the cascade…")
            self.view.add_class("sal-busy")
            methods = {}
            for m in self.cascade_methods:
                kwargs = photos.method_kwargs(m, *key[3:], self.seed)
                kwargs.pop("generator", None)  # the cascade seeds the noise itself
                methods[photos.METHOD_TITLES.get(m, m)] = partial(sal.METHODS[m],
                                                                  **kwargs)
            self._cascades[key] = sanity.cascading_randomization(
                self.model, self.photo["x"], self.target, methods,
                list(pm.CASCADE_LAYERS), metrics=["spearman", "spearman_abs"],
                seed=self.seed, progress=False)
        self.cascade = self._cascades[key]
        self.charts["cascade"] = sanity.cascade_curve(
            self.cascade, metrics=["spearman", "spearman_abs"], band=False,
            width=320)
        self._display(self._out_cascade, self.charts["cascade"])
        self.view.remove_class("sal-busy")
        self.status.value = ""
        return self.cascade


def _check_args(photo, methods, cascade_methods) -> None:
    """`PhotoExplainer`'s arguments, each error naming the argument."""
    if photo not in photos.PHOTOS:
        raise ValueError(f"photo must be one of {list(photos.PHOTOS)}, got {photo!r}")
    for arg, names, most in (("methods", methods, None),
                             ("cascade_methods", cascade_methods, 2)):
        if isinstance(names, str) or not names or (most and len(names) > most):
            raise ValueError(f"{arg} must be a list of 1–{most or 6} names from "
                             f"{list(sal.METHODS)}, got {names!r}")
        unknown = [m for m in names if m not in sal.METHODS]
        if unknown:
            raise ValueError(f"{arg} must be names from {list(sal.METHODS)}, "
                             f"got unknown {unknown}")
