"""The training loop shared by captioning and VQA, and the captioning task that plugs into it.

``fit`` owns everything that is not task-specific: Adam with separate encoder and head
learning rates, gradient clipping, bf16 autocast on CUDA, a tqdm bar, a CSV log, validation
after every epoch, learning-rate decay and early stopping on the validation metric, atomic
checkpoints every epoch (``last``) and at every improvement (``best``), exact resume
(optimizer, scheduler, RNG and data order), and DistributedDataParallel under torchrun.

A task (:class:`CaptionTask` here, ``vqa.training.VQATask``) supplies the model, its data,
its loss and its validation metric.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler
from tqdm import tqdm

from .checkpoint import load_training_state, read_checkpoint, load_weights, save_training_state, state_path
from .fileio import atomic_write


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 32  # images per step (per process under torchrun); each brings all its captions/questions
    lr: float = 4e-4  # decoder / head learning rate (Adam)
    encoder_lr: float = 1e-4  # for the CNN blocks being fine-tuned
    weight_decay: float = 0.0
    grad_clip: float = 5.0  # max gradient norm; 0 disables
    lr_decay: float = 0.8  # multiply learning rates by this when validation stalls...
    lr_patience: int = 2  # ...for this many epochs
    early_stop: int = 8  # stop after this many epochs without improvement
    augment: float = 0.0  # strength of on-device augmentation (captioning.transforms.augment); 0 = off
    seed: int = 0
    num_workers: int = 2  # DataLoader worker processes
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    amp: bool = True  # bf16 autocast on CUDA
    max_minutes: float = 0.0  # stop after the epoch that crosses this wall-clock budget; 0 = no budget
    progress: bool = True  # tqdm bar


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:  # under torchrun: this process's GPU
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def is_main_process() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class Task(Protocol):
    """What ``fit`` needs from a task."""

    model: nn.Module
    metric: str  # the validation key that decides "best", higher is better

    def train_dataset(self) -> Dataset: ...
    def collate(self, items: list) -> Any: ...
    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]: ...
    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float]: ...
    def save(self, path: Path, extra: dict) -> None: ...
    def param_groups(self, cfg: TrainConfig) -> list[dict]: ...


def default_param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """Two Adam groups: the CNN's trainable blocks at ``encoder_lr``, everything else at ``lr``."""
    enc, rest = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (enc if name.startswith("encoder.") else rest).append(p)
    groups = [{"params": rest, "lr": cfg.lr, "name": "head"}]
    if enc:
        groups.append({"params": enc, "lr": cfg.encoder_lr, "name": "encoder"})
    return groups


@dataclass
class LoopState:
    epoch: int = 0  # epochs completed
    step: int = 0
    best: float = -math.inf
    bad_epochs: int = 0
    history: list[dict] = field(default_factory=list)


def _loader(task: Task, cfg: TrainConfig, epoch: int, device: torch.device) -> DataLoader:
    ds = task.train_dataset()
    if hasattr(ds, "set_epoch"):
        ds.set_epoch(epoch)
    # The order of epoch e depends only on (seed, e): a resumed run sees the same batches.
    if dist.is_available() and dist.is_initialized():
        sampler = DistributedSampler(ds, shuffle=True, seed=cfg.seed, drop_last=False)
        sampler.set_epoch(epoch)
    else:
        sampler = RandomSampler(ds, generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch))
    return DataLoader(ds, batch_size=cfg.batch_size, sampler=sampler, collate_fn=task.collate,
                      num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                      persistent_workers=False, prefetch_factor=4 if cfg.num_workers else None)


def _write_log(path: Path, history: list[dict]) -> None:
    keys = list(dict.fromkeys(k for row in history for k in row))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(history)
    with atomic_write(path) as f:
        f.write(buf.getvalue())


def train_one_epoch(task: Task, model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    cfg: TrainConfig, device: torch.device, state: LoopState) -> dict[str, float]:
    model.train()
    totals: dict[str, float] = {}
    n = 0
    bar = tqdm(loader, desc=f"epoch {state.epoch + 1}", disable=not (cfg.progress and is_main_process()),
               leave=False, dynamic_ncols=True)
    for batch in bar:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda"):
            loss, logs = task.loss(model, batch, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], cfg.grad_clip)
        optimizer.step()
        state.step += 1
        n += 1
        for k, v in logs.items():
            totals[k] = totals.get(k, 0.0) + v
        bar.set_postfix({k: f"{v:.3f}" for k, v in logs.items()})
    return {f"train_{k}": v / max(n, 1) for k, v in totals.items()}


