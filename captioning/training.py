"""The captioning task for the shared training loop (``captioning.core.trainer.fit``): the
captioner's training config, its loss (Xu et al. 2015, eq. 14), and validation by CIDEr."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from captioning.core.distributed import is_distributed
from captioning.core.errors import UserError
from captioning.core.grounding import attention_supervision_loss
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
    # Hard attention (--attention hard; Xu et al. section 4.1). The authors' constants, which
    # weigh terms summed over captions and steps (hard_attention_loss keeps their weight).
    hard_reinforce: float = 0.1  # hard attention: weight of the REINFORCE term (lambda_r)
    hard_entropy: float = 0.002  # hard attention: weight of the attention entropy bonus (lambda_e)
    hard_expect: float = 0.5  # hard attention: probability that a minibatch uses the expected context, not samples
    # Weight of the box supervision of object words' attention (Liu et al. 2017; needs
    # train_caption.py --instances: captioning.core.grounding.AttentionTargets). 0: none.
    attention_supervision: float = 0.0
    # The supervision's target map over the grid: each cell's box cover to this power, normalised
    # (1: the region itself; 2 weighs the cells the box fills over those it clips).
    attention_target_power: float = 1.0


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


def hard_attention_loss(decoder, logits: torch.Tensor, alphas: torch.Tensor, captions: torch.Tensor,
                        cfg: CaptionTrainConfig):
    """The hard-attention objective (Xu et al. 2015, section 4.1; the authors' capgen.py):
    :func:`caption_loss` + lambda_r * sum_{m,t} (R_m - b) log alpha_t[s_t] - lambda_e * sum_{m,t} H(alpha_t).

    logits (M, L-1, V) and alphas (M, L-1, P) from teacher forcing (padded, not packed: R is
    per caption), whose sampled cells s_t are ``decoder.last_cells`` (M, L-1), or None when
    this minibatch used the expected context (then no REINFORCE term, as in the authors'
    code, where it cancels). R_m is caption m's mean word NLL (detached), b the moving-average
    baseline ``decoder.reinforce_baseline`` (b <- 0.9 b + 0.1 mean R after the step; the
    step uses the old b). The authors' lambdas weigh sums over captions and steps beside a
    cross-entropy summed over steps and averaged over captions; ours is averaged over words,
    so their sums are scaled by captions / words to keep the terms' weights relative to it.
    Unlike the original, padded steps count nothing. Updates the baseline; returns (loss, logs)."""
    loss, ce, att = caption_loss(logits, alphas, captions, cfg.alpha_c)
    targets = captions[:, 1:]  # (M, L-1)
    real = targets != 0
    words = real.sum()
    scale = captions.size(0) / words
    nll = nn.functional.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")  # (M, L-1)
    reward = ((nll * real).sum(1) / real.sum(1)).detach()  # (M,) R: mean word NLL, lower is better
    a = alphas.float()
    entropy = -(a * a.clamp_min(1e-12).log()).sum(-1)  # (M, L-1) H(alpha_t)
    entropy_sum = (entropy * real).sum()
    baseline = decoder.reinforce_baseline.detach().clone()
    reinforce = loss.new_zeros(())
    if decoder.last_cells is not None:
        logp = a.gather(2, decoder.last_cells.unsqueeze(2)).squeeze(2).clamp_min(1e-12).log()  # (M, L-1) log p(s_t)
        reinforce = cfg.hard_reinforce * scale * ((reward - baseline).unsqueeze(1) * logp * real).sum()
    loss = loss + reinforce - cfg.hard_entropy * scale * entropy_sum
    with torch.no_grad():
        decoder.reinforce_baseline.mul_(0.9).add_(0.1 * _mean_over_processes(reward.mean()))
    return loss, {"loss": loss.detach(), "ce": ce.detach(), "att": att.detach(), "reinforce": reinforce.detach(),
                  "baseline": baseline, "entropy": (entropy_sum / words).detach()}


def _mean_over_processes(value: torch.Tensor) -> torch.Tensor:
    """A scalar averaged over the torchrun processes (itself alone): the hard-attention
    baseline follows the global batch, and every replica keeps the same."""
    if not is_distributed():
        return value
    import torch.distributed as dist

    comm = value.detach().to("cpu" if dist.get_backend() != "nccl" else value.device, torch.float64)
    dist.all_reduce(comm)
    return (comm / dist.get_world_size()).to(value.device, value.dtype)


def check_supervision(cfg: CaptionTrainConfig, has_boxes: bool) -> None:
    """Box supervision takes both halves: a weight and the training pictures' boxes."""
    if (cfg.attention_supervision > 0) != has_boxes:
        raise UserError("attention supervision needs both a weight (--attention-supervision > 0) and the "
                        "training pictures' boxes (--instances)")


class CaptionTask(TrainTask):
    """Teacher-forced cross-entropy with the doubly stochastic attention penalty; validation
    captions the val images and scores them with the coco-caption toolkit's CIDEr."""

    kind = "caption"
    metric = "CIDEr"

    def __init__(self, model, vocab, train_set, val_set, val_refs: dict[int, list[str]], cfg: CaptionTrainConfig,
                 trained_on: str | None = None, command: list[str] | None = None, attention_targets=None):
        """``attention_targets``: a ``captioning.core.grounding.AttentionTargets`` of the
        training pictures, which ``cfg.attention_supervision`` > 0 needs."""
        super().__init__(model, train_set, val_set, cfg, collate_captions, trained_on, command)
        check_supervision(cfg, attention_targets is not None)
        self.vocab, self.val_refs, self.attention_targets = vocab, val_refs, attention_targets
        self.epoch = 0
        self.scst = None
        if cfg.scst:
            from captioning.scst import ScstObjective

            refs = {r.image_id: r.captions for r in train_set.records}  # the CIDEr-D corpus
            self.scst = ScstObjective(vocab, refs, cfg.scst_samples, cfg.scst_baseline)
        model.decoder.expect_prob = cfg.hard_expect

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
        decoder = model.module.decoder if isinstance(model, nn.parallel.DistributedDataParallel) else model.decoder
        if decoder.cfg.attention == "hard":
            logits, alphas = model(inputs, batch.captions, batch.lengths, batch.image_index)
            loss, logs = hard_attention_loss(decoder, logits, alphas, batch.captions, self.cfg)
        else:
            logits, alphas = model(inputs, batch.captions, batch.lengths, batch.image_index, packed=True)
            loss, ce, att = caption_loss(logits, alphas, batch.captions, self.cfg.alpha_c)
            logs = {"loss": loss.detach(), "ce": ce.detach(), "att": att.detach()}  # no GPU sync per step
        if self.attention_targets is not None:  # alphas (M, L-1, P) in caption order, as the targets
            target, mask = self.attention_targets(batch.captions, batch.image_index, batch.image_ids)
            sup = attention_supervision_loss(alphas, target, mask)
            loss = loss + self.cfg.attention_supervision * sup
            logs.update(loss=loss.detach(), sup=sup.detach())
        return loss, logs

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
