"""Caption generation: greedy, sampling with a temperature, and batched beam search.

One implementation serves every caller (training-time validation, evaluation, the API and
the CLI). Each function takes the decoder and a batch of image grids (B, P, C) and returns
one :class:`Hypothesis` per image: the word ids (no ``<start>``/``<end>``), the score, and the
attention map (T, P) of every word.

Scores are length-normalised log-probabilities: sum_t log p(w_t) / T^length_penalty, where T
counts the words and the final ``<end>`` (Wu et al. 2016 use a softer form; with
length_penalty=1 this is the mean log-probability per token). Greedy decoding reports the
same score, so beam size 1 and greedy agree on tokens and on score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from captioning.decoder import AttentionDecoder
from captioning.core.vocab import Vocabulary


@dataclass
class Hypothesis:
    tokens: list[int]  # word ids, without <start> and <end>
    score: float  # length-normalised log-probability (see module docstring)
    alphas: torch.Tensor  # (T, P) attention for each word in ``tokens``, on the CPU
    finished: bool = True  # False when the length limit cut it before <end>


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
            length[idx] += 1
            finished[idx] = True
            break
        words[idx, t] = nxt.cpu()
        alphas[idx, t] = alpha.float().cpu()
        logprob[idx] += logp.gather(1, nxt[:, None]).squeeze(1).double().cpu()
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
                              alphas[i, :n_words], bool(finished[i])))
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
    is done once it has K finished hypotheses; the answer is its best finished one by
    normalised score. If the length limit comes first, the alive beams compete too
    (flagged ``finished=False``), so there is always an answer.
    """
    b, p = features.size(0), features.size(1)
    k = beam_size
    dev = features.device
    beams_of = torch.arange(b, device=dev).repeat_interleave(k)  # (B*K,) the image of each beam
    memory = decoder.memory(features)
    h, c = decoder.init_state(memory.features)  # (B, H): once per image, then copied to its beams
    memory, h, c = memory.select(beams_of), h.index_select(0, beams_of), c.index_select(0, beams_of)
    tokens = torch.full((b * k,), Vocabulary.start_id, dtype=torch.long, device=dev)
    # Only beam 0 of each image is live at the start, so the K beams do not all pick the same word.
    cum = torch.full((b, k), float("-inf"), device=dev)
    cum[:, 0] = 0.0
    history = torch.zeros(b * k, 0, dtype=torch.long, device=dev)  # (B*K, t) words so far
    att_history = torch.zeros(b * k, 0, p, device=dev)  # (B*K, t, P)
    done: list[list[Hypothesis]] = [[] for _ in range(b)]
    image_done = torch.zeros(b, dtype=torch.bool)

    for t in range(max_length + 1):
        logits, (h, c), alpha = decoder.step(tokens, (h, c), memory)
        logp = torch.log_softmax(logits.float(), dim=-1)  # (B*K, V)
        v = logp.size(1)
        total = (cum.view(b * k, 1) + logp).view(b, k * v)  # (B, K*V)
        top_scores, top_ids = total.topk(min(2 * k, k * v), dim=1)  # (B, 2K)
        beam_of, word_of = top_ids // v, top_ids % v
        new_cum = torch.full((b, k), float("-inf"), device=dev)
        new_src = torch.zeros(b, k, dtype=torch.long, device=dev)
        new_word = torch.full((b, k), Vocabulary.end_id, dtype=torch.long, device=dev)
        ts, bo, wo = top_scores.cpu(), beam_of.cpu(), word_of.cpu()
        for i in range(b):
            if image_done[i]:
                continue
            slot = 0
            for rank in range(ts.size(1)):
                score = float(ts[i, rank])
                if score == float("-inf"):
                    break
                src = i * k + int(bo[i, rank])
                if int(wo[i, rank]) == Vocabulary.end_id:
                    if rank < k:
                        words = history[src].tolist()
                        atts = att_history[src].cpu()
                        done[i].append(Hypothesis(words, _normalise(score, len(words) + 1, length_penalty), atts, True))
                elif slot < k and t < max_length:  # past max_length words, only <end> fits
                    new_cum[i, slot], new_src[i, slot], new_word[i, slot] = score, int(bo[i, rank]), int(wo[i, rank])
                    slot += 1
                if slot == k and rank >= k - 1:
                    break
            if t == max_length and len(done[i]) < k:
                # The length limit came first: the beams still alive compete as cut captions.
                for j in range(k):
                    if float(cum[i, j]) > float("-inf"):
                        src = i * k + j
                        done[i].append(Hypothesis(history[src].tolist(), _normalise(float(cum[i, j]), t, length_penalty),
                                                  att_history[src].cpu(), False))
            if len(done[i]) >= k or slot == 0:
                image_done[i] = True
        if bool(image_done.all()):
            break
        # Reorder every per-beam tensor so that slot j of image i continues its chosen source beam.
        src = (torch.arange(b, device=dev).unsqueeze(1) * k + new_src).view(-1)  # (B*K,)
        h, c = h.index_select(0, src), c.index_select(0, src)
        history = torch.cat([history.index_select(0, src), new_word.view(-1, 1)], dim=1)
        att_history = torch.cat([att_history.index_select(0, src), alpha.float().index_select(0, src).unsqueeze(1)], dim=1)
        tokens = new_word.view(-1)
        cum = new_cum
    # max() keeps the first of equal scores: finished hypotheses were added before cut ones.
    return [max(hyps, key=lambda hyp: hyp.score) for hyps in done]