def fit(task: Task, cfg: TrainConfig, out_dir: str | os.PathLike, resume: str | os.PathLike | None = None) -> LoopState:
    """Train ``task.model`` for ``cfg.epochs`` epochs, writing ``last``/``best`` checkpoints and
    ``log.csv`` under ``out_dir``. ``resume`` names a ``last.safetensors`` written by an earlier run."""
    out_dir = Path(out_dir)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = task.model.to(device)
    optimizer = torch.optim.Adam(task.param_groups(cfg), weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=cfg.lr_decay,
                                                           patience=cfg.lr_patience)
    state = LoopState()
    if resume is not None:
        ckpt = read_checkpoint(resume)
        load_weights(model, ckpt, model.cfg.checkpoint_skips() if hasattr(model.cfg, "checkpoint_skips") else ())
        saved = load_training_state(state_path(resume))
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = LoopState(**saved["loop"])
        torch.set_rng_state(saved["rng"]["torch"])
        if device.type == "cuda" and saved["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(saved["rng"]["cuda"], device)
    train_model: nn.Module = model
    if dist.is_available() and dist.is_initialized():
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    start = time.time()
    while state.epoch < cfg.epochs:
        t0 = time.time()
        loader = _loader(task, cfg, state.epoch, device)
        row: dict[str, Any] = {"epoch": state.epoch + 1}
        row.update(train_one_epoch(task, train_model, loader, optimizer, cfg, device, state))
        if is_main_process():
            row.update(task.validate(model, device))
        row.update(_broadcast_metrics(row, task.metric))
        row["lr"] = optimizer.param_groups[0]["lr"]
        row["epoch_seconds"] = round(time.time() - t0, 2)
        state.epoch += 1
        metric = float(row.get(f"val_{task.metric}", -math.inf))
        scheduler.step(metric)
        improved = metric > state.best
        state.best = max(state.best, metric)
        state.bad_epochs = 0 if improved else state.bad_epochs + 1
        state.history.append(row)
        if is_main_process():
            extra = {"epoch": state.epoch, "metrics": row, "train_config": asdict(cfg)}
            if improved:
                task.save(out_dir / "best.safetensors", extra)
            task.save(out_dir / "last.safetensors", extra)
            save_training_state(out_dir / "last.state.pt", {
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "loop": asdict(state), "train_config": asdict(cfg),
                "rng": {"torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}})
            _write_log(out_dir / "log.csv", state.history)
            tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        if state.bad_epochs >= cfg.early_stop:
            break
        if cfg.max_minutes and time.time() - start > cfg.max_minutes * 60:
            break
    return state


def _broadcast_metrics(row: dict, metric: str) -> dict:
    """Under torchrun only rank 0 validates; every rank needs the metric to step its
    scheduler and early-stop in lockstep."""
    if not (dist.is_available() and dist.is_initialized()):
        return {}
    value = torch.tensor([float(row.get(f"val_{metric}", -math.inf))], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        value = value.cuda()
    dist.broadcast(value, 0)
    return {f"val_{metric}": float(value.item())}


# --- the captioning task -------------------------------------------------------------------

@dataclass
class CaptionTrainConfig(TrainConfig):
    alpha_c: float = 1.0  # weight of the doubly stochastic attention penalty (Xu et al. eq. 14)
    max_caption_length: int = 50  # longer training captions are cut (in words)
    val_beam_size: int = 1  # decoding used for validation CIDEr (1 = greedy)
    val_max_images: int = 0  # validate on the first N val images only; 0 = all


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
        from .data import collate_captions

        self.model, self.vocab, self.cfg = model, vocab, cfg
        self.provenance = {"trained_on": trained_on or "unspecified data", "command": command or []}
        self._train, self._val, self.val_refs = train_set, val_set, val_refs
        self.collate = collate_captions

    def train_dataset(self):
        return self._train

    def param_groups(self, cfg: TrainConfig) -> list[dict]:
        return default_param_groups(self.model, cfg)

    def loss(self, model, batch, device):
        from .transforms import augment

        batch = batch.to(device, non_blocking=True)
        inputs = batch.images
        if inputs.dim() == 4:  # pixels; a (B, P, C) batch is cached features, nothing to augment
            inputs = inputs.float().div_(255.0)
            if self.cfg.augment > 0:
                inputs = augment(inputs, self.cfg.augment)  # draws from the global RNG, which resume restores
        logits, alphas = model(inputs, batch.captions, batch.lengths, batch.image_index)
        loss, ce, att = caption_loss(logits, alphas, batch.captions, self.cfg.alpha_c)
        return loss, {"loss": loss.item(), "ce": ce.item(), "att": att.item()}

    @torch.no_grad()
    def validate(self, model, device) -> dict[str, float]:
        from .api import caption_dataset
        from .evaluation import exact_match, score_captions

        if self._val is None:
            return {}
        model.eval()
        cands = caption_dataset(model, self.vocab, self._val, beam_size=self.cfg.val_beam_size,
                                batch_size=max(self.cfg.batch_size, 32), device=device,
                                limit=self.cfg.val_max_images or None, num_workers=self.cfg.num_workers)
        refs = {i: self.val_refs[i] for i in cands}
        scores = score_captions(refs, cands, meteor=False)
        scores["exact_match"] = exact_match(refs, cands)
        return {f"val_{k}": float(v) for k, v in scores.items()}

    def save(self, path: Path, extra: dict) -> None:
        from .checkpoint import save_checkpoint

        save_checkpoint(path, self.model, kind="caption", config=self.model.cfg.to_json(),
                        vocab=self.vocab.to_json(), extra={**self.provenance, **extra},
                        skip=self.model.cfg.checkpoint_skips())
