"""Receptive fields: which input pixels a layer's unit (i, j) can see.

Computed from the layer geometry (kernel, stride, padding, dilation of every
conv and pooling layer on the way, the union over residual branches) by
tracing the model with `torch.fx`. `visualize` re-exports both names.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
from torch import fx, nn

from .saliency.core import get_layer
from .saliency.validate import check_model

__all__ = ["ReceptiveField", "receptive_field"]


@dataclass(frozen=True)
class ReceptiveField:
    """Geometry of a layer's units in input pixels, per axis (rows, columns).

    Unit (i, j) sees the input pixels whose row lies in
    [start[0] + i·jump[0] − (size[0] − 1)/2, … + (size[0] − 1)/2], likewise
    for columns; `box(i, j)` gives that window as integer bounds.

    size: receptive-field side in pixels. jump: input pixels between two
        neighbouring units (the product of the strides). start: centre of
        unit (0, 0) in input pixel coordinates (pixel centres are integers;
        may be fractional, e.g. after 2 × 2 pooling).
    """

    size: tuple[int, int]
    jump: tuple[int, int]
    start: tuple[float, float]

    def box(self, i: int, j: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) of unit (i, j); bottom/right exclusive.

        Unclipped: the window may extend beyond the image (into the padding).
        """
        top = round(self.start[0] + i * self.jump[0] - (self.size[0] - 1) / 2)
        left = round(self.start[1] + j * self.jump[1] - (self.size[1] - 1) / 2)
        return top, left, top + self.size[0], left + self.size[1]


_SPATIAL = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
_POINTWISE_MODULES = (
    nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh,
    nn.modules.batchnorm._BatchNorm, nn.Dropout, nn.Dropout2d, nn.Identity,
)  # fmt: skip
_POINTWISE_FUNCTIONS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd,
    operator.neg, torch.add, torch.sub, torch.mul, torch.relu, torch.sigmoid,
    torch.tanh, torch.clamp, nn.functional.relu, nn.functional.dropout, torch.cat,
}  # fmt: skip
_POINTWISE_METHODS = {"add", "add_", "sub", "mul", "div", "relu", "relu_", "clamp",
                      "contiguous", "clamp_", "sigmoid", "tanh"}  # fmt: skip
_CONST = "const"  # a node with no spatial extent (a buffer, a number)


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _through(geo: ReceptiveField, m: nn.Module) -> ReceptiveField:
    """r' = r + (k_eff − 1)·j,  j' = j·s,  start' = start + ((k_eff − 1)/2 − p)·j."""
    k, s = (
        _pair(m.kernel_size),
        _pair(m.stride if m.stride is not None else m.kernel_size),
    )
    d = _pair(getattr(m, "dilation", 1))
    if m.padding == "valid":
        p = (0, 0)
    elif m.padding == "same":  # PyTorch pads d·(k − 1) in all, ⌊half⌋ before
        p = tuple(d[a] * (k[a] - 1) // 2 for a in range(2))
    else:
        p = _pair(m.padding)
    size, jump, start = [], [], []
    for a in range(2):
        k_eff = d[a] * (k[a] - 1) + 1
        size.append(geo.size[a] + (k_eff - 1) * geo.jump[a])
        jump.append(geo.jump[a] * s[a])
        start.append(geo.start[a] + ((k_eff - 1) / 2 - p[a]) * geo.jump[a])
    return ReceptiveField(tuple(size), tuple(jump), tuple(start))


def _union(geos: list[ReceptiveField], where: str) -> ReceptiveField:
    """The receptive field of a sum/product of branches: the union of their windows."""
    if any(g.jump != geos[0].jump for g in geos):
        raise ValueError(f"branches with different strides meet at {where}")
    size, start = [], []
    for a in range(2):
        lo = min(g.start[a] - (g.size[a] - 1) / 2 for g in geos)
        hi = max(g.start[a] + (g.size[a] - 1) / 2 for g in geos)
        size.append(round(hi - lo) + 1)
        start.append((lo + hi) / 2)
    return ReceptiveField(tuple(size), geos[0].jump, tuple(start))


def receptive_field(model: nn.Module, layer) -> ReceptiveField:
    """The receptive field of `layer`'s units, from the layer geometry.

    The model is traced symbolically (`torch.fx`, no forward pass on data);
    every `nn.Conv2d`, `nn.MaxPool2d` and `nn.AvgPool2d` on the way applies
    r' = r + (k_eff − 1)·j, j' = j·s, start' = start + ((k_eff − 1)/2 − p)·j
    (k_eff = dilation·(k − 1) + 1); pointwise modules and operations keep the
    geometry; where branches meet (a residual `out + shortcut(x)`) the window
    is the union of the branches' windows. SmallCNN: conv1 → 3, conv2/relu2 →
    8, pool2 → 10 pixels; ResNetSmall: layer3 → 25.

    Args:
        model: an `nn.Module` that `torch.fx.symbolic_trace` can trace.
        layer: dotted submodule name ("conv2", "layer3", "layer2.conv1") or
            the module.
    Raises:
        ValueError: unknown layer; a model fx cannot trace; an operation on
            the way whose geometry is unknown (e.g. interpolation, padding).
    """
    check_model(model)
    module = get_layer(model, layer)
    name = (
        layer
        if isinstance(layer, str)
        else next(n for n, m in model.named_modules() if m is module)
    )
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as err:  # noqa: BLE001 - any tracing failure, reported plainly
        raise ValueError(
            f"model could not be traced with torch.fx to compute receptive fields "
            f"({type(err).__name__}: {err})"
        ) from None
    geo: dict = {}
    found = None
    for node in graph.nodes:
        if node.op == "placeholder":
            geo[node] = ReceptiveField((1, 1), (1, 1), (0.0, 0.0))
            continue
        if node.op == "output":
            continue
        if node.op == "get_attr":
            geo[node] = _CONST
            continue
        inputs = [a for a in node.all_input_nodes]
        known = [geo.get(a) for a in inputs]
        spatial = [g for g in known if isinstance(g, ReceptiveField)]
        if node.op == "call_module":
            sub = model.get_submodule(node.target)
            if isinstance(sub, _SPATIAL) and len(spatial) == 1:
                geo[node] = _through(spatial[0], sub)
            elif isinstance(sub, _POINTWISE_MODULES) and spatial:
                geo[node] = _union(spatial, node.target)
            else:
                geo[node] = None
        elif (
            (node.op == "call_function" and node.target in _POINTWISE_FUNCTIONS)
            or (node.op == "call_method" and node.target in _POINTWISE_METHODS)
        ) and all(g is not None for g in known):
            geo[node] = _union(spatial, node.name) if spatial else _CONST
        else:
            geo[node] = None
        stack = node.meta.get("nn_module_stack") or {}
        if node.op == "call_module" and node.target == name:
            found = node
        elif name in stack:
            found = node  # the last node inside a composite module is its output
    if found is None:
        raise ValueError(f"layer {name!r} is not used in the model's forward pass")
    result = geo.get(found)
    if result is None or result is _CONST:
        raise ValueError(
            f"cannot compute the receptive field of layer {name!r}: an operation on "
            "the way has no known geometry (supported: Conv2d, MaxPool2d, AvgPool2d "
            "and pointwise operations)"
        )
    return result
