"""Caption metrics, computed by the official coco-caption toolkit.

Chen et al. 2015, "Microsoft COCO Captions: Data Collection and Evaluation Server", defines
the protocol every captioning paper reports (Xu et al. 2015, "Show, Attend and Tell", among
them): captions are lowercased and split by the Stanford PTB tokenizer, punctuation is dropped,
then BLEU-1..4 (Papineni et al. 2002), METEOR (Denkowski & Lavie 2014), ROUGE-L (Lin 2004),
CIDEr-D (Vedantam et al. 2015) and optionally SPICE (Anderson et al. 2016) are computed. We
call ``pycocoevalcap`` (the pip port of that toolkit) rather than reimplement any of it, so the
numbers are the ones a paper would print; the keys are the toolkit's own (``Bleu_4``,
``METEOR``, ``ROUGE_L``, ``CIDEr``, ``SPICE``).

The tokenizer, METEOR and SPICE run in Java. Without ``java`` on the PATH we warn, skip METEOR
and SPICE, and tokenize with :func:`simple_tokenize` instead, so BLEU, ROUGE-L and CIDEr are
then close to, but not exactly, the official values.

The toolkit prints as it scores (BLEU's ``{'testlen': ...}``, the tokenizer's Java lines);
that chatter is kept out of stdout and stderr (:func:`toolkit_quiet`), so a CLI's ``--json``
output stays parseable and training logs and progress bars stay clean. pycocotools' progress
lines go to stderr.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.spice.spice import Spice
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
from pycocotools.coco import COCO

from captioning.core.data import inference_batches
from captioning.core.errors import UserError
from captioning.core.fileio import read_json
from captioning.core.vocab import Vocabulary
from captioning.data import collate_captions
from captioning.search import generate

if TYPE_CHECKING:
    from captioning.model import CaptionModel

_WORD = re.compile(r"\w+(?:'\w+)*")


def simple_tokenize(caption: str) -> str:
    """Lowercase, drop punctuation, keep in-word apostrophes ("dog's"), single spaces.

    A stand-in for the PTB tokenizer when Java is missing; it differs on contractions and
    possessives (PTB splits "dog's" into "dog 's"), so scores computed with it are approximate.
    """
    return " ".join(_WORD.findall(caption.lower()))


def score_captions(
    references: dict[int, list[str]],
    candidates: dict[int, str],
    spice: bool = False,
    meteor: bool = True,
) -> dict[str, float]:
    """Score one candidate caption per image against that image's reference captions.

    Images are those in ``candidates`` (references for other images are ignored), scored in
    ``candidates``' order. Returns ``Bleu_1``..``Bleu_4``, ``METEOR`` (if ``meteor``),
    ``ROUGE_L``, ``CIDEr`` and ``SPICE`` (if ``spice``), the toolkit's corpus-level values
    unrounded. CIDEr's document frequencies come from these references, so it depends on
    which images are scored together, as in the toolkit.
    """
    _check_pairs(references, candidates)
    gts = {i: [{"caption": c} for c in references[i]] for i in candidates}
    res = {i: [{"caption": candidates[i]}] for i in candidates}

    if shutil.which("java") is None:
        skipped = [name for name, wanted in (("METEOR", meteor), ("SPICE", spice)) if wanted]
        warnings.warn(
            "java not found on PATH: tokenizing with a simple lowercase/punctuation-stripping "
            "tokenizer instead of the PTB tokenizer (scores are approximate)"
            + (f" and skipping {', '.join(skipped)}" if skipped else ""),
            stacklevel=2,
        )
        meteor = spice = False
        gts_tok = {i: [simple_tokenize(c["caption"]) for c in caps] for i, caps in gts.items()}
        res_tok = {i: [simple_tokenize(c["caption"]) for c in caps] for i, caps in res.items()}
    else:
        with toolkit_quiet():
            tokenizer = PTBTokenizer()
            gts_tok = tokenizer.tokenize(gts)
            res_tok = tokenizer.tokenize(res)

    # The same scorers, in the same order, as pycocoevalcap.eval.COCOEvalCap.evaluate.
    scorers: list[tuple[type, list[str]]] = [(Bleu, ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"])]
    if meteor:
        scorers.append((Meteor, ["METEOR"]))
    scorers += [(Rouge, ["ROUGE_L"]), (Cider, ["CIDEr"])]
    if spice:
        scorers.append((Spice, ["SPICE"]))

    scores: dict[str, float] = {}
    with toolkit_quiet():
        for make, names in scorers:
            if make is Spice:
                score = _spice(gts_tok, res_tok)
            else:
                # Bleu(4) is the toolkit's call; the others take no arguments.
                scorer = make(4) if make is Bleu else make()
                score, _ = scorer.compute_score(gts_tok, res_tok)
                del scorer  # Meteor's JVM is killed in its __del__
            values = score if isinstance(score, list) else [score]
            scores.update((name, float(v)) for name, v in zip(names, values))
    return scores


def exact_match(references: dict[int, list[str]], candidates: dict[int, str]) -> float:
    """Fraction of images in ``candidates`` whose caption equals one of its references.

    Captions are compared after :func:`simple_tokenize` (lowercase, punctuation dropped,
    whitespace collapsed), so "A dog." matches "a  dog" but not "a dog runs". COCO references
    end in a period and generated captions do not; comparing raw strings would score 0.
    """
    _check_pairs(references, candidates)
    hits = sum(
        simple_tokenize(candidates[i]) in {simple_tokenize(r) for r in references[i]} for i in candidates
    )
    return hits / len(candidates)


def score_results_file(annotation_file: str | os.PathLike, results_file: str | os.PathLike, allow_partial: bool = False,
                       **kw: Any) -> dict:
    """Score a COCO results file (``[{"image_id": int, "caption": str}, ...]``) the COCO way.

    Like ``COCOEvalCap(coco, coco.loadRes(results_file))`` with ``params["image_id"]`` set to
    the results' images: only images that have a result are scored. Returns what
    :func:`score_captions` returns (``kw`` goes to it) plus ``exact_match``. Raises
    :class:`UserError` for a missing or malformed file, a duplicate image id or an image id that
    is not in the annotations, and (unless ``allow_partial``) a file that leaves annotated
    images out: scored silently, a subset's scores would pass for the split's.
    """
    references, candidates = load_results_pairs(annotation_file, results_file, allow_partial)
    scores: dict[str, float] = score_captions(references, candidates, **kw)
    scores["exact_match"] = exact_match(references, candidates)
    return scores


def load_results_pairs(annotation_file: str | os.PathLike, results_file: str | os.PathLike,
                       allow_partial: bool = False) -> tuple[dict[int, list[str]], dict[int, str]]:
    """(references, candidates) of the images a COCO results file captions, read through
    pycocotools as :func:`score_results_file` reads them; the same :class:`UserError` s."""
    coco = _load_annotations(annotation_file)
    results = _load_results(results_file, coco)
    with contextlib.redirect_stdout(sys.stderr):
        try:
            coco_res = coco.loadRes(results)
        except AssertionError as e:  # pycocotools asserts on ids outside the annotation set
            raise UserError(f"{results_file}: {e}") from None
    image_ids = coco_res.getImgIds()
    annotated = [i for i in coco.imgs if coco.imgToAnns.get(i)]
    missing = sorted(set(annotated) - set(image_ids), key=str)
    if missing and not allow_partial:
        raise UserError(f"{results_file}: captions {len(image_ids)} of the {len(annotated)} annotated images "
                        f"(missing e.g. {', '.join(map(str, missing[:5]))}); pass --allow-partial to score those only")
    references = {i: [a["caption"] for a in coco.imgToAnns[i]] for i in image_ids}
    candidates = {i: coco_res.imgToAnns[i][0]["caption"] for i in image_ids}
    return references, candidates


def _check_pairs(references: dict[int, list[str]], candidates: dict[int, str]) -> None:
    if not candidates:
        raise ValueError("no candidate captions to score")
    missing = [i for i in candidates if not references.get(i)]
    if missing:
        raise ValueError(f"{len(missing)} image(s) have no reference captions, e.g. {missing[:5]}")


def _spice(gts: dict, res: dict) -> float:
    # SPICE fetches Stanford CoreNLP (~400 MB) on first use and its jar breaks on Java 17+
    # (tylin/coco-caption#59); both are the user's setup, not our bug. Its JVM writes to our
    # stdout file descriptor, out of redirect_stdout's reach.
    try:
        scorer = Spice()
    except OSError as e:
        raise UserError(f"SPICE needs Stanford CoreNLP 3.6.0, which could not be downloaded: {e}") from None
    try:
        with _fd1_to_stderr():
            score, _ = scorer.compute_score(gts, res)
    except subprocess.CalledProcessError as e:
        raise UserError(f"SPICE failed (exit {e.returncode}); its jar needs Java 8 or 11, see the error above") from None
    return score


@contextlib.contextmanager
def toolkit_quiet() -> Iterator[None]:
    """Keep the toolkit's chatter (BLEU's ``{'testlen': ...}``, the Java tokenizer's lines on
    file descriptor 2) out of training logs, progress bars and ``--json`` output: both
    streams go to a temporary file, replayed on stderr only if scoring fails."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        saved = os.dup(1), os.dup(2)
    except OSError:  # no file descriptors to redirect (an embedded interpreter): Python's streams only
        with contextlib.redirect_stdout(io.StringIO()):
            yield
        return
    failed, text = False, io.StringIO()
    with tempfile.TemporaryFile() as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            with contextlib.redirect_stdout(text):  # a replaced sys.stdout (pytest, notebooks) too
                yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            if failed:
                sink.seek(0)
                sys.stderr.write(text.getvalue() + sink.read().decode(errors="replace"))


