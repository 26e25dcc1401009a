"""The explorers as a student uses them: keyboard on the slider, clicks on ← →.

For the IG (03), SmoothGrad (04) and occlusion (05) explorers, in the notebook
that shows them (after its "Run All"), or — when a notebook does not show one —
in tests/browser/explorers.ipynb, which builds all three:

* focus the slider handle and press the arrow key 10 times; after each press
  wait until the chart is redrawn (a new, non-blank canvas) and record the
  latency from the key event to that frame;
* the heatmap changed (screenshots of the chart before and after differ) and
  the read-outs changed accordingly (patch size and forward passes match the
  slider; IG's completeness gap shrinks as n_steps grows; σ's read-out moves);
* → shows the next digit, ← goes back to the same digit and picture.

Screenshots go to artifacts/browser/explorers/; the latency table is printed
at the end of the run and saved as artifacts/browser/latency.json.
"""

from __future__ import annotations

import io
import itertools
import os
import re
import statistics
from dataclasses import dataclass

import browser_lab as bl
import pytest

MOVES = 10
DRAGS = 4  # slider drags (mouse down, move, release) after the key presses
# Goals from the issue: median ≤ 150 ms and worst ≤ 400 ms on 2 cores, per
# interaction (key, click, drag). Timings are reported (table, latency.json),
# not asserted: wall-clock bounds make CI flaky on shared machines. Set
# BROWSER_LATENCY_MS=150 to turn the median goal into a failure.
LATENCY_GOAL_MS = bl.LATENCY_GOAL_MS  # 150 ms
WORST_GOAL_MS = bl.WORST_GOAL_MS  # 400 ms
LATENCY_MS = float(os.environ.get("BROWSER_LATENCY_MS", "inf"))
SCRATCH_NOTEBOOK = "explorers.ipynb"


@dataclass(frozen=True)
class Spec:
    prefix: str  # notebook number
    cls: str  # Python class the notebook must use
    css: str  # CSS class of the explorer's view
    slider: str  # CSS class of the slider the test moves
    home_first: bool  # press Home first (start from the slider's minimum)


SPECS = {
    "ig": Spec("03_", "IGExplorer", "sal-ig", "sal-n-steps", True),
    "smoothgrad": Spec(
        "04_", "SmoothGradExplorer", "sal-smoothgrad", "sal-noise-level", False
    ),
    "occlusion": Spec("05_", "OcclusionExplorer", "sal-occlusion", "sal-patch", False),
}


def _drag(ex: Explorer, css: str, dx: float) -> None:
    """Drag the slider's handle by dx pixels and release it."""
    box = ex.handle(css).bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page = ex.page
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.evaluate("() => { window.__sal.dragging = true; }")
    page.mouse.move(cx + dx / 2, cy, steps=3)
    page.mouse.move(cx + dx, cy, steps=3)
    page.mouse.up()
    page.evaluate("() => { window.__sal.dragging = false; }")


_row = bl.latency_row  # one latency row: median and worst against the goals


def _notebook_for(spec: Spec) -> str:
    if os.environ.get("BROWSER_EXPLORERS_SCRATCH") == "1":  # quick check of the widgets
        return SCRATCH_NOTEBOOK
    for path in sorted(bl.NOTEBOOKS.glob(f"{spec.prefix}*.ipynb")):
        if spec.cls in path.read_text(encoding="utf-8", errors="replace"):
            return path.name
    return SCRATCH_NOTEBOOK


PARAMS = []
for key, spec in SPECS.items():
    nb = _notebook_for(spec)
    PARAMS.append(
        pytest.param(
            key,
            nb,
            id=f"{key}-{nb.removesuffix('.ipynb')}",
            marks=pytest.mark.notebook(nb),
        )
    )


# ---------------------------------------------------------------- page helpers

