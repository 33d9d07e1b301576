"""Caption generation: greedy, sampling with a temperature, and batched beam search.

One implementation serves every caller (training-time validation, evaluation, the API and
the CLI); :func:`generate` picks the strategy for a batch of images. Each function takes the decoder and a batch of image grids (B, P, C) and returns
one :class:`Hypothesis` per image: the word ids (no ``<start>``/``<end>``), the score, and the
attention map (T, P) of every word.

Scores are length-normalised log-probabilities: sum_t log p(w_t) / T^length_penalty, where T
counts the words and the closing ``<end>`` (Wu et al. 2016 use a softer form; with
length_penalty=1 this is the mean log-probability per token, ``<end>`` included; a caption cut
by the length limit has no ``<end>`` to count). Greedy decoding reports the same score, so beam
size 1 and greedy agree on tokens and on score. Each hypothesis also keeps the log-probability
the search saw for each of its tokens (``logprobs``), so reports need no second model pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from captioning.core.precision import autocast
from captioning.core.vocab import Vocabulary
from captioning.decoder import AttentionDecoder

if TYPE_CHECKING:
    from captioning.model import CaptionModel


@dataclass
class Hypothesis:
    tokens: list[int]  # word ids, without <start> and <end>
    score: float  # length-normalised log-probability (see module docstring)
    alphas: torch.Tensor  # (T, P) attention for each word in ``tokens``, on the CPU
    finished: bool = True  # False when the length limit cut it before <end>
    # log p of each word of ``tokens`` as the search chose it, then of the closing <end> when
    # ``finished``: the terms of ``score`` (sum(logprobs) / len(logprobs)**length_penalty)
    logprobs: list[float] = field(default_factory=list)
    # beam search: the runners-up of the K best, best first (empty for greedy and sampling)
    alternatives: list[Hypothesis] = field(default_factory=list)


def _normalise(logprob: float, length: int, length_penalty: float) -> float:
    return logprob / max(length, 1) ** length_penalty


@torch.no_grad()
def _decode_one_by_one(decoder: AttentionDecoder, features: torch.Tensor, max_length: int,
                       pick: Callable[[torch.Tensor], torch.Tensor], length_penalty: float) -> list[Hypothesis]:
    """Greedy and sampling: one word per image per step; images whose caption has ended
    leave the batch, so they stop costing compute."""
    b, p = features.size(0), features.size(1)
    memory = decoder.memory(features)
    h, c = decoder.init_state(features)
    tokens = torch.full((b,), Vocabulary.start_id, dtype=torch.long, device=features.device)
    alive = torch.arange(b, device=features.device)  # which images are still in the batch
    words = torch.zeros(b, max_length + 1, dtype=torch.long)
    alphas = torch.zeros(b, max_length + 1, p)
    logprob = torch.zeros(b, dtype=torch.float64)
    token_logp = torch.zeros(b, max_length + 1, dtype=torch.float64)  # (B, T) each chosen token's log p
    length = torch.zeros(b, dtype=torch.long)
    finished = torch.zeros(b, dtype=torch.bool)
    for t in range(max_length + 1):  # max_length words, then room for <end>
        logits, (h, c), alpha = decoder.step(tokens, (h, c), memory)
        logp = torch.log_softmax(logits.float(), dim=-1)  # (N, V)
        nxt = pick(logp)  # (N,)
        idx = alive.cpu()
        if t == max_length:  # max_length words said: only <end> still fits, else the caption is cut
            ended = nxt == Vocabulary.end_id
            nxt = torch.where(ended, nxt, torch.zeros_like(nxt))
            logp_end = logp.gather(1, nxt[:, None]).squeeze(1).double().cpu()
            idx = idx[ended.cpu()]
            logprob[idx] += logp_end[ended.cpu()]
            token_logp[idx, t] = logp_end[ended.cpu()]
            length[idx] += 1
            finished[idx] = True
            break
        words[idx, t] = nxt.cpu()
        alphas[idx, t] = alpha.float().cpu()
        chosen = logp.gather(1, nxt[:, None]).squeeze(1).double().cpu()  # (N,)
        logprob[idx] += chosen
        token_logp[idx, t] = chosen
        length[idx] += 1
        ended = nxt == Vocabulary.end_id
        finished[idx[ended.cpu()]] = True
        keep = ~ended
        if not keep.any():
            break
        alive, tokens, h, c = alive[keep], nxt[keep], h[keep], c[keep]
        memory = memory.select(keep.nonzero().squeeze(1))
    out = []
    for i in range(b):
        n = int(length[i])
        n_words = n - 1 if finished[i] else n
        out.append(Hypothesis(words[i, :n_words].tolist(), _normalise(float(logprob[i]), n, length_penalty),
                              alphas[i, :n_words], bool(finished[i]), token_logp[i, :n].tolist()))
    return out


def greedy(decoder: AttentionDecoder, features: torch.Tensor, max_length: int = 20,
           length_penalty: float = 1.0) -> list[Hypothesis]:
    """The most likely word at each step."""
    return _decode_one_by_one(decoder, features, max_length, lambda logp: logp.argmax(-1), length_penalty)


def sample(decoder: AttentionDecoder, features: torch.Tensor, max_length: int = 20, temperature: float = 1.0,
           generator: torch.Generator | None = None, length_penalty: float = 1.0) -> list[Hypothesis]:
    """Words drawn from softmax(logits / temperature); the score is the model's own
    (untempered) log-probability of what was drawn. ``generator`` lives on the CPU."""
    if temperature <= 0:
        return greedy(decoder, features, max_length, length_penalty)

    def pick(logp: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(logp / temperature, dim=-1).cpu()
        return torch.multinomial(probs, 1, generator=generator).squeeze(1).to(logp.device)

    return _decode_one_by_one(decoder, features, max_length, pick, length_penalty)


@torch.no_grad()
def beam_search(decoder: AttentionDecoder, features: torch.Tensor, beam_size: int = 3, max_length: int = 20,
                length_penalty: float = 1.0) -> list[Hypothesis]:
    """Batched beam search: all B images x K beams advance together as one (B*K) batch.

    At each step the 2K best extensions of each image are ranked by cumulative
    log-probability; an extension ending in ``<end>`` among the first K ranks becomes a
    finished hypothesis (scored length-normalised), the best K others stay alive. An image
    is done once it has K finished hypotheses (or no extension is left alive); the answer is
    its best finished one by normalised score, the earlier found of equal scores. If the
    length limit comes first, the alive beams compete too (flagged ``finished=False``), so
    there is always an answer. Each answer's ``alternatives`` are the runners-up among the
    K best, best first.

    All of it is tensor operations over (B, K) or (B, 2K): no loop over images or ranks, and
    one read from the device per step (whether every image is done). Alive beams keep only
    back-pointers, their words and attention in preallocated (steps, B*K) tensors; the K
    best hypotheses of each image are a (B, K) table of scores and end points, and their
    words and attention are traced back once at the end.
    """
    b, p = features.size(0), features.size(1)
    k = beam_size
    dev = features.device
    rows = b * k
    image_rows = torch.arange(b, device=dev).unsqueeze(1) * k  # (B, 1) first row of each image
    memory = decoder.memory(features)
    h, c = decoder.init_state(memory.features)  # (B, H): once per image, then copied to its beams
    beams_of = torch.arange(b, device=dev).repeat_interleave(k)  # (B*K,) the image of each beam
    memory, h, c = memory.select(beams_of), h.index_select(0, beams_of), c.index_select(0, beams_of)
    tokens = torch.full((rows,), Vocabulary.start_id, dtype=torch.long, device=dev)
    # Only beam 0 of each image is live at the start, so the K beams do not all pick the same word.
    cum = torch.full((b, k), float("-inf"), device=dev)
    cum[:, 0] = 0.0
    # The path of every alive beam, one step per row: the word chosen at step t for each
    # beam row, the row it continued (in step t's numbering), and step t's attention per row.
    words = torch.zeros(max_length, rows, dtype=torch.long, device=dev)
    parents = torch.zeros(max_length, rows, dtype=torch.long, device=dev)
    attention = torch.zeros(max_length, rows, p, device=dev)
    word_logp = torch.zeros(max_length, rows, dtype=torch.float64, device=dev)  # log p of each chosen word
    best = _Best(b, k, dev)
    image_done = torch.zeros(b, dtype=torch.bool, device=dev)
    n_ranks = None

    for t in range(max_length + 1):
        logits, (h, c), alpha = decoder.step(tokens, (h, c), memory)
        logp = torch.log_softmax(logits.float(), dim=-1)  # (B*K, V)
        v = logp.size(1)
        total = (cum.view(rows, 1) + logp).view(b, k * v)  # (B, K*V)
        n_ranks = min(2 * k, k * v)
        top_scores, top_ids = total.topk(n_ranks, dim=1)  # (B, 2K) best first
        top_logp = logp.view(b, k * v).gather(1, top_ids).double()  # (B, 2K) each extension's own word
        beam_of, word_of = top_ids // v, top_ids % v
        live = (top_scores > float("-inf")) & ~image_done.unsqueeze(1)  # (B, 2K)
        ends = word_of == Vocabulary.end_id
        # <end> among the first K ranks: finished hypotheses of t words.
        ended = (live & ends)[:, :k]  # (B, <=K)
        n_found = ended.sum(1)
        best.add(top_scores[:, :k].double() / max(t + 1, 1) ** length_penalty, ended,
                 image_rows + beam_of[:, :k], t, finished=True, end_logp=top_logp[:, :k])
        if t == max_length:
            # The length limit came first: the beams still alive compete as cut captions.
            cut = (cum > float("-inf")) & ~image_done.unsqueeze(1) & (best.count + n_found < k).unsqueeze(1)  # (B, K)
            best.add(cum.double() / max(t, 1) ** length_penalty, cut, image_rows + torch.arange(k, device=dev), t,
                     finished=False)
            break
        best.count += n_found
        # The first K other extensions stay alive, in rank order; missing ones are dead beams.
        stays = live & ~ends  # (B, 2K)
        kept = stays & (stays.cumsum(1) <= k)
        ranks = torch.arange(n_ranks, device=dev)
        slot_rank = torch.where(kept, ranks, ranks + n_ranks).argsort(dim=1)[:, :k]  # (B, K) kept ranks first
        slot_kept = kept.gather(1, slot_rank)
        if slot_rank.size(1) < k:  # fewer ranks than beams (a vocabulary smaller than 2)
            pad = k - slot_rank.size(1)
            slot_rank = torch.cat([slot_rank, slot_rank.new_zeros(b, pad)], 1)
            slot_kept = torch.cat([slot_kept, slot_kept.new_zeros(b, pad)], 1)
        new_cum = torch.where(slot_kept, top_scores.gather(1, slot_rank), float("-inf"))
        new_src = torch.where(slot_kept, beam_of.gather(1, slot_rank), 0)
        new_word = torch.where(slot_kept, word_of.gather(1, slot_rank), Vocabulary.end_id)
        new_logp = torch.where(slot_kept, top_logp.gather(1, slot_rank), 0.0)
        image_done |= (best.count >= k) | ~kept.any(1)
        if bool(image_done.all()):  # the one read from the device per step
            break
        src = (image_rows + new_src).view(-1)  # (B*K,) slot j of image i continues this row
        h, c = h.index_select(0, src), c.index_select(0, src)
        words[t], parents[t], attention[t] = new_word.view(-1), src, alpha.float()
        word_logp[t] = new_logp.view(-1)
        tokens = new_word.view(-1)
        cum = new_cum
    return best.hypotheses(words, parents, attention, word_logp)


class _Best:
    """The K best hypotheses of each image so far, best first: normalised score, the beam row
    (in its step's numbering) that said ``<end>`` or was cut, and the number of words. A
    stable sort keeps the earlier found of equal scores first."""

    def __init__(self, b: int, k: int, device: torch.device):
        self.k = k
        self.score = torch.full((b, k), float("-inf"), dtype=torch.float64, device=device)
        self.row = torch.zeros(b, k, dtype=torch.long, device=device)
        self.length = torch.zeros(b, k, dtype=torch.long, device=device)
        self.finished = torch.zeros(b, k, dtype=torch.bool, device=device)
        self.end_logp = torch.zeros(b, k, dtype=torch.float64, device=device)  # log p of the closing <end>
        self.count = torch.zeros(b, dtype=torch.long, device=device)  # hypotheses found, kept or not

    def add(self, score: torch.Tensor, mask: torch.Tensor, row: torch.Tensor, length: int, finished: bool,
            end_logp: torch.Tensor | None = None) -> None:
        """Candidates (B, n) in the order found; only where ``mask``. ``end_logp`` (B, n): the
        log-probability of the ``<end>`` that finished each (None for cut captions)."""
        n = mask.size(1)
        score = torch.cat([self.score, torch.where(mask, score[:, :n], float("-inf"))], 1)  # (B, K + n)
        order = torch.sort(score, dim=1, descending=True, stable=True).indices[:, :self.k]  # (B, K)
        self.score = score.gather(1, order)
        self.row = torch.cat([self.row, row[:, :n].expand_as(mask)], 1).gather(1, order)
        self.length = torch.cat([self.length, torch.full_like(mask, length, dtype=torch.long)], 1).gather(1, order)
        self.finished = torch.cat([self.finished, torch.full_like(mask, finished)], 1).gather(1, order)
        end = torch.zeros(mask.shape, dtype=torch.float64, device=mask.device) if end_logp is None else end_logp[:, :n]
        self.end_logp = torch.cat([self.end_logp, end], 1).gather(1, order)

    def hypotheses(self, words: torch.Tensor, parents: torch.Tensor, attention: torch.Tensor,
                   word_logp: torch.Tensor) -> list[Hypothesis]:
        """Trace every kept hypothesis back along its beam's parents, then move it to the CPU."""
        b, k = self.score.shape
        steps, _, p = attention.shape
        row = self.row.view(-1)  # (B*K,)
        length = self.length.view(-1)
        tokens = torch.zeros(b * k, steps, dtype=torch.long, device=row.device)
        alphas = torch.zeros(b * k, steps, p, device=row.device)
        logps = torch.zeros(b * k, steps, dtype=torch.float64, device=row.device)
        for s in range(int(length.max()) - 1, -1, -1):
            # Hypotheses shorter than s + 1 words get filler here (cut off below) and stay put.
            inside = length > s  # (B*K,)
            tokens[:, s] = words[s].index_select(0, row)
            logps[:, s] = word_logp[s].index_select(0, row)
            parent = parents[s].index_select(0, row)
            alphas[:, s] = attention[s].index_select(0, parent)
            row = torch.where(inside, parent, row)
        score, length, finished = self.score.cpu().tolist(), self.length.cpu().tolist(), self.finished.cpu().tolist()
        tokens, alphas = tokens.view(b, k, steps).cpu(), alphas.view(b, k, steps, p).cpu()
        logps, end_logp = logps.view(b, k, steps).cpu().tolist(), self.end_logp.cpu().tolist()
        out = []
        for i in range(b):
            hyps = [Hypothesis(tokens[i, j, :length[i][j]].tolist(), score[i][j], alphas[i, j, :length[i][j]],
                               finished[i][j], logps[i][j][:length[i][j]] + ([end_logp[i][j]] if finished[i][j] else []))
                    for j in range(k) if score[i][j] > float("-inf")]
            hyps[0].alternatives = hyps[1:]
            out.append(hyps[0])
        return out


def generate(model: CaptionModel, images: torch.Tensor, beam_size: int = 3, max_length: int | None = None,
             temperature: float | None = None, generator: torch.Generator | None = None,
             precision: str = "fp32") -> list[Hypothesis]:
    """images uint8 or [0, 1] float (B, 3, S, S) on the model's device -> one hypothesis each.
    ``temperature`` selects sampling; otherwise beam search (``beam_size`` 1 is greedy decoding).
    ``precision``: fp32, bf16 or auto (``captioning.core.precision``)."""
    max_length = max_length or model.cfg.decoder.max_length
    with torch.no_grad(), autocast(images.device, precision):
        features = model.encode(images)
        if temperature is not None:
            return sample(model.decoder, features, max_length, temperature, generator)
        if beam_size <= 1:
            return greedy(model.decoder, features, max_length)
        return beam_search(model.decoder, features, beam_size, max_length)
