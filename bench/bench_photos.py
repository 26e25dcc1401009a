"""Saliency timings on the photo model: ours vs Captum (default, best) vs the floor.

Run with `.venv/bin/python bench/bench_photos.py` (not a pytest test; about two
minutes on the 2-core course machine). The pretrained EfficientNet-Lite0
(`models.load_pretrained("efficientnet_lite0")`) explains one bundled photo
(`photos.load("chelsea")`, 1 × 3×224×224, class "tiger cat") with the three
batched methods: integrated gradients (black baseline, trapezoid), SmoothGrad
of the gradient and occlusion of probabilities (grey patches, stride = patch).

Each (method, variant) runs in its own forked process, as in
`bench_saliency.py --large`, so its peak memory is its own: the child's
high-water resident set minus its resident set at the fork (after imports,
the model and a warm-up). Variants: ours; Captum with its default batching
(IG and NoiseTunnel: all rows in one call; Occlusion: one window per call);
Captum with the best of a few batching arguments (internal_batch_size,
nt_samples_batch_size, perturbations_per_eval), all timed; the compute floor
(the same model evaluations and nothing else, chunked like ours). Columns:
seconds and peak MB of each, then ours ÷ Captum default, ÷ best, ÷ floor and
ours' peak ÷ Captum's.

Goals (issue 23): ours/cap ≤ 0.8, ours/best ≤ 1.0, ours/floor ≤ 1.1, peak ≤
Captum's.

A last column times ours with `batch_size=1` (ours1 ÷ Captum default): on this
model one row per call is the fastest (`saliency.default_batch_size` gives
4, sized by activation memory; a forward pass costs about 44 ms per row alone
and 66 ms per row in calls of 4 on the course machine).
"""

from __future__ import annotations

import argparse
import statistics
import warnings

import torch
from bench_saliency import NOISE, _forked, captum_calls, floor_forward, floor_grad

from course_utils import models, photos
from course_utils import saliency as sal

warnings.filterwarnings("ignore", module="captum")
warnings.filterwarnings("ignore", message=".*did not already require gradients")

TIGER_CAT = 282
BEST = (4, 8, 16)  # rows per call tried for Captum's best batching


def variants(n_steps: int, n_samples: int, patch: int) -> dict:
    """method → {variant: fn} on the photo model and chelsea."""
    model = models.load_pretrained("efficientnet_lite0")
    x = photos.load("chelsea")
    target = torch.tensor([TIGER_CAT])
    grey = float(model.normalize.mean)
    bs = sal.default_batch_size(x, model)
    sigma = float(NOISE * (x.max() - x.min()))
    captum_ig, captum_sg, captum_occ = captum_calls(
        model, x, target, n_steps, n_samples, sigma, patch, baseline=grey
    )
    n_occ = sal.forward_passes_occlusion(tuple(x.shape), patch)
    gen = torch.Generator().manual_seed(0)
    noisy = x + sigma * torch.randn((n_samples, *x.shape[1:]), generator=gen)
    out = {
        "integrated_gradients": {
            "ours": lambda: sal.integrated_gradients(model, x, target, n_steps=n_steps),
            "ours1": lambda: sal.integrated_gradients(model, x, target, n_steps=n_steps,
                                                      batch_size=1),
            "cap": captum_ig(),
            **{f"ibs={r}": captum_ig(internal_batch_size=r) for r in BEST},
            "floor": lambda: floor_grad(
                model, x.repeat(n_steps, 1, 1, 1), target.repeat(n_steps), bs
            ),
        },
        "smoothgrad": {
            "ours": lambda: sal.smoothgrad(
                model, x, target, n_samples=n_samples, noise_level=NOISE
            ),
            "ours1": lambda: sal.smoothgrad(
                model, x, target, n_samples=n_samples, noise_level=NOISE, batch_size=1
            ),
            "cap": captum_sg(),
            **{f"nsb={r}": captum_sg(nt_samples_batch_size=r) for r in BEST},
            "floor": lambda: floor_grad(model, noisy, target.repeat(n_samples), bs),
        },
        "occlusion": {
            "ours": lambda: sal.occlusion(model, x, target, patch=patch),
            "ours1": lambda: sal.occlusion(model, x, target, patch=patch, batch_size=1),
            "cap": captum_occ(),
            **{f"ppe={r}": captum_occ(perturbations_per_eval=r) for r in BEST},
            "floor": lambda: floor_forward(model, x.repeat(n_occ, 1, 1, 1), bs),
        },
    }
    floor_grad(model, x, target, 1)  # warm-up (allocator, kernels)
    return out, bs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=32, help="IG steps (default 32)")
    parser.add_argument("--samples", type=int, default=16,
                        help="SmoothGrad samples (default 16)")
    parser.add_argument("--patch", type=int, default=16,
                        help="occlusion patch = stride (default 16: 196 windows)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="timed runs of calls < 5 s after one warm-up run")
    parser.add_argument("--rounds", type=int, default=1,
                        help="interleaved rounds of all variants (median of rounds)")
    args = parser.parse_args()
    table, bs = variants(args.steps, args.samples, args.patch)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"EfficientNet-Lite0, 1 × 3×224×224 photo, {bs} rows per call (ours)")
    print(f"IG n={args.steps}, SmoothGrad n={args.samples}, occlusion "
          f"{args.patch}/{args.patch}; seconds and peak MB above setup")
    print(f"{'method':21s} {'ours':>12s} {'captum':>12s} {'best':>19s} {'floor':>12s}"
          f" | {'/cap':>5s} {'/best':>5s} {'/floor':>6s} {'mem/cap':>7s}"
          f" | {'ours1':>12s} {'/cap':>5s}")
    missed = []
    for method, fns in table.items():
        runs = {v: [] for v in fns}
        for _ in range(args.rounds):
            for v, fn in fns.items():
                runs[v].append(_forked(fn, args.repeats))
        res = {v: {"s": statistics.median(r["s"] for r in rs),
                   "mb": max(r["mb"] for r in rs)} for v, rs in runs.items()}
        best_v = min((v for v in fns if "=" in v), key=lambda v: res[v]["s"])
        ours, cap, best, floor = res["ours"], res["cap"], res[best_v], res["floor"]
        ratios = (ours["s"] / cap["s"], ours["s"] / best["s"], ours["s"] / floor["s"],
                  ours["mb"] / max(cap["mb"], 1.0))

        def cell(r):
            return f"{r['s']:6.2f} {r['mb']:5.0f}"

        print(f"{method:21s} {cell(ours)} {cell(cap)} {best_v:>6s} {cell(best)} "
              f"{cell(floor)} | {ratios[0]:5.2f} {ratios[1]:5.2f} {ratios[2]:6.2f} "
              f"{ratios[3]:7.2f} | {cell(res['ours1'])} "
              f"{res['ours1']['s'] / cap['s']:5.2f}", flush=True)
        for name, value, goal in zip(("ours/cap", "ours/best", "ours/floor"),
                                     ratios[:3], (0.8, 1.0, 1.1), strict=True):
            if value > goal:
                missed.append(f"{method}: {name} {value:.2f} > {goal}")
        if ours["mb"] > cap["mb"] + 16:
            missed.append(f"{method}: peak {ours['mb']:.0f} MB > Captum's "
                          f"{cap['mb']:.0f} MB")
    print("\ngoals missed in this run:" if missed else "\nall goals met in this run")
    for line in missed:
        print("  " + line)


if __name__ == "__main__":
    main()
