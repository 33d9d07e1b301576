"""The Python API: ``Captioner.from_pretrained(path)`` then ``captioner(image)``.

>>> captioner = Captioner.from_pretrained()          # the shipped default checkpoint
>>> result = captioner("examples/emoji_cat.png")
>>> result.caption, result.score, result.attention.shape   # attention: (T, h, w), one map per word

``caption_dataset`` captions a whole dataset in batches; training-time validation and the
evaluation script both use it.
"""

from __future__ import annotations

from captioning.core.checkpoint import CHECKPOINT_DIR, resolve_checkpoint

import os
from dataclasses import dataclass, field
from typing import Sequence, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Subset

from captioning.core.checkpoint import load_weights, read_checkpoint
from captioning.search import Hypothesis, beam_search, greedy, sample
from captioning.core.errors import UserError
from captioning.model import CaptionConfig, CaptionModel
from captioning.core.checkpoint import checkpoint_skips
from captioning.core.precision import autocast, resolve_precision
from captioning.core.images import load_image
from captioning.core.transforms import preprocess
from captioning.core.vocab import Vocabulary

DEFAULT_CAPTION_CHECKPOINT = CHECKPOINT_DIR / "caption_emoji.safetensors"

ImageLike = Union[str, os.PathLike, Image.Image]


@dataclass
class CaptionResult:
    caption: str
    tokens: list[str]
    score: float  # length-normalised log-probability (captioning.search)
    attention: np.ndarray  # (T, h, w): where the model looked for each word in ``tokens``
    image: str | None = None
    finished: bool = True  # False when the length limit cut the caption
    # beam search: the runners-up among the beam's K finished captions, best first (each with
    # its own caption, tokens, score and attention); empty for greedy decoding and sampling
    alternatives: list["CaptionResult"] = field(default_factory=list)

    def to_json(self) -> dict:
        obj = {"image": self.image, "caption": self.caption, "tokens": self.tokens, "score": self.score}
        if self.alternatives:
            obj["alternatives"] = [{"caption": a.caption, "tokens": a.tokens, "score": a.score} for a in self.alternatives]
        return obj


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


def load_caption_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[CaptionModel, Vocabulary, dict]:
    """Rebuild a model from a checkpoint's config (no pretrained weights fetched: the
    checkpoint carries the encoder's too) and load its weights."""
    ckpt = read_checkpoint(path, kind="caption")
    try:
        cfg = CaptionConfig.from_json(ckpt.config)
        vocab = Vocabulary.from_json(ckpt.vocab)
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{ckpt.path}: checkpoint config is not valid ({type(e).__name__}: {e})") from None
    model = CaptionModel(cfg, encoder_weights="none" if cfg.encoder.in_checkpoint else "default")
    model = load_weights(model, ckpt, checkpoint_skips(model))
    return model.to(device).eval(), vocab, ckpt.extra


class Captioner:
    def __init__(self, model: CaptionModel, vocab: Vocabulary, extra: dict | None = None, precision: str = "fp32"):
        """``precision``: fp32, bf16, or auto (bf16 where the device computes it natively;
        see ``captioning.core.precision``)."""
        self.model, self.vocab, self.extra = model, vocab, extra or {}
        self.precision = resolve_precision(precision, self.device)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                        precision: str = "fp32") -> "Captioner":
        path, _ = resolve_checkpoint(path, DEFAULT_CAPTION_CHECKPOINT)
        return cls(*load_caption_model(path, device), precision=precision)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def __call__(self, images: ImageLike | Sequence[ImageLike], beam_size: int = 3, max_length: int | None = None,
                 temperature: float | None = None, batch_size: int = 32):
        """Caption one image (-> CaptionResult) or a list (-> list of CaptionResult).
        Images are paths or PIL images; a bad file raises UserError."""
        single = isinstance(images, (str, os.PathLike, Image.Image))
        items = [images] if single else list(images)
        results = []
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            pil = [im if isinstance(im, Image.Image) else load_image(im) for im in chunk]
            batch = preprocess(pil, self.model.image_size).to(self.device)
            hyps = generate(self.model, batch, beam_size, max_length, temperature, precision=self.precision)
            names = [None if isinstance(im, Image.Image) else str(im) for im in chunk]
            results.extend(self._result(h, n) for h, n in zip(hyps, names))
        return results[0] if single else results

    def _result(self, hyp: Hypothesis, name: str | None) -> CaptionResult:
        words = self.vocab.decode_tokens(hyp.tokens)
        h, w = self.model.grid_shape()
        return CaptionResult(self.vocab.decode(hyp.tokens), words, hyp.score,
                             hyp.alphas.reshape(len(hyp.tokens), h, w).numpy(), name, hyp.finished,
                             [self._result(alt, name) for alt in hyp.alternatives])


def caption_dataset(model: CaptionModel, vocab: Vocabulary, dataset, beam_size: int = 3, batch_size: int = 64,
                    device: torch.device | str = "cpu", limit: int | None = None, num_workers: int = 0,
                    max_length: int | None = None, precision: str = "fp32") -> dict[int, str]:
    """Caption every image of a ``CaptionDataset`` -> {image_id: caption}."""
    from captioning.data import collate_captions

    if limit:
        dataset = Subset(dataset, range(min(limit, len(dataset))))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_captions,
                        num_workers=num_workers)
    model.eval()
    out: dict[int, str] = {}
    for batch in loader:
        hyps = generate(model, batch.images.to(device), beam_size, max_length, precision=precision)
        out.update({i: vocab.decode(h.tokens) for i, h in zip(batch.image_ids, hyps)})
    return out
