"""Maps that grow point by point, and a filler that grows them while the kernel is idle.

`PhotoExplainer` answers a move of IG's or SmoothGrad's slider without
recomputing what it computed before:

* `PathIG`: integrated gradients of one photo and class on nested
  Clenshaw–Curtis grids (`saliency.integrated_gradients.quadrature`, n = 2,
  3, 5, 9, 17, 33, 65 points): each point of the path is computed once, so a
  coarser n costs no model call and a finer one only its new points.
* `NoiseSums`: SmoothGrad of one photo and class from running sums of its
  per-sample gradients: fewer samples cost nothing, more only the new ones.
* `IdleFiller`: runs a generator's steps (each a couple of gradients) as
  callbacks of the running asyncio event loop, i.e. the Jupyter kernel's,
  between the messages it handles: the maps for the other slider values are
  ready before the student asks for them. A new photo or class cancels the
  steps of the old one. Without a running loop (a script, a test) nothing is
  scheduled.

Threads: ipykernel ≥ 7 with JupyterLab ≥ 4.4 handles widget messages in a
kernel *subshell*, a thread of its own with its own event loop, while cells
run in the main thread. So a widget callback and a background step can run
at the same time; they share the widget's lock (`IdleFiller(lock=...)`, a
`threading.RLock`): a callback waits at most for the step in progress, and
a step whose turn comes while a callback holds the lock tries again later
instead of blocking its loop.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable, Iterator

import torch

from ..saliency.baselines import resolve_baseline
from ..saliency.core import eval_mode, input_gradient
from ..saliency.integrated_gradients import quadrature
from ..saliency.smoothgrad import noisy_copies
from ..saliency.validate import target_tensor

__all__ = ["IG_STEPS", "IdleFiller", "NoiseSums", "PathIG", "lru_get"]

LEVELS = 6  # the finest grid has 2**LEVELS + 1 = 65 points
IG_STEPS = tuple(2**level + 1 for level in range(LEVELS + 1))  # (2, 3, 5, … 65)


def lru_get(cache: collections.OrderedDict, key, make: Callable, keep: int):
    """cache[key], made by `make()` when missing; at most `keep` entries (LRU)."""
    if key not in cache:
        cache[key] = make()
    cache.move_to_end(key)
    while len(cache) > keep:
        cache.popitem(last=False)
    return cache[key]


class PathIG:
    """IG of one input and class on nested Clenshaw–Curtis grids, point by point.

    IG_n(x) = (x − x₀) ⊙ Σ_k w_k⁽ⁿ⁾ ∇f(x₀ + α_k⁽ⁿ⁾ (x − x₀)) with the
    Clenshaw–Curtis rule of n = 2^ℓ + 1 points (ℓ = 0 … levels). Its points
    are every 2^(levels − ℓ)-th point α_j of the finest grid, bit for bit.
    Each α_j's gradient is computed once and added, with its weight in every
    rule that contains it, to one float64 running sum per rule:
    S_ℓ += w⁽ℓ⁾_{j / 2^(levels−ℓ)} ∇f(α_j). A rule whose points are all in is
    complete: its map is (x − x₀) ⊙ S_ℓ, no model call. Memory: levels + 1
    sums (8.4 MB for a 224 px photo), not one gradient per point.

    Equals `integrated_gradients(model, x, target, n_steps=n,
    method="clenshaw_curtis", baseline=baseline)` up to round-off.

    Args:
        model, x (1, C, H, W), target (int), baseline: as in
            `integrated_gradients`. levels: the finest grid has
            2**levels + 1 points. batch_size: path points per model call.
    """

    def __init__(self, model, x: torch.Tensor, target: int, baseline="black",
                 levels: int = LEVELS, batch_size: int = 8):
        self.model, self.x, self.target = model, x.detach(), int(target)
        self.levels, self.batch_size = levels, batch_size
        self.base = resolve_baseline(baseline, self.x, model).expand_as(self.x)
        self.alphas = quadrature("clenshaw_curtis", 2**levels + 1)[0]
        self.weights = [quadrature("clenshaw_curtis", 2**level + 1)[1].double()
                        for level in range(levels + 1)]
        self.sums = torch.zeros(levels + 1, *self.x.shape[1:], dtype=torch.float64)
        self.done = torch.zeros(len(self.alphas), dtype=torch.bool)
        self.ends: dict[int, float] = {}  # f_target at α = 0 and α = 1

    @property
    def steps(self) -> tuple[int, ...]:
        """The rules this path can give: n = 2^ℓ + 1, ℓ = 0 … levels."""
        return tuple(2**level + 1 for level in range(self.levels + 1))

    def _level(self, n_steps: int) -> int:
        if n_steps not in self.steps:
            raise ValueError(f"n_steps must be one of {list(self.steps)} (Clenshaw–"
                             f"Curtis grids that nest), got {n_steps!r}")
        return (n_steps - 1).bit_length() - 1

    def missing(self, n_steps: int) -> list[int]:
        """Indices j (finest grid) of the rule's points not computed yet."""
        stride = 2 ** (self.levels - self._level(n_steps))
        return [j for j in range(0, len(self.alphas), stride) if not self.done[j]]

    def todo(self) -> list[int]:
        """Every point not computed yet, the coarser rules' points first."""
        return list(dict.fromkeys(j for n in self.steps for j in self.missing(n)))

    @property
    def n_done(self) -> int:
        return int(self.done.sum())

    def compute(self, points: list[int]) -> None:
        """Compute the gradients at `points` (indices j) and add them to the sums."""
        points = [j for j in dict.fromkeys(points) if not self.done[j]]
        with eval_mode(self.model):
            for k in range(0, len(points), self.batch_size):
                part = points[k : k + self.batch_size]
                a = self.alphas[part].to(self.x.dtype).view(-1, 1, 1, 1)
                path = self.base + a * (self.x - self.base)
                idx = target_tensor(self.target, len(part), self.x.device)
                grads, logits = input_gradient(self.model, path, idx)
                for row, j in enumerate(part):
                    self._add(j, grads[row].double(), float(logits[row, self.target]))

    def _add(self, j: int, grad: torch.Tensor, logit: float) -> None:
        for level in range(self.levels + 1):
            stride = 2 ** (self.levels - level)
            if j % stride == 0:
                self.sums[level] += float(self.weights[level][j // stride]) * grad
        if j in (0, len(self.alphas) - 1):
            self.ends[j] = logit
        self.done[j] = True

    def attribution(self, n_steps: int) -> torch.Tensor:
        """IG_n (1, C, H, W), float32; computes the rule's missing points first."""
        self.compute(self.missing(n_steps))
        level = self._level(n_steps)
        return ((self.x - self.base).double() * self.sums[level]).to(self.x.dtype)

    def delta(self, n_steps: int) -> float:
        """Completeness gap Σ IG_n − (f(x) − f(x₀)) (Captum's sign)."""
        gain = self.ends[len(self.alphas) - 1] - self.ends[0]
        return float(self.attribution(n_steps).double().sum()) - gain

    def gain(self) -> float:
        """f_target(x) − f_target(x₀), from the path's two ends."""
        self.compute([0, len(self.alphas) - 1])
        return self.ends[len(self.alphas) - 1] - self.ends[0]


class NoiseSums:
    """SmoothGrad of one input and class from running sums, sample by sample.

    SG_n(x) = (1/n) Σ_{k<n} ∇f(x + σε_k), σ = noise_level · (max x − min x),
    ε_k drawn from one stream seeded by `seed`: sample k is the same for every
    n, as in `smoothgrad(..., generator=torch.Generator().manual_seed(seed))`
    (one `randn((n, C, H, W))` draw whose first rows do not depend on n, as
    torch fills normals in blocks of 16 on the CPU: C·H·W must be a multiple
    of 16, as for any 224 px photo, 150,528 = 16 · 9,408). The prefix
    sums Σ_{k<n} are kept (float32, each rounded from a float64 running total;
    50 samples of a 224 px photo: 30 MB), so any n up to the samples computed
    costs no model call.
    """

    def __init__(self, model, x: torch.Tensor, target: int, noise_level: float = 0.15,
                 seed: int = 0, batch_size: int = 8):
        if x[0].numel() % 16 or x.device.type != "cpu":
            raise ValueError("x must be on the CPU with C·H·W a multiple of 16 (the "
                             "noise of n samples is then a prefix of the noise of more), "
                             f"got {tuple(x.shape)} on {x.device}")
        self.model, self.x, self.target = model, x.detach(), int(target)
        self.noise_level, self.seed, self.batch_size = noise_level, seed, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.prefix: list[torch.Tensor] = []
        self.total = torch.zeros_like(self.x, dtype=torch.float64)

    @property
    def n_done(self) -> int:
        return len(self.prefix)

    def compute(self, n_samples: int) -> None:
        """Compute the samples up to n_samples not computed yet."""
        idx = None
        with eval_mode(self.model):
            while self.n_done < n_samples:
                k = min(self.batch_size, n_samples - self.n_done)
                # the seeded stream continues where the last samples stopped
                noisy = noisy_copies(self.x, k, self.noise_level, self.generator)
                if idx is None or len(idx) != k:
                    idx = target_tensor(self.target, k, self.x.device)
                grads, _ = input_gradient(self.model, noisy, idx)
                for g in grads:
                    self.total += g.double()
                    self.prefix.append(self.total.to(self.x.dtype))

    def attribution(self, n_samples: int) -> torch.Tensor:
        """SG_n (1, C, H, W); computes the missing samples first."""
        self.compute(n_samples)
        return self.prefix[n_samples - 1] / n_samples


class IdleFiller:
    """Run a generator's steps as callbacks of the running asyncio loop.

    `start(steps)` cancels what ran before and schedules ``next(steps)`` on
    the loop of the calling thread, the first `first_delay` seconds later
    (default `delay`; a grace after a slider move, so that the next move of
    a burst finds no step in progress), then `delay` seconds apart (≥ a few
    ms, so the loop polls its sockets between steps: a kernel message waits
    at most for the step in progress), until the generator ends, fails (the
    error is kept in `error`, the filling stops) or `cancel()` is called.
    Returns False, and schedules nothing, when no loop is running (a script,
    a test). `on_done` is called after the last step.

    Each step runs holding `lock` (taken without blocking: when another
    thread holds it, the step is tried again `delay` later), and so do
    `start` and `cancel`: the caller that shares the lock never sees a step
    half done, and a step never runs after its `cancel()`.
    """

    def __init__(self, delay: float = 0.01, lock: threading.RLock | None = None):
        self.delay = delay
        self.lock = lock if lock is not None else threading.RLock()
        self.running = False
        self.error: BaseException | None = None
        self.steps_run = 0
        self._generation = 0

    def cancel(self) -> None:
        with self.lock:
            self._generation += 1
            self.running = False

    def start(self, steps: Iterator, on_done: Callable[[], None] | None = None,
              first_delay: float | None = None) -> bool:
        with self.lock:
            self.cancel()
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return False
            generation = self._generation
            self.running, self.error = True, None

        def step() -> None:
            if not self.lock.acquire(blocking=False):  # a callback runs: later
                loop.call_later(self.delay, step)
                return
            try:
                if generation == self._generation and self._step(steps, on_done):
                    loop.call_later(self.delay, step)
            finally:
                self.lock.release()

        loop.call_later(self.delay if first_delay is None else first_delay, step)
        return True

    def _step(self, steps: Iterator, on_done) -> bool:
        """One step (lock held); True when there are more."""
        try:
            next(steps)
        except StopIteration:
            self.running = False
            if on_done is not None:
                on_done()
            return False
        except Exception as err:  # noqa: BLE001 - kept, shown by the caller
            self.running, self.error = False, err
            return False
        self.steps_run += 1
        return True
