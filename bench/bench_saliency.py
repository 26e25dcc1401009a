"""Saliency timings: ours vs Captum (defaults, best batching) vs the compute floor.

Run with `make bench` (or `.venv/bin/python bench/bench_saliency.py [--quick]`).
Not a pytest test. Timings on the course machines swing by tens of percent
from run to run, so every variant of one (method, setting) is timed side by
side: the variants are interleaved repeat by repeat and each reports its
median; the table shows ratios of those medians.

Settings: the shipped SmallCNN on 1 and on 32 digits (1×28×28), and a wider
CNN (defined here) on one 3×64×64 input.

Columns (ms = median milliseconds of ours):

* ours/cap  — ours ÷ Captum with its default batching (IG and NoiseTunnel
  all rows in one call, Occlusion one window per call);
* ours/best — ours ÷ Captum with its best batching argument
  (internal_batch_size / nt_samples_batch_size / perturbations_per_eval,
  the fastest of several values, all timed); "-" where Captum has none;
* ours/floor — ours ÷ the compute floor: the same number of model
  evaluations with nothing else, chunked like ours: one forward (occlusion,
  under inference_mode) or forward + input-gradient backward (gradient
  methods; Grad-CAM's backward stops at its layer; guided Grad-CAM's is one
  forward with a backward to the layer and one to the input).

Goals: ours/cap ≤ 0.7 for occlusion and batched IG and SmoothGrad (32
digits), ≤ 1.0 elsewhere; ours/floor ≤ 1.15 everywhere. SmoothGrad's floor
runs on noisy copies (the model is measurably slower on them than on the
clean digit repeated).

`--large`: ResNet-18 (random weights) at 3×224×224, batch 1 and 8, every
method: ours, Captum default, Captum best, floor, in seconds, plus each
variant's peak memory in MB (forked child's VmHWM above its start). Goals:
ours/cap ≤ 0.8 for IG, SmoothGrad and occlusion; ours/best ≤ 1.0;
ours/floor ≤ 1.1; peak ≤ Captum's. `--stride1`: occlusion with stride 1 at
224×224 (47,089 windows) on a small CNN, its time and peak memory.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
import warnings

import torch
from captum.attr import (
    Deconvolution,
    GuidedBackprop,
    GuidedGradCam,
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from torch import nn

from course_utils import data, models
from course_utils import saliency as sal

warnings.filterwarnings("ignore", module="captum")
warnings.filterwarnings("ignore", message=".*did not already require gradients")

N_STEPS = 50  # IG
N_SAMPLES = 50  # SmoothGrad
NOISE = 0.15
PATCH = 4  # occlusion, stride = patch
ROWS = (16, 32, 64, 128, 256, 512)  # rows per call tried for Captum's best batching


class WideCNN(nn.Module):
    """Three conv blocks, 3×64×64 → 10 logits (≈ 0.3 M parameters)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(64, 128, 3, padding=1)
        self.relu3 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(128, 10)

    def forward(self, x):
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.pool(self.relu3(self.conv3(x)))
        return self.fc(torch.flatten(x, 1))


# ------------------------------------------------------------------ floors


def floor_grad(model, x, target, batch_size):
    """Forward + input-gradient backward over the rows of x, in chunks."""
    for start in range(0, len(x), batch_size):
        leaf = x[start : start + batch_size].detach().requires_grad_()
        out = model(leaf)
        t = target[start : start + batch_size]
        torch.autograd.grad(out.gather(1, t[:, None]).sum(), leaf)


def floor_forward(model, x, batch_size):
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            model(x[start : start + batch_size])


class LayerFloor:
    """Forward + backward to one layer's output (captured by a hook for the call)."""

    def __init__(self, model, layer):
        self.model, self.module = model, sal.get_layer(model, layer)

    def __call__(self, x, target, to_input=False):
        store = {}
        handle = self.module.register_forward_hook(lambda m, i, o: store.update(out=o))
        leaf = x.detach().requires_grad_()
        out = self.model(leaf).gather(1, target[:, None]).sum()
        handle.remove()
        torch.autograd.grad(out, store["out"], retain_graph=to_input)
        if to_input:
            torch.autograd.grad(out, leaf)


