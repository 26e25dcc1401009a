"""`PhotoExplainer`: upload a photo, see the ImageNet model's top-5 and its saliency maps.

The same flow as `photos.explain`, in a widget: a bundled photo or an uploaded
JPEG/PNG (any size or orientation; a bad file gets a message, the widget keeps
its last photo), the top-5 classes, the class to explain (one of the top-5, or
any ImageNet class found by name), the fast maps (gradient, Grad-CAM) first
and the slower ones (IG, SmoothGrad, guided backprop, guided Grad-CAM) after
a visible "computing…", and one button for the cascading randomization check.

Every map is cached per (photo, class, method, its setting): switching class
or photo back redraws at once, and a chart whose maps did not change is not
sent again. IG and SmoothGrad grow point by point (`widgets.incremental`):

* IG uses Clenshaw–Curtis points (`quadrature("clenshaw_curtis")`; the
  slider offers n = 2, 3, 5, 9, 17, 33, 65, default 33), whose grids nest:
  every gradient along the path is computed once and kept in one running sum
  per n, so moving the slider down costs no model call and moving it up only
  the new points. Clenshaw–Curtis points crowd towards both ends of the path
  like Gauss–Legendre's (which the widget used before; their grids do not
  nest) and their completeness error on the bundled photos is of the same
  size (notebook 11, section 2); the read-out under the sliders prints it
  for the photo and n on display.
* SmoothGrad keeps the running sums of its per-sample gradients (sample k's
  noise is the same for every n), so fewer samples cost nothing and more
  cost only the new ones.
* After the maps are drawn, the rest of IG's 65 points and SmoothGrad's 50
  samples are computed in the background (`incremental.IdleFiller`: small
  steps on the kernel's event loop, between its messages; a new photo or
  class cancels them; `prefill=False` turns it off), so later moves of
  either slider are answered from the sums. Widget messages may arrive in
  a kernel subshell's thread while cells run in the main thread: every
  callback, `update()`, `run_cascade()` and every background step hold the
  widget's lock (``lock``, a `threading.RLock`), so none sees another half
  done.

CSS classes for browser tests: "sal-photo-explainer" on the view, "sal-photo",
"sal-upload", "sal-target", "sal-search", "sal-n-steps", "sal-n-samples",
"sal-cascade" (the button), "sal-top5", "sal-photo-info", "sal-chart" (fast
maps), "sal-chart-slow", "sal-cascade-chart", "sal-ig-delta" (IG's
completeness read-out), "sal-cache" (points and samples computed so far),
"sal-status" (errors), and "sal-busy" on the view while something is
computed.
"""

from __future__ import annotations

import collections
import hashlib
import html
import threading
import time
from collections.abc import Sequence
from functools import partial

import ipywidgets as widgets
import torch
from traitlets import TraitError

