"""The captioner: a pretrained CNN grid encoder followed by the attention LSTM decoder.

Its configuration is a pair of dataclasses saved with every checkpoint, so that loading
rebuilds exactly this model from JSON (see ``captioning.core.checkpoint``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import torch
from torch import nn

from captioning.core.encoders import EncoderConfig, encode_images
from captioning.decoder import AttentionDecoder, DecoderConfig


@dataclass
class CaptionConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict) -> CaptionConfig:
        return cls(EncoderConfig(**obj["encoder"]), DecoderConfig(**obj["decoder"]))


class CaptionModel(nn.Module):
    def __init__(self, cfg: CaptionConfig, encoder_weights: str | None = "default"):
        super().__init__()
        self.encoder = cfg.encoder.build(encoder_weights)
        # The decoder's input size follows the encoder: set on a copy, the caller's config stays as given.
        self.cfg = replace(cfg, decoder=replace(cfg.decoder, feature_dim=self.encoder.out_channels))
        self.decoder = AttentionDecoder(self.cfg.decoder)

    @property
    def image_size(self) -> int:
        return self.cfg.encoder.resolved_image_size()

    def grid_shape(self) -> tuple[int, int]:
        return self.encoder.grid_shape(self.image_size)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images float in [0, 1] or uint8, (B, 3, S, S) -> grid features (B, P, C). Grid
        features computed before (``captioning.core.features``) pass through: ``encode_images``."""
        return encode_images(self.encoder, images, self.cfg.encoder.fine_tune_blocks > 0)

    def forward(self, images: torch.Tensor, captions: torch.Tensor, lengths: torch.Tensor,
                image_index: torch.Tensor | None = None, packed: bool = False):
        """Teacher forcing from pixels: see :meth:`AttentionDecoder.forward`."""
        return self.decoder(self.encode(images), captions, lengths, image_index, packed)
