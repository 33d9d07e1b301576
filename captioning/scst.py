"""Self-critical sequence training: the captioner optimises CIDEr-D itself.

Rennie et al. 2017, "Self-critical Sequence Training for Image Captioning": after
cross-entropy training, the model samples captions, each is rewarded by its CIDEr-D against
the image's references (``captioning.cider``, document frequencies from the training
references), and REINFORCE raises the likelihood of the samples that beat a baseline:

    loss = - mean over samples of (r - b) * sum_t log p(w_t)    (words up to and including <end>)

The baseline ``b`` is the mean reward of the same image's other samples (``mean``, Luo 2020,
"A Better Variant of Self-Critical Sequence Training") or the reward of the model's greedy
caption (``greedy``, Rennie et al.).

Sampling runs without autograd through ``captioning.search.sample``, batched over all
images x samples; the sampled captions are then rescored by teacher forcing
(``AttentionDecoder.forward``) to get differentiable log-probabilities, which also works under
bf16 autocast and DistributedDataParallel (the rescoring is the wrapped model's forward).
The decoder samples and rescores in eval mode (no dropout), so the log-probabilities are
those of the distribution sampled from. Draws come from torch's global RNG, which ``fit``
seeds and a resumed run restores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from captioning.cider import CiderD, WordIds, compact, pad
from captioning.core.data import pad_sequences
from captioning.core.errors import UserError
from captioning.core.vocab import Vocabulary, tokenize
from captioning.search import greedy, sample

BASELINES = ("mean", "greedy")


class ScstObjective:
    """The SCST loss of a caption batch. ``references``: image id -> its reference captions
    (text) for every training image; they are the CIDEr-D corpus."""

    def __init__(self, vocab: Vocabulary, references: dict[int, Sequence[str]], samples: int = 5,
                 baseline: str = "mean"):
        if baseline not in BASELINES:
            raise UserError(f"--scst-baseline must be one of {', '.join(BASELINES)}, got {baseline!r}")
        if baseline == "mean" and samples < 2:
            raise UserError("--scst-baseline mean needs --scst-samples 2 or more (the other samples of an image are its baseline)")
        if samples < 1:
            raise UserError("--scst-samples must be at least 1")
        self.vocab, self.samples, self.baseline = vocab, samples, baseline
        self.words = WordIds(vocab.words)
        self.cider = CiderD({i: [self.words.encode(tokenize(c)) for c in caps] for i, caps in references.items()})

    def rewards(self, image_ids: Sequence[int], captions: Sequence[Sequence[int]]) -> np.ndarray:
        """CIDEr-D of generated captions (vocabulary ids, no ``<start>``/``<end>``), as
        coco-caption would score them: punctuation dropped."""
        return self.cider.score(image_ids, compact(pad(captions), self.words.remap))

    def loss(self, model: nn.Module, inputs: torch.Tensor, image_ids: Sequence[int]):
        """inputs: the batch's float pixels or cached grids (``TrainTask.inputs``; which one is
        :func:`~captioning.core.features.is_grid_features`'s to say); ``model`` the
        CaptionModel, or its DistributedDataParallel wrapper. Returns (loss, logs)."""
        core = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
        b, n, dev = inputs.size(0), self.samples, inputs.device
        decoder, max_length = core.decoder, core.cfg.decoder.max_length
        trains_cnn = any(p.requires_grad for p in core.encoder.parameters())
        was_training = decoder.training
        decoder.eval()
        try:
            with torch.no_grad():
                features = core.encode(inputs)  # (B, P, C)
                drawn = sample(decoder, features.repeat_interleave(n, 0), max_length)  # B*N, image-major
                best = greedy(decoder, features, max_length)
            ids = [i for i in image_ids for _ in range(n)]
            reward = self.rewards(ids, [h.tokens for h in drawn])  # (B*N,)
            greedy_reward = self.rewards(image_ids, [h.tokens for h in best])  # (B,)
            if self.baseline == "mean":
                per_image = reward.reshape(b, n)
                base = ((per_image.sum(1, keepdims=True) - per_image) / (n - 1)).reshape(-1)
            else:
                base = np.repeat(greedy_reward, n)
            captions, lengths = sequences(drawn, dev)
            index = torch.arange(b, device=dev).repeat_interleave(n)  # (B*N,) the image of each sample
            # A frozen CNN's grid is reused (the model takes grid features as they are, like
            # cached ones); a trained one runs again, with autograd.
            logits, _ = model(inputs if trains_cnn else features, captions, lengths, index)  # (B*N, L-1, V)
        finally:
            decoder.train(was_training)
        logp = sequence_logprob(logits, captions, lengths)  # (B*N,)
        advantage = torch.as_tensor(reward - base, dtype=torch.float32, device=dev)
        loss = -(advantage * logp).mean()
        return loss, {"loss": loss.detach(), "reward": float(reward.mean()), "baseline": float(base.mean()),
                      "greedy_cider": float(greedy_reward.mean())}


def sequences(hyps, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Hypotheses -> teacher-forcing input: captions (M, L) ``<start> w.. <end>`` padded with 0
    (a caption cut by the length limit has no ``<end>``) and lengths (M,)."""
    captions, lengths = pad_sequences(
        [[Vocabulary.start_id, *h.tokens] + ([Vocabulary.end_id] if h.finished else []) for h in hyps])
    return captions.to(device), lengths.to(device)


def sequence_logprob(logits: torch.Tensor, captions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """sum_t log p(w_t) over each caption's words and its ``<end>``; padding counts nothing.
    logits (M, L-1, V) predict captions[:, 1:] (M, L-1); lengths (M,) count ``<start>``.
    Padding is found by position, not by id: a sampled word may be any id, ``<pad>``'s too."""
    targets = captions[:, 1:]  # (M, L-1)
    logp = torch.log_softmax(logits.float(), dim=-1).gather(2, targets.unsqueeze(2)).squeeze(2)  # (M, L-1)
    real = torch.arange(targets.size(1), device=targets.device).unsqueeze(0) < (lengths - 1).unsqueeze(1)  # (M, L-1)
    return (logp * real).sum(1)
