"""The machinery every saliency method is built from, written once.

* `eval_mode` (re-exported from `course_utils.modes`, its one home): runs the
  model in eval mode and puts every module's own `training` flag back
  afterwards, also when the body raises;
* `input_gradient`: ∂ f_target / ∂x via `torch.autograd.grad`, the one
  backward pass most methods are built from; `as_leaf`, `select` (the
  target logit of each row);
* `removing_hooks` / `capture_output` / `captured` / `check_used`: hooks live
  in context managers that always remove them and never swallow the exception
  that left the body;
* batching: `DEFAULT_BATCH_SIZE`, `default_batch_size` (the measured rows per
  call of `batching`), `check_batch_size`, `chunks`, `grid_chunks`;
* `get_layer` / `default_layer` / `resolve_layer`: layers by dotted name or
  module (None: the default Grad-CAM layer).

Eval mode (why: see `course_utils.modes`): Captum runs the model in whatever
mode it is given; for eval-mode models (the shipped ones, `load_pretrained`
returns eval mode) the two agree.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..modes import eval_mode  # noqa: F401  (re-exported; its one home is modes.py)
from .batching import MAX_ROWS, balanced, rows_per_call
from .validate import check_int, check_model, check_target

# The most rows per model call of a batched method: what the one rule
# (`batching.rows_per_call`) gives SmallCNN on 1×28×28 digits.
DEFAULT_BATCH_SIZE = MAX_ROWS

# ------------------------------------------------- model state and hooks


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


def captured(store: dict, layer) -> torch.Tensor:
    """The activation `capture_output` recorded, checked to be usable for a gradient.

    Raises a ValueError naming `layer` if it did not run in the forward pass or
    its output does not depend on the input.
    """
    if "output" not in store:
        raise ValueError(f"layer {layer!r} was not called in the model's forward pass")
    act = store["output"]
    if not act.requires_grad:
        raise ValueError(f"layer {layer!r} output does not depend on the input x")
    return act


def check_used(grad, layer) -> None:
    """ValueError if the layer's output did not feed the model's output.

    `grad` is `torch.autograd.grad(..., allow_unused=True)`'s result for the
    captured activation: None when no path leads from it to the logits.
    """
    if grad is None:
        raise ValueError(
            f"layer {layer!r} runs in the forward pass but its output does not "
            "feed the model's output (no gradient reaches it); pick a layer on "
            "the path to the logits"
        )


# ------------------------------------------------------------ gradients


def as_leaf(x: torch.Tensor) -> torch.Tensor:
    """A fresh leaf sharing x's values that requires grad (x is left untouched)."""
    leaf = x.detach()
    if leaf.is_inference():
        leaf = leaf.clone()
    return leaf.requires_grad_(True)


def input_gradient(
    model: nn.Module, x: torch.Tensor, idx: torch.Tensor
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
        out = select(logits, idx)
        (grad,) = torch.autograd.grad(out.sum(), leaf)
    return grad, logits.detach()


# ----------------------------------------------------------------- targets


def select(logits: object, idx: torch.Tensor) -> torch.Tensor:
    """logits[i, idx[i]] for every row, idx from `validate.target_tensor`.

    Checks the model's output: (N, K) logits with one row per target, and
    every target in 0..K − 1 (`validate.check_target`).
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else logits
        raise ValueError(
            f"model must return (N, K) logits, got {type(logits).__name__} {shape}"
        )
    if logits.shape[0] != idx.shape[0]:
        raise ValueError(
            f"model returned {logits.shape[0]} rows for {idx.shape[0]} inputs; "
            "model must map (N, C, H, W) to (N, K)"
        )
    check_target(idx, logits.shape[1])
    return logits.gather(1, idx[:, None])[:, 0]


# ----------------------------------------------------------------- batching


def default_batch_size(x: torch.Tensor, model: nn.Module) -> int:
    """Rows per model call for inputs like x on `model`: the one rule.

    Sized by what one row costs on the model, its activation memory
    (`batching.rows_per_call`, measured once per model and input shape):
    256 for SmallCNN on 1×28×28 digits, 64 for ResNetSmall, 4 for ResNet-18
    on 3×224×224.
    """
    return rows_per_call(model, x)


def check_batch_size(batch_size: object, x: torch.Tensor, model: nn.Module) -> int:
    """None → `default_batch_size(x, model)`; otherwise an int ≥ 1."""
    if batch_size is None:
        return default_batch_size(x, model)
    return check_int(batch_size, "batch_size", 1)


def chunks(n: int, batch_size: int) -> Iterator[slice]:
    """Slices start:stop covering range(n) in pieces of at most batch_size.

    The fewest pieces, of (nearly) equal size (`batching.balanced`): 8 rows
    with batch_size 5 run as 4 + 4, not 5 + 3.
    """
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


def resolve_layer(model: nn.Module, layer: object = None) -> nn.Module:
    """`get_layer(model, layer)`, with None meaning `default_layer(model)`."""
    return get_layer(model, default_layer(model) if layer is None else layer)


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
