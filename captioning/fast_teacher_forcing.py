"""Fast teacher forcing for the one-layer LSTM decoder with soft attention (the shipped one).

It computes what :meth:`captioning.decoder.AttentionDecoder.reference_forward` computes (the
plain loop over ``step``; tests/captioning/test_decoder.py holds the two equal: logits, loss,
every parameter's and the grid's gradient), with less work:

- captions are processed longest first and the batch shrinks as they end, so an ended caption
  costs no compute (or, with ``padded_steps``, every caption runs at every step so that the
  shapes are static, for compiled graphs);
- the word embeddings and their share of the LSTM's input projection run for all steps at
  once before the recurrence, dropout and the word classifier once after it, on the packed
  hidden states (one large matmul instead of one per word);
- the gradients of what every step reads (the grid, the recurrent weights) are summed once
  after the last step's backward (:class:`_GridGradient`, :class:`_WeightGradient`) instead
  of being built up step by step.

Every function takes the ``AttentionDecoder`` as ``decoder`` (typed ``nn.Module``): the
decoder imports this module, and this module imports nothing of the decoder's, so the two do
not import each other. The packed logits go back as a plain (logits, targets) pair, which the
decoder wraps as its ``PackedLogits``.
"""

from __future__ import annotations

import torch
from torch import nn


def covers(decoder: nn.Module) -> bool:
    """Whether this module computes ``decoder``'s teacher forcing: one LSTM layer, soft attention."""
    cfg = decoder.cfg
    return cfg.cell == "lstm" and cfg.layers == 1 and cfg.attention == "soft"


def _initial(decoder: nn.Module, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    h, c = decoder.init_state(features)  # (M, 1, H) each
    return h.squeeze(1), c.squeeze(1)


def forward(decoder: nn.Module, features: torch.Tensor, captions: torch.Tensor, lengths: torch.Tensor,
            image_index: torch.Tensor | None = None, packed: bool = False):
    """:meth:`AttentionDecoder.forward` (same arguments and results) for a decoder this module
    covers. ``decoder._recur``, when :meth:`AttentionDecoder.compile_step` set it, is the
    compiled :func:`recur`."""
    step = decoder._recur or recur.__get__(decoder)
    steps = captions.size(1) - 1
    decode_lengths = lengths - 1  # words to predict per caption, <end> included
    order = torch.argsort(decode_lengths, descending=True)
    image_of = order if image_index is None else image_index[order]  # (M,) sorted caption -> image
    captions, decode_lengths = captions[order], decode_lengths[order]
    if decoder.padded_steps:
        # Static shapes from batch to batch too: empty captions (of the last image) fill
        # the rows up to a multiple of ROW_BUCKET, so COCO's 5 to 7 captions per image give
        # a graph or two, not one per batch. They predict nothing and are dropped.
        pad = -len(order) % decoder.ROW_BUCKET
        image_of = torch.cat([image_of, image_of[-1:].expand(pad)])
        captions = nn.functional.pad(captions, (0, 0, 0, pad))
        decode_lengths = nn.functional.pad(decode_lengths, (0, pad))
    # One gather of the image memory into sorted caption order (the largest copy here).
    memory = decoder.memory(features).select(image_of)
    h, c = _initial(decoder, memory.features)

    e = decoder.cfg.embed_dim
    weight_ih = decoder.lstm.weight_ih  # (4H, E + C): sliced once, so backward adds up one gradient
    # (L-1, M): which (step, caption) predicts a word; time-major, like the packed rows below
    valid = torch.arange(steps, device=captions.device).unsqueeze(1) < decode_lengths.unsqueeze(0)
    # Captions still being written at each step, read once: a read per step would make
    # the CPU wait for the GPU at every word. Each step takes a prefix of the captions,
    # thanks to the sort: rows past it have ended for good.
    active = [n for n in valid.sum(1).tolist() if n > 0]
    # The words' share of the LSTM input, for all steps at once: (rows, 4H) time-major, one
    # gradient buffer for all steps. Only the rows that predict a word, unless every row runs.
    words = captions[:, :steps].t()  # (L-1, M)
    word_gates = nn.functional.linear(decoder.embedding(words if decoder.padded_steps else words[valid]),
                                      weight_ih[:, :e], decoder.lstm.bias_ih + decoder.lstm.bias_hh)
    word_gates = word_gates.unbind(0) if decoder.padded_steps else word_gates.split(active)
    weights = (weight_ih[:, e:], decoder.lstm.weight_hh)  # (4H, C), (4H, H)
    hidden, alphas = [], []
    if decoder.padded_steps:
        # Every row at every step; rows whose caption has ended carry on (on padding
        # words) and are dropped: each row depends on nothing but itself and, ended, never
        # predicts a word again, so no mask is needed and no gradient reaches them.
        for t, n in enumerate(active):
            h, c, alpha = step(word_gates[t], h, c, memory.features, memory.projected, weights)
            hidden.append(h[:n])  # the rows that predict a word, as below
            alphas.append(alpha[:n])
    else:
        projected = _prefixes(memory.projected, active)
        training = torch.is_grad_enabled()
        # A CNN being fine-tuned needs the grid's gradient: summed once after the steps
        # (_GridGradient), not built up step by step. A compiled step keeps plain autograd.
        grid = _GridGradient(memory.features) if decoder._grid_gradient and memory.features.requires_grad \
            and training else None
        features = _prefixes(memory.features, active) if grid is None else \
            tuple(grid.value[:n] for n in active)
        if decoder._weight_gradient and training and weights[0].requires_grad:
            weights = tuple(_WeightGradient(w) for w in weights)
        for t, n in enumerate(active):
            h, c, alpha = step(word_gates[t], h[:n], c[:n], features[t], projected[t], weights, grid)
            hidden.append(h)
            alphas.append(alpha)
    logits = decoder.fc(decoder.dropout(torch.cat(hidden)))  # (N, V) N = predicted words, step by step
    inverse = torch.argsort(order)  # (M,): padding rows, if any, are left out
    alphas = _unpack(torch.cat(alphas), valid)[inverse]  # (M, L-1, P)
    if packed:  # (logits (N, V), their targets (N,)): the decoder wraps them as its PackedLogits
        return (logits, captions[:, 1:].t()[valid]), alphas
    return _unpack(logits, valid)[inverse], alphas


def recur(decoder: nn.Module, word_gates: torch.Tensor, h: torch.Tensor, c: torch.Tensor,
          features: torch.Tensor, projected: torch.Tensor, weights: tuple, grid: _GridGradient | None = None):
    """The step-by-step part of teacher forcing: :meth:`AttentionDecoder.step` less the word
    embedding (in ``word_gates`` (N, 4H), with both LSTM biases) and less the word classifier; the
    same LSTM cell, written out so that the input projection can be split. ``weights``:
    the context's and the hidden state's input weights, (4H, C) and (4H, H), as tensors or
    as :class:`_WeightGradient`. With ``grid`` the context's product defers the features'
    gradient to it."""
    alpha = decoder.attention.weights(projected, h).to(features.dtype)  # (N, 1, P)
    context = torch.bmm(alpha, features) if grid is None else grid.context(alpha, features)  # (N, 1, C)
    gate = torch.sigmoid(decoder.f_beta(h))  # (N, 1)
    gates = word_gates + _linear(gate * context.squeeze(1), weights[0]) + _linear(h, weights[1])  # (N, 4H)
    i, f, g, o = gates.chunk(4, dim=1)  # input, forget, cell, output
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c, alpha.squeeze(1)


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
