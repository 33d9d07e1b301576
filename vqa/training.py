"""The VQA task for the shared training loop (``captioning.core.trainer.fit``).

Loss: binary cross-entropy between each answer's logit and its soft VQA score (the official
accuracy the answer would get from the ten humans, :meth:`vqa.answers.AnswerVocab.soft_target`),
summed over the K answers and averaged over questions, as in Teney et al. 2018 ("Tips and
Tricks for Visual Question Answering"). It uses every human answer, not only the most common
one, and lets several answers be right at once (5 "yes" and 5 "no" make both worth 1.0);
Teney et al. found it clearly better than a softmax. The model's scores are therefore
sigmoids, as in the Hugging Face VQA pipeline.

Validation answers the validation split (``vqa.evaluation.answer_dataset``) and scores it with the
official metric (``vqa.metric.evaluate``): ``val_accuracy`` picks the best checkpoint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from captioning.core.trainer import TrainConfig, TrainTask, training_precision
from captioning.core.vocab import Vocabulary
from vqa.answers import AnswerVocab
from vqa.data import VQADataset, collate_vqa
from vqa.evaluation import answer_dataset
from vqa.metric import evaluate


@dataclass
class VQATrainConfig(TrainConfig):
    lr: float = 1e-3  # head learning rate (Adam), as Kazemi & Elqursh 2017
    val_max_images: int = 0  # validate on the first N val images only; 0 = all


def vqa_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Soft-target binary cross-entropy: logits, targets (M, K) -> scalar (sum over K, mean over M)."""
    return F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="sum") / logits.size(0)


def soft_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean VQA score of the top answer: the official accuracy for in-vocabulary answers."""
    return targets.gather(1, logits.argmax(dim=1, keepdim=True)).mean()


class VQATask(TrainTask):
    kind = "vqa"
    metric = "accuracy"

    def __init__(self, model: nn.Module, question_vocab: Vocabulary, answer_vocab: AnswerVocab,
                 train_set: VQADataset, val_set: VQADataset | None, val_annotations: list[dict] | None,
                 cfg: VQATrainConfig, trained_on: str | None = None, command: list[str] | None = None):
        super().__init__(model, train_set, val_set, cfg, collate_vqa, trained_on, command)
        self.question_vocab, self.answer_vocab = question_vocab, answer_vocab
        self._val_annotations = {a["question_id"]: a for a in val_annotations or []}

    def vocab_json(self) -> dict:
        return {"questions": self.question_vocab.to_json(), "answers": self.answer_vocab.to_json()}

    def loss(self, model, batch, device):
        batch = batch.to(device, non_blocking=True)
        logits, _ = model(self.inputs(batch.images), batch.questions, batch.lengths, batch.image_index)
        loss = vqa_loss(logits, batch.targets)
        # Tensors, not floats: fit() sums them where they are, so a step does not wait for the GPU.
        return loss, {"loss": loss.detach(), "accuracy": 100 * soft_accuracy(logits.detach(), batch.targets)}

    @torch.no_grad()
    def validate(self, model, device) -> dict[str, float]:
        if self._val is None:
            return {}
        results = answer_dataset(model, self.answer_vocab, self._val, batch_size=max(self.cfg.batch_size, 32),
                                 device=device, limit=self.cfg.val_max_images or None,
                                 num_workers=self.cfg.num_workers, precision=training_precision(self.cfg, device))
        scores = evaluate(results, None, [self._val_annotations[r["question_id"]] for r in results])
        row = {"val_accuracy": scores["exact"]["overall"]}
        for answer_type, value in scores["exact"]["perAnswerType"].items():
            row[f"val_accuracy_{re.sub(r'[^a-z0-9]+', '_', answer_type.lower())}"] = value
        return row
