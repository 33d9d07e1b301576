"""The captioning task for the shared training loop (``captioning.core.trainer.fit``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from captioning.core.checkpoint import checkpoint_skips
from captioning.core.trainer import TrainConfig, default_param_groups, training_precision

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


def caption_loss(logits: torch.Tensor, alphas: torch.Tensor, captions: torch.Tensor, alpha_c: float):
    """Cross-entropy on every real word (padding ignored) + alpha_c * sum_i (1 - sum_t alpha_ti)^2
    averaged over captions: the doubly stochastic penalty that asks every grid cell to be
    looked at about once over the whole caption (Xu et al. 2015, section 4.2.1)."""
    targets = captions[:, 1:]  # (M, L-1)
    ce = nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=0)
    att = ((1.0 - alphas.float().sum(dim=1)) ** 2).sum(dim=1).mean()
    return ce + alpha_c * att, ce, att


class CaptionTask:
    metric = "CIDEr"

    def __init__(self, model, vocab, train_set, val_set, val_refs: dict[int, list[str]], cfg: CaptionTrainConfig,
                 trained_on: str | None = None, command: list[str] | None = None):
        from captioning.data import collate_captions

        self.model, self.vocab, self.cfg = model, vocab, cfg
        self.provenance = {"trained_on": trained_on or "unspecified data", "command": command or []}
        self._train, self._val, self.val_refs = train_set, val_set, val_refs
        self.collate = collate_captions
        self.epoch = 0
        self.scst = None
        if cfg.scst:
            from captioning.scst import ScstObjective

            refs = {r.image_id: r.captions for r in train_set.records}  # the CIDEr-D corpus
            self.scst = ScstObjective(vocab, refs, cfg.scst_samples, cfg.scst_baseline)

    def start_epoch(self, epoch: int, optimizer) -> None:
        """Called by ``fit`` before each epoch: SCST starts at ``scst_from_epoch`` with its own
        learning rates (a resumed run past that point has them in its optimizer state)."""
        self.epoch = epoch
        if self.scst is not None and epoch == self.cfg.scst_from_epoch:
            for group in optimizer.param_groups:
                group["lr"] = self.cfg.scst_lr * (self.cfg.encoder_lr / self.cfg.lr if group.get("name") == "encoder" else 1.0)

    def train_dataset(self):
        return self._train

    def param_groups(self, cfg: TrainConfig) -> list[dict]:
        return default_param_groups(self.model, cfg)

    def loss(self, model, batch, device):
        from captioning.core.transforms import augment

        batch = batch.to(device, non_blocking=True)  # from pinned memory: the copy overlaps compute
        inputs = batch.images
        if inputs.dim() == 4:  # pixels; a (B, P, C) batch is cached features, nothing to augment
            inputs = inputs.float().div_(255.0)
            if self.cfg.augment > 0:
                inputs = augment(inputs, self.cfg.augment, color=self.cfg.augment_color)  # draws from the global RNG, which resume restores
        if self.scst is not None and self.epoch >= self.cfg.scst_from_epoch:
            return self.scst.loss(model, inputs, batch.image_ids)
        logits, alphas = model(inputs, batch.captions, batch.lengths, batch.image_index)
        loss, ce, att = caption_loss(logits, alphas, batch.captions, self.cfg.alpha_c)
        return loss, {"loss": loss.detach(), "ce": ce.detach(), "att": att.detach()}  # no GPU sync per step

    @torch.no_grad()
    def validate(self, model, device) -> dict[str, float]:
        from captioning.api import caption_dataset
        from captioning.evaluation import exact_match, score_captions

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

    def save(self, path: Path, extra: dict) -> None:
        from captioning.core.checkpoint import save_checkpoint

        save_checkpoint(path, self.model, kind="caption", config=self.model.cfg.to_json(),
                        vocab=self.vocab.to_json(), extra={**self.provenance, **extra},
                        skip=checkpoint_skips(self.model))