JS_INSTALL = """
() => {
  if (window.__sal) return;
  window.__sal = {t0: null, tdom: null, t1: null, old: null, canvases: 0,
                 seen: new WeakSet()};
  document.addEventListener('keydown', () => {
    if (window.__sal.t0 === null) window.__sal.t0 = performance.now();
  }, true);
  document.addEventListener('click', () => {
    if (window.__sal.t0 === null) window.__sal.t0 = performance.now();
  }, true);
  // a drag counts from the release (continuous_update=False sends it then)
  document.addEventListener('pointerup', () => {
    if (window.__sal.t0 === null && window.__sal.dragging)
      window.__sal.t0 = performance.now();
  }, true);
  // tdom: the chart's DOM first changes (the kernel's new output arrived);
  // canvases: how many canvases were drawn into charts since the last arm.
  new MutationObserver(recs => {
    for (const r of recs) {
      const t = r.target;
      if (!(t.closest && t.closest('.sal-chart'))) continue;
      if (window.__sal.t0 !== null && window.__sal.tdom === null)
        window.__sal.tdom = performance.now();
      for (const n of r.addedNodes) {
        if (n.nodeType !== 1) continue;
        const found = n.tagName === 'CANVAS' ? [n] : [...n.querySelectorAll('canvas')];
        for (const c of found) if (!window.__sal.seen.has(c)) {
          window.__sal.seen.add(c); window.__sal.canvases++;
        }
      }
    }
  }).observe(document.body, {childList: true, subtree: true});
}
"""

JS_ARM = """
(root) => {
  const el = document.querySelector(root);
  window.__sal.old = el.querySelector('.sal-chart canvas');
  window.__sal.t0 = null; window.__sal.tdom = null; window.__sal.t1 = null;
  window.__sal.canvases = 0;
}
"""

# True once the chart shows a new canvas with something drawn on it.
JS_REDRAWN = """
([root, minInk]) => {
  const el = document.querySelector(root);
  const c = el && el.querySelector('.sal-chart canvas');
  if (!c || c === window.__sal.old || c.width < 20 || c.height < 20) return false;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let ink = 0, n = 0;
  const step = Math.max(1, Math.floor(d.length / 4 / 20000));
  for (let p = 0; p < d.length / 4; p += step) {
    const k = 4 * p; n++;
    if (d[k + 3] > 16 && (d[k] < 235 || d[k + 1] < 235 || d[k + 2] < 235)) ink++;
  }
  if (ink / n < minInk) return false;
  window.__sal.t1 = performance.now();
  return true;
}
"""

JS_STATE = """
(root) => {
  const el = document.querySelector(root);
  const txt = sel => { const e = el.querySelector(sel); return e ? e.textContent.trim() : null; };
  const handle = sel => {
    const h = el.querySelector(sel + ' .noUi-handle');
    // aria-valuenow is rounded to one decimal; aria-valuetext is the formatted value
    return h ? {now: parseFloat(h.getAttribute('aria-valuetext') || h.getAttribute('aria-valuenow')),
                min: +h.getAttribute('aria-valuemin'), max: +h.getAttribute('aria-valuemax')} : null;
  };
  const c = el.querySelector('.sal-chart canvas');
  return {
    index: txt('.sal-index .widget-readout'),
    patchSize: txt('.sal-patch-size'), forwardPasses: txt('.sal-forward-passes'),
    delta: txt('.sal-delta'), prediction: txt('.sal-prediction'),
    confidence: txt('.sal-confidence'), status: txt('.sal-status'),
    noise: txt('.sal-noise-level .widget-readout'),
    patch: txt('.sal-patch .widget-readout'), stride: txt('.sal-stride .widget-readout'),
    steps: txt('.sal-n-steps .widget-readout'),
    sliders: {index: handle('.sal-index'), patch: handle('.sal-patch'),
              stride: handle('.sal-stride'), n_steps: handle('.sal-n-steps'),
              noise: handle('.sal-noise-level')},
    canvas: c ? c.toDataURL('image/png') : null,
    errors: [...el.querySelectorAll('.jp-OutputArea-output')].map(o => o.textContent)
            .filter(t => /Error|Traceback|model not found/.test(t)),
  };
}
"""


