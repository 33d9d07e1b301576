"""ResNet-50/101/152 as grid encoders.

He et al. 2016, "Deep Residual Learning for Image Recognition", from torchvision; the weights
come from the torch hub cache or a file, never from the network.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from captioning.core.errors import UserError
from captioning.core.grid_encoder import OTHER_WEIGHTS, Encoder, EncoderSpec


class ResNetEncoder(Encoder):
    """torchvision's ResNet with its modules held directly, so that state-dict keys are
    torchvision's own (``conv1.weight``, ``layer4.2.bn3.running_var``, ``fc.bias``)."""

    _classifier_keys = ("fc.weight", "fc.bias")

    def __init__(self, spec: EncoderSpec, grid_size: int | None = None):
        import torchvision

        super().__init__(spec, grid_size)
        net = getattr(torchvision.models, spec.name)(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.fc = net.fc

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4)
        x = self.layer2(self.layer1(x))  # (B, 512, H/8, W/8)
        return self.layer4(self.layer3(x))  # (B, 2048, H/32, W/32)

    def _logits(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.fc(fmap.mean(dim=(2, 3)))  # (B, 1000)

    def _fine_tune_blocks(self) -> list[list[nn.Module]]:
        return [[self.conv1, self.bn1], [self.layer1], [self.layer2], [self.layer3], [self.layer4]]

    def _conv_bn_pairs(self) -> list[tuple[str, str]]:
        pairs = [("conv1", "bn1")]
        for layer in ("layer1", "layer2", "layer3", "layer4"):
            for i, block in enumerate(getattr(self, layer)):  # torchvision's Bottleneck or BasicBlock
                pairs += [(f"{layer}.{i}.conv{k}", f"{layer}.{i}.bn{k}") for k in (1, 2, 3) if hasattr(block, f"conv{k}")]
                if block.downsample is not None:  # Sequential(conv 1x1, BatchNorm)
                    pairs.append((f"{layer}.{i}.downsample.0", f"{layer}.{i}.downsample.1"))
        return pairs


def resnet_weights_file(spec: EncoderSpec) -> Path:
    """The torchvision checkpoint in the hub cache, found without downloading it. DEFAULT
    (IMAGENET1K_V2) first, then any other ImageNet version a user may already have."""
    import torchvision

    name = spec.name
    enum = torchvision.models.get_model_weights(name)
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    candidates = [enum.DEFAULT, *[w for w in enum if w is not enum.DEFAULT]]
    for w in candidates:
        path = checkpoints / os.path.basename(urlparse(w.url).path)
        if path.is_file():
            return path
    want = checkpoints / os.path.basename(urlparse(enum.DEFAULT.url).path)
    raise UserError(f"no {name} weights: put {enum.DEFAULT.url} at {want}, {OTHER_WEIGHTS}")
