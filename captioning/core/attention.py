"""Additive (Bahdanau) soft attention over an image grid.

Xu et al. 2015, "Show, Attend and Tell", eq. 4-6: e_ti = w^T tanh(W_a a_i + W_h h_{t-1}),
alpha_t = softmax(e_t), z_t = sum_i alpha_ti a_i. The captioning decoder queries it with the
LSTM state; the VQA `attention` fusion queries it with the question vector and asks for
several glimpses (Kazemi & Elqursh 2017), which is why ``glimpses`` is a parameter here.
"""

from __future__ import annotations

import torch
from torch import nn


class SoftAttention(nn.Module):
    def __init__(self, feature_dim: int, query_dim: int, attention_dim: int, glimpses: int = 1, dropout: float = 0.0):
        super().__init__()
        self.feature_proj = nn.Linear(feature_dim, attention_dim)
        self.query_proj = nn.Linear(query_dim, attention_dim)
        self.dropout = nn.Dropout(dropout)
        self.score = nn.Linear(attention_dim, glimpses)
        self.glimpses = glimpses

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """W_a a_i for every grid cell: (B, P, C) -> (B, P, A). It does not depend on the
        query, so callers compute it once per image and reuse it at every decoding step."""
        return self.feature_proj(features)

    def weights(self, projected: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """projected (N, P, A), query (N, Q) -> alpha (N, G, P) in fp32; each row sums to 1 over P."""
        # In place on the fresh sum: the largest tensor of a decoding step (beams x cells x A
        # in batched beam search), so one allocation of it fewer is a visible share of this
        # line's time on a CPU. Autograd keeps tanh's output, which is all it needs.
        hidden = (projected + self.query_proj(query).unsqueeze(1)).tanh_()  # (N, P, A)
        logits = self.score(self.dropout(hidden)).transpose(1, 2)  # (N, G, P)
        return torch.softmax(logits.float(), dim=-1)

    def forward(self, features: torch.Tensor, projected: torch.Tensor, query: torch.Tensor):
        """features (N, P, C), projected (N, P, A), query (N, Q) ->
        context (N, G, C) and alpha (N, G, P); each alpha row sums to 1 over P."""
        alpha = self.weights(projected, query).to(features.dtype)
        context = torch.bmm(alpha, features)  # (N, G, C)
        return context, alpha
