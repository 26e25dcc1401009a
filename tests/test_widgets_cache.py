"""Explorers reuse results they have computed, and say when a setting is slow."""

import torch

from course_utils import saliency as sal
from course_utils import widgets as W


def test_method_browser_caches_each_digit(small_cnn, digits, monkeypatch):
    x, y = digits
    e = W.MethodBrowser(small_cnn, x[:3], y[:3], methods=["gradient", "smoothgrad"])
    calls = []
    for name in e.methods:
        original = sal.METHODS[name]

        def counting(*args, _f=original, _n=name, **kwargs):
            calls.append(_n)
            return _f(*args, **kwargs)

        monkeypatch.setitem(sal.METHODS, name, counting)
    first = {k: v.clone() for k, v in e.result.items()}
    e.next()
    assert len(calls) == 2 and not e.timings["cached"]
    e.prev()  # back: nothing recomputed, the same maps
    assert len(calls) == 2 and e.timings["cached"]
    for k, v in first.items():
        torch.testing.assert_close(e.result[k], v)
    e.next()
    assert len(calls) == 2 and e.timings["cached"]


def test_cache_is_dropped_when_the_model_changes(small_cnn, digits):
    import copy

    model = copy.deepcopy(small_cnn)
    x, y = digits
    e = W.OcclusionExplorer(model, x[:2], y[:2], patch=7)
    e.next()
    e.prev()
    assert e.timings["cached"]
    with torch.no_grad():
        next(model.parameters()).mul_(0.5)  # trained further, in place
    e.next()
    assert not e.timings["cached"]
    target = e.target
    torch.testing.assert_close(e.result, sal.occlusion(model, x[1:2], target, patch=7))


def test_slow_settings_show_computing_first(small_cnn, digits, monkeypatch):
    x, y = digits
    e = W.IGExplorer(small_cnn, x[:2], y[:2], n_steps=4)
    seen = []
    original = sal.integrated_gradients

    def watching(*args, **kwargs):
        seen.append((e.status.value, "sal-busy" in e.view._dom_classes))
        return original(*args, **kwargs)

    monkeypatch.setattr(W.sal, "integrated_gradients", watching)
    e._sec_per_eval = 1e-6  # fast: 300 steps take well under BUSY_AFTER_S
    e.controls["n_steps"].value = 300
    assert seen[-1] == ("", False)
    e._sec_per_eval = 0.01  # slow: 5 steps + 2 ends ≈ 0.07 s, 250 steps ≈ 2.5 s
    e.controls["n_steps"].value = 5
    assert seen[-1] == ("", False)
    e._sec_per_eval = 0.01
    e.controls["n_steps"].value = 250
    status, busy = seen[-1]
    assert "computing…" in status and "~2.5 s" in status and busy
    # once the chart is shown, the busy state is gone
    assert e.status.value == "" and "sal-busy" not in e.view._dom_classes