@contextlib.contextmanager
def _fd1_to_stderr() -> Iterator[None]:
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no file descriptor 1: nothing to protect
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _load_annotations(path: str | os.PathLike) -> COCO:
    data = read_json(path, "annotation file")
    bad = f"{path}: not a COCO caption annotation file"
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(data.get("annotations"), list):
        raise UserError(f"{bad} (needs 'images' and 'annotations' lists)")
    for img in data["images"]:
        if not isinstance(img, dict) or "id" not in img:
            raise UserError(f"{bad} (an image has no 'id')")
    for ann in data["annotations"]:
        if not (isinstance(ann, dict) and "id" in ann and "image_id" in ann and isinstance(ann.get("caption"), str)):
            raise UserError(f"{bad} (an annotation lacks 'id', 'image_id' or a string 'caption')")
    # What COCO(annotation_file) does, minus reading the file a second time.
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(sys.stderr):
        coco.createIndex()
    return coco


def _load_results(path: str | os.PathLike, coco: COCO) -> list[dict]:
    results = read_json(path, "results file")
    if not isinstance(results, list) or not results:
        raise UserError(f"{path}: results must be a non-empty JSON list of {{\"image_id\", \"caption\"}}")
    seen: set = set()
    for k, r in enumerate(results):
        if not isinstance(r, dict) or "image_id" not in r or not isinstance(r.get("caption"), str):
            raise UserError(f"{path}: result #{k} is not an object with 'image_id' and a string 'caption'")
        image_id = r["image_id"]
        if isinstance(image_id, bool) or not isinstance(image_id, (int, str)):
            raise UserError(f"{path}: result #{k} has image_id {image_id!r}, not an integer")
        if image_id in seen:
            raise UserError(f"{path}: image {image_id} has more than one caption")
        seen.add(image_id)
    unknown = [i for i in seen if i not in coco.imgs]
    if unknown:
        raise UserError(f"{path}: {len(unknown)} image id(s) not in the annotations, e.g. {sorted(map(str, unknown))[:5]}")
    no_refs = [i for i in seen if not coco.imgToAnns.get(i)]
    if no_refs:
        raise UserError(f"{path}: {len(no_refs)} image(s) have no reference captions, e.g. {sorted(map(str, no_refs))[:5]}")
    return results


