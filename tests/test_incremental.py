"""Maps that grow point by point (`widgets.incremental`) and the background filler.

A small convolutional network with 1000 outputs stands in for the photo model
where only the bookkeeping is tested (which points, how many model calls,
what runs when); tests/test_photo_explainer.py and tests/test_quadrature.py
check the same on the real photo model.
"""

import asyncio
import collections
import itertools
import threading
import time

import pytest
import torch
from torch import nn

from course_utils import photos
from course_utils import saliency as sal
from course_utils import widgets as W
from course_utils.widgets.incremental import IG_STEPS, IdleFiller, NoiseSums, PathIG


@pytest.fixture
def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 8, stride=8), nn.ReLU(), nn.Conv2d(6, 6, 3),
                         nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(6, 1000)).eval()


@pytest.fixture
def rows(net):
    seen = []
    handle = net.register_forward_pre_hook(lambda m, args: seen.append(len(args[0])))
    yield seen
    handle.remove()


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6 * float(b.abs().max()) + 1e-9)


# ------------------------------------------------------------ PathIG


def test_path_ig_equals_integrated_gradients_and_computes_each_point_once(net, rows):
    x = torch.rand(1, 3, 64, 64)
    path = PathIG(net, x, 7, baseline=0.25, batch_size=4)
    assert path.todo()[:4] == [0, 64, 32, 16] and len(path.todo()) == 65
    for n, new in ((9, 9), (3, 0), (2, 0), (17, 8), (65, 48), (33, 0)):
        rows.clear()
        got = path.attribution(n)
        assert sum(rows) == new and max(rows, default=0) <= 4, n
        want, delta = sal.integrated_gradients(net, x, 7, baseline=0.25, n_steps=n,
                                               method="clenshaw_curtis",
                                               return_delta=True)
        close(got, want)
        assert path.delta(n) == pytest.approx(float(delta), abs=1e-5)
    assert path.n_done == 65 and path.todo() == []
    with pytest.raises(ValueError, match=r"n_steps must be one of \[2, 3, 5, 9, 17, 33, 65\]"):
        path.attribution(16)


def test_path_ig_points_are_the_rules_points():
    path = PathIG(nn.Linear(3, 1000), torch.rand(1, 3), 0)
    for n in IG_STEPS:
        alphas = sal.integrated_gradients.__globals__["quadrature"]("clenshaw_curtis", n)[0]
        stride = 64 // (n - 1)
        assert torch.equal(path.alphas[::stride], alphas), n


# ------------------------------------------------------------ NoiseSums


def test_noise_sums_equal_smoothgrad_for_every_n(rows):
    side = 32  # 3·32·32 is a multiple of 16 (torch's normals come in blocks of 16)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * side * side, 1000), nn.Tanh())
    model.register_forward_pre_hook(lambda m, args: rows.append(len(args[0])))
    x = torch.rand(1, 3, side, side)
    sums = NoiseSums(model, x, 3, noise_level=0.2, seed=5, batch_size=3)
    for n, new in ((4, 4), (2, 0), (9, 5), (9, 0), (1, 0)):
        rows.clear()
        got = sums.attribution(n)
        assert sum(rows) == new, n
        want = sal.smoothgrad(model, x, 3, n_samples=n, noise_level=0.2,
                              generator=torch.Generator().manual_seed(5))
        close(got, want)
    assert sums.n_done == 9
    with pytest.raises(ValueError, match="C·H·W a multiple of 16"):
        NoiseSums(model, torch.rand(1, 3, 7, 7), 3)


# ------------------------------------------------------------ IdleFiller


def test_filler_without_a_running_loop_schedules_nothing():
    ran = []

    def steps():
        ran.append(1)
        yield

    filler = IdleFiller()
    assert filler.start(steps()) is False
    assert not filler.running and not ran


def test_filler_lets_the_loop_run_between_steps_and_cancels():
    events, done = [], []

    def steps(name, n):
        for k in range(n):
            events.append(f"{name}{k}")
            yield

    async def ticker(stop):
        while not stop.is_set():
            if not events or events[-1] != "tick":
                events.append("tick")
            await asyncio.sleep(0.001)

    async def scenario():
        stop = asyncio.Event()
        task = asyncio.create_task(ticker(stop))
        filler = IdleFiller(delay=0.01)
        assert filler.start(steps("a", 100))
        while "a2" not in events:
            await asyncio.sleep(0.001)
        assert filler.start(steps("b", 3), on_done=lambda: done.append(True))
        while filler.running:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.05)
        stop.set()
        await task
        return filler

    filler = asyncio.run(scenario())
    work = [e for e in events if e != "tick"]
    # "a" stopped when "b" started, "b" ran to its end, then on_done
    assert work[-3:] == ["b0", "b1", "b2"] and done == [True]
    assert 3 <= sum(e.startswith("a") for e in work) <= 4
    # the loop ran other tasks between any two steps
    for first, second in itertools.pairwise(events):
        assert not (first != "tick" and second != "tick"), events
    assert filler.error is None and filler.steps_run >= 6


def test_filler_keeps_a_failing_steps_error_and_stops():
    def steps():
        yield
        raise RuntimeError("out of memory")

    async def scenario():
        filler = IdleFiller(delay=0.001)
        filler.start(steps())
        while filler.running:
            await asyncio.sleep(0.001)
        return filler

    filler = asyncio.run(scenario())
    assert isinstance(filler.error, RuntimeError) and filler.steps_run == 1