class Explorer:
    def __init__(self, nb: bl.NotebookPage, css: str):
        self.nb, self.page = nb, nb.page
        self.root = f".jp-NotebookPanel .sal-explorer.{css}"
        self.page.wait_for_selector(f"{self.root} .sal-chart canvas", timeout=60_000)
        self.page.evaluate(JS_INSTALL)
        self.page.locator(self.root).first.scroll_into_view_if_needed()

    def state(self) -> dict:
        return self.page.evaluate(JS_STATE, self.root)

    def settle(self, quiet_ms: int = 400, timeout_ms: int = 15_000) -> None:
        """Wait until the kernel is idle and the chart's canvas stays the same."""
        self.page.wait_for_function(bl.JS_IDLE, timeout=timeout_ms, polling=50)
        self.page.wait_for_function(
            """([root, quiet]) => {
                const c = document.querySelector(root + ' .sal-chart canvas');
                const now = performance.now();
                if (!window.__salSettle || window.__salSettle.c !== c)
                  window.__salSettle = {c, since: now};
                return !!c && now - window.__salSettle.since >= quiet;
            }""",
            arg=[self.root, quiet_ms],
            timeout=timeout_ms,
            polling=50,
        )

    def act(self, do, min_ink: float = 0.02, timeout_ms: int = 30_000) -> float:
        """Run `do()` (a key press or click); return ms from the event to the redraw.

        Also keeps `self.last`: the split of that time into "kernel" (event →
        the new output reaches the chart) and "draw" (→ the new canvas is
        drawn), and how many canvases the update drew until it settled.
        """
        self.settle()
        self.page.evaluate(JS_ARM, self.root)
        do()
        self.page.wait_for_function(
            JS_REDRAWN, arg=[self.root, min_ink], timeout=timeout_ms, polling="raf"
        )
        t0, tdom, t1 = self.page.evaluate(
            "() => [window.__sal.t0, window.__sal.tdom, window.__sal.t1]"
        )
        assert t0 is not None, "the key/click event was not seen by the page"
        self.settle()
        canvases = self.page.evaluate("() => window.__sal.canvases")
        tdom = t1 if tdom is None else tdom
        self.last = {
            "total": t1 - t0,
            "kernel": tdom - t0,
            "draw": t1 - tdom,
            "canvases": canvases,
        }
        return t1 - t0

    def shot(self, path) -> bytes:
        self.settle()
        chart = self.page.locator(f"{self.root} .sal-chart").first
        data = chart.screenshot(path=str(path), timeout=15_000)
        return data

    def handle(self, css: str):
        return self.page.locator(f"{self.root} .{css} .noUi-handle").first


def _pixel_change(a: bytes, b: bytes) -> float:
    """Share of pixels that differ between two PNG screenshots."""
    from PIL import Image, ImageChops

    ia = Image.open(io.BytesIO(a)).convert("RGB")
    ib = Image.open(io.BytesIO(b)).convert("RGB")
    if ia.size != ib.size:  # e.g. a longer title: compare the common area
        box = (0, 0, min(ia.size[0], ib.size[0]), min(ia.size[1], ib.size[1]))
        ia, ib = ia.crop(box), ib.crop(box)
    diff = (
        ImageChops.difference(ia, ib).convert("L").point(lambda v: 255 if v > 8 else 0)
    )
    return sum(diff.histogram()[255:]) / (ia.size[0] * ia.size[1])


STEPS = {"sal-noise-level": 0.01}  # slider steps (IntSliders step 1)


def _plan(slider: dict, css: str) -> list[str]:
    """MOVES arrow keys that stay inside the slider: towards the side with more
    room, turning back at the end."""
    step = STEPS.get(css, 1)
    lo, hi = round(slider["min"] / step), round(slider["max"] / step)
    pos = round(slider["now"] / step)
    up = hi - pos >= pos - lo
    keys = []
    for _ in range(MOVES):
        if (up and pos >= hi) or (not up and pos <= lo):
            up = not up
        keys.append("ArrowRight" if up else "ArrowLeft")
        pos += 1 if up else -1
    return keys


def _first_number(text: str) -> float:
    m = re.search(r":\s*([+-]?\d+(?:\.\d+)?)", text or "")
    assert m, f"no number in read-out {text!r}"
    return float(m.group(1))


def _browse(ex: Explorer, shown: bytes, out, stem: str, clicks: int = 1):
    """Click → `clicks` times, then ← as often: the digit index follows, the
    picture changes, and coming back restores it. Returns (→ ms, ← ms,
    remaining difference, last state); the times are lists in ms."""
    s = ex.state()
    n_digits = int(s["sliders"]["index"]["max"]) + 1
    i0 = int(s["sliders"]["index"]["now"])
    t_next, t_prev = [], []
    for k in range(1, clicks + 1):
        t_next.append(
            ex.act(lambda: ex.page.locator(f"{ex.root} .sal-next").first.click())
        )
        sn = ex.state()
        assert int(sn["sliders"]["index"]["now"]) == (i0 + k) % n_digits, (
            f"→ pressed {k}×: digit {sn['sliders']['index']}, expected {(i0 + k) % n_digits}"
        )
        shot = ex.shot(out / f"{stem}-next-digit-{k}.png")
        if n_digits > 1 and k == 1:
            assert _pixel_change(shown, shot) > 0.005, "→ did not change the picture"
    for k in range(clicks - 1, -1, -1):
        t_prev.append(
            ex.act(lambda: ex.page.locator(f"{ex.root} .sal-prev").first.click())
        )
        sp = ex.state()
        assert int(sp["sliders"]["index"]["now"]) == (i0 + k) % n_digits, (
            f"← : digit {sp['sliders']['index']}, expected {(i0 + k) % n_digits}"
        )
    back = ex.shot(out / f"{stem}-back.png")
    back_same = _pixel_change(shown, back)
    assert back_same < 0.01, (
        f"← did not restore the first picture ({back_same:.2%} differ)"
    )
    assert not sp["errors"], sp["errors"]
    assert not sp["status"], f"explorer status shows: {sp['status']}"
    return t_next, t_prev, back_same, sp


