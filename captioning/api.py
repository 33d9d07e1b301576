"""The Python API: ``Captioner.from_pretrained(path)`` then ``captioner(image)``.

>>> captioner = Captioner.from_pretrained()          # the shipped default checkpoint
>>> result = captioner("examples/emoji_cat.png")
>>> result.caption, result.score, result.attention.shape   # attention: (T, h, w), one map per word

``caption_dataset`` captions a whole dataset in batches; training-time validation and the
evaluation script both use it.
"""

from __future__ import annotations


import math
import os
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from captioning.core.checkpoint import CHECKPOINT_DIR, load_model, resolve_checkpoint
from captioning.core.data import inference_batches, pad_sequences
from captioning.search import Hypothesis, beam_search, greedy, sample
from captioning.core.errors import UserError, check_int
from captioning.model import CaptionConfig, CaptionModel
from captioning.core.precision import autocast, resolve_precision
from captioning.core.images import ImageInput, is_single_image, prepare_image, prepare_images
from captioning.core.vocab import Vocabulary

DEFAULT_CAPTION_CHECKPOINT = CHECKPOINT_DIR / "caption_emoji.safetensors"

ImageLike = ImageInput  # a path, http(s) URL, PIL image, encoded bytes or (H, W[, C]) array

MAX_WORDS = 1000  # --max-length beyond this is refused: no caption is that long
MAX_DECODE_BYTES = 4 << 30  # beam search's working memory a request may ask for (estimated), 4 GiB


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
    display: Image.Image | None = field(default=None, repr=False)  # a small copy for attention maps, if asked

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


def teacher_forced_probabilities(model: CaptionModel, images: torch.Tensor, captions: Sequence[Sequence[int]],
                                 image_index: torch.Tensor | None = None, precision: str = "fp32") -> list[np.ndarray]:
    """The model's probability of each word of each caption given the words before it, and
    last of the ``<end>`` that closes it: one (n_words + 1,) array per caption.
    images (B, 3, S, S) on the model's device; captions are word ids without the specials;
    image_index (M,) says which image each caption describes (None: caption i <-> image i)."""
    dev = images.device
    padded, lengths = pad_sequences([[Vocabulary.start_id, *c, Vocabulary.end_id] for c in captions])
    with torch.no_grad(), autocast(dev, precision):
        logits, _ = model(images, padded.to(dev), lengths.to(dev),
                          None if image_index is None else image_index.to(dev))  # (M, L-1, V)
    logp = torch.log_softmax(logits.float(), dim=-1).gather(2, padded[:, 1:, None].to(dev)).squeeze(2)  # (M, L-1)
    return [logp[i, :n - 1].exp().cpu().numpy() for i, n in enumerate(lengths.tolist())]


