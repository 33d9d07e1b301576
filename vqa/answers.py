"""Answers: the official VQA answer normalisation, and the answer vocabulary of the classifier.

The normalisation is the one of the official evaluation code (``vqaEval.py`` in
GT-Vision-Lab/VQA, the toolkit of Antol et al. 2015, "VQA: Visual Question Answering", and of
Goyal et al. 2017, VQA v2), reproduced step by step, quirks included, so that our numbers
compare with published ones:

1. ``\\n`` and ``\\t`` become spaces; the text is stripped.
2. :func:`process_punctuation`: each character of :data:`PUNCTUATION` is deleted where it
   touches a space (``"yes !"``) or anywhere when the text holds a digit-comma-digit
   (``"1,000"`` -> ``"1000"``); otherwise it becomes a space (``"black-white"`` ->
   ``"black white"``). Then a period is deleted unless a digit follows it (``"dog."`` ->
   ``"dog"``, ``"10.5"`` kept). The apostrophe, the colon and the period are not in the list.
3. :func:`process_digit_article`: lowercase, split on whitespace, number words ``none``,
   ``zero`` .. ``ten`` become digits, the articles ``a an the`` go, and contracted words
   missing their apostrophe get it back (``dont`` -> ``don't``).

Which steps the metric (:mod:`vqa.metric`) applies to which side depends on the version of the
official code it follows; :func:`vqa.metric.vqa_accuracy` says which, per protocol.

:class:`AnswerVocab` is the answer set of the classifier: the ``top_k`` most frequent
normalised answers of the training set. It counts each question's ``multiple_choice_answer``
(the most common of its 10 human answers), as the VQA v2 baselines and the bottom-up
attention code do; its soft targets score every vocabulary answer with the official accuracy.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from captioning.core.errors import UserError

# Official tables, verbatim (``manualMap``, ``articles``, ``punct``, ``contractions``).
NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES = frozenset({"a", "an", "the"})
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
               ">", "<", "@", "`", ",", "?", "!")
# Keys with a capital (``Im``, ``Ive``, ``Id've``) can never match, as the text is lowercased
# first; ``somebody'd`` -> ``somebodyd`` is reversed. Both are the official table's, kept.
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}

# The official pattern means "a period not preceded by a digit" but writes the lookbehind as
# a lookahead ``(?!<=\d)``, which always succeeds: in effect a period is dropped unless a digit
# FOLLOWS it. Kept as is, since published accuracies were computed with it.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
# The official call is ``periodStrip.sub("", text, re.UNICODE)``: the flag lands in the
# ``count`` argument, so at most re.UNICODE == 32 periods are removed.
_PERIOD_COUNT = int(re.UNICODE)


def process_punctuation(text: str) -> str:
    """Step 2 of the official normalisation (``processPunctuation``)."""
    out = text
    # The test looks at the original text, the replacement works on the running one.
    has_digit_comma = _COMMA_STRIP.search(text) is not None
    for p in PUNCTUATION:
        if p + " " in text or " " + p in text or has_digit_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, count=_PERIOD_COUNT)


def process_digit_article(text: str) -> str:
    """Step 3 of the official normalisation (``processDigitArticle``)."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def strip_whitespace(text: str) -> str:
    """Step 1 of the official normalisation: ``\\n`` and ``\\t`` become spaces, the ends are
    stripped (inner runs of spaces stay)."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_answer(text: str) -> str:
    """The official normalisation, all three steps: ``"Two"`` -> ``"2"``,
    ``"the dog."`` -> ``"dog"``, ``"yes!"`` -> ``"yes"``, ``"dont"`` -> ``"don't"``."""
    return process_digit_article(process_punctuation(strip_whitespace(text)))


def answer_accuracy(matches: int, num_answers: int) -> float:
    """Official accuracy of an answer that ``matches`` of ``num_answers`` humans gave:
    min(1, matches / 3) on each leave-one-out subset, averaged over the subsets.

    Dropping a matching human leaves ``matches - 1``; dropping another leaves ``matches``.
    With 10 humans: 1 match -> 0.3, 2 -> 0.6, 3 -> 0.9, 4 or more -> 1.0.
    """
    if num_answers <= 0:
        raise ValueError("an answer's accuracy needs at least one human answer")
    if not 0 <= matches <= num_answers:
        raise ValueError(f"matches={matches} is not within 0..{num_answers}")
    dropped_match = matches * min(1.0, (matches - 1) / 3) if matches else 0.0
    dropped_other = (num_answers - matches) * min(1.0, matches / 3)
    return (dropped_match + dropped_other) / num_answers


@dataclass
class AnswerVocab:
    """Normalised answers <-> class ids, most frequent first."""

    answers: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.index = {a: i for i, a in enumerate(self.answers)}
        if len(self.index) != len(self.answers):
            raise ValueError("answer vocabulary holds the same answer twice")

    @classmethod
    def from_annotations(cls, annotations: Sequence[dict], top_k: int = 3000) -> AnswerVocab:
        """The ``top_k`` most frequent normalised ``multiple_choice_answer`` of ``annotations``
        (the ``"annotations"`` list of a VQA annotation file). Ties go alphabetically, so a
        data set always gives the same ids; answers that normalise to nothing (``"the"``)
        are skipped. Fewer than ``top_k`` distinct answers give a smaller vocabulary."""
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, not {top_k}")
        counts = Counter()
        for i, ann in enumerate(annotations):
            answer = ann.get("multiple_choice_answer") if isinstance(ann, dict) else None
            if not isinstance(answer, str):
                raise UserError(f"annotation {i} has no 'multiple_choice_answer' string; "
                                "is this a VQA annotation file?")
            answer = normalize_answer(answer)
            if answer:
                counts[answer] += 1
        ranked = sorted(counts, key=lambda a: (-counts[a], a))
        return cls(ranked[:top_k])

    def __len__(self) -> int:
        return len(self.answers)

    def __contains__(self, answer: str) -> bool:
        return self.encode(answer) is not None

    def encode(self, answer: str) -> int | None:
        """Class id of ``answer`` once normalised; ``None`` outside the vocabulary."""
        return self.index.get(normalize_answer(answer))

    def decode(self, i: int) -> str:
        return self.answers[int(i)]

    def rank_choices(self, probs: torch.Tensor, choices: Sequence[str]) -> tuple[list[dict], list[str]]:
        """Multiple choice, the project's one rule: each candidate, as written (stripped; empty
        and repeated ones dropped), scores ``probs`` (K,) at its normalised form, so ``"Two"``
        finds ``"2"``; one outside the vocabulary scores 0 and ranks after every known one;
        ties keep the given order. -> ([{"answer", "score"}] best first, the unknown candidates).
        The answer keeps the candidate's spelling: the official check wants it word for word."""
        choices = list(dict.fromkeys(c.strip() for c in choices if c.strip()))
        if not choices:
            raise UserError("no answer choices given")
        ids = [self.encode(c) for c in choices]
        scored = [{"answer": c, "score": 0.0 if i is None else float(probs[i])} for c, i in zip(choices, ids)]
        order = sorted(range(len(choices)), key=lambda j: (ids[j] is None, -scored[j]["score"]))  # stable
        return [scored[j] for j in order], [c for c, i in zip(choices, ids) if i is None]

    def soft_target(self, answers: Iterable[str]) -> torch.Tensor:
        """(K,) float32 training target for a question's human answers: entry ``i`` is the
        official accuracy of predicting ``decode(i)`` (:func:`answer_accuracy`).

        Human answers are normalised fully here, unlike the metric, which leaves unanimous
        human answers as they are (and, under its 2016 protocol, only strips the punctuation
        of the others); the two agree on the released VQA annotations, whose answers are
        already lowercase with digits. Several entries may be nonzero and the sum may exceed
        1 (5 "yes" and 5 "no" give 1.0 each); answers outside the vocabulary add nothing.
        """
        answers = [normalize_answer(a) for a in answers]
        target = torch.zeros(len(self.answers), dtype=torch.float32)
        for answer, matches in Counter(answers).items():
            i = self.index.get(answer)
            if i is not None:
                target[i] = answer_accuracy(matches, len(answers))
        return target

    def to_json(self) -> dict:
        return {"answers": list(self.answers)}

    @classmethod
    def from_json(cls, obj: dict) -> AnswerVocab:
        answers = obj.get("answers") if isinstance(obj, dict) else None
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise UserError("answer vocabulary JSON needs an 'answers' list of strings")
        if len(set(answers)) != len(answers):
            raise UserError("answer vocabulary JSON lists the same answer twice")
        return cls(list(answers))
