"""Tokenisation and the word vocabulary, saved as JSON with every checkpoint.

Tokenisation is nltk's Treebank tokenizer: rule-based, so it needs no downloaded model
(punkt is not available offline). nltk is imported on first use, and without scipy: nltk's
``__init__`` imports all of nltk, whose statistics modules pull in ``scipy.stats`` (optional
for nltk, never used here), which cost most of a second of ``caption image.png``. Text is lowercased; sentence-final periods and quote marks
are dropped (they carry nothing a caption metric scores), every other token is kept, so
``"woman walking: medium skin tone"`` round-trips through :meth:`Vocabulary.decode`.
The question encoder of ``vqa`` uses the same tokenizer and vocabulary class.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.abc
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)
_DROP = {".", "``", "''", '"', "'"}


def tokenize(text: str) -> list[str]:
    """Lowercased word tokens of ``text``."""
    return [t for t in _treebank()[0].tokenize(text.lower().strip()) if t not in _DROP]


def detokenize(tokens: Sequence[str]) -> str:
    return _treebank()[1].detokenize(list(tokens))


@functools.cache
def _treebank():
    """(tokenizer, detokenizer), nltk imported at the first call."""
    with _unimportable("scipy"):
        from nltk.tokenize.treebank import TreebankWordDetokenizer, TreebankWordTokenizer
    return TreebankWordTokenizer(), TreebankWordDetokenizer()


class _Refuse(importlib.abc.MetaPathFinder):
    def __init__(self, name: str):
        self.name = name

    def find_spec(self, fullname, path=None, target=None):
        if fullname == self.name or fullname.startswith(self.name + "."):
            raise ImportError(f"{fullname} is not imported while nltk loads (captioning.core.vocab)")
        return None


@contextlib.contextmanager
def _unimportable(name: str) -> Iterator[None]:
    """Make package ``name`` fail to import for a moment (nltk then takes its own fallbacks);
    a no-op when it is already imported."""
    if name in sys.modules:
        yield
        return
    finder = _Refuse(name)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


@dataclass
class Vocabulary:
    """Words <-> ids. Ids 0-3 are ``<pad> <start> <end> <unk>``, in that order."""

    words: list[str] = field(default_factory=lambda: list(SPECIALS))
    min_count: int = 1

    def __post_init__(self):
        if tuple(self.words[:4]) != SPECIALS:
            raise ValueError(f"vocabulary must start with {SPECIALS}")
        self.index = {w: i for i, w in enumerate(self.words)}

    pad_id, start_id, end_id, unk_id = 0, 1, 2, 3

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 1) -> Vocabulary:
        """Words seen at least ``min_count`` times, most frequent first (ties alphabetical,
        so the same corpus always gives the same ids)."""
        counts = Counter(tok for text in texts for tok in tokenize(text))
        kept = sorted((w for w, c in counts.items() if c >= min_count and w not in SPECIALS),
                      key=lambda w: (-counts[w], w))
        return cls(list(SPECIALS) + kept, min_count)

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, text: str, max_length: int | None = None, add_special: bool = True) -> list[int]:
        """Token ids; with ``add_special``, wrapped in ``<start> ... <end>``. ``max_length``
        bounds the number of words (the specials come on top)."""
        ids = [self.index.get(t, self.unk_id) for t in tokenize(text)]
        if max_length is not None:
            ids = ids[:max_length]
        return [self.start_id, *ids, self.end_id] if add_special else ids

    def decode_tokens(self, ids: Iterable[int]) -> list[str]:
        """Words up to the first ``<end>``; ``<start>`` and ``<pad>`` are skipped."""
        ids = [int(i) for i in ids]
        return [self.words[ids[k]] for k in self.word_positions(ids)]

    def word_positions(self, ids: Iterable[int]) -> list[int]:
        """The positions in ``ids`` of the words :meth:`decode_tokens` keeps, so that what was
        recorded per position (attention maps, log-probabilities) can follow the words: a weak
        model may emit ``<pad>`` or ``<start>`` mid-caption, and those are not words."""
        out = []
        for k, i in enumerate(ids):
            i = int(i)
            if i == self.end_id:
                break
            if i not in (self.pad_id, self.start_id):
                out.append(k)
        return out

    def decode(self, ids: Iterable[int]) -> str:
        return detokenize(self.decode_tokens(ids))

    def to_json(self) -> dict:
        return {"words": self.words, "min_count": self.min_count}

    @classmethod
    def from_json(cls, obj: dict) -> Vocabulary:
        return cls(list(obj["words"]), int(obj.get("min_count", 1)))
