"""How many rows per model call: sized by what a row costs on the model.

The batched methods (IG's path points, SmoothGrad's noisy copies,
occlusion's occluded copies) run many rows through the model. Too few rows
per call pay the per-call overhead (Python, op dispatch, skinny matrix
products in the late, small layers); too many overflow the caches and the
memory bandwidth. What decides is the activation memory of a row *on that
model*, not the input's size: a 3×224×224 image costs ResNet-18 7.5 M
activation values, a 28×28 digit costs SmallCNN 43 k and ResNetSmall 195 k.

Rule (`rows_per_call`): rows ≈ ACTIVATION_BUDGET / (activation values of one
row), rounded to a power of two in log space, at least MIN_ROWS when that
many rows fit in 8 budgets, at most MAX_ROWS. The activation count is
measured once per (model, input shape, dtype, device) with one forward pass
of one row (eval mode, inference mode), and cached.

Measured with IG on one thread of the 2-core course machine (ms), against
which the rule was set:

* SmallCNN, 32 digits, n=20: 32 → 314, 64 → 329, 128 → 283, 256 → 300
  (flat; rule: 256);
* ResNetSmall, 32 digits, n=20: 32 → 1029, 64 → 1058, 128 → 1140,
  256 → 1476 (rule: 64; one digit, n=50: 2 calls of 25 rows cost 13 % more
  than one of 50, so not 32);
* WideCNN (bench), 3×64×64, n=50: 8 → 211, 16 → 200, 32 → 232, 64 → 286
  (rule: 32);
* ResNet-18, 3×112×112, n=16: 1 → 2210, 4 → 1045, 8 → 1002, 16 → 1263
  (rule: 8);
* ResNet-18, 3×224×224, n=16: 1 → 3100, 4 → 2513, 8 → 3001, 16 → 3272
  (rule: 4).

`balanced(n, limit)` splits n rows into the fewest chunks of at most `limit`
rows, of (nearly) equal size, so no call runs a small remainder (8 rows
with limit 5 run as 4 + 4, not 5 + 3).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator
from contextlib import ExitStack

import torch
from torch import nn

from ..modes import eval_mode

ACTIVATION_BUDGET = 2**24  # activation values per call (64 MiB in float32)
MIN_ROWS = 4
MAX_ROWS = 256

_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def activation_values(model: nn.Module, x: torch.Tensor) -> int:
    """Values output by the model's leaf modules for one row like x[0] (≥ 1).

    One forward pass of x[:1] in eval mode under `torch.inference_mode`, with
    a forward hook on every leaf module (all removed afterwards, also when the
    forward raises). The modules' `training` flags are restored.
    """
    total = [0]

    def count(_module, _inputs, output):
        if isinstance(output, torch.Tensor):
            total[0] += output.numel()

    leaves = [m for m in model.modules() if not m._modules]
    with ExitStack() as hooks, eval_mode(model), torch.inference_mode():
        for m in leaves:
            hooks.callback(m.register_forward_hook(count).remove)
        model(x[:1].detach())
    return max(1, total[0], x[0].numel())


def rows_per_call(model: nn.Module, x: torch.Tensor) -> int:
    """Rows per model call for inputs like x on this model (cached; module doc).

    The first call for a (model, shape) runs the model once on one row
    (`activation_values`): forward hooks the user registered see that call.
    """
    key = (tuple(x.shape[1:]), x.dtype, x.device)
    per_model = _cache.get(model)
    if per_model is None:
        per_model = _cache.setdefault(model, {})
    if key not in per_model:
        values = activation_values(model, x)
        rows = 2 ** round(math.log2(ACTIVATION_BUDGET / values))
        if MIN_ROWS * values <= 8 * ACTIVATION_BUDGET:
            rows = max(rows, MIN_ROWS)
        per_model[key] = int(min(MAX_ROWS, max(1, rows)))
    return per_model[key]


def balanced(n: int, limit: int) -> Iterator[slice]:
    """Slices covering range(n) in ⌈n/limit⌉ pieces of (nearly) equal size ≤ limit."""
    if n <= 0:
        return
    pieces = -(-n // limit)
    size, extra = divmod(n, pieces)
    start = 0
    for i in range(pieces):
        stop = start + size + (1 if i < extra else 0)
        yield slice(start, stop)
        start = stop
