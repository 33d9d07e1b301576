"""The Python API: ``Captioner.from_pretrained(path)`` then ``captioner(image)``.

>>> captioner = Captioner.from_pretrained()          # the shipped default checkpoint
>>> result = captioner("examples/emoji_google_grinning_face.png")
>>> result.caption, result.attention.shape   # attention: (T, h, w), one map per word
('grinning face', (2, 7, 7))

``generate`` (``captioning.search``: beam search, greedy or sampling, from pixels) and
``caption_dataset`` (``captioning.evaluation``: a whole dataset in batches, as training-time
validation and the evaluation script use it) are re-exported here as part of the API.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from captioning.core.checkpoint import CHECKPOINT_DIR, load_model, resolve_checkpoint
from captioning.core.errors import UserError, check_int
from captioning.core.images import ImageInput, image_sources, prepare_images
from captioning.core.precision import resolve_precision
from captioning.core.vocab import Vocabulary
from captioning.evaluation import caption_dataset
from captioning.model import CaptionConfig, CaptionModel
from captioning.search import Hypothesis, generate

__all__ = ["DEFAULT_CAPTION_CHECKPOINT", "CaptionResult", "Captioner", "caption_dataset", "generate",
           "load_caption_model"]

DEFAULT_CAPTION_CHECKPOINT = CHECKPOINT_DIR / "caption_emoji.safetensors"

ImageLike = ImageInput  # a path, http(s) URL, PIL image, encoded bytes or (H, W[, C]) array

MAX_WORDS = 1000  # --max-length beyond this is refused: no caption is that long
MAX_DECODE_BYTES = 4 << 30  # beam search's working memory a request may ask for (estimated), 4 GiB


@dataclass
class CaptionResult:
    caption: str
    tokens: list[str]
    score: float  # mean log-probability per token, the closing <end> included (captioning.search)
    attention: np.ndarray  # (T, h, w): where the model looked for each word in ``tokens``
    image: str | None = None
    finished: bool = True  # False when the length limit cut the caption
    # beam search: the runners-up among the beam's K finished captions, best first (each with
    # its own caption, tokens, score and attention); empty for greedy decoding and sampling
    alternatives: list[CaptionResult] = field(default_factory=list)
    display: Image.Image | None = field(default=None, repr=False)  # a small copy for attention maps, if asked
    # log p of each word of ``tokens``, then of the closing <end> when ``finished``, as the
    # search saw them: ``score`` is their mean
    logprobs: list[float] = field(default_factory=list, repr=False)
    # hard attention decoding with the argmax cell (DecoderConfig.hard_decode): the grid cell
    # (row, col) whose feature each word of ``tokens`` was predicted from; None otherwise
    # (soft attention and ``expect`` decoding use the whole map, ``attention``)
    cells: list[tuple[int, int]] | None = None

    @property
    def word_probabilities(self) -> list[float]:
        """p(word | image, the words before it) for each word of ``tokens``, from the search itself."""
        return [math.exp(lp) for lp in self.logprobs[:len(self.tokens)]]

    def to_json(self) -> dict:
        obj = {"image": self.image, "caption": self.caption, "tokens": self.tokens, "score": self.score}
        if self.cells is not None:
            obj["cells"] = [list(c) for c in self.cells]
        if self.alternatives:
            obj["alternatives"] = [{"caption": a.caption, "tokens": a.tokens, "score": a.score} for a in self.alternatives]
        return obj


def load_caption_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[CaptionModel, Vocabulary, dict]:
    """(model, vocabulary, the checkpoint's ``extra``) from a caption checkpoint."""
    return load_model(path, "caption", CaptionModel,
                      lambda ckpt: (CaptionConfig.from_json(ckpt.config), Vocabulary.from_json(ckpt.vocab)), device)


class Captioner:
    checkpoint: Path | None = None  # the file it was loaded from (from_pretrained)
    is_default: bool = False  # whether that is the shipped default

    def __init__(self, model: CaptionModel, vocab: Vocabulary, extra: dict | None = None, precision: str = "fp32"):
        """``precision``: fp32, bf16, or auto (bf16 where the device computes it natively;
        see ``captioning.core.precision``)."""
        self.model, self.vocab, self.extra = model, vocab, extra or {}
        self.precision = resolve_precision(precision, self.device)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                        precision: str = "fp32") -> Captioner:
        """``path``: a checkpoint or a training output folder; None loads the shipped default."""
        path, is_default = resolve_checkpoint(path, DEFAULT_CAPTION_CHECKPOINT)
        captioner = cls(*load_caption_model(path, device), precision=precision)
        captioner.checkpoint, captioner.is_default = path, is_default
        return captioner

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def __call__(self, images: ImageLike | Sequence[ImageLike], beam_size: int = 3, max_length: int | None = None,
                 temperature: float | None = None, batch_size: int = 32):
        """Caption one image (-> CaptionResult) or a list (-> list of CaptionResult).
        Images are paths, URLs, PIL images, bytes or arrays (``captioning.core.images``);
        a bad one raises UserError."""
        sources, single = image_sources(images)
        results = []
        for result in self.stream(sources, beam_size, max_length, temperature, batch_size):
            if isinstance(result, UserError):
                raise result
            results.append(result)
        return results[0] if single else results

    def report_item(self, image: Image.Image, result: CaptionResult, name: str | None = None) -> dict:
        """``result`` and its beam alternatives as an item of the HTML attention explorer
        (``captioning.core.report``), each word with the probability the search gave it."""
        from captioning.core.report import caption_item, hypotheses

        hyps = hypotheses(result)
        return caption_item(image, name or result.image, hyps, [h.word_probabilities for h in hyps])

    def stream(self, images: Iterable[ImageLike], beam_size: int = 3, max_length: int | None = None,
               temperature: float | None = None, batch_size: int = 32,
               keep_display: bool = False) -> Iterator[CaptionResult | UserError]:
        """Caption ``images`` lazily, ``batch_size`` at a time, in order: one CaptionResult per
        image, or the UserError that reading it raised (the other images still get captioned).
        Each image is resized to the model's input as soon as it is read, so memory stays flat
        however many there are; ``keep_display`` keeps a small copy for attention maps.
        The request is checked (:meth:`check_request`) here, before any image is read."""
        self.check_request(beam_size, max_length, temperature, batch_size)
        images, _ = image_sources(images)
        return self._stream(images, beam_size, max_length, temperature, batch_size, keep_display)

    def _stream(self, images, beam_size, max_length, temperature, batch_size, keep_display):
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
        kept = self.vocab.word_positions(hyp.tokens)  # (T,) the positions of those words in hyp.tokens
        h, w = self.model.grid_shape()
        attention = hyp.alphas.reshape(len(hyp.tokens), h, w)[kept].numpy()  # (T, h, w)
        logprobs = [hyp.logprobs[k] for k in kept] + hyp.logprobs[len(hyp.tokens):]  # the closing <end>'s, if any
        dec = self.model.decoder.cfg
        cells = None
        if dec.attention == "hard" and dec.hard_decode == "argmax":  # the step took the map's argmax cell
            cells = [divmod(int(i), w) for i in attention.reshape(len(attention), -1).argmax(1)]
        return CaptionResult(self.vocab.decode(hyp.tokens), words, hyp.score, attention, name, hyp.finished,
                             alternatives=[self._result(alt, name) for alt in hyp.alternatives], display=display,
                             logprobs=logprobs, cells=cells)
