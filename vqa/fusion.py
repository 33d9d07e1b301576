"""Fusion: one vector per (image, question) pair, from the image grid and the question vector.

The grid arrives L2-normalised per cell (B, P, C); the question vector is (M, D); and
``image_index`` (M,) says which image each question asks about, so that every image is
encoded and projected once however many questions it has. Three modes:

- ``concat``: the question vector beside the pooled image vector; the answer classifier's
  MLP does the mixing. The simplest baseline.
- ``mul``: Antol et al. 2015, "VQA: Visual Question Answering", the "deeper LSTM Q + norm I"
  model: the L2-normalised image vector and the question vector are each projected to a
  common space (fully connected + tanh) and multiplied element-wise.
- ``attention``: Kazemi & Elqursh 2017, "Show, Ask, Attend, and Answer": the question
  attends over the grid with ``glimpses`` soft-attention maps (the captioner's
  :class:`captioning.core.attention.SoftAttention`, queried with the question instead of the
  LSTM state); the glimpses, concatenated with the question vector, are the fused vector.
  The attention maps come back like the captioner's, (M, G, P), each summing to 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from captioning.core.attention import SoftAttention
from captioning.core.errors import UserError


@dataclass
class FusionConfig:
    # concat, mul or attention: a key of FUSIONS (its flag is --fusion)
    name: str = field(default="attention", metadata={"flag": "--fusion", "choices": lambda: list(FUSIONS)})
    fusion_dim: int = 1024  # mul: size of the common space image and question are projected to
    attention_dim: int = 512  # attention: hidden size of the additive attention
    glimpses: int = 2  # attention: attention maps per question (Kazemi & Elqursh use 2)

    def __post_init__(self):
        if self.name not in FUSIONS:
            raise UserError(f"unknown fusion {self.name!r}; known: {', '.join(FUSIONS)}")
        if self.glimpses < 1:
            raise UserError(f"glimpses must be at least 1, got {self.glimpses}")

    @classmethod
    def from_json(cls, obj: dict) -> FusionConfig:
        """Also reads checkpoints written before the registry: the key ``fusion`` for ``name``,
        and the grid and question sizes, which the model now derives from its encoders."""
        obj = {k: v for k, v in obj.items() if k not in ("feature_dim", "question_dim")}
        if "fusion" in obj:
            obj["name"] = obj.pop("fusion")
        return cls(**obj)


def pooled_image(grid: torch.Tensor) -> torch.Tensor:
    """Mean of the grid cells, L2-normalised again: the "norm I" image vector, (B, P, C) -> (B, C).
    Scaled by sqrt(C) so its entries have unit RMS like the question vector's: at norm 1 each
    of C = 1280 entries is ~1/sqrt(C), the fused signal starts far below the question's, and
    ``mul`` sat at the always-"yes" floor for epochs on easy-VQA (README)."""
    return F.normalize(grid.mean(dim=1), dim=-1) * grid.size(-1) ** 0.5


class ConcatFusion(nn.Module):
    has_attention = False

    def __init__(self, cfg: FusionConfig, feature_dim: int, question_dim: int):
        super().__init__()
        self.out_dim = question_dim + feature_dim

    def forward(self, grid: torch.Tensor, image_index: torch.Tensor, question: torch.Tensor):
        image = pooled_image(grid).index_select(0, image_index)  # (M, C)
        return torch.cat([question, image], dim=1), None  # (M, D + C)


class MulFusion(nn.Module):
    has_attention = False

    def __init__(self, cfg: FusionConfig, feature_dim: int, question_dim: int):
        super().__init__()
        self.image_proj = nn.Linear(feature_dim, cfg.fusion_dim)
        self.question_proj = nn.Linear(question_dim, cfg.fusion_dim)
        self.out_dim = cfg.fusion_dim

    def forward(self, grid: torch.Tensor, image_index: torch.Tensor, question: torch.Tensor):
        image = torch.tanh(self.image_proj(pooled_image(grid))).index_select(0, image_index)  # (M, F)
        return image * torch.tanh(self.question_proj(question)), None  # (M, F)


class AttentionFusion(nn.Module):
    has_attention = True

    def __init__(self, cfg: FusionConfig, feature_dim: int, question_dim: int):
        super().__init__()
        self.attention = SoftAttention(feature_dim, question_dim, cfg.attention_dim, glimpses=cfg.glimpses)
        self.out_dim = cfg.glimpses * feature_dim + question_dim

    def forward(self, grid: torch.Tensor, image_index: torch.Tensor, question: torch.Tensor):
        projected = self.attention.project(grid).index_select(0, image_index)  # (M, P, A), once per image
        features = grid.index_select(0, image_index)  # (M, P, C)
        context, alpha = self.attention(features, projected, question)  # (M, G, C), (M, G, P)
        fused = torch.cat([context.flatten(1), question], dim=1)  # (M, G*C + D)
        return fused, alpha


# The registry: name -> module class. Each takes (cfg, grid channels C, question size D),
# sets ``out_dim`` (the fused size) and says whether it returns attention maps; its forward
# maps grid (B, P, C), image_index (M,), question (M, D) -> fused (M, out_dim) and the
# attention (M, G, P) or None.
FUSIONS: dict[str, type[nn.Module]] = {"concat": ConcatFusion, "mul": MulFusion, "attention": AttentionFusion}


def build_fusion(cfg: FusionConfig, feature_dim: int, question_dim: int) -> nn.Module:
    return FUSIONS[cfg.name](cfg, feature_dim, question_dim)