from .. import models, photos, plotting
from .. import photo_model as pm
from .. import saliency as sal
from ..plotting.rgb import AGGREGATION, photo_maps, picture
from ..saliency.core import eval_mode
from .incremental import IG_STEPS, IdleFiller, NoiseSums, PathIG, lru_get
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
        n_steps: IG's Clenshaw–Curtis points, one of `IG_STEPS` (2, 3, 5, 9,
            17, 33, 65; default 33). n_samples: SmoothGrad's noisy copies
            (slider 2…50, default 8).
        cascade_methods: one or two method names for the cascade button
            (default gradient and guided backprop: one that fails the check,
            one that passes it).
        seed: SmoothGrad's noise. size: width of each map in pixels.
        prefill: compute the other slider values' points and samples in
            the background after each update (default True; only inside a
            running event loop, e.g. a Jupyter kernel).

    ``controls`` (set ``.value`` from code to drive it), ``result`` ({method:
    map} on display), ``charts`` ({"fast", "slow", "cascade"}: the Altair
    charts), ``top5``, ``target``, ``cascade`` (the last `SanityResult`),
    ``n_updates``, ``timings``, ``filler`` (the background `IdleFiller`) and
    ``lock`` (held by every callback, update, cascade and background step).
    """

    css = "sal-photo-explainer"
    CACHE_SIZE = 96  # maps kept (one map of a 224 px photo is 0.6 MB)
    PICTURES_KEPT = 32  # maps drawn as PNGs, reused by the charts (≈ 60 kB each)
    PATHS_KEPT = 4  # IG running sums kept, per (photo, class): 8.4 MB each
    NOISE_KEPT = 2  # SmoothGrad prefix sums kept: up to 30 MB each
    FILL_POINTS = 1  # gradients per background step (a message waits ≤ one step)
    FILL_AFTER = 0.15  # s after an update before the background steps resume

    def __init__(self, model=None, *, photo: str = "chelsea",
                 methods: Sequence[str] = photos.FAST_METHODS + photos.SLOW_METHODS,
                 n_steps: int = 33, n_samples: int = 8,
                 cascade_methods: Sequence[str] = ("gradient", "guided_backprop"),
                 seed: int = 0, size: int = 168, prefill: bool = True):
        _check_args(photo, methods, cascade_methods, n_steps, n_samples)
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
        self._paths: collections.OrderedDict = collections.OrderedDict()
        self._noise: collections.OrderedDict = collections.OrderedDict()
        self._shown: dict[str, tuple] = {}  # output → key of the chart it shows
        self._pictures: collections.OrderedDict = collections.OrderedDict()
        self.prefill = bool(prefill)
        self.lock = threading.RLock()  # callbacks, update, cascade, background steps
        self.filler = IdleFiller(lock=self.lock)
        self._busy = False
        self.result: dict[str, torch.Tensor] = {}
        self.charts: dict = {}
        self.cascade = None
        self.n_updates = 0
        self.timings: dict[str, float] = {}

        c = self.controls = self._make_controls(photo, n_steps, n_samples)
        self.outputs = {"top5": widgets.HTML(), "photo_info": widgets.HTML(),
                        "ig_delta": widgets.HTML(), "cache": widgets.HTML()}
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
            widgets.VBox([self.outputs["ig_delta"], self.outputs["cache"]]),
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
            "n_steps": widgets.SelectionSlider(options=IG_STEPS, value=n_steps,
                                               description="IG points",
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
        """`fn` run only outside a guard, holding the lock, its errors shown in the
        status read-out."""
        def run(change):
            with self.lock:  # a subshell's thread, a cell, a background step
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

    def _path(self) -> PathIG:
        """IG's running sums for the photo and class on display (`PathIG`)."""
        return lru_get(self._paths, self._key("")[:2], lambda: PathIG(
            self.model, self.photo["x"], self.target), self.PATHS_KEPT)

    def _noise_sums(self) -> NoiseSums:
        """SmoothGrad's prefix sums for the photo and class on display (`NoiseSums`;
        σ = 0.15 × range and the seed of `photos.explain`)."""
        return lru_get(self._noise, self._key("")[:2], lambda: NoiseSums(
            self.model, self.photo["x"], self.target, 0.15, self.seed), self.NOISE_KEPT)

    def _cached(self, method: str) -> bool:
        if method == "integrated_gradients":
            return not self._path().missing(self._setting(method))
        if method == "smoothgrad":
            return self._noise_sums().n_done >= self._setting(method)
        return self._key(method) in self._maps

    def _map(self, method: str) -> torch.Tensor:
        if method == "integrated_gradients":
            return self._path().attribution(self._setting(method))
        if method == "smoothgrad":
            return self._noise_sums().attribution(self._setting(method))
        key = self._key(method)
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

    def _draw(self, which: str, out: widgets.Output, methods: list[str],
              show_photo: bool, title: str | None) -> None:
        """Chart `methods`' maps into `out`, unless it shows them already."""
        key = tuple(self._key(m) for m in methods) + (show_photo, title)
        if self._shown.get(which) == key:
            return
        maps = {photos.METHOD_TITLES.get(m, m): lru_get(
                    self._pictures, self._key(m),
                    partial(picture, self.photo["x"], self.result[m]), self.PICTURES_KEPT)
                for m in methods}
        self.charts[which] = photo_maps(self.photo["x"], maps, show_photo=show_photo,
                                        size=self.size, title=title)
        self._display(out, self.charts[which])
        self._shown[which] = key

    def _display(self, out: widgets.Output, chart) -> None:
        out.outputs = ({"output_type": "display_data", "metadata": {},
                        "data": plotting.mimebundle(chart)},)

    def update(self) -> dict[str, torch.Tensor]:
        """Compute (or take from the cache) every map for the current settings, and
        draw them: the fast methods first, then the slow ones; then start
        filling in the other slider values in the background (`prefill`).

        Returns:
            `result`, {method: map}.
        """
        with self.lock:
            return self._update()

    def _update(self) -> dict[str, torch.Tensor]:
        self.filler.cancel()
        t0 = time.perf_counter()
        fast = [m for m in self.methods if m in photos.FAST_METHODS]
        slow = [m for m in self.methods if m not in photos.FAST_METHODS]
        self.result = {m: self._map(m) for m in fast}
        title = f"explaining '{self.labels[self.target]}': {AGGREGATION}"
        if fast:
            self._draw("fast", self._out, fast, True, title)
        t1 = time.perf_counter()
        pending = [m for m in slow if not self._cached(m)]
        if pending:
            names = ", ".join(photos.METHOD_TITLES.get(m, m) for m in pending)
            self._out_slow.outputs = _html_output(f"computing {names}…")
            self._shown.pop("slow", None)
            self.status.value = (f'<span class="sal-computing" style="color:#555">'
                                 f"computing {html.escape(names)}…</span>")
            self.view.add_class("sal-busy")
        for m in slow:
            self.result[m] = self._map(m)
        if slow:
            self._draw("slow", self._out_slow, slow, not fast, None if fast else title)
        self.view.remove_class("sal-busy")
        self.status.value = ""
        self.n_updates += 1
        self.timings = {"fast": t1 - t0, "total": time.perf_counter() - t0,
                        "computed": float(len(pending))}
        if self.prefill and self._to_fill():
            self.filler.start(self._fill(), on_done=self._show_readouts,
                              first_delay=self.FILL_AFTER)
        self._show_readouts()
        return self.result

    def _show_readouts(self) -> None:
        """IG's completeness gap for the n on display, and what is computed so far."""
        parts = []
        if "integrated_gradients" in self.result:
            n, path = self._setting("integrated_gradients"), self._path()
            total = float(self.result["integrated_gradients"].double().sum())
            gain = path.gain()
            self.outputs["ig_delta"].value = html.escape(
                f"IG, {n} points: Σ IG = {total:.2f}, f(x) − f(black) = {gain:.2f}, "
                f"completeness error {total - gain:+.2f}")
            parts.append(f"{path.n_done} of {len(path.alphas)} points on IG's path")
        if "smoothgrad" in self.result:
            parts.append(f"{self._noise_sums().n_done} of "
                         f"{self.controls['n_samples'].max} SmoothGrad samples")
        if parts:
            busy = " (computing the rest…)" if self.filler.running else ""
            self.outputs["cache"].value = (
                '<span style="color:#555">computed for this photo and class: '
                f"{html.escape(', '.join(parts))}{busy}</span>")

    def _to_fill(self) -> bool:
        """Are IG's points or SmoothGrad's samples for the other values missing?"""
        return bool(("integrated_gradients" in self.result and self._path().todo())
                    or ("smoothgrad" in self.result and self._noise_sums().n_done
                        < self.controls["n_samples"].max))

    def _fill(self):
        """The background steps: IG's missing points (coarser rules first), then
        SmoothGrad's samples up to the slider's maximum, FILL_POINTS at a time."""
        k = self.FILL_POINTS
        if "integrated_gradients" in self.result:
            path = self._path()
            todo = path.todo()
            for i in range(0, len(todo), k):
                path.compute(todo[i : i + k])
                self._show_readouts()
                yield
        if "smoothgrad" in self.result:
            noise, most = self._noise_sums(), int(self.controls["n_samples"].max)
            while noise.n_done < most:
                noise.compute(min(most, noise.n_done + k))
                self._show_readouts()
                yield

    # ------------------------------------------------------------ cascade

    def run_cascade(self):
        """Cascading randomization (`sanity.cascading_randomization`) on the photo and
        class on display, for `cascade_methods`, its curve shown below the maps.

        Returns:
            The `SanityResult` (also in ``cascade``); None where the hand-out does
            not have `course_utils.sanity` yet (the status line says so).
        """
        with self.lock:
            return self._run_cascade()

    def _run_cascade(self):
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


def _check_args(photo, methods, cascade_methods, n_steps, n_samples) -> None:
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
    if isinstance(n_steps, bool) or n_steps not in IG_STEPS:
        raise ValueError(f"n_steps must be one of {list(IG_STEPS)} (Clenshaw–Curtis "
                         f"grids that nest), got {n_steps!r}")
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) \
            or not 2 <= n_samples <= 50:
        raise ValueError(f"n_samples must be an int in 2…50, got {n_samples!r}")
