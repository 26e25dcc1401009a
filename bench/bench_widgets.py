"""Slider latency of the explorers: one control change → recompute + chart + display.

Run by `make bench` (not a pytest test). For each explorer at its slowest
setting on 28×28 test digits it times one control change as a student makes
it (setting a widget's value runs the callback: the saliency computation, the
chart, the display bundle pushed into the Output widget) and prints the
median and 90th percentile, split into compute and chart time, next to the
compute floor measured in the same run (the model alone on the same number
of rows). Goal: ≤ 50 ms at the median.

Timings on the course machines swing by tens of percent from run to run and
with other load; read the ratios to the floor, which hold steady.

It also writes a few PNGs to build/figures/ (an ignored folder) to look at.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from course_utils import data, models, plotting
from course_utils import saliency as sal
from course_utils import widgets as W

GOAL_MS = 50.0
REPEATS = 11
WARMUP = 2
# DESIGN.md, "Performance notes": cost per digit on an idle 2-core course
# machine at 64-256 rows per call.
DESIGN_US_FORWARD = 47.0
DESIGN_US_GRAD = 84.0
FIGURES = Path(__file__).resolve().parent.parent / "build" / "figures"


def time_changes(explorer, change, repeats=REPEATS, warmup=WARMUP):
    """Median / p90 wall time of `change(explorer, k)` plus the explorer's split."""
    totals, computes, charts = [], [], []
    for k in range(warmup + repeats):
        n = explorer.n_updates
        t0 = time.perf_counter()
        change(explorer, k)
        dt = time.perf_counter() - t0
        assert explorer.n_updates == n + 1, "a change must recompute exactly once"
        if k >= warmup:
            totals.append(dt)
            computes.append(explorer.timings["compute"])
            charts.append(explorer.timings["chart"])
    q = statistics.quantiles(totals, n=10)
    return {
        "median_ms": 1e3 * statistics.median(totals),
        "p90_ms": 1e3 * q[-1],
        "compute_ms": 1e3 * statistics.median(computes),
        "chart_ms": 1e3 * statistics.median(charts),
    }


def floor_ms(model, rows: int, backward: bool, repeats=7) -> float:
    """Median time of the model alone on `rows` digit-sized rows (in chunks of 128)."""
    x = torch.rand(rows, 1, 28, 28)
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        for chunk in x.split(sal.DEFAULT_BATCH_SIZE):
            if backward:
                c = chunk.clone().requires_grad_(True)
                torch.autograd.grad(model(c)[:, 0].sum(), c)
            else:
                with torch.inference_mode():
                    model(chunk)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times[1:])


