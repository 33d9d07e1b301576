"""The question encoder: word embeddings read by an LSTM (or GRU), one vector per question.

Antol et al. 2015 ("VQA", the "deeper LSTM Q" baseline) and Kazemi & Elqursh 2017 ("Show,
Ask, Attend, and Answer") both encode the question with an LSTM over learned word embeddings
and keep its final state. Questions are tokenised with the captioner's tokenizer and
vocabulary (``captioning.core.vocab``). The RNN runs on packed sequences, so a batch padded to its
longest question costs no more than the questions themselves, and the final state of each
question is the state after its own last word, not after the padding.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from captioning.core.errors import UserError

RNNS = {"lstm": nn.LSTM, "gru": nn.GRU}


@dataclass
class QuestionEncoderConfig:
    vocab_size: int = 10000  # set from the question vocabulary
    word_dim: int = 300  # word embedding size
    rnn: str = "lstm"  # lstm or gru
    rnn_dim: int = 1024  # hidden state size (per direction)
    rnn_layers: int = 1  # stacked RNN layers
    bidirectional: bool = False  # also read the question right to left
    question_dropout: float = 0.0  # on the embeddings and between stacked layers

    def __post_init__(self):
        if self.rnn not in RNNS:
            raise UserError(f"unknown question RNN {self.rnn!r}; known: {', '.join(RNNS)}")
        if self.rnn_layers < 1 or self.rnn_dim < 1 or self.word_dim < 1:
            raise UserError("the question encoder needs at least one layer and positive sizes")

    @property
    def out_dim(self) -> int:
        """Size of the question vector: the last layer's final state, both directions."""
        return self.rnn_dim * (2 if self.bidirectional else 1)


class QuestionEncoder(nn.Module):
    def __init__(self, cfg: QuestionEncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.word_dim, padding_idx=0)
        self.dropout = nn.Dropout(cfg.question_dropout)
        self.rnn = RNNS[cfg.rnn](cfg.word_dim, cfg.rnn_dim, num_layers=cfg.rnn_layers, batch_first=True,
                                 bidirectional=cfg.bidirectional,
                                 dropout=cfg.question_dropout if cfg.rnn_layers > 1 else 0.0)
        self.out_dim = cfg.out_dim

    def forward(self, questions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """questions (M, L) word ids padded with 0, lengths (M,) >= 1 -> (M, D) question vectors."""
        # tanh bounds the embeddings, as Cyanogenoid's pytorch-vqa reproduction of Kazemi & Elqursh does.
        x = torch.tanh(self.dropout(self.embedding(questions)))  # (M, L, E)
        # pack_padded_sequence wants the lengths on the CPU; enforce_sorted=False sorts and
        # restores the order itself.
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        # oneDNN has no bf16 LSTM on CPUs without AVX512 ("could not create a primitive
        # descriptor"): on a CPU the question RNN, a few words long, always runs in fp32.
        with torch.autocast("cpu", enabled=False) if x.device.type == "cpu" else contextlib.nullcontext():
            _, state = self.rnn(packed.float() if x.device.type == "cpu" else packed)
        h = state[0] if isinstance(state, tuple) else state  # (layers * dirs, M, H); LSTM also gives c
        dirs = 2 if self.cfg.bidirectional else 1
        last = h[-dirs:]  # (dirs, M, H): the last layer, forward then backward
        return last.transpose(0, 1).reshape(questions.size(0), -1)  # (M, dirs * H)