# ------------------------------------------------------------ the widget's prefill


def test_widget_fills_every_slider_value_in_the_background_and_cancels(net, rows):
    async def wait(filler):
        while filler.running:
            await asyncio.sleep(0.005)

    async def scenario():
        w = W.PhotoExplainer(net, photo="coffee", n_steps=3, n_samples=2,
                             methods=("integrated_gradients", "smoothgrad"))
        first = w._path()
        assert w.filler.running and first.n_done == 3  # what is drawn, then the rest
        assert "(computing the rest…)" in w.outputs["cache"].value
        while first.n_done < 9:
            await asyncio.sleep(0.001)
        w.controls["photo"].value = "chelsea"  # cancels coffee's filling
        stopped = first.n_done
        await wait(w.filler)
        assert first.n_done == stopped < 65
        path, noise = w._path(), w._noise_sums()
        assert path.n_done == 65 and noise.n_done == 50 and w.filler.error is None
        text = w.outputs["cache"].value
        assert "65 of 65 points" in text and "50 of 50 SmoothGrad" in text
        assert "computing the rest" not in text
        rows.clear()
        for n_steps, n_samples in ((65, 50), (17, 31), (2, 2)):
            w.controls["n_steps"].value = n_steps
            w.controls["n_samples"].value = n_samples
            assert w.timings["computed"] == 0
        assert rows == []  # every value was ready
        await wait(w.filler)
        return w

    w = asyncio.run(scenario())
    want = sal.smoothgrad(net, photos.load("chelsea"), w.target, n_samples=2,
                          noise_level=0.15, generator=torch.Generator().manual_seed(0))
    close(w.result["smoothgrad"], want)
    want = sal.integrated_gradients(net, photos.load("chelsea"), w.target, n_steps=2,
                                    method="clenshaw_curtis")
    close(w.result["integrated_gradients"], want)


def test_widget_without_prefill_computes_only_what_is_shown(net):
    async def scenario():
        w = W.PhotoExplainer(net, photo="coffee", n_steps=5, n_samples=2,
                             methods=("integrated_gradients", "smoothgrad"),
                             prefill=False)
        await asyncio.sleep(0.05)
        return w

    w = asyncio.run(scenario())
    assert not w.filler.running and w._path().n_done == 5 and w._noise_sums().n_done == 2


def test_filler_steps_wait_for_the_lock_held_by_another_thread():
    lock = threading.RLock()
    ran, held = [], threading.Event()

    def steps():
        for k in range(3):
            ran.append((k, held.is_set()))
            yield

    def hold():
        with lock:
            held.set()
            time.sleep(0.1)
            held.clear()

    async def scenario():
        filler = IdleFiller(delay=0.005, lock=lock)
        holder = threading.Thread(target=hold)
        holder.start()
        while not held.is_set():
            await asyncio.sleep(0.001)
        filler.start(steps())
        while filler.running:
            await asyncio.sleep(0.005)
        holder.join()

    asyncio.run(scenario())
    assert [k for k, _ in ran] == [0, 1, 2]
    assert not any(during for _, during in ran)  # no step while the other held it


def test_callbacks_from_another_thread_never_overlap_a_background_step(net, monkeypatch):
    """Widget messages come in a kernel subshell's thread while the background
    steps run on the main thread's loop. Here a step's model call waits (up to
    1 s) until the other thread's callback calls the model too: without the
    widget's lock both would compute, and add, the same points."""
    adds = collections.Counter()
    add = PathIG._add

    def counting(self, j, grad, logit):
        adds[(id(self), j)] += 1
        return add(self, j, grad, logit)

    monkeypatch.setattr(PathIG, "_add", counting)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    armed, callback_runs = threading.Event(), threading.Event()

    def meet(module, args):
        if threading.current_thread() is thread and armed.is_set():
            callback_runs.wait(1.0)  # a step, waiting for the callback's model call
        elif threading.current_thread() is not thread:
            callback_runs.set()

    net.register_forward_pre_hook(meet)
    thread.start()

    async def make():
        return W.PhotoExplainer(net, photo="coffee", n_steps=2, n_samples=2,
                                methods=("integrated_gradients", "smoothgrad"))

    try:
        w = asyncio.run_coroutine_threadsafe(make(), loop).result()
        path = w._path()
        while path.n_done < 9:  # the background steps run on the loop's thread
            time.sleep(0.001)
        armed.set()
        time.sleep(0.05)  # a step is now waiting inside its model call
        w.controls["n_steps"].value = 65  # meanwhile, from this thread
        w.controls["n_samples"].value = 50
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
    assert path.n_done == 65 and len(adds) == 65
    assert max(adds.values()) == 1, [k for k, v in adds.items() if v > 1]
    fresh = PathIG(net, path.x, path.target)
    fresh.compute(list(range(65)))
    close(path.sums, fresh.sums)
    want = sal.smoothgrad(net, photos.load("coffee"), w.target, n_samples=50,
                          noise_level=0.15, generator=torch.Generator().manual_seed(0))
    close(w.result["smoothgrad"], want)
