"""Benchmark: deletion + insertion curves over 100 digits, 50 steps each.

Prints, for two maps (integrated gradients, which ranks the ink first, and a
random order) and two baselines (black, grey):

* images per second for deletion + insertion of one image (both curves);
* model rows actually run (a step that only blackens black background under
  the black baseline repeats the previous image and is skipped);
* the ratio to the compute floor: plain chunked forward passes over the same
  number of rows, timed side by side (1.0 = no overhead beyond the model);
* the machinery's own cost: the same curves through a one-layer linear
  model, as a share of the CNN run;
* the speed-up over an unbatched loop (pixel order computed once per image,
  then one forward pass per step per image), timed on 10 digits and scaled.

Timings on the course machines swing by tens of percent from run to run;
the ratios measured side by side hold steadier. Run: `python bench/bench_metrics.py`
(`make bench` runs every bench/bench_*.py). Not a pytest test.
"""

from __future__ import annotations

import time

import torch

from course_utils import data, metrics, models
from course_utils import saliency as sal

N_IMAGES = 100
N_STEPS = 50
BATCH_SIZE = 128
REPEATS = 2
N_NAIVE = 10


def best_of(fn, repeats: int = REPEATS) -> float:
    """Fastest wall time of `repeats` calls (seconds)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def floor(model, x: torch.Tensor, n_rows: int) -> float:
    """Seconds for plain forward passes over n_rows copies of digits, chunked."""
    rows = x.repeat((n_rows + len(x) - 1) // len(x), 1, 1, 1)[:n_rows].contiguous()

    def run():
        with torch.inference_mode():
            for start in range(0, n_rows, BATCH_SIZE):
                model(rows[start : start + BATCH_SIZE])

    return best_of(run)


def naive_curves(model, x, y, attr, baseline: float) -> None:
    """Both curves the slow way: order computed once per image, then one
    forward pass per step per image."""
    n_pixels = x[0].numel()
    counts = torch.linspace(0, n_pixels, N_STEPS + 1).round().long().tolist()
    order = metrics.pixel_order(attr)
    with torch.inference_mode():
        for i in range(len(x)):
            flat = x[i].reshape(-1)
            for kind in metrics.KINDS:
                for m in counts:
                    top = order[i, :m]
                    if kind == "deletion":
                        img = flat.clone()
                        img[top] = baseline
                    else:
                        img = torch.full_like(flat, baseline)
                        img[top] = flat[top]
                    torch.softmax(model(img.view(1, *x.shape[1:])), 1)[0, y[i]]


def main() -> None:
    torch.manual_seed(0)
    model = models.load_pretrained("small_cnn")
    split = data.load_split("test")
    x, y = split.x[:N_IMAGES], split.y[:N_IMAGES]
    maps = {
        "integrated_gradients": sal.integrated_gradients(model, x, y),
        "random": metrics.random_attr(x),
    }
    print(f"deletion + insertion, {N_IMAGES} digits × {N_STEPS} steps, small_cnn, "
          f"batch {BATCH_SIZE}, torch threads {torch.get_num_threads()}")
    header = (f"{'map':22s} {'baseline':8s} {'seconds':>8s} {'images/s':>9s} "
              f"{'rows run':>14s} {'× floor':>8s}")
    print(header)
    print("-" * len(header))
    for name, attr in maps.items():
        for baseline in ("black", "grey"):
            kw = {"n_steps": N_STEPS, "baseline": baseline, "batch_size": BATCH_SIZE}
            curves = {}

            def run(attr=attr, kw=kw, curves=curves):
                curves["d"] = metrics.deletion(model, x, y, attr, **kw)
                curves["i"] = metrics.insertion(model, x, y, attr, **kw)

            seconds = best_of(run)
            rows = curves["d"].n_evaluated + curves["i"].n_evaluated
            total = 2 * N_IMAGES * (N_STEPS + 1)
            ratio = seconds / floor(model, x, rows)
            print(f"{name:22s} {baseline:8s} {seconds:8.3f} {N_IMAGES / seconds:9.1f} "
                  f"{rows:6d} / {total:5d} {ratio:8.2f}")
    # The machinery alone: the same curves through a model that costs next to
    # nothing (one linear layer), as a share of the CNN's time.
    cheap = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).eval()
    kw = {"n_steps": N_STEPS, "baseline": "grey", "batch_size": BATCH_SIZE}

    def both_curves(net):
        metrics.deletion(net, x, y, maps["random"], **kw)
        metrics.insertion(net, x, y, maps["random"], **kw)

    machinery = best_of(lambda: both_curves(cheap))
    full = best_of(lambda: both_curves(model))
    print(f"\nmachinery alone (random order, grey, 10,200 rows through a linear "
          f"model): {machinery:.3f} s = {100 * machinery / full:.0f} % of the CNN run "
          f"({full:.2f} s)")
    attr = maps["random"][:N_NAIVE]
    grey = float(model.normalize.mean)
    naive = best_of(lambda: naive_curves(model, x[:N_NAIVE], y[:N_NAIVE], attr, grey),
                    repeats=1) * N_IMAGES / N_NAIVE
    batched = full
    print(f"unbatched loop (one forward per step per image, grey, random order), "
          f"scaled from {N_NAIVE} digits: {naive:.2f} s = "
          f"{N_IMAGES / naive:.1f} images/s; "
          f"batched {batched:.2f} s: {naive / batched:.1f}× faster")


if __name__ == "__main__":
    main()