def main() -> None:
    torch.manual_seed(0)
    model = models.load_pretrained("small_cnn")
    for p in model.parameters():  # the floor needs input gradients only
        p.requires_grad_(False)
    test = data.load_split("test")
    x, y = test.x[:100], test.y[:100]
    i7 = int(torch.nonzero(y == 7)[0])
    print(
        f"torch threads: {torch.get_num_threads()}; 28×28 digits; goal ≤ {GOAL_MS:.0f} ms"
    )

    def flip(name, a, b):
        return lambda e, k: setattr(e.controls[name], "value", b if k % 2 else a)

    occ_rows = sal.forward_passes_occlusion((1, 28, 28), 1, 1)
    # (name, explorer, change, model rows per change, backward pass?)
    cases = [
        (
            "OcclusionExplorer patch=1 stride=1 (next digit)",
            W.OcclusionExplorer(model, x, y, patch=1, stride=1, index=i7),
            lambda e, k: e.next(),
            occ_rows,
            False,
        ),
        (
            "IGExplorer n_steps=300 (slider 299 ↔ 300)",
            W.IGExplorer(model, x, y, n_steps=300, index=i7),
            flip("n_steps", 299, 300),
            300,
            True,
        ),
        (
            "SmoothGradExplorer n_samples=100 (slider 99 ↔ 100)",
            W.SmoothGradExplorer(model, x, y, n_samples=100, index=i7),
            flip("n_samples", 99, 100),
            100,
            True,
        ),
        (
            "MethodBrowser, all methods (next digit)",
            W.MethodBrowser(model, x, y, index=i7),
            lambda e, k: e.next(),
            None,
            None,
        ),
    ]
    print(
        f"{'explorer / change':52s} {'median':>7s} {'p90':>7s} {'compute':>8s} "
        f"{'chart':>6s} {'floor':>7s} {'÷floor':>6s} {'idle*':>6s}  goal"
    )
    results = []
    for name, explorer, change, rows, backward in cases:
        r = time_changes(explorer, change)
        floor = floor_ms(model, rows, backward) if rows else None
        idle = None
        if floor:
            design = rows * (DESIGN_US_GRAD if backward else DESIGN_US_FORWARD) / 1e3
            idle = r["chart_ms"] + r["compute_ms"] * design / floor
        ok = r["median_ms"] <= GOAL_MS
        results.append((name, r, floor, idle, ok))

        def fmt(v, w, d=1):
            return f"{v:{w}.{d}f}" if v is not None else f"{'-':>{w}s}"

        print(
            f"{name:52s} {r['median_ms']:7.1f} {r['p90_ms']:7.1f} "
            f"{r['compute_ms']:8.1f} {r['chart_ms']:6.1f} {fmt(floor, 7)} "
            f"{fmt(floor and r['median_ms'] / floor, 6, 2)} {fmt(idle, 6)}  "
            f"{'ok' if ok else 'MISS'}"
        )
    print(
        "floor: the bare model on the same rows, measured now (forward only for "
        "occlusion, forward + input gradient otherwise).\n"
        f"idle*: chart + compute scaled from the floor measured now to the floor "
        f"DESIGN.md measured on an idle course machine ({DESIGN_US_FORWARD:.0f} µs "
        f"forward, {DESIGN_US_GRAD:.0f} µs forward + gradient per row)."
    )

    xi = x[i7 : i7 + 1]
    parts = []
    for name, f in sal.METHODS.items():
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            f(model, xi, int(y[i7]))
            times.append(time.perf_counter() - t0)
        parts.append(f"{name} {1e3 * statistics.median(times):.1f}")
    print("MethodBrowser per method (ms): " + ", ".join(parts))

    for name, r, floor, idle, ok in results:
        if ok:
            continue
        share = 100 * r["compute_ms"] / r["median_ms"]
        print(
            f"\nMISS {name}: {share:.0f} % of the time is the saliency computation; "
            f"the chart and display bundle cost {r['chart_ms']:.1f} ms."
        )
        if floor:
            print(
                f"  The computation runs at {r['compute_ms'] / floor:.2f}× the bare "
                "model on the same rows, so it is the hardware (here: a loaded "
                "machine) that misses, not the widget."
            )
        if idle is not None and idle <= GOAL_MS:
            print(
                f"  On an idle course machine this is about {idle:.0f} ms: within "
                "the goal."
            )
        else:
            print(
                "  Fix if it misses on an idle machine too: cap the slider lower "
                "(fewer rows per change), or cache maps per digit."
            )

    # ------------------------------------------------------------ figures
    FIGURES.mkdir(parents=True, exist_ok=True)
    written = []
    for name, explorer, *_ in cases:
        explorer.controls["index"].value = i7
        path = FIGURES / f"{type(explorer).__name__}.png"
        written.append(plotting.save(explorer.chart, path))
    xs, ys = data.demo_digits(8)
    maps = {
        name: sal.METHODS[name](model, xs, ys)
        for name in (
            "gradient",
            "input_x_gradient",
            "integrated_gradients",
            "grad_cam",
            "occlusion",
        )
    }
    written.append(
        plotting.save(
            plotting.grid(
                maps, image=xs, show_input=True, scale="row", title="methods × digits"
            ),
            FIGURES / "grid_methods.png",
            scale=2,
        )
    )
    j7 = int(torch.nonzero(ys == 7)[0]) if bool((ys == 7).any()) else 0
    written.append(
        plotting.save(
            plotting.heatmap(
                maps["gradient"][j7], xs[j7], title=f"gradient, label {int(ys[j7])}"
            ),
            FIGURES / "heatmap_gradient.png",
            scale=2,
        )
    )
    written.append(
        plotting.save(
            plotting.overlay(
                xs[j7], maps["integrated_gradients"][j7], title="IG overlay"
            ),
            FIGURES / "overlay_ig.png",
            scale=2,
        )
    )
    written.append(plotting.save(plotting.digits(xs, ys), FIGURES / "digits.png"))
    print(
        "\nfigures:",
        ", ".join(str(p.relative_to(FIGURES.parent.parent)) for p in written),
    )


if __name__ == "__main__":
    main()