def load_caption_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[CaptionModel, Vocabulary, dict]:
    """(model, vocabulary, the checkpoint's ``extra``) from a caption checkpoint."""
    return load_model(path, "caption", CaptionModel,
                      lambda ckpt: (CaptionConfig.from_json(ckpt.config), Vocabulary.from_json(ckpt.vocab)), device)


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
        Images are paths, URLs, PIL images, bytes or arrays (``captioning.core.images``);
        a bad one raises UserError."""
        single = is_single_image(images)
        results = []
        for result in self.stream([images] if single else images, beam_size, max_length, temperature, batch_size):
            if isinstance(result, UserError):
                raise result
            results.append(result)
        return results[0] if single else results

    def word_probabilities(self, image: ImageLike, captions: Sequence[Sequence[str]]) -> list[list[float]]:
        """p(word | the words before it, image) for each word of each caption of one image
        (teacher forcing; the explorer shows them beside the words). Captions are word lists,
        as in ``CaptionResult.tokens``."""
        pixels = prepare_image(image, self.model.image_size).pixels
        batch = torch.from_numpy(pixels)[None].to(self.device)  # (1, 3, S, S) uint8
        ids = [[self.vocab.index.get(w, Vocabulary.unk_id) for w in words] for words in captions]
        one_image = torch.zeros(len(ids), dtype=torch.long)  # every caption describes image 0
        probs = teacher_forced_probabilities(self.model, batch, ids, one_image, self.precision)
        return [p[:-1].tolist() for p in probs]  # the last is <end>'s

    def report_item(self, image: Image.Image, result: CaptionResult, name: str | None = None) -> dict:
        """``result`` and its beam alternatives as an item of the HTML attention explorer
        (``captioning.core.report``), each word with its probability."""
        from captioning.core.report import caption_item, hypotheses

        hyps = hypotheses(result)
        probs = self.word_probabilities(image, [h.tokens for h in hyps])
        return caption_item(image, name or result.image, hyps, probs)

    def stream(self, images: Iterable[ImageLike], beam_size: int = 3, max_length: int | None = None,
               temperature: float | None = None, batch_size: int = 32,
               keep_display: bool = False) -> Iterator["CaptionResult | UserError"]:
        """Caption ``images`` lazily, ``batch_size`` at a time, in order: one CaptionResult per
        image, or the UserError that reading it raised (the other images still get captioned).
        Each image is resized to the model's input as soon as it is read, so memory stays flat
        however many there are; ``keep_display`` keeps a small copy for attention maps."""
        self.check_request(beam_size, max_length, temperature, batch_size)
        for chunk in prepare_images(images, self.model.image_size, batch_size, keep_display):
            good = [p for p in chunk if not isinstance(p, UserError)]
            hyps = iter([])
            if good:
                batch = torch.from_numpy(np.stack([p.pixels for p in good])).to(self.device)  # (B, 3, S, S) uint8
                hyps = iter(generate(self.model, batch, beam_size, max_length, temperature, precision=self.precision))
            for p in chunk:
                yield p if isinstance(p, UserError) else self._result(next(hyps), p.name, p.display)

    def check_request(self, beam_size: int = 3, max_length: int | None = None, temperature: float | None = None,
                      batch_size: int = 32) -> None:
        """Refuse, before any work, what cannot run: a beam wider than the vocabulary, lengths
        and batch sizes below 1, and requests whose beam search would need more than
        :data:`MAX_DECODE_BYTES` of memory."""
        vocab = len(self.vocab)
        check_int("beam_size", beam_size, 1, vocab, f"the model's vocabulary has {vocab} words")
        if max_length is not None:
            check_int("max_length", max_length, 1, MAX_WORDS, "words")
        check_int("batch_size", batch_size, 1)
        if temperature is not None and not (isinstance(temperature, (int, float)) and math.isfinite(temperature)
                                            and temperature > 0):
            raise UserError(f"temperature must be a number above 0, got {temperature!r}")
        h, w = self.model.grid_shape()
        length = (max_length or self.model.cfg.decoder.max_length) + 1
        # per live beam: its grid features and projected memory, and its history of attention maps
        per_beam = 4 * h * w * (self.model.encoder.out_channels + self.model.cfg.decoder.attention_dim + length)
        need = batch_size * beam_size * per_beam
        if need > MAX_DECODE_BYTES:
            raise UserError(f"beam size {beam_size} x batch size {batch_size} x {length - 1} words needs about "
                            f"{need / 2**30:.1f} GiB for beam search, over the {MAX_DECODE_BYTES / 2**30:.0f} GiB "
                            "allowed: use a smaller beam or batch size")

    def _result(self, hyp: Hypothesis, name: str | None, display: Image.Image | None = None) -> CaptionResult:
        words = self.vocab.decode_tokens(hyp.tokens)
        h, w = self.model.grid_shape()
        return CaptionResult(self.vocab.decode(hyp.tokens), words, hyp.score,
                             hyp.alphas.reshape(len(hyp.tokens), h, w).numpy(), name, hyp.finished,
                             alternatives=[self._result(alt, name) for alt in hyp.alternatives], display=display)


def caption_dataset(model: CaptionModel, vocab: Vocabulary, dataset, beam_size: int = 3, batch_size: int = 64,
                    device: torch.device | str = "cpu", limit: int | None = None, num_workers: int = 0,
                    max_length: int | None = None, precision: str = "fp32",
                    attention: dict[int, tuple[list[str], np.ndarray]] | None = None) -> dict[int, str]:
    """Caption every image of a ``CaptionDataset`` -> {image_id: caption}. Given a dict as
    ``attention``, also fills it with {image_id: (words, their maps (T, h, w))}."""
    from captioning.data import collate_captions

    model.eval()
    out: dict[int, str] = {}
    h, w = model.grid_shape()
    for batch in inference_batches(dataset, collate_captions, batch_size, limit, num_workers):
        hyps = generate(model, batch.images.to(device), beam_size, max_length, precision=precision)
        out.update({i: vocab.decode(hyp.tokens) for i, hyp in zip(batch.image_ids, hyps)})
        if attention is not None:
            for i, hyp in zip(batch.image_ids, hyps):
                words = vocab.decode_tokens(hyp.tokens)
                attention[i] = (words, hyp.alphas[:len(words)].float().reshape(len(words), h, w).numpy())
    return out
