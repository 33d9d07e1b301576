"""The LSTM caption decoder with soft attention (Xu et al. 2015, "Show, Attend and Tell").

At step t the decoder attends over the image grid with its previous hidden state, gates the
attended context with a scalar beta_t = sigmoid(f_beta(h_{t-1})) (section 4.2.1), feeds
[embedding(y_{t-1}); beta_t * z_t] to an LSTMCell, and predicts the next word from the
dropped-out hidden state. h0 and c0 come from the mean grid feature (section 3.1.2).

``forward`` is teacher forcing; generation (greedy, sampling, beam search) lives in
``captioning.search`` and drives :meth:`AttentionDecoder.step`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from captioning.core.attention import SoftAttention


@dataclass
class DecoderConfig:
    vocab_size: int = 10000  # set from the vocabulary
    feature_dim: int = 1280  # C of the encoder grid (1280 for efficientnet_lite0, 2048 for resnets)
    embed_dim: int = 512  # word embedding size
    hidden_dim: int = 512  # LSTM state size
    attention_dim: int = 512  # size of the additive attention's hidden layer
    dropout: float = 0.5  # on the hidden state before the word classifier
    max_length: int = 20  # longest caption generated, in words (<end> not counted)


@dataclass
class DecoderMemory:
    """What the decoder keeps about each image while it writes: the grid and its attention
    projection, computed once per image rather than once per step."""

    features: torch.Tensor  # (N, P, C)
    projected: torch.Tensor  # (N, P, A)

    def select(self, index: torch.Tensor) -> "DecoderMemory":
        return DecoderMemory(self.features.index_select(0, index), self.projected.index_select(0, index))


class AttentionDecoder(nn.Module):
    ROW_BUCKET = 64  # with padded_steps, teacher forcing's caption rows are a multiple of this

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=0)
        self.attention = SoftAttention(cfg.feature_dim, cfg.hidden_dim, cfg.attention_dim)
        self.init_h = nn.Linear(cfg.feature_dim, cfg.hidden_dim)
        self.init_c = nn.Linear(cfg.feature_dim, cfg.hidden_dim)
        self.f_beta = nn.Linear(cfg.hidden_dim, 1)  # the gating scalar beta of section 4.2.1
        self.lstm = nn.LSTMCell(cfg.embed_dim + cfg.feature_dim, cfg.hidden_dim)
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(cfg.hidden_dim, cfg.vocab_size)
        # How teacher forcing steps (a way of computing, not part of the model): False drops
        # the captions that have ended from the batch at each step (least work); True runs
        # every caption at every step and drops the ended ones' outputs, so that every step
        # has the same shapes, which static graphs need (``compile_step(static=True)``).
        self.padded_steps = False
        # Gradients summed once after the teacher-forcing steps instead of step by step (off in
        # compiled steps): the grid's when the CNN is fine-tuned (_GridGradient), the recurrent
        # input projection's weights' always (_WeightGradient).
        self._grid_gradient = True
        self._weight_gradient = True

    def memory(self, features: torch.Tensor) -> DecoderMemory:
        """features (N, P, C) -> the per-image state reused at every step.

        Under autocast, fp32 features (cached ones, read as fp32) are cast once here: left
        fp32, autocast would cast them again for the context product at every word."""
        device = features.device.type
        if torch.is_autocast_enabled(device) and features.is_floating_point():
            features = features.to(torch.get_autocast_dtype(device))
        return DecoderMemory(features, self.attention.project(features))

    def init_state(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = features.mean(dim=1)  # (N, C)
        return torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean))  # 2 x (N, H)

    def compile_step(self, static: bool = False, **options) -> None:
        """Replace :meth:`step` (decoding) and the teacher-forcing recurrence by their
        ``torch.compile`` versions (call it once the decoder is on its device).

        By default shapes are dynamic: the batch shrinks as captions end, and a static graph
        per batch size would recompile at every step. ``static`` switches teacher forcing to
        padded steps (:attr:`padded_steps`) and compiles its step for static shapes: one graph
        serves every step, and on CUDA it is replayed as a CUDA graph (``mode="reduce-overhead"``),
        one launch instead of one per kernel. Decoding stays dynamic."""
        self.step = torch.compile(AttentionDecoder.step.__get__(self), dynamic=True, **options)
        self.padded_steps = static
        # Their backward keeps Python state, which a compiled graph would not run.
        self._grid_gradient = self._weight_gradient = False
        if static and self.fc.weight.is_cuda:
            options.setdefault("mode", "reduce-overhead")
        self._recur = torch.compile(AttentionDecoder._recur.__get__(self), dynamic=not static, **options)

    def step(self, tokens: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], memory: DecoderMemory):
        """One word for N sequences: tokens (N,) previous words -> logits (N, V), the new
        (h, c), and the attention alpha (N, P) used for the predicted word."""
        h, c = state
        context, alpha = self.attention(memory.features, memory.projected, h)  # (N, 1, C), (N, 1, P)
        gate = torch.sigmoid(self.f_beta(h))  # (N, 1)
        x = torch.cat([self.embedding(tokens), gate * context.squeeze(1)], dim=1)  # (N, E + C)
        h, c = self.lstm(x, (h, c))
        logits = self.fc(self.dropout(h))
        return logits, (h, c), alpha.squeeze(1)

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

        Captions are processed longest first and the batch shrinks as they end, so an ended
        caption costs no compute. Only the attention and the LSTM are step by step: the word
        embeddings and their share of the LSTM's input projection run for all steps at once
        before the recurrence, dropout and the word classifier once after it, on the packed
        hidden states (one large matmul instead of one per word).
        """
        steps = captions.size(1) - 1
        decode_lengths = lengths - 1  # words to predict per caption, <end> included
        order = torch.argsort(decode_lengths, descending=True)
        image_of = order if image_index is None else image_index[order]  # (M,) sorted caption -> image
        captions, decode_lengths = captions[order], decode_lengths[order]
        if self.padded_steps:
            # Static shapes from batch to batch too: empty captions (of the last image) fill
            # the rows up to a multiple of ROW_BUCKET, so COCO's 5 to 7 captions per image give
            # a graph or two, not one per batch. They predict nothing and are dropped.
            pad = -len(order) % self.ROW_BUCKET
            image_of = torch.cat([image_of, image_of[-1:].expand(pad)])
            captions = nn.functional.pad(captions, (0, 0, 0, pad))
            decode_lengths = nn.functional.pad(decode_lengths, (0, pad))
        # One gather of the image memory into sorted caption order (the largest copy here).
        memory = self.memory(features).select(image_of)
        h, c = self.init_state(memory.features)

        e = self.cfg.embed_dim
        weight_ih = self.lstm.weight_ih  # (4H, E + C): sliced once, so backward adds up one gradient
        # (L-1, M): which (step, caption) predicts a word; time-major, like the packed rows below
        valid = torch.arange(steps, device=captions.device).unsqueeze(1) < decode_lengths.unsqueeze(0)
        # Captions still being written at each step, read once: a read per step would make
        # the CPU wait for the GPU at every word. Each step takes a prefix of the captions,
        # thanks to the sort: rows past it have ended for good.
        active = [n for n in valid.sum(1).tolist() if n > 0]
        # The words' share of the LSTM input, for all steps at once: (rows, 4H) time-major, one
        # gradient buffer for all steps. Only the rows that predict a word, unless every row runs.
        words = captions[:, :steps].t()  # (L-1, M)
        word_gates = nn.functional.linear(self.embedding(words if self.padded_steps else words[valid]),
                                          weight_ih[:, :e], self.lstm.bias_ih + self.lstm.bias_hh)
        word_gates = word_gates.unbind(0) if self.padded_steps else word_gates.split(active)
        weights = (weight_ih[:, e:], self.lstm.weight_hh)  # (4H, C), (4H, H)
        hidden, alphas = [], []
        if self.padded_steps:
            # Every row at every step; rows whose caption has ended carry on (on padding
            # words) and are dropped: each row depends on nothing but itself and, ended, never
            # predicts a word again, so no mask is needed and no gradient reaches them.
            for t, n in enumerate(active):
                h, c, alpha = self._recur(word_gates[t], h, c, memory.features, memory.projected, weights)
                hidden.append(h[:n])  # the rows that predict a word, as below
                alphas.append(alpha[:n])
        else:
            projected = _prefixes(memory.projected, active)
            training = torch.is_grad_enabled()
            # A CNN being fine-tuned needs the grid's gradient: summed once after the steps
            # (_GridGradient), not built up step by step. A compiled step keeps plain autograd.
            grid = _GridGradient(memory.features) if self._grid_gradient and memory.features.requires_grad \
                and training else None
            features = _prefixes(memory.features, active) if grid is None else \
                tuple(grid.value[:n] for n in active)
            if self._weight_gradient and training and weights[0].requires_grad:
                weights = tuple(_WeightGradient(w) for w in weights)
            for t, n in enumerate(active):
                h, c, alpha = self._recur(word_gates[t], h[:n], c[:n], features[t], projected[t], weights, grid)
                hidden.append(h)
                alphas.append(alpha)
        logits = self.fc(self.dropout(torch.cat(hidden)))  # (N, V) N = predicted words, step by step
        inverse = torch.argsort(order)  # (M,): padding rows, if any, are left out
        alphas = _unpack(torch.cat(alphas), valid)[inverse]  # (M, L-1, P)
        if packed:
            return PackedLogits(logits, captions[:, 1:].t()[valid]), alphas
        return _unpack(logits, valid)[inverse], alphas

    def _recur(self, word_gates: torch.Tensor, h: torch.Tensor, c: torch.Tensor, features: torch.Tensor,
               projected: torch.Tensor, weights: tuple, grid: "_GridGradient | None" = None):
        """The step-by-step part of teacher forcing: :meth:`step` less the word embedding (in
        ``word_gates`` (N, 4H), with both LSTM biases) and less the word classifier; the
        same LSTM cell, written out so that the input projection can be split. ``weights``:
        the context's and the hidden state's input weights, (4H, C) and (4H, H), as tensors or
        as :class:`_WeightGradient`. With ``grid`` the context's product defers the features'
        gradient to it."""
        alpha = self.attention.weights(projected, h).to(features.dtype)  # (N, 1, P)
        context = torch.bmm(alpha, features) if grid is None else grid.context(alpha, features)  # (N, 1, C)
        gate = torch.sigmoid(self.f_beta(h))  # (N, 1)
        gates = word_gates + _linear(gate * context.squeeze(1), weights[0]) + _linear(h, weights[1])  # (N, 4H)
        i, f, g, o = gates.chunk(4, dim=1)  # input, forget, cell, output
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c, alpha.squeeze(1)


