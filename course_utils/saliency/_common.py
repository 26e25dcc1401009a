"""Pieces every saliency method shares, written once.

* input checks (`check_model`, `check_input`, `check_int`, …) that raise a
  `TypeError`/`ValueError` naming the argument and what it accepts;
* target selection (`resolve_target`, `select`);
* chunking (`chunks`, `grid_chunks`, `default_batch_size`);
* baselines by name or value (`resolve_baseline`);
* `eval_mode`: runs the model in eval mode and puts every module's own
  `training` flag back afterwards, also when the body raises (parameters and
  their `requires_grad` are never touched);
* `removing_hooks` / `capture_output`: hooks live in context managers that
  always remove them and never swallow the exception that left the body;
* `input_gradient`: ∂ f_target / ∂x via `torch.autograd.grad`, the one
  backward pass most methods are built from;
* `get_layer` / `default_layer`: layers by dotted name or module.

Why eval mode: a saliency map explains the deployed function. A model left in
train mode would use batch statistics in BatchNorm (so a row's map would
depend on the other rows, the IG steps and the noisy copies in its chunk) and
would overwrite BatchNorm's running statistics, a side effect. Captum runs the
model in whatever mode it is given; for eval-mode models (the shipped ones,
`load_pretrained` returns eval mode) the two agree.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

# Rows per model call for batched methods (IG steps, noisy copies, occluded
# copies), for 1×28×28 digits. Measured with bench/bench_saliency.py on the
# 2-core course machine (IG and occlusion on 32 digits): with one thread the
# cost per row is flat from 128 to 512 rows per call and rises above ~1,000;
# with two threads on a busy machine small calls pay for thread
# synchronisation (64 rows: 2–3× the cost of 256). 256 is good in both.
DEFAULT_BATCH_SIZE = 256
# Larger inputs get fewer rows per call: about this many input values per call
# (256 digits). For one 3×64×64 image per row that is 16 rows, which the same
# bench found 1.3–1.6× faster than 256 rows (cache-sized activations).
DEFAULT_BATCH_VALUES = DEFAULT_BATCH_SIZE * 28 * 28

BASELINE_NAMES = ("black", "zero", "grey")


# ---------------------------------------------------------------- input checks


def check_model(model: object) -> nn.Module:
    """Accept only an `nn.Module` (we need its modes, parameters and hooks)."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            "model must be a torch.nn.Module mapping (N, C, H, W) inputs to "
            f"(N, K) logits, got {type(model).__name__}"
        )
    return model


def check_input(x: object, name: str = "x") -> torch.Tensor:
    """Accept a finite floating-point (N, C, H, W) tensor with N ≥ 1."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape (N, C, H, W), "
            f"got {type(x).__name__}"
        )
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must have a floating-point dtype (e.g. torch.float32), "
            f"got {x.dtype}"
        )
    if x.dim() != 4:
        raise ValueError(
            f"{name} must have 4 dims (N, C, H, W), got shape {tuple(x.shape)} "
            f"({x.dim()} dims); use x.unsqueeze(0) for a single image"
        )
    if x.shape[0] == 0 or x.numel() == 0:
        raise ValueError(
            f"{name} must hold at least one non-empty image, got shape {tuple(x.shape)}"
        )
    # One reduction and one sync: a NaN/Inf makes the sum non-finite; only a
    # non-finite sum (or an overflowing one) pays for the elementwise check.
    if not math.isfinite(float(x.detach().sum())) and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite; it holds NaN or Inf values")
    return x


def check_int(value: object, name: str, low: int, high: int | None = None) -> int:
    """Accept a Python/numpy int (not bool) in low … high (high=None: no cap)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if value < low or (high is not None and value > high):
        accepted = f"in {low}..{high}" if high is not None else f"≥ {low}"
        raise ValueError(f"{name} must be an int {accepted}, got {value}")
    return value