def caption_dataset(model: CaptionModel, vocab: Vocabulary, dataset, beam_size: int = 3, batch_size: int = 64,
                    device: torch.device | str = "cpu", limit: int | None = None, num_workers: int = 0,
                    max_length: int | None = None, precision: str = "fp32",
                    attention: dict[int, tuple[list[str], np.ndarray]] | None = None) -> dict[int, str]:
    """Caption every image of a ``CaptionDataset`` -> {image_id: caption}: training-time
    validation and ``scripts/evaluate_caption.py`` both caption this way. Given a dict as
    ``attention``, also fills it with {image_id: (words, their maps (T, h, w))}
    (``captioning.core.grounding`` scores them against boxes)."""
    model.eval()
    out: dict[int, str] = {}
    h, w = model.grid_shape()
    for batch in inference_batches(dataset, collate_captions, batch_size, limit, num_workers):
        hyps = generate(model, batch.images.to(device), beam_size, max_length, precision=precision)
        out.update({i: vocab.decode(hyp.tokens) for i, hyp in zip(batch.image_ids, hyps)})
        if attention is not None:
            for i, hyp in zip(batch.image_ids, hyps):
                kept = vocab.word_positions(hyp.tokens)  # the words' positions in hyp.tokens
                attention[i] = (vocab.decode_tokens(hyp.tokens), hyp.alphas[kept].float().reshape(len(kept), h, w).numpy())
    return out
