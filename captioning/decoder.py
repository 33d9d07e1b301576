"""The caption decoder of Xu et al. 2015, "Show, Attend and Tell": an RNN that attends.

At step t the decoder queries the attention over the image grid with the top layer's previous
hidden state, gates the attended context with a scalar beta_t = sigmoid(f_beta(h_{t-1}))
(section 4.2.1), feeds [embedding(y_{t-1}); beta_t * z_t] to the first recurrent layer (and
each layer's output, dropped out, to the next), and predicts the next word from the top
layer's dropped-out output. Each layer's initial state comes from the mean grid feature
(section 3.1.2).

Variants (:class:`DecoderConfig`): the cell (LSTM or GRU), the number of stacked layers, and
the attention: ``soft`` (the expected context sum_i alpha_ti a_i, section 4.2, trained by
backpropagation) or ``hard`` (one grid cell s_t ~ Multinoulli(alpha_t) per word, section 4.1,
trained with REINFORCE: ``captioning.training.hard_attention_loss``).

``forward`` is teacher forcing, written here as the plain loop over :meth:`step` that the paper
describes (:meth:`reference_forward`); ``captioning.fast_teacher_forcing`` computes the same
faster for the configurations it covers, and the tests hold the two equal. Generation
(greedy, sampling, beam search) lives in ``captioning.search`` and drives :meth:`step`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn

from captioning.core.attention import SoftAttention

CELLS = {"lstm": nn.LSTMCell, "gru": nn.GRUCell}
ATTENTIONS = ("soft", "hard")
HARD_DECODES = ("expect", "argmax")


def _choice(default: str, choices) -> str:
    return field(default=default, metadata={"choices": tuple(choices)})  # the flag offers the choices


@dataclass
class DecoderConfig:
    vocab_size: int = 10000  # set from the vocabulary
    feature_dim: int = 1280  # C of the encoder grid (1280 for efficientnet_lite0, 2048 for resnets)
    embed_dim: int = 512  # word embedding size
    hidden_dim: int = 512  # RNN state size
    attention_dim: int = 512  # size of the additive attention's hidden layer
    dropout: float = 0.5  # on the top layer's output before the word classifier, and between layers
    max_length: int = 20  # longest caption generated, in words (<end> not counted)
    cell: str = _choice("lstm", CELLS)  # recurrent cell: lstm or gru
    layers: int = 1  # stacked recurrent layers (1 to 4)
    attention: str = _choice("soft", ATTENTIONS)  # soft (expected context) or hard (one sampled grid cell per word, REINFORCE)
    hard_decode: str = _choice("expect", HARD_DECODES)  # hard attention at inference: expect (soft alpha, as the authors) or argmax cell

    def __post_init__(self):
        from captioning.core.errors import UserError

        if self.cell not in CELLS:
            raise UserError(f"decoder cell must be one of {', '.join(CELLS)}, not {self.cell!r}")
        if not 1 <= self.layers <= 4:
            raise UserError(f"decoder layers must be 1 to 4, not {self.layers}")
        if self.attention not in ATTENTIONS:
            raise UserError(f"decoder attention must be one of {', '.join(ATTENTIONS)}, not {self.attention!r}")
        if self.hard_decode not in HARD_DECODES:
            raise UserError(f"hard decode must be one of {', '.join(HARD_DECODES)}, not {self.hard_decode!r}")


@dataclass
class DecoderMemory:
    """What the decoder keeps about each image while it writes: the grid and its attention
    projection, computed once per image rather than once per step."""

    features: torch.Tensor  # (N, P, C)
    projected: torch.Tensor  # (N, P, A)

    def select(self, index: torch.Tensor) -> DecoderMemory:
        return DecoderMemory(self.features.index_select(0, index), self.projected.index_select(0, index))


class PackedLogits(NamedTuple):
    """Teacher forcing's logits without padding: row r predicts ``targets[r]``. Rows run step
    by step (within a step, the order of the captions is the implementation's)."""

    logits: torch.Tensor  # (N, V)
    targets: torch.Tensor  # (N,)


class AttentionDecoder(nn.Module):
    ROW_BUCKET = 64  # with padded_steps, fast teacher forcing's caption rows are a multiple of this

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.cfg = cfg
        feat, hid, layers = cfg.feature_dim, cfg.hidden_dim, cfg.layers
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=0)
        self.attention = SoftAttention(feat, hid, cfg.attention_dim)
        self.init_h = nn.Linear(feat, layers * hid)  # every layer's h0, from the mean grid feature
        self.init_c = nn.Linear(feat, layers * hid) if cfg.cell == "lstm" else None  # a GRU has no cell state
        self.f_beta = nn.Linear(hid, 1)  # the gating scalar beta of section 4.2.1
        cell = CELLS[cfg.cell]
        # The first layer reads [word; context]; the ones above read the layer below. The first
        # is named after its cell ("lstm", as in checkpoints from before the variants).
        setattr(self, cfg.cell, cell(cfg.embed_dim + feat, hid))
        self.upper = nn.ModuleList(cell(hid, hid) for _ in range(layers - 1))
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(hid, cfg.vocab_size)
        if cfg.attention == "hard":
            # REINFORCE's moving-average baseline b of the captions' mean word NLL, updated by
            # the training loss; a buffer, so checkpoints (and --resume) carry it.
            self.register_buffer("reinforce_baseline", torch.zeros(()))
        # Hard attention in training: whether this minibatch samples cells (else it uses the
        # expectation, as the authors do half of the time); the probability of the expectation.
        self.sampling = True
        self.expect_prob = 0.5
        # Teacher forcing through captioning.fast_teacher_forcing where it covers the config.
        self.fast = True
        # How fast teacher forcing steps (a way of computing, not part of the model): False drops
        # the captions that have ended from the batch at each step (least work); True runs
        # every caption at every step and drops the ended ones' outputs, so that every step
        # has the same shapes, which static graphs need (``compile_step(static=True)``).
        self.padded_steps = False
        # Gradients summed once after the fast teacher-forcing steps instead of step by step (off
        # in compiled steps): the grid's when the CNN is fine-tuned, the recurrent input
        # projection's weights' always (fast_teacher_forcing's _GridGradient, _WeightGradient).
        self._grid_gradient = True
        self._weight_gradient = True
        self._recur = None  # fast teacher forcing's step, when compiled (compile_step)
        self.last_cells: torch.Tensor | None = None  # hard attention: the cells forward sampled (M, L-1)

    @property
    def cells(self) -> list[nn.Module]:
        """The recurrent layers, bottom first."""
        return [getattr(self, self.cfg.cell), *self.upper]

    def memory(self, features: torch.Tensor) -> DecoderMemory:
        """features (N, P, C) -> the per-image state reused at every step.

        Under autocast, fp32 features (cached ones, read as fp32) are cast once here: left
        fp32, autocast would cast them again for the context product at every word."""
        device = features.device.type
        if torch.is_autocast_enabled(device) and features.is_floating_point():
            features = features.to(torch.get_autocast_dtype(device))
        return DecoderMemory(features, self.attention.project(features))

    def init_state(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (N, P, C) -> (h, c), each (N, layers, H); a GRU's c is (N, layers, 0)."""
        n, layers = features.size(0), self.cfg.layers
        mean = features.mean(dim=1)  # (N, C)
        h = torch.tanh(self.init_h(mean)).view(n, layers, -1)
        c = torch.tanh(self.init_c(mean)).view(n, layers, -1) if self.init_c is not None else h.new_zeros(n, layers, 0)
        return h, c

    def compile_step(self, static: bool = False, **options) -> None:
        """Replace :meth:`step` (decoding) and fast teacher forcing's recurrence by their
        ``torch.compile`` versions (call it once the decoder is on its device).

        By default shapes are dynamic: the batch shrinks as captions end, and a static graph
        per batch size would recompile at every step. ``static`` switches teacher forcing to
        padded steps (:attr:`padded_steps`) and compiles its step for static shapes: one graph
        serves every step, and on CUDA it is replayed as a CUDA graph (``mode="reduce-overhead"``),
        one launch instead of one per kernel. Decoding stays dynamic."""
        from captioning import fast_teacher_forcing

        self.step = torch.compile(AttentionDecoder.step.__get__(self), dynamic=True, **options)
        self.padded_steps = static
        # Their backward keeps Python state, which a compiled graph would not run.
        self._grid_gradient = self._weight_gradient = False
        if static and self.fc.weight.is_cuda:
            options.setdefault("mode", "reduce-overhead")
        self._recur = torch.compile(fast_teacher_forcing.recur.__get__(self), dynamic=not static, **options)

    def attend(self, memory: DecoderMemory, query: torch.Tensor):
        """query (N, H) -> context (N, C), alpha (N, P), and under hard attention the chosen
        cell (N,) (None where the expectation is used: soft attention, hard attention's
        expectation minibatches in training and its ``expect`` decoding)."""
        alpha = self.attention.weights(memory.projected, query).to(memory.features.dtype)  # (N, 1, P)
        cell = None
        if self.cfg.attention == "hard":
            if self.training and self.sampling:
                cell = torch.multinomial(alpha.squeeze(1).float(), 1).squeeze(1)  # s_t ~ Multinoulli(alpha_t)
            elif not self.training and self.cfg.hard_decode == "argmax":
                cell = alpha.squeeze(1).argmax(-1)
        if cell is None:
            context = torch.bmm(alpha, memory.features).squeeze(1)  # (N, C) = sum_i alpha_ti a_i
        else:
            # The chosen cell's feature: no gradient flows through the choice (REINFORCE trains alpha).
            context = memory.features[torch.arange(len(cell), device=cell.device), cell]  # (N, C)
        return context, alpha.squeeze(1), cell

    def step(self, tokens: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], memory: DecoderMemory,
             return_cell: bool = False):
        """One word for N sequences: tokens (N,) previous words, state (h, c) each (N, layers, H)
        -> logits (N, V), the new state, and the attention alpha (N, P) used for the predicted
        word (and with ``return_cell`` the hard attention's chosen cell (N,) or None)."""
        h, c = state
        top = h[:, -1]  # (N, H) the top layer's previous state queries the attention
        context, alpha, cell = self.attend(memory, top)
        gate = torch.sigmoid(self.f_beta(top))  # (N, 1)
        x = torch.cat([self.embedding(tokens), gate * context], dim=1)  # (N, E + C)
        new_h, new_c = [], []
        for layer, rnn in enumerate(self.cells):
            if layer > 0:
                x = self.dropout(x)
            if self.cfg.cell == "lstm":
                x, cl = rnn(x, (h[:, layer], c[:, layer]))
            else:
                x, cl = rnn(x, h[:, layer]), c[:, layer]
            new_h.append(x)
            new_c.append(cl)
        logits = self.fc(self.dropout(x))  # (N, V)
        state = (torch.stack(new_h, 1), torch.stack(new_c, 1))
        return (logits, state, alpha, cell) if return_cell else (logits, state, alpha)

    def forward(self, features: torch.Tensor, captions: torch.Tensor, lengths: torch.Tensor,
                image_index: torch.Tensor | None = None, packed: bool = False):
        """Teacher forcing.

        features (B, P, C): one grid per image. captions (M, L): ``<start> w1 .. wn <end>``
        padded with 0, M >= B captions; lengths (M,) count ``<start>`` and ``<end>``;
        image_index (M,) says which image each caption describes (None: caption i <-> image i).
        The attention projection runs once per image, then is shared by all its captions.

        Returns logits (M, L-1, V) predicting captions[:, 1:], and alphas (M, L-1, P); rows
        past a caption's end are zero. With ``packed`` the logits are a :class:`PackedLogits`
        instead: one row per predicted word and its target, no padding (what the loss needs).
        Hard attention in training draws, once per call, whether to sample cells (then kept
        in :attr:`last_cells`, (M, L-1)) or to use the expectation (``last_cells`` None).
        """
        from captioning import fast_teacher_forcing

        self.last_cells = None
        if self.cfg.attention == "hard" and self.training:
            # The authors' semi-sampling: one draw per minibatch (section 4.1, capgen.py).
            self.sampling = bool(torch.rand(()) >= self.expect_prob)
        if self.fast and fast_teacher_forcing.covers(self):
            logits, alphas = fast_teacher_forcing.forward(self, features, captions, lengths, image_index, packed)
            return (PackedLogits(*logits) if packed else logits), alphas
        return self.reference_forward(features, captions, lengths, image_index, packed)

    def reference_forward(self, features, captions, lengths, image_index=None, packed=False):
        """Teacher forcing as the paper writes it: :meth:`step` once per word for every caption.
        Captions that have ended run on over their padding, and their outputs are dropped."""
        image_index = torch.arange(len(captions), device=captions.device) if image_index is None else image_index
        memory = self.memory(features).select(image_index)  # (M, P, C), (M, P, A)
        state = self.init_state(memory.features)
        logits, alphas, cells = [], [], []
        for t in range(captions.size(1) - 1):
            step_logits, state, alpha, cell = self.step(captions[:, t], state, memory, return_cell=True)
            logits.append(step_logits)
            alphas.append(alpha)
            cells.append(cell)
        valid = torch.arange(len(logits), device=captions.device) < (lengths - 1).unsqueeze(1)  # (M, L-1)
        logits = torch.stack(logits, 1).masked_fill(~valid.unsqueeze(2), 0)  # (M, L-1, V)
        alphas = torch.stack(alphas, 1).masked_fill(~valid.unsqueeze(2), 0)  # (M, L-1, P)
        if cells and cells[0] is not None:
            self.last_cells = torch.stack(cells, 1)  # (M, L-1)
        if packed:  # time-major, as the fast path's rows
            return PackedLogits(logits.transpose(0, 1)[valid.t()], captions[:, 1:].t()[valid.t()]), alphas
        return logits, alphas