class PackedLogits(NamedTuple):
    """Teacher forcing's logits without padding: row r predicts ``targets[r]``. Rows run step
    by step, and within a step over the captions still being written."""

    logits: torch.Tensor  # (N, V)
    targets: torch.Tensor  # (N,)


class _DeferredGradient:
    """A tensor that every teacher-forcing step reads, whose gradient (a sum over the steps)
    is formed once after the last step's backward instead of step by step.

    The steps read :attr:`value`, detached, through Functions whose backward gives their other
    inputs their gradients and keeps in :attr:`terms` what this tensor's share needs; ``token``,
    a zero computed from the tensor, is an input of every step, so autograd runs its backward
    last, and that backward returns :meth:`total` of the terms as the tensor's gradient."""

    def __init__(self, tensor: torch.Tensor):
        self.value = tensor.detach()
        self.terms: list[tuple[torch.Tensor, torch.Tensor]] = []  # filled by the steps' backward
        self.token = _Collect.apply(tensor, self)  # () zero

    def total(self, terms: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        raise NotImplementedError


class _Collect(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor, owner):
        ctx.set_materialize_grads(False)
        ctx.owner, ctx.dtype = owner, tensor.dtype
        return tensor.new_zeros(())

    @staticmethod
    def backward(ctx, _):
        terms, ctx.owner.terms = ctx.owner.terms, []
        if not terms:  # no step's product was part of what is being differentiated
            return None, None
        return ctx.owner.total(terms).to(ctx.dtype), None


class _GridGradient(_DeferredGradient):
    """The grid features' gradient in teacher forcing (a CNN being fine-tuned).

    Step t's context is alpha_t (n, 1, P) @ features[:n] (n, P, C), so the features' gradient
    is the sum over steps of alpha_t^T g_t, g_t (n, 1, C) being the context's gradient.
    Autograd forms each term as an outer product the size of the grid and adds them up: T
    grid-sized writes (what they cost: docs/performance.md, scripts/grid_gradient_ab.py).
    Here the steps keep (alpha_t, g_t) and the sum is one batched product (M, P, T) @ (M, T, C)."""

    def context(self, alpha: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """alpha (n, 1, P) @ features (n, P, C), a prefix of :attr:`value` -> (n, 1, C)."""
        return _Context.apply(alpha, features, self.token, self)

    def total(self, terms):
        m, p, c = self.value.shape
        device = terms[0][1].device
        # fp32 sums, zero past each caption's end
        alphas = torch.zeros(m, len(terms), p, device=device)  # (M, T, P)
        grads = torch.zeros(m, len(terms), c, device=device)  # (M, T, C)
        for t, (alpha, g) in enumerate(terms):
            alphas[:alpha.size(0), t] = alpha[:, 0]
            grads[:g.size(0), t] = g[:, 0]
        return torch.bmm(alphas.transpose(1, 2), grads)  # (M, P, C)


class _Context(torch.autograd.Function):
    @staticmethod
    def forward(ctx, alpha, features, token, grid):
        ctx.save_for_backward(alpha, features)
        ctx.grid = grid
        return torch.bmm(alpha, features)  # (n, 1, C)

    @staticmethod
    def backward(ctx, g):
        alpha, features = ctx.saved_tensors
        g = g.to(features.dtype)
        ctx.grid.terms.append((alpha, g))
        return torch.bmm(g, features.transpose(1, 2)).to(alpha.dtype), None, None, None  # d alpha (n, 1, P)


class _WeightGradient(_DeferredGradient):
    """A weight of the recurrence, W (O, I), whose gradient sum_t g_t^T x_t over the steps'
    inputs x_t (n_t, I) and output gradients g_t (n_t, O) is one product of all steps' rows,
    (O, N) @ (N, I), as cuDNN's LSTM does, instead of a thin product per step (n_t ~ 40 rows)
    and T additions into a buffer the size of W (measured: docs/performance.md,
    scripts/grid_gradient_ab.py)."""

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        """x (n, I) @ W^T -> (n, O), under autocast in its dtype."""
        return _Linear.apply(x, self.token, self)

    def cast(self, dtype: torch.dtype) -> torch.Tensor:
        if self.value.dtype != dtype:
            self.value = self.value.to(dtype)
        return self.value

    def total(self, terms):
        xs, grads = zip(*terms)
        return torch.cat(grads).t() @ torch.cat(xs)  # (O, I)


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, token, owner):
        ctx.owner, ctx.dtype = owner, x.dtype
        weight = owner.value
        if torch.is_autocast_enabled(x.device.type):  # as autocast's linear would, W cast once per forward
            weight = owner.cast(torch.get_autocast_dtype(x.device.type))
            x = x.to(weight.dtype)
        ctx.save_for_backward(x, weight)
        return x @ weight.t()  # (n, O)

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        g = g.to(weight.dtype)
        ctx.owner.terms.append((x, g))
        return (g @ weight).to(ctx.dtype), None, None  # d x (n, I)


def _linear(x: torch.Tensor, weight) -> torch.Tensor:
    """x @ weight^T for a weight tensor or a :class:`_WeightGradient`."""
    return weight.linear(x) if isinstance(weight, _WeightGradient) else nn.functional.linear(x, weight)


class _Prefixes(torch.autograd.Function):
    """x[:n] for each n of ``sizes``, whose backward adds all their gradients into one
    gradient of x. Slicing x once per step instead would have autograd build a zero-filled
    gradient the size of x for every step (M captions x P cells x C channels each)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: list[int]):
        ctx.sizes, ctx.shape = sizes, x.shape
        return tuple(x[:n] for n in sizes)

    @staticmethod
    def backward(ctx, *grads):
        total = None
        for n, g in zip(ctx.sizes, grads):
            if g is not None:
                total = g.new_zeros(ctx.shape) if total is None else total
                total[:n] += g
        return total, None


def _prefixes(x: torch.Tensor, sizes: list[int]) -> tuple[torch.Tensor, ...]:
    if not (x.requires_grad and torch.is_grad_enabled()):
        return tuple(x[:n] for n in sizes)
    return _Prefixes.apply(x, sizes)


def _unpack(rows: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Packed rows (N, D) -> (M, L-1, D), zero where ``valid`` (L-1, M) is False."""
    out = rows.new_zeros(*valid.shape, rows.size(-1))  # (L-1, M, D)
    out[valid] = rows
    return out.transpose(0, 1)
