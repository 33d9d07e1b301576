"""The grid encoder every CNN of the registry is: images -> a grid of feature vectors (B, P, C).

The captioner attends over the cells of the last convolutional map, as in Xu et al. 2015
("Show, Attend and Tell"); the CNNs are ImageNet classifiers with their pooling and classifier
taken off. :class:`Encoder` is their common base: normalisation with the weights' own mean/std
on the images' device, the grid layout, block-wise fine-tuning, frozen BatchNorms, and the
folded twin that inference runs. :class:`EncoderSpec` is what a registry entry carries
(``captioning.core.encoders``); the architectures are ``captioning.core.efficientnet_lite`` and
``captioning.core.resnet``.

Folding BatchNorm. In eval mode a BatchNorm is a per-channel affine map, which the
convolution before it can absorb (its weight scaled, a bias added). :func:`fold_batchnorms`
makes that twin; :meth:`Encoder.fold` keeps it, and the encoder drops it (:meth:`Encoder.unfold`)
at each place its weights can change, so the rule a reader follows is written in one method.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_weights

from captioning.core.errors import UserError
from captioning.core.features import is_grid_features
from captioning.core.transforms import to_float

# How to provide weights, ending every "weights not found" message of the architectures' resolvers.
OTHER_WEIGHTS = "or pass weights=<path to a state-dict file>, or weights='none' for a random initialisation"


@dataclass(frozen=True)
class EncoderSpec:
    """One entry of the registry, as timm's ``pretrained_cfg``: how to build the network, where
    its weights come from, how its inputs are prepared, and what grid it returns."""

    name: str
    paper: str
    # constructor
    model: Callable[[EncoderSpec, int | None], Encoder]  # (spec, grid_size) -> the network, weights not loaded
    # weights
    default_weights: Callable[[EncoderSpec], Path]  # spec -> the file of weights="default"; UserError if absent
    weights: str  # where weights="default" comes from, in words
    # preprocessing the weights expect
    input_size: int  # square side (pixels) the weights were trained and evaluated at
    mean: tuple[float, float, float]  # per-channel RGB mean of inputs in [0, 1]
    std: tuple[float, float, float]  # per-channel RGB std of inputs in [0, 1]
    # output
    channels: int  # C of the grid the encoder returns
    stride: int  # input pixels per grid cell (five stride-2 stages: 32)
    # Frozen forwards on a CPU run in chunks of about this many input pixels (encode_images):
    # a few images, as many as the network's activations leave the caches useful for
    # (docs/performance.md).
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
        # The folded twin (see fold): a plain attribute, not a submodule, so state dicts,
        # checkpoints, .parameters() and .to() never see it.
        object.__setattr__(self, "_folded", None)
        self.register_load_state_dict_post_hook(_unfold_after_load)

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

    def drop_classifier(self) -> Encoder:
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
        self.unfold()
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

    # -- the folded twin ---------------------------------------------------------------------
    def folded(self) -> Encoder:
        """This encoder with each BatchNorm folded into the convolution before it: the same
        function for forwards without batch statistics (eval mode, or frozen), with one pass
        over every activation fewer (:func:`encode_images` runs it). Made by :meth:`fold` at
        the first call, then kept until :meth:`unfold` drops it."""
        if self._folded is None:
            self.fold()
        return self._folded

    def fold(self) -> Encoder:
        """Make the folded twin now from the current weights (:func:`fold_batchnorms`) and keep
        it. The encoder drops it itself wherever its weights can change (see :meth:`unfold`).
        An encoder built under ``torch.inference_mode`` is its own twin: its inference tensors
        cannot be folded outside that mode."""
        inference = any(t.is_inference() for t in self.parameters())
        object.__setattr__(self, "_folded", self if inference else fold_batchnorms(self))
        return self._folded

    def unfold(self) -> None:
        """Drop the folded twin; the next :meth:`folded` makes it again. Called by the encoder
        wherever its weights can change: ``load_state_dict`` (a hook), ``.to()`` / ``.half()``
        (:meth:`_apply`), :meth:`fine_tune`, and ``train()`` while any block is trainable
        (optimizer steps come next). Whoever writes into a frozen encoder's weights any other
        way (``p.data.copy_``, an optimizer stepped in eval mode) calls it."""
        object.__setattr__(self, "_folded", None)

    def _apply(self, fn, *args, **kwargs):
        self.unfold()  # new device or dtype: the twin's weights would be the old ones
        return super()._apply(fn, *args, **kwargs)

    def train(self, mode: bool = True) -> Encoder:
        # A frozen BatchNorm in train mode would still update its running statistics from
        # caption batches and drift away from the ImageNet ones its frozen neighbours expect.
        super().train(mode)
        for m in self.modules():
            if isinstance(m, _BatchNorm) and not any(p.requires_grad for p in m.parameters(recurse=False)):
                m.eval()
        if mode and any(p.requires_grad for p in self.parameters()):
            self.unfold()  # training steps will move the weights the twin was folded from
        return self


def _unfold_after_load(encoder: Encoder, _incompatible_keys) -> None:
    """``load_state_dict``'s post-hook: loaded weights replace the ones the twin was folded from.
    A module-level function, not a lambda, so that an encoder still pickles."""
    encoder.unfold()


def fold_batchnorms(encoder: Encoder) -> Encoder:
    """A twin of ``encoder`` in eval mode with every BatchNorm of ``_conv_bn_pairs`` folded into
    its convolution (and replaced by the identity). New modules; the convolutions get new
    weights, every other tensor is the encoder's own, shared, not copied."""
    tensors = [t for m in encoder.modules() for t in (*m._parameters.values(), *m._buffers.values()) if t is not None]
    twin = copy.deepcopy(encoder, memo={id(t): t for t in tensors})  # new modules, the same tensors
    object.__setattr__(twin, "_folded", None)
    with torch.no_grad():
        for conv_name, bn_name in encoder._conv_bn_pairs():
            conv, bn = twin.get_submodule(conv_name), twin.get_submodule(bn_name)
            weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var,
                                                bn.eps, bn.weight, bn.bias)
            conv.weight = nn.Parameter(weight.contiguous(memory_format=torch.channels_last), requires_grad=False)
            conv.bias = nn.Parameter(bias, requires_grad=False)
            _set_submodule(twin, bn_name, nn.Identity())
    return twin.eval()


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, module)


def encode_images(encoder: Encoder, images: torch.Tensor, trainable: bool) -> torch.Tensor:
    """images float in [0, 1] or uint8, (B, 3, S, S) -> grid features (B, P, C). A frozen
    encoder (``trainable`` False) runs without autograd: nothing of it is trained.
    Shared by the captioner and ``vqa.model.VQANet``. Grid features already computed by this
    encoder (:func:`~captioning.core.features.is_grid_features`) pass through.

    In eval mode (or frozen) a CNN's output for an image does not depend on the rest of the
    batch, and on a CPU a big batch's activations overflow the caches, so inference, feature
    caching and frozen-CNN training run it in chunks of about ``EncoderSpec.cpu_chunk_pixels``
    input pixels (a few images: one at a time wastes the cores, a whole batch thrashes the caches)."""
    if is_grid_features(images):
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
