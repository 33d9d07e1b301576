"""The captioner: a pretrained CNN grid encoder followed by the attention LSTM decoder.

Its configuration is a pair of dataclasses saved with every checkpoint, so that loading
rebuilds exactly this model from JSON (see ``captioning.checkpoint``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .decoder import AttentionDecoder, DecoderConfig
from .encoder import ENCODERS, Encoder, build_encoder


@dataclass
class EncoderConfig:
    name: str = "efficientnet_lite0"  # a key of captioning.encoder.ENCODERS
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


def checkpoint_skips(model: nn.Module) -> tuple[str, ...]:
    """State-dict keys a checkpoint of ``model`` (a CaptionModel or ``vqa.model.VQANet``) leaves
    out: with ``in_checkpoint`` False, the CNN blocks still at their registry weights."""
    enc = model.cfg.encoder
    if enc.in_checkpoint:
        return ()
    return tuple("encoder." + k for k in model.encoder.frozen_state_keys(enc.fine_tune_blocks))


# In eval mode (or frozen) a CNN's output for an image does not depend on the rest of the
# batch, and on a CPU a big batch's activations overflow the caches, so inference, feature
# caching and frozen-CNN training run it in chunks of about this many input pixels. Lite0 on
# the 2-core CPU, 64 images, seconds by chunk size (1 / 4 / 8 / 64 images): 1.3 / 0.65 /
# 0.59 / 1.5 at 160 px, 1.9 / 1.1 / 1.3 / 4.2 at 224 px.
CPU_ENCODER_PIXELS = 8 * 160 * 160


def encode_images(encoder: Encoder, images: torch.Tensor, trainable: bool) -> torch.Tensor:
    """images float in [0, 1] or uint8, (B, 3, S, S) -> grid features (B, P, C). A frozen
    encoder (``trainable`` False) runs without autograd: nothing of it is trained.
    Shared by the captioner and ``vqa.model.VQANet``. A (B, P, C) input is taken as grid
    features already computed by this encoder (``captioning.features``) and passed through."""
    if images.dim() == 3:
        return images.float()
    if images.dtype == torch.uint8:
        images = images.float().div_(255.0)
    if trainable and torch.is_grad_enabled():
        return encoder(images)
    with torch.no_grad():
        chunk = max(1, CPU_ENCODER_PIXELS // (images.shape[-1] * images.shape[-2]))
        # Chunks are exact when no BatchNorm uses batch statistics: in eval mode, or frozen
        # (a frozen encoder keeps its BatchNorms in eval even while the model trains, and the
        # trunks have no dropout).
        independent = not encoder.training or not trainable
        if images.device.type == "cpu" and independent and len(images) > chunk:
            return torch.cat([encoder(c) for c in images.split(chunk)])
        return encoder(images)


@dataclass
class CaptionConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict) -> "CaptionConfig":
        return cls(EncoderConfig(**obj["encoder"]), DecoderConfig(**obj["decoder"]))


class CaptionModel(nn.Module):
    def __init__(self, cfg: CaptionConfig, encoder_weights: str | None = "default"):
        super().__init__()
        self.cfg = cfg
        self.encoder = cfg.encoder.build(encoder_weights)
        cfg.decoder.feature_dim = self.encoder.out_channels
        self.decoder = AttentionDecoder(cfg.decoder)

    @property
    def image_size(self) -> int:
        return self.cfg.encoder.resolved_image_size()

    def grid_shape(self) -> tuple[int, int]:
        return self.encoder.grid_shape(self.image_size)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images float in [0, 1] or uint8, (B, 3, S, S) -> grid features (B, P, C).
        A (B, P, C) input is taken as features already computed (captioning.features)."""
        return encode_images(self.encoder, images, self.cfg.encoder.fine_tune_blocks > 0)

    def forward(self, images: torch.Tensor, captions: torch.Tensor, lengths: torch.Tensor,
                image_index: torch.Tensor | None = None):
        """Teacher forcing from pixels: see :meth:`AttentionDecoder.forward`."""
        return self.decoder(self.encode(images), captions, lengths, image_index)
