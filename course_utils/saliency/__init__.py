"""Saliency methods, one plain function per module.

Every function takes `(model, x, target, …)`: `model` maps (N, C, H, W)
inputs to (N, K) logits, `x` is (N, C, H, W), `target` is a class index or
one per row. Each returns a detached tensor on x's device shaped like x
(Grad-CAM: (N, 1, H, W)), runs the model in eval mode, and leaves the
model's weights, modes, `requires_grad` flags and hooks, and x, as they were
(also when it raises).

`METHODS` maps a name to a function callable generically as
`f(model, x, target)` with every other argument at its default:

* "gradient": `gradient` (signed)
* "input_x_gradient": `input_x_gradient`
* "integrated_gradients": `integrated_gradients` (black baseline, 50 trapezoid
  steps)
* "smoothgrad": `smoothgrad` of the gradient (50 samples, noise 0.15, drawn
  from the global generator: seed it, or use `functools.partial(smoothgrad,
  generator=...)`, for repeatable maps)
* "occlusion": `occlusion` (patch 4, stride 4, grey, drop in probability)
* "grad_cam": `grad_cam` at `default_layer(model)`; returns (N, 1, H, W)
* "guided_backprop": `guided_backprop`
* "guided_grad_cam": `guided_grad_cam` at `default_layer(model)`
* "deconvnet": `deconvnet`
* "gradient_shap": `gradient_shap` (expected gradients: 50 samples, baselines
  drawn from 200 training digits — 1×28×28 inputs; pass baselines= otherwise —
  no noise, draws seeded with SEED = 0)

`grad_cam` and `guided_grad_cam` take `layer=None` to mean
`default_layer(model)` (the last conv block: "relu2" for SmallCNN, "layer3"
for ResNetSmall), which is what makes them callable as `f(model, x, target)`.
Grad-CAM's (N, 1, H, W) map broadcasts against x; every other method returns
x's shape.

`cam(model, x, target, layer=None)` (Zhou et al. 2016) is exported but not
in `METHODS`: it needs a network ending in global average pooling and one
linear layer (ResNetSmall), and METHODS entries must run on every model the
course loops them over (SmallCNN ends in two linear layers; `cam` raises a
ValueError naming the requirement there). For such networks
`cam = (h·w) · grad_cam` at the pooled layer.

Other helpers: `forward_passes_occlusion(image_shape, patch, stride)` (model
evaluations an occlusion setting costs), `default_layer(model)`,
`get_layer(model, name_or_module)`, `DEFAULT_BATCH_SIZE` (rows per model
call for digits) and `default_batch_size(x, model)` (rows per call for inputs
like x on that model, sized by one row's activation memory; see
`saliency.batching`).

Option lists, importable by name: `BASELINE_NAMES` (every baseline name any
method, metric or widget accepts, see `baselines`), `QUADRATURE_RULES` (IG's
rules) and `SMOOTHGRAD_KINDS`.

Shared layer (public): `core` (eval mode, input gradient, select, hooks,
chunking, layers), `validate` (argument and target checks), `baselines` (every
baseline by name), `batching` (rows per call by cost). Each method module opens
with `<name>_textbook`, the plain loop to hold against the formula, and then the
batched version.
"""

from .baselines import BASELINE_NAMES
from .cam import cam
from .core import DEFAULT_BATCH_SIZE, default_batch_size, default_layer, get_layer
from .grad_cam import grad_cam
from .gradient import gradient
from .gradient_shap import gradient_shap
from .guided_backprop import deconvnet, guided_backprop
from .guided_grad_cam import guided_grad_cam
from .input_x_gradient import input_x_gradient
from .integrated_gradients import QUADRATURE_RULES, integrated_gradients
from .occlusion import forward_passes_occlusion, occlusion
from .smoothgrad import KINDS as SMOOTHGRAD_KINDS
from .smoothgrad import smoothgrad

METHODS = {
    "gradient": gradient,
    "input_x_gradient": input_x_gradient,
    "integrated_gradients": integrated_gradients,
    "smoothgrad": smoothgrad,
    "occlusion": occlusion,
    "grad_cam": grad_cam,
    "guided_backprop": guided_backprop,
    "guided_grad_cam": guided_grad_cam,
    "deconvnet": deconvnet,
    "gradient_shap": gradient_shap,
}
# How the course writes each method's name in charts and text.
METHOD_TITLES = {
    "gradient": "gradient",
    "input_x_gradient": "input × gradient",
    "integrated_gradients": "integrated gradients",
    "smoothgrad": "SmoothGrad",
    "occlusion": "occlusion",
    "grad_cam": "Grad-CAM",
    "guided_backprop": "guided backprop",
    "guided_grad_cam": "guided Grad-CAM",
    "deconvnet": "deconvnet",
    "gradient_shap": "expected gradients",
}
# Methods whose maps are ≥ 0 by construction: drawn on the magnitude scale.
MAGNITUDE_METHODS = ("grad_cam",)

__all__ = [
    "BASELINE_NAMES",
    "DEFAULT_BATCH_SIZE",
    "MAGNITUDE_METHODS",
    "METHODS",
    "METHOD_TITLES",
    "QUADRATURE_RULES",
    "SMOOTHGRAD_KINDS",
    "cam",
    "deconvnet",
    "default_batch_size",
    "default_layer",
    "forward_passes_occlusion",
    "get_layer",
    "grad_cam",
    "gradient",
    "gradient_shap",
    "guided_backprop",
    "guided_grad_cam",
    "input_x_gradient",
    "integrated_gradients",
    "occlusion",
    "smoothgrad",
]