def default_batch_size(x: torch.Tensor, model: nn.Module | None = None) -> int:
    """Rows per model call for inputs like x (on `model`, when given).

    With the model: sized by what one row costs on it, its activation memory
    (`batching.rows_per_call`, measured once per model and input shape):
    256 for SmallCNN on 1×28×28 digits, 64 for ResNetSmall, 4 for ResNet-18
    on 3×224×224. Without: the input-size fallback
    DEFAULT_BATCH_VALUES // (C·H·W), ≥ 1 (256 for digits, 16 for 3×64×64).
    """
    if model is not None:
        from .batching import rows_per_call

        return rows_per_call(model, x)
    return max(1, DEFAULT_BATCH_VALUES // max(1, x[0].numel()))


def check_batch_size(
    batch_size: object, x: torch.Tensor | None = None, model: nn.Module | None = None
) -> int:
    """None → `default_batch_size(x, model)` (DEFAULT_BATCH_SIZE without x).

    Otherwise an int ≥ 1.
    """
    if batch_size is None:
        return DEFAULT_BATCH_SIZE if x is None else default_batch_size(x, model)
    return check_int(batch_size, "batch_size", 1)


def check_choice(value: object, name: str, choices: Sequence[str]) -> str:
    """Accept one of a fixed set of strings."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


# ----------------------------------------------------------------- targets


def resolve_target(target: object, n: int, device: torch.device) -> tuple:
    """Validate `target` and return (idx, hi).

    Args:
        target: an int (same class for every row), or a list/tuple/1-D tensor
            of n ints (one per row), or a 0-d integer tensor.
        n: number of rows in x.
    Returns:
        idx: a Python int when every row has the same given int (then rows are
            picked with a cheap `logits[:, idx]`), else an int64 tensor (n,)
            on `device`; use `rows_of(idx, rows)` to subset either.
        hi: the largest class index as a Python int (`select` compares it with
            the model's number of outputs without another device sync).
    """
    if isinstance(target, bool):
        raise TypeError("target must be an int or one int per row, got bool")
    if isinstance(target, numbers.Integral):
        if int(target) < 0:
            raise ValueError(f"target must hold class indices ≥ 0, got {int(target)}")
        return int(target), int(target)
    if isinstance(target, torch.Tensor):
        if (
            target.is_floating_point()
            or target.is_complex()
            or target.dtype == torch.bool
        ):
            raise TypeError(
                f"target must hold integers (class indices), got dtype {target.dtype}"
            )
        if target.dim() == 0:
            return resolve_target(int(target), n, device)
        if target.dim() > 1:
            raise ValueError(
                "target must be an int or a 1-D tensor with one int per row, "
                f"got a tensor of shape {tuple(target.shape)}"
            )
        values = None
        count = target.shape[0]
    elif isinstance(target, (list, tuple)):
        if not all(
            isinstance(t, numbers.Integral) and not isinstance(t, bool) for t in target
        ):
            raise TypeError(f"target must be an int or a list of ints, got {target!r}")
        values = [int(t) for t in target]
        count = len(values)
    else:
        raise TypeError(
            "target must be an int, a list of ints or an integer tensor, "
            f"got {type(target).__name__}"
        )
    if count != n:
        raise ValueError(
            f"target must be an int or hold one class per row of x: x has {n} "
            f"rows, target has {count}"
        )
    if values is not None:
        lo, hi = min(values), max(values)
        idx = torch.tensor(values, dtype=torch.long, device=device)
    else:
        idx = target.detach().to(device=device, dtype=torch.long)
        if count <= 4096:  # one sync, then Python (cheaper than two .item())
            values_seen = idx.tolist()
            lo, hi = min(values_seen), max(values_seen)
        else:
            lo, hi = (int(v) for v in torch.aminmax(idx))
    if lo < 0:
        raise ValueError(f"target must hold class indices ≥ 0, got {idx.tolist()}")
    return idx, hi


def target_tensor(target: object, n: int, device: torch.device) -> torch.Tensor:
    """`resolve_target`'s checks, returning one class per row as (n,) int64 on device.

    For callers that need a tensor whatever the target (metrics, sanity checks).
    """
    idx, _ = resolve_target(target, n, device)
    if isinstance(idx, int):
        return torch.full((n,), idx, dtype=torch.long, device=device)
    return idx


def rows_of(idx, rows: torch.Tensor):
    """The targets of the given rows (an int target stays an int)."""
    return idx if isinstance(idx, int) else idx[rows]


def repeat_rows(idx, repeats: int):
    """Targets for rows repeated row by row (repeat_interleave), as a tensor or int."""
    return idx if isinstance(idx, int) else idx.repeat_interleave(repeats)


def select(logits: object, idx, hi: int, rows: int | None = None) -> torch.Tensor:
    """logits[i, idx[i]] for every row (idx an int or a tensor); checks hi < K.

    `rows`: the number of inputs the model was called on; the logits must have
    that many rows (checked also for an int target, whose `idx` carries no
    count). Without it only a tensor idx's length is compared.
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else logits
        raise ValueError(
            f"model must return (N, K) logits, got {type(logits).__name__} {shape}"
        )
    if rows is None and not isinstance(idx, int):
        rows = idx.shape[0]
    if rows is not None and logits.shape[0] != rows:
        raise ValueError(
            f"model returned {logits.shape[0]} rows for {rows} inputs; "
            "model must map (N, C, H, W) to (N, K)"
        )
    k = logits.shape[1]
    if hi >= k:
        got = idx if isinstance(idx, int) else sorted(set(idx.tolist()))
        raise ValueError(
            f"target must be a class index in 0..{k - 1} (the model has {k} "
            f"outputs), got {got}"
        )
    if isinstance(idx, int):
        return logits[:, idx]
    return logits.gather(1, idx[:, None])[:, 0]


# ----------------------------------------------------------------- batching


def chunks(n: int, batch_size: int) -> Iterator[slice]:
    """Slices start:stop covering range(n) in pieces of at most batch_size.

    The fewest pieces, of (nearly) equal size (`batching.balanced`): 8 rows
    with batch_size 5 run as 4 + 4, not 5 + 3.
    """
    from .batching import balanced

    yield from balanced(n, batch_size)


def grid_chunks(n_outer: int, n_rows: int, batch_size: int) -> Iterator[tuple]:
    """Blocks (outer slice, row slice) of an (n_outer × n_rows) grid, outer-major.

    The grid is, e.g., IG's (step, input row) pairs or occlusion's (window,
    input row) pairs. With batch_size ≥ n_rows each block holds whole outer
    entries (⌊batch_size / n_rows⌋ of them, all rows), so it is built by
    broadcasting, without gathers; otherwise one outer entry and at most
    batch_size rows. Every block has at most batch_size cells, and blocks are
    balanced (`chunks`): 50 steps of one row with batch_size 8 run as
    8 + 7 × 6, not 8 × 6 + 2.
    """
    if batch_size >= n_rows:
        for outer in chunks(n_outer, batch_size // n_rows):
            yield outer, slice(0, n_rows)
    else:
        row_blocks = list(chunks(n_rows, batch_size))
        for outer in range(n_outer):
            for rows in row_blocks:
                yield slice(outer, outer + 1), rows


# ---------------------------------------------------------------- baselines


def grey(model: nn.Module) -> torch.Tensor | float:
    """The model's neutral grey: `model.normalize.mean` (zero after normalisation).

    Falls back to `course_utils.data.grey_value()` for a model without a
    `normalize` module holding a `mean` buffer. A per-channel mean of shape
    (C,) is returned as (1, C, 1, 1).
    """
    norm = getattr(model, "normalize", None)
    mean = getattr(norm, "mean", None)
    if isinstance(mean, torch.Tensor):
        mean = mean.detach()
        return mean.reshape(1, -1, 1, 1) if mean.dim() == 1 else mean
    from .. import data

    return data.grey_value()


def resolve_baseline(
    baseline: object,
    x: torch.Tensor,
    model: nn.Module,
    extra: dict | None = None,
) -> torch.Tensor:
    """A baseline as a tensor broadcastable to x, on x's device and dtype.

    Args:
        baseline: a number; a tensor broadcastable to x (e.g. (C, H, W),
            (1, C, H, W) or (N, C, H, W)); or a name: "black"/"zero" (0),
            "grey" (see `grey`), or a key of `extra`.
        x: (N, C, H, W) inputs.
        extra: more names, name → fn(x) returning a tensor shaped like x
            (integrated_gradients adds "blur" and "noise").
    """
    names = BASELINE_NAMES + tuple(extra or ())
    if isinstance(baseline, str):
        if baseline in ("black", "zero"):
            value: object = 0.0
        elif baseline == "grey":
            value = grey(model)
        elif extra and baseline in extra:
            value = extra[baseline](x)
        else:
            raise ValueError(
                f"baseline must be a number, a tensor broadcastable to x or one of "
                f"{list(names)}, got {baseline!r}"
            )
    else:
        value = baseline
    if isinstance(value, bool):
        raise TypeError("baseline must be a number, a tensor or a name, got bool")
    if isinstance(value, numbers.Real):
        if not math.isfinite(float(value)):
            raise ValueError(f"baseline must be finite, got {value!r}")
        return torch.tensor(float(value), dtype=x.dtype, device=x.device)
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"baseline must be a number, a tensor broadcastable to x or one of "
            f"{list(names)}, got {type(value).__name__}"
        )
    try:
        shape = torch.broadcast_shapes(value.shape, x.shape)
    except RuntimeError:
        shape = None
    if shape != x.shape:
        raise ValueError(
            f"baseline must be broadcastable to x's shape {tuple(x.shape)}, "
            f"got shape {tuple(value.shape)}"
        )
    if not bool(torch.isfinite(value).all()):
        raise ValueError("baseline must be finite; it holds NaN or Inf values")
    return value.detach().to(device=x.device, dtype=x.dtype)


# ------------------------------------------------- model state and hooks


def _collect_training(module: nn.Module, out: list) -> None:
    """Append every module in train mode (a plain recursion, cheaper than modules())."""
    if module.training:
        out.append(module)
    for child in module._modules.values():
        if child is not None:
            _collect_training(child, out)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode inside the block; each module's own `training` flag restored after.

    Only the modules that were training are switched (and switched back, in a
    `finally`, so also when the body raises; the exception propagates
    unchanged). Parameters are never touched: gradients are taken with
    respect to the input only (`torch.autograd.grad`), so their
    `requires_grad` flags stay as they are and `.grad` never accumulates.
    """
    training: list[nn.Module] = []
    _collect_training(model, training)
    try:
        for m in training:
            m.training = False
        yield model
    finally:
        for m in training:
            m.training = True


@contextmanager
def removing_hooks() -> Iterator[list]:
    """Yield a list; every handle appended to it is removed on the way out.

    Register hooks *inside* the `with` block so a failure halfway through
    registration still removes the ones already registered. Exceptions are
    never swallowed.
    """
    handles: list = []
    try:
        yield handles
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def capture_output(module: nn.Module) -> Iterator[dict]:
    """Record `module`'s output tensor (under key "output") on each forward.

    The output is kept as it was produced: the rest of the model gets a clone
    (as Captum's layer methods do), so an in-place op downstream (ResNet's
    `out += identity`, an in-place ReLU after BatchNorm, `F.relu(...,
    inplace=True)`) changes the clone, not the recorded value, and the
    gradient with respect to the recorded tensor is ∂f/∂A for A as produced.
    """
    store: dict = {}

    def hook(_module, _inputs, output):
        if not isinstance(output, torch.Tensor):
            raise TypeError(
                f"layer must output a single tensor, got {type(output).__name__}"
            )
        store["output"] = output
        return output.clone()

    with removing_hooks() as handles:
        handles.append(module.register_forward_hook(hook))
        yield store


# ------------------------------------------------------------ gradients


def as_leaf(x: torch.Tensor) -> torch.Tensor:
    """A fresh leaf sharing x's values that requires grad (x is left untouched)."""
    leaf = x.detach()
    if leaf.is_inference():
        leaf = leaf.clone()
    return leaf.requires_grad_(True)


def input_gradient(
    model: nn.Module, x: torch.Tensor, idx: torch.Tensor, hi: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """∂ f_idx(x) / ∂x for every row, with one forward and one backward pass.

    Rows are independent (the model is in eval mode), so the gradient of the
    sum of the selected logits is the per-row gradient, as in Captum's
    `compute_gradients`. Only x's gradient is computed (`torch.autograd.grad`),
    nothing accumulates into parameters' `.grad`.

    Returns:
        (grad shaped like x, logits (N, K) detached).
    """
    leaf = as_leaf(x)
    with torch.enable_grad():
        logits = model(leaf)
        out = select(logits, idx, hi, rows=leaf.shape[0])
        (grad,) = torch.autograd.grad(out.sum(), leaf)
    return grad, logits.detach()


# ---------------------------------------------------------------- layers


def get_layer(model: nn.Module, layer: object) -> nn.Module:
    """A submodule of model, by dotted name ("layer3", "layer2.conv1") or itself."""
    if isinstance(layer, str):
        try:
            if not layer:
                raise AttributeError(layer)
            return model.get_submodule(layer)
        except AttributeError:
            names = [name for name, _ in model.named_modules() if name]
            raise ValueError(
                f"layer must name a submodule of the model; {layer!r} not found. "
                f"Available: {names}"
            ) from None
    if isinstance(layer, nn.Module):
        if not _contains(model, layer):
            raise ValueError("layer must be a submodule of model (or its dotted name)")
        return layer
    raise TypeError(
        "layer must be a dotted module name (str) or an nn.Module of the model, "
        f"got {type(layer).__name__}"
    )


def _contains(module: nn.Module, target: nn.Module) -> bool:
    if module is target:
        return True
    return any(
        child is not None and _contains(child, target)
        for child in module._modules.values()
    )


def _has_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) or any(
        child is not None and _has_conv(child) for child in module._modules.values()
    )


def default_layer(model: nn.Module) -> str:
    """Name of the last convolutional block's output: Grad-CAM's default layer.

    Rule: the last top-level child that is or contains an `nn.Conv2d`; if the
    next top-level child is an `nn.ReLU`, that ReLU (its rectified feature
    maps, the paper's A^k). SmallCNN → "relu2", ResNetSmall → "layer3".
    """
    check_model(model)
    children = list(model.named_children())
    last = None
    for i, (_name, child) in enumerate(children):
        if _has_conv(child):
            last = i
    if last is None:
        raise ValueError(
            "model has no nn.Conv2d, so there is no default Grad-CAM layer; "
            "pass layer= (a dotted module name or a module)"
        )
    if last + 1 < len(children) and isinstance(children[last + 1][1], nn.ReLU):
        last += 1
    return children[last][0]
