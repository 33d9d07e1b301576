"""The VQA network: CNN grid + question encoder -> fusion -> classifier over the top-K answers.

Antol et al. 2015 ("VQA", the "deeper LSTM Q + norm I" baseline: ``mul`` fusion) and
Kazemi & Elqursh 2017 ("Show, Ask, Attend, and Answer": ``attention`` fusion) share this
outline: the image is a grid of CNN features, L2-normalised per cell, from the captioner's
encoder registry (``captioning.core.encoders``); the question is the final state of an LSTM; the
two are fused (``vqa.fusion``) and an MLP scores every answer of the vocabulary
(``vqa.answers.AnswerVocab``). Training treats each answer as an independent yes/no with the
soft VQA score as target, so the scores are sigmoids (see ``vqa.training``).

The configuration is a set of dataclasses saved with every checkpoint, so that loading
rebuilds exactly this model from JSON (see ``captioning.core.checkpoint``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from captioning.core.encoders import EncoderConfig, encode_images
from captioning.core.errors import UserError
from vqa.fusion import FusionConfig, build_fusion
from vqa.question_encoder import QuestionEncoder, QuestionEncoderConfig


@dataclass
class VQAConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    question: QuestionEncoderConfig = field(default_factory=QuestionEncoderConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    num_answers: int = 3000  # classes: set from the answer vocabulary (the top-K answers)
    max_question_length: int = 30  # longer questions are cut to their first N words (VQA v2's longest: 23)
    classifier_dim: int = 1024  # hidden layer of the answer classifier
    dropout: float = 0.5  # before each layer of the answer classifier

    def __post_init__(self):
        if self.num_answers < 1 or self.max_question_length < 1:
            raise UserError("a VQA model needs at least one answer and one question word")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict) -> VQAConfig:
        rest = {k: v for k, v in obj.items() if k not in ("encoder", "question", "fusion")}
        return cls(EncoderConfig(**obj["encoder"]), QuestionEncoderConfig(**obj["question"]),
                   FusionConfig.from_json(obj["fusion"]), **rest)


class VQANet(nn.Module):
    def __init__(self, cfg: VQAConfig, encoder_weights: str | None = "default"):
        super().__init__()
        self.cfg = cfg
        # At attribute ``encoder``: captioning.core.trainer's parameter groups and channels_last look for it there.
        self.encoder = cfg.encoder.build(encoder_weights)
        self.question_encoder = QuestionEncoder(cfg.question)
        self.fusion = build_fusion(cfg.fusion, self.encoder.out_channels, self.question_encoder.out_dim)
        self.classifier = nn.Sequential(
            nn.Dropout(cfg.dropout), nn.Linear(self.fusion.out_dim, cfg.classifier_dim), nn.ReLU(),
            nn.Dropout(cfg.dropout), nn.Linear(cfg.classifier_dim, cfg.num_answers))

    @property
    def image_size(self) -> int:
        return self.cfg.encoder.resolved_image_size()

    @property
    def has_attention(self) -> bool:
        return self.fusion.has_attention

    def grid_shape(self) -> tuple[int, int]:
        return self.encoder.grid_shape(self.image_size)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images uint8 or float in [0, 1] (B, 3, S, S) -> grid (B, P, C), each cell L2-normalised.
        Grid features computed before (``captioning.core.features``) pass through ``encode_images``."""
        grid = encode_images(self.encoder, images, self.cfg.encoder.fine_tune_blocks > 0)  # (B, P, C)
        return F.normalize(grid.float(), dim=-1)

    def forward(self, images: torch.Tensor, questions: torch.Tensor, lengths: torch.Tensor,
                image_index: torch.Tensor | None = None):
        """images (B, 3, S, S), questions (M, L) word ids padded with 0, lengths (M,),
        image_index (M,) the image each question asks about (None: question i, image i) ->
        answer logits (M, K) and the attention (M, G, P), or None for concat and mul fusion."""
        if image_index is None:
            image_index = torch.arange(questions.size(0), device=questions.device)
        grid = self.encode(images)  # (B, P, C)
        question = self.question_encoder(questions, lengths)  # (M, D)
        fused, alpha = self.fusion(grid, image_index, question)  # (M, F), (M, G, P) | None
        return self.classifier(fused), alpha  # (M, K)
