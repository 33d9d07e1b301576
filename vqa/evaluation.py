"""Answering VQA questions in batches: the model's answer probabilities, and a whole dataset
answered into the official results list (Antol et al. 2015), which ``vqa.metric`` scores.
Training-time validation (``vqa.training``), ``scripts/evaluate_vqa.py`` and the API
(``vqa.api``) all answer this way.
"""

from __future__ import annotations

import numpy as np
import torch

from captioning.core.data import inference_batches
from captioning.core.precision import autocast
from vqa.answers import AnswerVocab
from vqa.data import VQADataset, collate_vqa
from vqa.model import VQANet


@torch.no_grad()
def answer_scores(model: VQANet, images: torch.Tensor, questions: torch.Tensor, lengths: torch.Tensor,
                  image_index: torch.Tensor | None = None, precision: str = "fp32"):
    """Answer probabilities (M, K) (sigmoids of the logits) and the attention (M, G, P) or None.
    ``precision``: fp32, bf16 or auto (``captioning.core.precision``)."""
    with autocast(images.device, precision):
        logits, alpha = model(images, questions, lengths, image_index)
    return torch.sigmoid(logits.float()), alpha


def answer_dataset(model: VQANet, answer_vocab: AnswerVocab, dataset: VQADataset, batch_size: int = 64,
                   device: torch.device | str = "cpu", limit: int | None = None, num_workers: int = 0,
                   precision: str = "fp32", attention: dict[int, np.ndarray] | None = None) -> list[dict]:
    """Answer every question of ``dataset`` (the first ``limit`` images only, if given) ->
    the official results list ``[{"question_id", "answer"}]``, in dataset order. Given a dict
    as ``attention``, an attention-fusion model also fills it with {question_id: (G, h, w)}
    (``captioning.core.grounding`` scores them against boxes)."""
    model.eval()
    results = []
    h, w = model.grid_shape()
    for batch in inference_batches(dataset, collate_vqa, batch_size, limit, num_workers):
        batch = batch.to(device)
        probs, alpha = answer_scores(model, batch.images, batch.questions, batch.lengths, batch.image_index, precision)
        if attention is not None and alpha is not None:
            maps = alpha.float().reshape(len(batch.question_ids), -1, h, w).cpu().numpy()  # (M, G, h, w)
            attention.update(zip(batch.question_ids, maps))
        best = probs.argmax(dim=1).tolist()
        results.extend({"question_id": qid, "answer": answer_vocab.decode(i)} for qid, i in zip(batch.question_ids, best))
    return results
