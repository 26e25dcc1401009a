"""Shapley values: exact cost against the forward floor, KernelSHAP against Captum.

    .venv/bin/python bench/bench_shapley.py [--grid 4] [--samples 1000] [--repeat 3]

One SmallCNN digit, one torch thread. Reported side by side in one run (timings
on the shared course machines swing by tens of percent; the ratios hold):

* `shapley.exact` with a grid × grid patch grid (2^(grid²) coalitions) vs the
  floor: the same number of plain forward passes in chunks of 256 rows under
  `torch.inference_mode()`, no masking and no weights;
* `shapley.kernel_shap` with --samples coalitions vs Captum's `KernelShap` with
  the same feature mask, samples and seed (`reference.kernel_shap`, Captum's
  default one perturbation per model call).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from course_utils import data, models, shapley
from course_utils import reference as ref


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=4)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = models.load_pretrained("small_cnn")
    test = data.load_split("test")
    x, y = test.x[:1], test.y[:1]
    n_coalitions = 2 ** (args.grid**2)
    copies = x.expand(256, -1, -1, -1).clone()

    def floor():
        with torch.inference_mode():
            for start in range(0, n_coalitions, 256):
                model(copies[: min(256, n_coalitions - start)])

    t_floor = best(floor, args.repeat)
    t_exact = best(lambda: shapley.exact(model, x, y, grid=args.grid), args.repeat)
    print(
        f"exact, {args.grid}×{args.grid} grid: {n_coalitions:,} evaluations in "
        f"{t_exact:.2f} s ({1e6 * t_exact / n_coalitions:.0f} µs each); forward floor "
        f"{t_floor:.2f} s; ratio {t_exact / t_floor:.2f}×"
    )

    def ours():
        torch.manual_seed(0)
        shapley.kernel_shap(model, x, y, grid=args.grid, n_samples=args.samples)

    def captum():
        ref.kernel_shap(model, x, y, grid=args.grid, n_samples=args.samples, seed=0)

    t_ours, t_captum = best(ours, args.repeat), best(captum, args.repeat)
    print(
        f"KernelSHAP, {args.samples} samples: ours {t_ours:.3f} s, Captum "
        f"{t_captum:.3f} s; Captum / ours = {t_captum / t_ours:.1f}×"
    )


if __name__ == "__main__":
    main()