# ---------------------------------------------------------------- the tests


@pytest.mark.parametrize("key,notebook", PARAMS)
def test_explorer_in_browser(key, notebook, runs, artifacts, latency):
    spec = SPECS[key]
    nb = runs.get(notebook)
    ex = Explorer(nb, spec.css)
    out = artifacts / "explorers"
    out.mkdir(exist_ok=True)
    stem = f"{key}"

    start = ex.state()
    assert not start["errors"], start["errors"]
    assert not start["status"], f"explorer status shows: {start['status']}"
    handle = ex.handle(spec.slider)
    handle.focus()

    if spec.home_first:  # e.g. IG: start from the fewest steps
        ex.act(lambda: handle.press("Home"))
    s0 = ex.state()
    before = ex.shot(out / f"{stem}-before.png")

    slider = s0["sliders"][
        {"sal-n-steps": "n_steps", "sal-noise-level": "noise", "sal-patch": "patch"}[
            spec.slider
        ]
    ]
    keys = _plan(slider, spec.slider)

    times, states, split = [], [s0], []
    for k in keys:
        times.append(ex.act(lambda k=k: handle.press(k)))
        split.append(ex.last)
        states.append(ex.state())
    s1 = states[-1]
    after = ex.shot(out / f"{stem}-after.png")

    # --- the slider moved one step per key press, and the read-outs followed
    name = {"sal-n-steps": "n_steps", "sal-noise-level": "noise", "sal-patch": "patch"}[
        spec.slider
    ]
    values = [s["sliders"][name]["now"] for s in states]
    assert all(a != b for a, b in itertools.pairwise(values)), f"slider values {values}"
    changed_pics = sum(
        a["canvas"] != b["canvas"] for a, b in itertools.pairwise(states)
    )

    if key == "occlusion":
        from course_utils.saliency import forward_passes_occlusion

        for s in states:
            p, stride = (
                int(s["sliders"]["patch"]["now"]),
                int(s["sliders"]["stride"]["now"]),
            )
            assert f"{p}×{p} px, stride {stride}" in s["patchSize"], s["patchSize"]
            want = forward_passes_occlusion((1, 28, 28), p, stride)
            assert _first_number(s["forwardPasses"]) == want, (
                p,
                stride,
                s["forwardPasses"],
            )
        passes = {s["forwardPasses"] for s in states}
        assert len(passes) > 1, f"forward passes never changed: {passes}"
    elif key == "ig":
        gaps = [abs(_first_number(s["delta"])) for s in states]
        assert len(set(gaps)) > 1, f"completeness gap never changed: {gaps}"
        steps = [int(float(s["steps"])) for s in states]
        assert steps == values, f"n_steps read-out {steps} ≠ slider {values}"
        if values[-1] > values[0]:
            assert gaps[-1] < gaps[0], (
                f"completeness gap should shrink from {values[0]} to {values[-1]} steps: {gaps}"
            )
    elif key == "smoothgrad":
        noises = [float(s["noise"]) for s in states]
        assert noises == values, f"σ read-out {noises} ≠ slider {values}"
        assert noises[0] != noises[-1]

    change = _pixel_change(before, after)
    assert change > 0.005, f"heatmap did not change on screen ({change:.2%} of pixels)"

    # --- drags: mouse down on the handle, move, release (value sent on release)
    drag_times, drag_split, dragged = [], [], [values[-1]]
    width = ex.page.locator(f"{ex.root} .{spec.slider} .noUi-target").first
    span = width.bounding_box()["width"]
    for k in range(DRAGS):
        dx = (0.2 if k % 2 == 0 else -0.2) * span
        if values[-1] > (slider["min"] + slider["max"]) / 2:
            dx = -dx
        drag_times.append(ex.act(lambda dx=dx: _drag(ex, spec.slider, dx)))
        drag_split.append(ex.last)
        dragged.append(ex.state()["sliders"][name]["now"])
    assert all(a != b for a, b in itertools.pairwise(dragged)), f"drags: {dragged}"

    # --- the digit browser: → then ←
    t_next, t_prev, back_same, _ = _browse(ex, after, out, stem)
    t_next, t_prev = t_next[0], t_prev[0]

    med, worst = statistics.median(times), max(times)
    explorer = f"{spec.cls} ({notebook})"
    key_row = _row(explorer, "key", name, times, split)
    key_row.update(next_ms=t_next, prev_ms=t_prev, values=values)
    latency(key_row)
    latency(_row(explorer, "drag", name, drag_times, drag_split))
    latency(_row(explorer, "click", "→ / ←", [t_next, t_prev]))
    print(
        f"   drags of {spec.slider}: {dragged[0]} → {dragged[1:]}; "
        f"{', '.join(f'{t:.0f}' for t in drag_times)} ms"
    )
    print(
        f"\n{spec.cls} in {notebook}: {name} {values[0]} → {values[-1]}; "
        f"latency median {med:.0f} ms, worst {worst:.0f} ms "
        f"({', '.join(f'{t:.0f}' for t in times)}); → {t_next:.0f} ms, ← {t_prev:.0f} ms; "
        f"median split: kernel+transport "
        f"{statistics.median(x['kernel'] for x in split):.0f} ms, draw "
        f"{statistics.median(x['draw'] for x in split):.0f} ms, "
        f"{statistics.median(x['canvases'] for x in split):.0f} canvases per update; "
        f"{changed_pics}/{MOVES} moves changed the canvas; before/after differ on "
        f"{change:.1%} of pixels; ← restored the picture up to {back_same:.2%}"
    )
    print(
        f"   read-outs before: {s0['patchSize'] or s0['delta'] or s0['noise']} | "
        f"{s0['forwardPasses'] or ''}"
    )
    print(
        f"   read-outs after:  {s1['patchSize'] or s1['delta'] or s1['noise']} | "
        f"{s1['forwardPasses'] or ''}"
    )
    if med > LATENCY_GOAL_MS or worst > WORST_GOAL_MS:
        print(
            f"   NOTE: keys median {med:.0f} / worst {worst:.0f} ms miss the "
            f"{LATENCY_GOAL_MS:.0f} / {WORST_GOAL_MS:.0f} ms goals"
        )
    assert med <= LATENCY_MS, (
        f"median latency {med:.0f} ms > {LATENCY_MS:.0f} ms (times {times})"
    )


