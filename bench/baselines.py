"""Historical yardsticks the A/B scripts (``scripts/*_ab.py``) time today's code against, kept
verbatim so that a ratio measured today means what it meant then. The decoder's test holds
today's teacher forcing equal to :func:`old_forward` (outputs and gradients)."""

from __future__ import annotations

import torch

from captioning.decoder import DecoderMemory


def old_forward(dec, features, captions, lengths, image_index):
    """Teacher forcing as it was before the lean rewrite (commit 20465aa): ``dec.step`` once
    per word, the classifier inside the loop, logits written into a padded tensor.
    features (B, P, C), captions (M, L), lengths (M,), image_index (M,) -> logits (M, L-1, V),
    alphas (M, L-1, P), as ``AttentionDecoder.forward`` returns them unpacked."""

    memory = dec.memory(features).select(image_index)
    m, steps = captions.size(0), captions.size(1) - 1
    decode_lengths = lengths - 1
    order = torch.argsort(decode_lengths, descending=True)
    memory = memory.select(order)
    captions, decode_lengths = captions[order], decode_lengths[order]
    h, c = dec.init_state(memory.features)
    logits = memory.features.new_zeros(m, steps, dec.cfg.vocab_size)
    alphas = memory.features.new_zeros(m, steps, memory.features.size(1))
    active = (decode_lengths.unsqueeze(0) > torch.arange(steps).unsqueeze(1)).sum(1).tolist()
    for t in range(steps):
        n = active[t]
        if n == 0:
            break
        step_mem = DecoderMemory(memory.features[:n], memory.projected[:n])
        step_logits, (h, c), alpha = dec.step(captions[:n, t], (h[:n], c[:n]), step_mem)
        logits[:n, t] = step_logits
        alphas[:n, t] = alpha
    inverse = torch.argsort(order)
    return logits[inverse], alphas[inverse]