# ----------------------------------------------------------------- timing


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def race(variants: dict, repeats: int) -> dict:
    """Median seconds per variant, interleaving the variants repeat by repeat.

    The order of the variants is shuffled in every repeat (fixed seed), so no
    variant always runs right after another one's allocations.
    """
    for fn in variants.values():  # warm-up
        fn()
    order = list(variants)
    rng = random.Random(0)
    times = {name: [] for name in variants}
    for _ in range(repeats):
        rng.shuffle(order)
        for name in order:
            times[name].append(timed(variants[name]))
    return {name: statistics.median(ts) for name, ts in times.items()}


def rows_options(n):
    """Per-example batching values giving about ROWS rows per call (deduplicated)."""
    return sorted({max(1, r // n) for r in ROWS})


def captum_calls(model, x, target, n_steps, n_samples, sigma, patch, baseline):
    """Captum's IG, SmoothGrad and occlusion as makers of timed calls, set up as
    ours are (trapezoid IG of `n_steps`, SmoothGrad of `n_samples` at `sigma`,
    occlusion of probabilities with `patch` windows and strides over all
    channels, `baseline` fill): each ``captum_*(**kw)`` returns a call with the
    variant's extra keywords (internal_batch_size, nt_samples_batch_size,
    perturbations_per_eval)."""
    xg = x.clone().requires_grad_()
    t_list = target.tolist()
    c = x.shape[1]

    def prob(inputs):
        return torch.softmax(model(inputs), 1)

    ig, nt = IntegratedGradients(model), NoiseTunnel(Saliency(model))
    occ = Occlusion(prob)

    def captum_ig(**kw):
        return lambda: ig.attribute(
            xg, target=t_list, n_steps=n_steps, method="riemann_trapezoid", **kw
        )

    def captum_sg(**kw):
        return lambda: nt.attribute(
            xg,
            nt_type="smoothgrad",
            nt_samples=n_samples,
            stdevs=sigma,
            target=t_list,
            abs=False,
            **kw,
        )

    def captum_occ(**kw):
        return lambda: occ.attribute(
            x,
            sliding_window_shapes=(c, patch, patch),
            strides=(c, patch, patch),
            target=t_list,
            baselines=baseline,
            **kw,
        )

    return captum_ig, captum_sg, captum_occ


def methods(model, x, target, layer):
    """name -> (ours, captum default, {captum best candidates}, floor)."""
    n = len(x)
    bs = sal.default_batch_size(x, model)
    t_list = target.tolist()
    xg = x.clone().requires_grad_()
    module = sal.get_layer(model, layer)
    layer_floor = LayerFloor(model, layer)
    ig_points = x.repeat(N_STEPS, 1, 1, 1)
    ig_target = target.repeat(N_STEPS)
    # SmoothGrad's floor runs on noisy copies like ours: on the clean digit
    # repeated, the same model evaluations are ~1.3× cheaper (data-dependent
    # speed), which made SmoothGrad look 1.3× the floor.
    sg_points = x.repeat_interleave(N_SAMPLES, 0)
    sg_points = sg_points + float(NOISE * (x.max() - x.min())) * torch.randn_like(
        sg_points
    )
    sg_target = target.repeat_interleave(N_SAMPLES)
    n_occ = sal.forward_passes_occlusion(tuple(x.shape), PATCH)
    occ_points = x.repeat(n_occ // n, 1, 1, 1)
    sigma = float(NOISE * (x.max() - x.min()))

    gc = LayerGradCam(model, module)
    captum_ig, captum_sg, captum_occ = captum_calls(
        model,
        x,
        target,
        N_STEPS,
        N_SAMPLES,
        sigma,
        PATCH,
        baseline=float(model.normalize.mean) if hasattr(model, "normalize") else 0.0,
    )

    def captum_gc():
        attr = gc.attribute(xg, target=t_list, relu_attributions=True)
        return LayerAttribution.interpolate(attr, tuple(x.shape[2:]), "bilinear")

    def grad_floor():
        return floor_grad(model, x, target, bs)

    return {
        "gradient": (
            lambda: sal.gradient(model, x, target),
            lambda: Saliency(model).attribute(xg, target=t_list, abs=False),
            {},
            grad_floor,
        ),
        "input_x_gradient": (
            lambda: sal.input_x_gradient(model, x, target),
            lambda: InputXGradient(model).attribute(xg, target=t_list),
            {},
            grad_floor,
        ),
        "integrated_gradients": (
            lambda: sal.integrated_gradients(model, x, target, n_steps=N_STEPS),
            captum_ig(),
            {
                f"ibs={n * k}": captum_ig(internal_batch_size=n * k)
                for k in rows_options(n)
                if k <= N_STEPS
            },
            lambda: floor_grad(model, ig_points, ig_target, bs),
        ),
        "smoothgrad": (
            lambda: sal.smoothgrad(
                model, x, target, n_samples=N_SAMPLES, noise_level=NOISE
            ),
            captum_sg(),
            {
                f"nsb={k}": captum_sg(nt_samples_batch_size=k)
                for k in rows_options(n)
                if k < N_SAMPLES
            },
            lambda: floor_grad(model, sg_points, sg_target, bs),
        ),
        "occlusion": (
            lambda: sal.occlusion(model, x, target, patch=PATCH),
            captum_occ(),
            {f"ppe={k}": captum_occ(perturbations_per_eval=k) for k in rows_options(n)},
            lambda: floor_forward(model, occ_points, bs),
        ),
        "grad_cam": (
            lambda: sal.grad_cam(model, x, target, layer),
            captum_gc,
            {},
            lambda: layer_floor(x, target),
        ),
        "guided_backprop": (
            lambda: sal.guided_backprop(model, x, target),
            lambda: GuidedBackprop(model).attribute(xg, target=t_list),
            {},
            grad_floor,
        ),
        "deconvnet": (
            lambda: sal.deconvnet(model, x, target),
            lambda: Deconvolution(model).attribute(xg, target=t_list),
            {},
            grad_floor,
        ),
        "guided_grad_cam": (
            lambda: sal.guided_grad_cam(model, x, target, layer),
            lambda: GuidedGradCam(model, module).attribute(
                xg, target=t_list, interpolate_mode="bilinear"
            ),
            {},
            lambda: layer_floor(x, target, to_input=True),
        ),
    }


def repeats_for(seconds_per_call: float, budget: float, quick: bool) -> int:
    """Enough repeats to spend about `budget` seconds, between 5 and 200."""
    reps = int(budget / max(seconds_per_call, 1e-6))
    return max(3 if quick else 5, min(reps, 20 if quick else 200))


GOALS_07 = {"occlusion", "integrated_gradients", "smoothgrad"}


def goal_cap(name: str, n: int) -> float:
    """ours/Captum-defaults goal: 0.7 for occlusion and batched IG/SmoothGrad."""
    if name == "occlusion" or (name in GOALS_07 and n > 1):
        return 0.7
    return 1.0


def bench_setting(label, model, x, target, layer, quick, only=None):
    print(f"\n{label}")
    print(
        f"{'method':21s} {'ours':>8s} {'captum':>8s} {'best':>8s} {'(arg)':>8s} "
        f"{'floor':>8s} | {'/cap':>5s} {'/best':>5s} {'/floor':>6s}   (ms; ratios)"
    )
    missed = []
    for name, (ours, cap, best, floor) in methods(model, x, target, layer).items():
        if only and name not in only:
            continue
        variants = {"ours": ours, "cap": cap, "floor": floor, **best}
        per_call = sum(timed(v) for v in variants.values())
        med = race(variants, repeats_for(per_call, 1.5 if quick else 8.0, quick))
        best_name = min(best, key=med.get) if best else None
        ms = {k: v * 1e3 for k, v in med.items()}
        r_cap, r_floor = med["ours"] / med["cap"], med["ours"] / med["floor"]
        if best:
            best_ms = f"{ms[best_name]:8.2f} {best_name:>8s}"
            r_best = f"{med['ours'] / med[best_name]:5.2f}"
        else:
            best_ms, r_best = f"{'-':>8s} {'':8s}", f"{'-':>5s}"
        print(
            f"{name:21s} {ms['ours']:8.2f} {ms['cap']:8.2f} {best_ms} "
            f"{ms['floor']:8.2f} | {r_cap:5.2f} {r_best} {r_floor:6.2f}",
            flush=True,
        )
        goal = goal_cap(name, len(x))
        if r_cap > goal:
            missed.append(f"{label}: {name} ours/cap {r_cap:.2f} > {goal}")
        if r_floor > 1.15:
            missed.append(f"{label}: {name} ours/floor {r_floor:.2f} > 1.15")
    return missed


def bench_batch_size(model, x, target, quick):
    """Our IG on 32 digits by batch_size: the basis of DEFAULT_BATCH_SIZE."""
    print("\nintegrated_gradients, 32 digits, by batch_size (ms)")
    variants = {
        bs: (
            lambda bs=bs: sal.integrated_gradients(
                model, x, target, n_steps=N_STEPS, batch_size=bs
            )
        )
        for bs in (32, 64, 128, 256, 512, 1600)
    }
    med = race(variants, 3 if quick else 7)
    print("  ".join(f"{bs}: {t * 1e3:.0f}" for bs, t in med.items()))


# ------------------------------------------- ResNet-18 at 3×224×224 (--large)
#
# Each (method, variant) runs in its own forked process so its peak memory is
# its own: peak = the child's high-water resident set (VmHWM) minus its
# resident set at the fork (after imports, the model and a one-row warm-up). Random weights (nothing is downloaded); timing does not
# depend on them. Fewer steps at batch 8 so the table runs in minutes on the
# 2-core machine: the ratios compare equal work.

LARGE_SETTINGS = {  # batch → (IG steps, SmoothGrad samples, occlusion patch)
    1: (50, 50, 16),
    8: (8, 8, 32),
}
LARGE_BEST = {  # batch → rows per call tried for Captum's best batching
    1: (4, 8),
    8: (8, 16),
}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def large_variants(batch: int) -> dict:
    """method → {variant: fn} for resnet18 on `batch` random 3×224×224 images."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.rand(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    target = torch.arange(batch) % 1000
    t_list = target.tolist()
    xg = x.clone().requires_grad_()
    n_steps, n_samples, patch = LARGE_SETTINGS[batch]
    layer = "layer4"
    module = sal.get_layer(model, layer)
    bs = sal.default_batch_size(x, model)
    sigma = float(NOISE * (x.max() - x.min()))

    captum_ig, captum_sg, captum_occ = captum_calls(
        model, x, target, n_steps, n_samples, sigma, patch, baseline=0.0
    )

    n_occ = sal.forward_passes_occlusion(tuple(x.shape), patch)
    layer_floor = LayerFloor(model, layer)
    noisy = x.repeat_interleave(n_samples, 0) + sigma * torch.randn(
        batch * n_samples, 3, 224, 224
    )
    best = LARGE_BEST[batch]
    grad_floor = lambda: floor_grad(model, x, target, bs)
    out = {
        "gradient": {
            "ours": lambda: sal.gradient(model, x, target),
            "cap": lambda: Saliency(model).attribute(xg, target=t_list, abs=False),
            "floor": grad_floor,
        },
        "input_x_gradient": {
            "ours": lambda: sal.input_x_gradient(model, x, target),
            "cap": lambda: InputXGradient(model).attribute(xg, target=t_list),
            "floor": grad_floor,
        },
        "integrated_gradients": {
            "ours": lambda: sal.integrated_gradients(model, x, target, n_steps=n_steps),
            "cap": captum_ig(),
            **{f"ibs={r}": captum_ig(internal_batch_size=r) for r in best},
            "floor": lambda: floor_grad(
                model, x.repeat(n_steps, 1, 1, 1), target.repeat(n_steps), bs
            ),
        },
        "smoothgrad": {
            "ours": lambda: sal.smoothgrad(
                model, x, target, n_samples=n_samples, noise_level=NOISE
            ),
            "cap": captum_sg(),
            **{
                f"nsb={max(1, r // batch)}": captum_sg(
                    nt_samples_batch_size=max(1, r // batch)
                )
                for r in best
            },
            "floor": lambda: floor_grad(
                model, noisy, target.repeat_interleave(n_samples), bs
            ),
        },
        "occlusion": {
            "ours": lambda: sal.occlusion(model, x, target, patch=patch, baseline=0.0),
            "cap": captum_occ(),
            **{
                f"ppe={max(1, r // batch)}": captum_occ(
                    perturbations_per_eval=max(1, r // batch)
                )
                for r in best
            },
            "floor": lambda: floor_forward(
                model, x.repeat(n_occ // batch, 1, 1, 1), bs
            ),
        },
        "grad_cam": {
            "ours": lambda: sal.grad_cam(model, x, target, layer),
            "cap": lambda: LayerAttribution.interpolate(
                LayerGradCam(model, module).attribute(
                    xg, target=t_list, relu_attributions=True
                ),
                (224, 224),
                "bilinear",
            ),
            "floor": lambda: layer_floor(x, target),
        },
        "guided_backprop": {
            "ours": lambda: sal.guided_backprop(model, x, target),
            "cap": lambda: GuidedBackprop(model).attribute(xg, target=t_list),
            "floor": grad_floor,
        },
        "deconvnet": {
            "ours": lambda: sal.deconvnet(model, x, target),
            "cap": lambda: Deconvolution(model).attribute(xg, target=t_list),
            "floor": grad_floor,
        },
        "guided_grad_cam": {
            "ours": lambda: sal.guided_grad_cam(model, x, target, layer),
            "cap": lambda: GuidedGradCam(model, module).attribute(
                xg, target=t_list, interpolate_mode="bilinear"
            ),
            "floor": lambda: layer_floor(x, target, to_input=True),
        },
    }
    # warm-up: one row forward + backward (allocator, kernels), not the variant
    floor_grad(model, x[:1], target[:1], 1)
    return out


def _vm_hwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _forked(fn, repeats: int) -> dict:
    """Run fn in a forked child; return {"s": median seconds, "mb": peak MB}.

    The child starts from the parent's state (imports, model, warm-up done),
    and its VmHWM starts at its resident set, so peak − start is the
    variant's own memory. A call under 5 s is run once more first (warm-up)
    and then `repeats` times; a longer one is timed once.
    """
    import json

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(read)
            start = _rss_mb()
            first = timed(fn)
            times = [timed(fn) for _ in range(repeats)] if first < 5 else [first]
            out = {"s": statistics.median(times), "mb": _vm_hwm_mb() - start}
            os.write(write, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def bench_large(repeats: int, only=None, rounds: int = 2) -> list:
    """The ResNet-18 3×224×224 table (batch 1 and 8), each cell a forked process."""
    missed = []
    for batch, (n_steps, n_samples, patch) in LARGE_SETTINGS.items():
        table = large_variants(batch)
        print(
            f"\nresnet18, {batch} × 3×224×224 (IG n={n_steps}, SmoothGrad "
            f"n={n_samples}, occlusion {patch}/{patch}); s and peak MB above setup"
        )
        print(
            f"{'method':21s} {'ours':>12s} {'captum':>12s} {'best':>18s} "
            f"{'floor':>7s} | {'/cap':>5s} {'/best':>5s} {'/floor':>6s} "
            f"{'mem/cap':>7s}"
        )
        for method in (
            "gradient",
            "input_x_gradient",
            "integrated_gradients",
            "smoothgrad",
            "occlusion",
            "grad_cam",
            "guided_backprop",
            "deconvnet",
            "guided_grad_cam",
        ):
            if only and method not in only:
                continue
            variants = table[method]
            # rounds: every variant once per round, interleaved, medians
            runs = {v: [] for v in variants}
            for _ in range(rounds):
                for v, fn in variants.items():
                    runs[v].append(_forked(fn, repeats))
            res = {
                v: {
                    "s": statistics.median(r["s"] for r in rs),
                    "mb": max(r["mb"] for r in rs),
                }
                for v, rs in runs.items()
            }
            best = [v for v in variants if "=" in v]
            best_v = min(best, key=lambda v: res[v]["s"]) if best else None
            ours, cap, floor = res["ours"], res["cap"], res["floor"]
            cell = lambda r: f"{r['s']:6.2f} {r['mb']:5.0f}"
            best_txt = f"{best_v:>6s} {cell(res[best_v])}" if best_v else f"{'-':>18s}"
            r_best = ours["s"] / res[best_v]["s"] if best_v else None
            r_cap, r_floor = ours["s"] / cap["s"], ours["s"] / floor["s"]
            mem = ours["mb"] / max(cap["mb"], 1.0)
            print(
                f"{method:21s} {cell(ours)} {cell(cap)} {best_txt} "
                f"{floor['s']:7.2f} | {r_cap:5.2f} "
                f"{(f'{r_best:5.2f}' if r_best else '    -')} {r_floor:6.2f} "
                f"{mem:7.2f}",
                flush=True,
            )
            label = f"resnet18 ×{batch}: {method}"
            if method in GOALS_07 and r_cap > 0.8:
                missed.append(f"{label} ours/cap {r_cap:.2f} > 0.8")
            if r_best is not None and r_best > 1.0:
                missed.append(f"{label} ours/best {r_best:.2f} > 1.0")
            if r_floor > 1.1:
                missed.append(f"{label} ours/floor {r_floor:.2f} > 1.1")
            if ours["mb"] > cap["mb"] + 16:
                missed.append(f"{label} peak {ours['mb']:.0f} MB > Captum's")
    return missed


def occlusion_stride1_memory() -> None:
    """Occlusion with stride 1 at 224×224 runs in O(batch × image) memory.

    A small CNN (the cost of the windows is not the point: 47,089 of them),
    ours only; Captum's needs one call per window.
    """
    import resource

    model = nn.Sequential(
        nn.Conv2d(3, 4, 5, stride=4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, 10),
    ).eval()
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    before = _rss_mb()
    start = time.perf_counter()
    attr = sal.occlusion(model, x, 3, patch=8, stride=1, baseline=0.0)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    windows = sal.forward_passes_occlusion((224, 224), 8, 1) - 1
    print(
        f"\nocclusion patch 8, stride 1, 1 × 3×224×224 ({windows} windows): "
        f"{seconds:.1f} s, peak {peak:.0f} MB above setup, map {tuple(attr.shape)}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--only", nargs="*", help="method names to run")
    parser.add_argument(
        "--large",
        action="store_true",
        help="only the resnet18 3×224×224 table (slow: minutes, forked processes)",
    )
    parser.add_argument(
        "--repeats", type=int, default=2, help="for --large: timed runs of calls < 5 s"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="for --large: interleaved rounds of all variants (median of rounds)",
    )
    parser.add_argument("--stride1", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stride1:
        occlusion_stride1_memory()
        return
    if args.large:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        missed = bench_large(args.repeats, args.only, args.rounds)
        print(
            "\ngoals missed in this run:" if missed else "\nall goals met in this run"
        )
        for line in missed:
            print("  " + line)
        return
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    small = models.load_pretrained("small_cnn")
    x, y = data.demo_digits(32)
    wide = WideCNN().eval()
    xw = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    yw = torch.tensor([3])
    missed = []
    for label, model, xs, ys, layer in [
        ("SmallCNN, 1 digit", small, x[:1], y[:1], "relu2"),
        ("SmallCNN, 32 digits", small, x, y, "relu2"),
        ("WideCNN, 1 × 3×64×64", wide, xw, yw, "relu3"),
    ]:
        missed += bench_setting(label, model, xs, ys, layer, args.quick, args.only)
    if not args.only:
        bench_batch_size(small, x, y, args.quick)
    print("\ngoals missed in this run:" if missed else "\nall goals met in this run")
    for line in missed:
        print("  " + line)


if __name__ == "__main__":
    main()
