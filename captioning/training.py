"""The captioning task for the shared training loop (``captioning.core.trainer.fit``): the
captioner's training config, its loss (Xu et al. 2015, eq. 14), and validation by CIDEr."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from captioning.core.errors import UserError
from captioning.core.trainer import TrainConfig, TrainTask, training_precision
from captioning.data import collate_captions
from captioning.decoder import PackedLogits
from captioning.evaluation import caption_dataset, exact_match, score_captions


@dataclass
class CaptionTrainConfig(TrainConfig):
    alpha_c: float = 1.0  # weight of the doubly stochastic attention penalty (Xu et al. eq. 14)
    max_caption_length: int = 50  # longer training captions are cut (in words)
    val_beam_size: int = 1  # decoding used for validation CIDEr (1 = greedy)
    val_max_images: int = 0  # validate on the first N val images only; 0 = all
    scst: bool = False  # self-critical sequence training on CIDEr-D (captioning.scst) instead of cross-entropy
    scst_from_epoch: int = 0  # with scst: cross-entropy for the first N epochs, SCST after them
    scst_samples: int = 5  # captions sampled per image and step
    scst_baseline: str = "mean"  # mean (reward of the image's other samples) or greedy (of its greedy caption)
    scst_lr: float = 5e-5  # decoder learning rate of the SCST epochs (the encoder's is scaled alike)
    compile: bool = False  # torch.compile the decoder step (for CUDA; on a CPU it needs a C++ compiler)
    # With compile: teacher forcing in padded steps of static shapes, replayed as CUDA graphs
    # on CUDA (AttentionDecoder.compile_step; on a CPU only slower, docs/performance.md).
    static_shapes: bool = False


def caption_loss(logits, alphas: torch.Tensor, captions: torch.Tensor, alpha_c: float):
    """Cross-entropy on every real word (padding ignored) + alpha_c * sum_i (1 - sum_t alpha_ti)^2
    averaged over captions: the doubly stochastic penalty that asks every grid cell to be
    looked at about once over the whole caption (Xu et al. 2015, section 4.2.1).
    ``logits``: (M, L-1, V), or the decoder's ``PackedLogits`` (no padding to skip)."""
    if isinstance(logits, PackedLogits):
        ce = nn.functional.cross_entropy(logits.logits.float(), logits.targets)
    else:
        targets = captions[:, 1:]  # (M, L-1)
        ce = nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=0)
    att = ((1.0 - alphas.float().sum(dim=1)) ** 2).sum(dim=1).mean()
    return ce + alpha_c * att, ce, att


class CaptionTask(TrainTask):
    """Teacher-forced cross-entropy with the doubly stochastic attention penalty; validation
    captions the val images and scores them with the coco-caption toolkit's CIDEr."""

    kind = "caption"
    metric = "CIDEr"

    def __init__(self, model, vocab, train_set, val_set, val_refs: dict[int, list[str]], cfg: CaptionTrainConfig,
                 trained_on: str | None = None, command: list[str] | None = None):
        super().__init__(model, train_set, val_set, cfg, collate_captions, trained_on, command)
        self.vocab, self.val_refs = vocab, val_refs
        self.epoch = 0
        self.scst = None
        if cfg.scst:
            from captioning.scst import ScstObjective

            refs = {r.image_id: r.captions for r in train_set.records}  # the CIDEr-D corpus
            self.scst = ScstObjective(vocab, refs, cfg.scst_samples, cfg.scst_baseline)

    def vocab_json(self) -> dict:
        return self.vocab.to_json()

    def prepare_model(self, model, device) -> None:
        """With ``compile``: the decoder's teacher-forcing step compiled (``AttentionDecoder.compile_step``)."""
        if self.cfg.static_shapes and not self.cfg.compile:
            raise UserError("--static-shapes shapes the compiled step: use it with --compile (alone it would only be slower)")
        if self.cfg.compile:
            model.decoder.compile_step(static=self.cfg.static_shapes)

    def start_epoch(self, epoch: int, optimizer) -> None:
        """Called by ``fit`` before each epoch: SCST starts at ``scst_from_epoch`` with its own
        learning rates (a resumed run past that point has them in its optimizer state)."""
        self.epoch = epoch
        if self.scst is not None and epoch == self.cfg.scst_from_epoch:
            for group in optimizer.param_groups:
                group["lr"] = self.cfg.scst_lr * (self.cfg.encoder_lr / self.cfg.lr if group.get("name") == "encoder" else 1.0)

    def loss(self, model, batch, device):
        batch = batch.to(device, non_blocking=True)  # from pinned memory: the copy overlaps compute
        inputs = self.inputs(batch.images)
        if self.scst is not None and self.epoch >= self.cfg.scst_from_epoch:
            return self.scst.loss(model, inputs, batch.image_ids)
        logits, alphas = model(inputs, batch.captions, batch.lengths, batch.image_index, packed=True)
        loss, ce, att = caption_loss(logits, alphas, batch.captions, self.cfg.alpha_c)
        return loss, {"loss": loss.detach(), "ce": ce.detach(), "att": att.detach()}  # no GPU sync per step

    @torch.no_grad()
    def validate(self, model, device) -> dict[str, float]:
        if self._val is None:
            return {}
        model.eval()
        cands = caption_dataset(model, self.vocab, self._val, beam_size=self.cfg.val_beam_size,
                                batch_size=max(self.cfg.batch_size, 32), device=device,
                                limit=self.cfg.val_max_images or None, num_workers=self.cfg.num_workers,
                                precision=training_precision(self.cfg, device))
        refs = {i: self.val_refs[i] for i in cands}
        scores = score_captions(refs, cands, meteor=False)
        scores["exact_match"] = exact_match(refs, cands)
        return {f"val_{k}": float(v) for k, v in scores.items()}
