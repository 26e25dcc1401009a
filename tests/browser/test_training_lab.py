"""TrainingLab (notebook 09) as a student uses it: Train, wait, Pause, Saliency, →.

After the notebook's "Run All" (the lab stands at step 200, auto-refresh every
100 steps):

* click **Train** and wait until the step counter has moved on by 100 steps
  (read from the page while the kernel trains in its background thread: the
  counter ticks, the page stays usable); the auto-refresh has redrawn the
  map from the thread without a click;
* click **Pause**: the counter stops and **Train** is enabled again;
* untick auto-refresh, train another 100 steps and pause: the map has not
  changed; click **Saliency**: the chart is redrawn and differs on screen;
* click →: the digit read-out moves to the next digit and the map changes.

Screenshots go to artifacts/browser/training_lab/."""

from __future__ import annotations

import re
import time

import browser_lab as bl
import pytest
from test_explorers import _pixel_change

NOTEBOOK = next(
    (p.name for p in sorted(bl.NOTEBOOKS.glob("09_*.ipynb"))
     if "TrainingLab" in p.read_text(encoding="utf-8", errors="replace")),
    "09_what_the_network_sees.ipynb",
)  # fmt: skip
ROOT = ".jp-NotebookPanel .sal-training-lab"
TRAIN_STEPS = 100

JS_READ = """
(root) => {
  const el = document.querySelector(root);
  const txt = sel => { const e = el.querySelector(sel); return e ? e.textContent.trim() : ''; };
  const button = sel => { const b = el.querySelector(sel); return b ? b.disabled : null; };
  const c = el.querySelector('.sal-chart canvas');
  return {step: txt('.sal-step'), accuracy: txt('.sal-accuracy'), digit: txt('.sal-digit'),
          status: txt('.sal-status'), trainDisabled: button('button.sal-train'),
          pauseDisabled: button('button.sal-pause'), canvas: c ? c.toDataURL() : null};
}
"""


def _step(state: dict) -> int:
    m = re.search(r"step:\s*(\d+)", state["step"])
    assert m, f"no step in {state['step']!r}"
    return int(m.group(1))


@pytest.mark.notebook(NOTEBOOK)
def test_training_lab_in_browser(runs, artifacts):
    nb = runs.get(NOTEBOOK)
    page = nb.page
    out = artifacts / "training_lab"
    out.mkdir(exist_ok=True)
    page.wait_for_selector(f"{ROOT} .sal-chart canvas", timeout=60_000)
    lab = page.locator(ROOT).first
    lab.scroll_into_view_if_needed()
    chart = page.locator(f"{ROOT} .sal-chart").first

    def read() -> dict:
        return page.evaluate(JS_READ, ROOT)

    def click_and_wait_redraw(button: str) -> None:
        old = read()["canvas"]
        page.locator(f"{ROOT} button.{button}").first.click()
        page.wait_for_function(
            "([root, old]) => { const c = document.querySelector(root + ' .sal-chart "
            "canvas'); return !!c && c.toDataURL() !== old; }",
            arg=[ROOT, old],
            timeout=30_000,
        )
        page.wait_for_function(bl.JS_IDLE, timeout=30_000)

    def shot(name: str) -> bytes:
        return chart.screenshot(path=str(out / f"{name}.png"), timeout=15_000)

    def train(steps: int) -> tuple[int, int, list[int]]:
        """Click Train, wait for `steps` more steps, click Pause."""
        first = _step(read())
        page.locator(f"{ROOT} button.sal-train").first.click()
        t0 = time.monotonic()
        seen = [first]
        while seen[-1] < first + steps and time.monotonic() - t0 < 240:
            page.wait_for_timeout(250)
            seen.append(_step(read()))
        assert seen[-1] >= first + steps, f"step counter stuck: {seen[-10:]}"
        assert len(set(seen)) >= 3, f"the counter should tick while training: {seen}"
        state = read()
        assert state["trainDisabled"] is True and state["pauseDisabled"] is False
        page.locator(f"{ROOT} button.sal-pause").first.click()
        page.wait_for_function(
            f"() => !document.querySelector('{ROOT} button.sal-train').disabled",
            timeout=30_000,
        )
        page.wait_for_function(bl.JS_IDLE, timeout=30_000)
        paused = _step(read())
        page.wait_for_timeout(500)
        assert _step(read()) == paused, "training went on after Pause"
        return first, paused, seen

    s0 = read()
    assert not s0["status"], s0["status"]
    page.wait_for_function(bl.JS_IDLE, timeout=30_000)
    before = shot("before")
    t0 = time.monotonic()

    # Phase 1: auto-refresh on (every 100 steps): the thread redraws the map.
    start, paused, seen = train(TRAIN_STEPS)
    auto = shot("auto-refreshed")
    auto_change = _pixel_change(before, auto)
    assert auto_change > 0.005, (
        f"auto-refresh did not redraw the map ({auto_change:.2%} of pixels)"
    )

    # Phase 2: auto-refresh off: the map waits for the Saliency button.
    checkbox = page.locator(f"{ROOT} .sal-auto input[type=checkbox]").first
    assert checkbox.is_checked()
    checkbox.click()
    page.wait_for_function(bl.JS_IDLE, timeout=30_000)
    before = shot("before-saliency")
    _, paused, more = train(TRAIN_STEPS)
    still = shot("paused")
    assert _pixel_change(before, still) < 0.01, "the map changed without Saliency"
    distinct = len(set(seen)) + len(set(more))

    # Saliency: the current model's maps, a visibly different picture.
    click_and_wait_redraw("sal-saliency")
    page.wait_for_timeout(300)
    after = shot("after-saliency")
    change = _pixel_change(before, after)
    assert change > 0.005, f"Saliency did not change the map ({change:.2%} of pixels)"

    # → browses to the next digit.
    d0 = read()["digit"]
    click_and_wait_redraw("sal-next")
    s1 = read()
    assert s1["digit"] != d0 and "#1" in s1["digit"], (d0, s1["digit"])
    assert not s1["status"], s1["status"]
    print(
        f"\nTrainingLab in {NOTEBOOK}: step {start} → {paused} in "
        f"{time.monotonic() - t0:.1f} s ({distinct} distinct counter readings); "
        f"auto-refresh changed {auto_change:.1%}, Saliency {change:.1%} of the "
        f"chart's pixels; {s1['accuracy']}"
    )