def _methods_notebook() -> str:
    if os.environ.get("BROWSER_EXPLORERS_SCRATCH") == "1":
        return SCRATCH_NOTEBOOK
    for path in sorted(bl.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        if "MethodBrowser" in path.read_text(encoding="utf-8", errors="replace"):
            return path.name
    return SCRATCH_NOTEBOOK


METHODS_NB = _methods_notebook()


@pytest.mark.notebook(METHODS_NB)
def test_method_browser_in_browser(runs, artifacts, latency):
    """Every method side by side (07): → and ← step through the digits."""
    nb = runs.get(METHODS_NB)
    ex = Explorer(nb, "sal-methods")
    out = artifacts / "explorers"
    out.mkdir(exist_ok=True)
    start = ex.state()
    assert not start["errors"], start["errors"]
    shown = ex.shot(out / "methods-before.png")
    splits = []
    act = ex.act

    def timed(do, **kw):  # keep every move's kernel/draw split
        t = act(do, **kw)
        splits.append(ex.last)
        return t

    ex.act = timed
    t_next, t_prev, back_same, _ = _browse(ex, shown, out, "methods", clicks=3)
    times = t_next + t_prev
    explorer = f"MethodBrowser ({METHODS_NB})"
    # → → → visit new digits (computed); ← ← ← revisit them (cached)
    latency(_row(explorer, "click", "→ new", t_next, splits[: len(t_next)]))
    latency(_row(explorer, "click", "← seen", t_prev, splits[len(t_next) :]))
    print(
        f"\nMethodBrowser in {METHODS_NB}: → / ← {', '.join(f'{t:.0f}' for t in times)} ms"
        f" (median {statistics.median(times):.0f}); back to the first digit: "
        f"{back_same:.2%} of pixels differ"
    )
