"""The beam search as it was before it became tensor operations (commit 20465aa), kept
verbatim as the test oracle for ``captioning.search.beam_search``: a Python loop over images
and ranks, easy to read and check by hand against the documented rules."""

from __future__ import annotations

import torch

from captioning.core.vocab import Vocabulary
from captioning.decoder import AttentionDecoder
from captioning.search import Hypothesis, _normalise


@torch.no_grad()
def oracle_beam_search(decoder: AttentionDecoder, features: torch.Tensor, beam_size: int = 3, max_length: int = 20,
                length_penalty: float = 1.0, return_all: bool = False):
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
    # (Added for the oracle test: every hypothesis in the order it was found, to compare the
    # new search's K best with a stable sort of them.)
    if return_all:
        return done
    return [max(hyps, key=lambda hyp: hyp.score) for hyps in done]
