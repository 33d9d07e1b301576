"""CIDEr-D on token ids, fast enough to be a training reward (self-critical training, ``captioning.scst``).

Vedantam et al. 2015, "CIDEr: Consensus-based Image Description Evaluation", as the coco-caption
toolkit computes it (``pycocoevalcap.cider``, which is CIDEr-D): each caption becomes four
tf-idf vectors (1- to 4-grams, idf = log(number of corpus images) - log(document frequency));
a candidate's score against one reference is, per n, the cosine of the two vectors with the
candidate's values clipped to the reference's (min(c, r) * r), times the Gaussian length
penalty exp(-delta^2 / (2 sigma^2)), sigma = 6; the mean over n and over the references,
times 10. Two details of the toolkit are kept so that scores agree: the "length" in delta
counts bigrams (words - 1, or 0), and an n-gram no corpus reference has gets document
frequency 1 (idf = log(N)).

The document frequencies and every reference vector are computed once, from a corpus of
references (SCST implementations use the training references). Scoring a batch of candidates
is then a few numpy sorts and searches over all their n-grams at once, with no Python loop
over captions or n-grams: an n-gram of ids is one int64 key (digits in base V + 1, V the
largest id), and an (n-gram, reference) pair is one int64 too. Given the evaluated set's own
references as its corpus, :meth:`CiderD.score` equals ``pycocoevalcap``'s per-image CIDEr.

Tokens are plain integers; :class:`WordIds` turns tokenized text into them (a word the
vocabulary lacks gets an id of its own, so it never matches ``<unk>``).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np

MAX_UNKNOWN = 256  # distinct out-of-corpus words a candidate may hold

# The punctuation the PTB tokenizer of coco-caption removes before scoring
# (pycocoevalcap.tokenizer.ptbtokenizer.PUNCTUATIONS): rewards drop it too.
PTB_PUNCTUATION = frozenset(["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-",
                             ".", "?", "!", ",", ":", "-", "--", "...", ";"])


class WordIds:
    """Words -> ids for CIDEr: the vocabulary's ids where it has the word, new ids above it
    where not (a reference's rare word must not equal another's, nor a generated ``<unk>``)."""

    def __init__(self, words: Sequence[str], drop: Iterable[str] = PTB_PUNCTUATION):
        self.index = {w: i for i, w in enumerate(words)}
        self.drop = set(drop)
        # (V,) vocabulary id -> id scored, -1 for a token the metric drops (punctuation).
        self.remap = np.array([-1 if w in self.drop else i for i, w in enumerate(words)], dtype=np.int64)

    def encode(self, tokens: Iterable[str]) -> list[int]:
        out = []
        for t in tokens:
            if t in self.drop:
                continue
            if t not in self.index:
                self.index[t] = len(self.index)
            out.append(self.index[t])
        return out


def pad(captions: Sequence[Sequence[int]]) -> np.ndarray:
    """Lists of ids -> (C, L) int64, padded with -1."""
    longest = max((len(c) for c in captions), default=0)
    out = np.full((len(captions), max(longest, 1)), -1, dtype=np.int64)
    for i, c in enumerate(captions):
        out[i, : len(c)] = c
    return out


def compact(ids: np.ndarray, remap: np.ndarray | None = None, stop: int | None = None) -> np.ndarray:
    """(C, L) ids -> (C, L') with the dropped tokens removed and the rest shifted left, -1 after.

    ``stop``: an id that ends a caption (``<end>``): it and everything after it are dropped.
    ``remap`` (V,): id -> id scored, or -1 to drop that token (punctuation, ``<pad>``)."""
    ids = np.asarray(ids, dtype=np.int64)
    keep = ids >= 0
    if stop is not None:
        keep &= np.cumsum(ids == stop, axis=1) == 0
    if remap is not None:
        ids = np.where(keep, remap[np.where(keep, ids, 0)], -1)
        keep &= ids >= 0
    pos = np.cumsum(keep, axis=1) - 1  # (C, L) where each kept token goes
    out = np.full((ids.shape[0], max(int(keep.sum(1).max(initial=0)), 1)), -1, dtype=np.int64)
    rows = np.broadcast_to(np.arange(ids.shape[0])[:, None], ids.shape)
    out[rows[keep], pos[keep]] = ids[keep]
    return out


class CiderD:
    """CIDEr-D of candidates against the references of their image.

    ``references``: image key -> its reference captions, each a sequence of non-negative
    token ids; these images are the corpus of the document frequencies.
    """

    def __init__(self, references: Mapping[Hashable, Sequence[Sequence[int]]], n: int = 4, sigma: float = 6.0):
        self.n, self.sigma = n, sigma
        keys = list(references)
        if not keys:
            raise ValueError("CIDEr-D needs a corpus of at least one image")
        self.image_row = {k: i for i, k in enumerate(keys)}
        refs = [list(map(list, references[k])) for k in keys]
        if any(not r for r in refs):
            raise ValueError("every image of the corpus needs at least one reference caption")
        flat = [c for r in refs for c in r]
        self.max_id = max((max(c, default=0) for c in flat), default=0)
        # Digits: 0 = no token, 1..max_id+1 the corpus's ids, then room for a candidate's
        # words the corpus lacks (relabelled per caption, see _relabel_unknown).
        self.base = self.max_id + 2 + MAX_UNKNOWN
        if (self.base - 1) ** n >= 2 ** 62:
            raise ValueError(f"ids up to {self.base - 2} do not fit {n}-gram keys in int64")
        n_images = len(refs)
        self.log_n = float(np.log(float(n_images)))  # ref_len in the toolkit
        self.ref_count = np.array([len(r) for r in refs], dtype=np.int64)  # (I,)
        self.ref_start = np.concatenate([[0], np.cumsum(self.ref_count)[:-1]])  # (I,) first global ref of each image
        ref_image = np.repeat(np.arange(n_images), self.ref_count)  # (R,)

        ref_of, gram = self._ngrams(pad(flat))  # every n-gram occurrence of every reference
        # Document frequency: the number of images whose references hold the n-gram.
        per_image = np.unique(np.stack([ref_image[ref_of], gram]), axis=1)  # (2, distinct (image, n-gram))
        self.grams, df = np.unique(per_image[1], return_counts=True)  # sorted corpus n-grams, (G,)
        self.idf = self.log_n - np.log(np.maximum(df, 1).astype(np.float64))  # (G,)

        # Reference vectors: (reference, n-gram) -> tf * idf ...
        pair, tf = np.unique(ref_of * len(self.grams) + np.searchsorted(self.grams, gram), return_counts=True)
        gram_id, ref_id = pair % len(self.grams), pair // len(self.grams)
        value = tf * self.idf[gram_id]  # (E,)
        order = self._order(self.grams[gram_id])  # (E,) n-1 of each entry
        self.ref_norm = np.sqrt(np.bincount(ref_id * n + order, weights=value ** 2,
                                            minlength=len(flat) * n)).reshape(len(flat), n)  # (R, n)
        lengths = np.array([len(c) for c in flat], dtype=np.int64)
        self.ref_length = np.maximum(lengths - 1, 0)  # (R,) bigram count, the toolkit's "length"
        # ... filed by (image, n-gram): a candidate's n-gram is looked up once, not once per reference.
        image_gram = ref_image[ref_id] * len(self.grams) + gram_id
        by_key = np.argsort(image_gram, kind="stable")
        self.entry_ref = (ref_id - self.ref_start[ref_image[ref_id]])[by_key]  # (E,) which reference of its image
        self.entry_value = value[by_key]  # (E,)
        self.image_grams, self.key_start, self.key_count = np.unique(image_gram[by_key], return_index=True,
                                                                     return_counts=True)  # (K,) sorted

    def _ngrams(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(C, L) ids padded with -1 -> (row, key) of every 1..n-gram occurrence."""
        ids = ids + 1  # 0 = no token
        c, length = ids.shape
        rows, keys = [], []
        key = np.zeros_like(ids)
        valid = np.ones_like(ids, dtype=bool)
        for k in range(1, self.n + 1):
            width = length - k + 1
            if width <= 0:
                break
            key = key[:, :width] * self.base + ids[:, k - 1:]  # (C, width) the k-gram starting at each position
            valid = valid[:, :width] & (ids[:, k - 1:] > 0)
            r, p = np.nonzero(valid)
            rows.append(r)
            keys.append(key[r, p])
        return np.concatenate(rows), np.concatenate(keys)

    def _relabel_unknown(self, cand: np.ndarray) -> np.ndarray:
        """Ids above the corpus's -> max_id + 1 + their rank among a caption's distinct such
        ids: they match no reference either way, and within a caption they stay distinct
        (they count in its tf-idf norm) while the n-gram keys stay within int64."""
        unknown = cand > self.max_id
        if not unknown.any():
            return cand
        r, c = np.nonzero(unknown)
        span = int(cand.max()) + 1
        distinct, inverse = np.unique(r * span + cand[r, c], return_inverse=True)
        rows = distinct // span
        rank = (np.arange(len(distinct)) - np.searchsorted(rows, rows))[inverse]
        if rank.max() >= MAX_UNKNOWN:
            raise ValueError(f"a candidate has more than {MAX_UNKNOWN} distinct words outside the corpus")
        cand = cand.copy()
        cand[r, c] = self.max_id + 1 + rank
        return cand

    def _order(self, keys: np.ndarray) -> np.ndarray:
        """n - 1 of each n-gram key: its number of base-``base`` digits minus one."""
        order = np.zeros(keys.shape, dtype=np.int64)
        bound = self.base
        for _ in range(1, self.n):
            order += keys >= bound
            bound *= self.base
        return order

    def score(self, images: Sequence[Hashable], candidates: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
        """CIDEr-D (x10, as the toolkit reports it) of each candidate against the references
        of ``images[i]``. ``candidates``: lists of ids, or a (C, L) array padded with -1."""
        cand = candidates if isinstance(candidates, np.ndarray) else pad(candidates)
        c_count, n = len(images), self.n
        if cand.shape[0] != c_count:
            raise ValueError(f"{cand.shape[0]} candidates for {c_count} images")
        if c_count == 0:
            return np.zeros(0)
        cand = self._relabel_unknown(cand)
        image = np.fromiter((self.image_row[k] for k in images), dtype=np.int64, count=c_count)  # (C,)
        length = np.maximum((cand >= 0).sum(1) - 1, 0)  # (C,) bigram count

        row, gram = self._ngrams(cand)
        # Term frequencies per (candidate, n-gram): sort by candidate, then n-gram.
        order = np.lexsort((gram, row))
        row, gram = row[order], gram[order]
        first = np.ones(len(row), dtype=bool)
        first[1:] = (row[1:] != row[:-1]) | (gram[1:] != gram[:-1])
        starts = np.nonzero(first)[0]
        tf = np.diff(np.append(starts, len(row)))  # (U,)
        row, gram = row[starts], gram[starts]

        # Each distinct n-gram is looked up once, in sorted order (searchsorted is several
        # times faster on sorted queries: they walk the table in order).
        distinct, inverse = np.unique(gram, return_inverse=True)
        gid, known = _lookup(self.grams, distinct)
        gid, known = gid[inverse], known[inverse]  # (U,)
        idf = np.where(known, self.idf[np.where(known, gid, 0)], self.log_n)  # an n-gram no reference has: df 1
        vec = tf * idf  # (U,) the candidate's tf-idf values
        g_order = self._order(gram)  # (U,)
        norm = np.sqrt(np.bincount(row * n + g_order, weights=vec ** 2, minlength=c_count * n)).reshape(c_count, n)

        # The references of its image that hold each known candidate n-gram, with their values.
        row_k, vec_k, ord_k = row[known], vec[known], g_order[known]
        distinct, inverse = np.unique(image[row_k] * len(self.grams) + gid[known], return_inverse=True)
        at, found = _lookup(self.image_grams, distinct)
        at, found = at[inverse], found[inverse]  # (Uk,)
        row_k, vec_k, ord_k, at = row_k[found], vec_k[found], ord_k[found], at[found]
        count = self.key_count[at]
        rep = np.repeat(np.arange(len(at)), count)  # (H,) one per (candidate n-gram, reference holding it)
        entry = np.repeat(self.key_start[at] - np.cumsum(count) + count, count) + np.arange(int(count.sum()))
        r_val, h_val = self.entry_value[entry], vec_k[rep]
        max_refs = int(self.ref_count[image].max())
        slot = (row_k[rep] * max_refs + self.entry_ref[entry]) * n + ord_k[rep]  # (candidate, its j-th reference, n)
        dot = np.bincount(slot, weights=np.minimum(h_val, r_val) * r_val,
                          minlength=c_count * max_refs * n).reshape(c_count, max_refs, n)

        refs_of = self.ref_start[image][:, None] + np.arange(max_refs)[None, :]  # (C, max_refs)
        present = np.arange(max_refs)[None, :] < self.ref_count[image][:, None]  # (C, max_refs)
        refs_of = np.where(present, refs_of, 0)
        ref_norm = self.ref_norm[refs_of]  # (C, max_refs, n)
        denom = norm[:, None, :] * ref_norm
        sim = np.where(denom != 0, dot / np.where(denom != 0, denom, 1.0), dot)
        delta = (length[:, None] - self.ref_length[refs_of]).astype(np.float64)  # (C, max_refs)
        sim = sim * np.exp(-(delta ** 2) / (2 * self.sigma ** 2))[:, :, None]
        sim = np.where(present[:, :, None], sim, 0.0)
        return sim.sum(axis=(1, 2)) / n / self.ref_count[image] * 10.0


def _lookup(table: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of sorted ``queries`` in the sorted ``table``, and whether each is there."""
    at = np.searchsorted(table, queries)
    at = np.minimum(at, len(table) - 1)
    return at, table[at] == queries
