"""The training loop shared by captioning and VQA (``fit``), and the task interface it asks.

``fit`` owns everything that is not task-specific: Adam with separate encoder and head
learning rates, gradient clipping, bf16 autocast (where the hardware has it), a tqdm bar, a
CSV log, validation after every epoch, learning-rate decay and early stopping on the
validation metric, atomic checkpoints every epoch (``last``) and at every improvement
(``best``), exact resume (optimizer, scheduler, RNG and data order), and
DistributedDataParallel under torchrun. It waits for the GPU to report a loss only every
``log_every`` steps.

A task (``captioning.training.CaptionTask``, ``vqa.training.VQATask``, both built on
:class:`TrainTask`) supplies the model, its data, its loss and its validation metric, and
prepares its model before the first step (the captioner compiles its decoder step there).
The loop never reaches into a model's parts.
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
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from captioning.core.checkpoint import (
    Checkpoint,
    checkpoint_skips,
    load_training_state,
    load_weights,
    read_checkpoint,
    save_checkpoint,
    save_training_state,
    state_path,
)
from captioning.core.distributed import is_distributed, is_main_process
from captioning.core.features import is_grid_features
from captioning.core.fileio import atomic_write
from captioning.core.precision import autocast, native_bf16
from captioning.core.sampler import BucketBatchSampler
from captioning.core.transforms import augment, to_float


@dataclass
class TrainConfig:
    epochs: int = 20  # passes over the training data (early stopping may end sooner)
    batch_size: int = 32  # images per step (per process under torchrun); each brings all its captions/questions
    lr: float = 4e-4  # decoder / head learning rate (Adam)
    encoder_lr: float = 1e-4  # for the CNN blocks being fine-tuned
    weight_decay: float = 0.0  # Adam's L2 penalty on the weights; 0 = none
    grad_clip: float = 5.0  # max gradient norm; 0 disables
    lr_decay: float = 0.8  # multiply learning rates by this when validation stalls...
    lr_patience: int = 2  # ...for this many epochs
    early_stop: int = 8  # stop after this many epochs without improvement
    augment: float = 0.0  # strength of on-device augmentation (captioning.core.transforms.augment); 0 = off
    augment_color: float = 1.0  # its colour jitter is augment * augment_color; 0 keeps colours exact
    seed: int = 0  # seeds weights, data order, dropout and augmentation
    num_workers: int = 2  # DataLoader worker processes
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    amp: bool = True  # bf16 autocast where the device computes bf16 natively (CUDA; CPUs with AVX512-BF16 or AMX)
    bucket_by_length: bool = True  # batch items of similar length together (if the dataset has sort_keys)
    log_every: int = 50  # refresh the progress bar every N steps (each refresh waits for the GPU)
    max_minutes: float = 0.0  # stop after the epoch that crosses this wall-clock budget; 0 = no budget
    progress: bool = True  # tqdm bar


def uses_bf16(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether training autocasts to bf16: under ``amp``, where the device has native bf16
    (``captioning.core.precision``; emulated bf16 would be slower than fp32)."""
    return cfg.amp and native_bf16(device)


def training_precision(cfg: TrainConfig, device: torch.device) -> str:
    """The precision (``captioning.core.precision``) of the training steps, and of validation's
    decoding, which follows them."""
    return "bf16" if uses_bf16(cfg, device) else "fp32"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:  # under torchrun: this process's GPU
        device = torch.device("cuda", torch.cuda.current_device())
    return device


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
    def prepare_model(self, model: nn.Module, device: torch.device) -> None: ...
    def start_epoch(self, epoch: int, optimizer: torch.optim.Optimizer) -> None: ...


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


class TrainTask:
    """What the captioning and VQA tasks share: their data, the images a step sees, the
    parameter groups, provenance, and saving. A task says only what is its own: ``kind``
    and ``metric``, the checkpoint's vocabulary (``vocab_json``), ``loss`` and ``validate``.
    The model must have a ``cfg`` with ``to_json`` and an ``encoder`` (``checkpoint_skips``)."""

    kind: str  # the checkpoint kind: caption or vqa
    metric: str

    def __init__(self, model: nn.Module, train_set: Dataset, val_set: Dataset | None, cfg: TrainConfig,
                 collate, trained_on: str | None = None, command: list[str] | None = None):
        self.model, self.cfg, self.collate = model, cfg, collate
        self._train, self._val = train_set, val_set
        self.provenance = {"trained_on": trained_on or "unspecified data", "command": command or []}

    def train_dataset(self) -> Dataset:
        return self._train

    def param_groups(self, cfg: TrainConfig) -> list[dict]:
        return default_param_groups(self.model, cfg)

    def prepare_model(self, model: nn.Module, device: torch.device) -> None:
        """Called by ``fit`` once, with the model on its device, before the optimizer is made
        (the captioner compiles its decoder step here); nothing by default."""

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """A batch's images as the model takes them: uint8 pixels (B, 3, S, S) become floats
        in [0, 1], augmented when ``cfg.augment`` asks; cached grid features
        (:func:`~captioning.core.features.is_grid_features`) pass through (augmenting them
        would be meaningless: their views were drawn when cached)."""
        if is_grid_features(images):
            return images
        images = to_float(images)
        if self.cfg.augment > 0:  # draws from the global RNG, which resume restores
            images = augment(images, self.cfg.augment, color=self.cfg.augment_color)
        return images

    def start_epoch(self, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        """Called by ``fit`` before each epoch (the captioner switches to SCST there); nothing by default."""

    def vocab_json(self) -> dict:
        raise NotImplementedError

    def save(self, path: Path, extra: dict) -> None:
        save_checkpoint(path, self.model, kind=self.kind, config=self.model.cfg.to_json(), vocab=self.vocab_json(),
                        extra={**self.provenance, **extra}, skip=checkpoint_skips(self.model))


def make_adam(param_groups: list[dict], cfg: TrainConfig, device: torch.device) -> torch.optim.Adam:
    """Adam with its fused kernel (one kernel for all parameters) where the device has one:
    CUDA, and CPUs since torch 2.4, where it also beats the per-tensor loop (docs/performance.md).
    Elsewhere torch's default (multi-tensor ``foreach`` on GPUs, a loop otherwise)."""
    fused = device.type in ("cuda", "cpu")
    try:
        return torch.optim.Adam(param_groups, weight_decay=cfg.weight_decay, fused=fused or None)
    except RuntimeError:  # an older torch without the fused CPU kernel
        return torch.optim.Adam(param_groups, weight_decay=cfg.weight_decay)


def clip_and_step(optimizer: torch.optim.Optimizer, cfg: TrainConfig, device: torch.device) -> None:
    """Clip the gradients' global norm (one multi-tensor kernel per step on GPUs, not one per
    parameter), then step."""
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], cfg.grad_clip,
                                       foreach=device.type == "cuda")
    optimizer.step()


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
    # Under torchrun each process takes its slice of every global batch (captioning.core.sampler).
    # Workers are not persistent: they must see the dataset's epoch (cached feature views).
    keys = getattr(ds, "sort_keys", None)
    rank, world = (dist.get_rank(), dist.get_world_size()) if is_distributed() else (0, 1)
    sampler = BucketBatchSampler(keys() if keys and cfg.bucket_by_length else None, len(ds), cfg.batch_size,
                                 seed=cfg.seed, rank=rank, world_size=world)
    sampler.set_epoch(epoch)
    return DataLoader(ds, batch_sampler=sampler, collate_fn=task.collate, num_workers=cfg.num_workers,
                      pin_memory=device.type == "cuda", prefetch_factor=4 if cfg.num_workers else None)


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
    """One pass over ``loader``: the mean of each logged value over the steps (and over the
    processes under torchrun). A task may log floats or tensors; tensors are summed where they
    are, so a step need not wait for the GPU to finish."""
    model.train()
    totals: dict[str, Any] = {}
    n = 0
    show = cfg.progress and is_main_process()
    bar = tqdm(loader, desc=f"epoch {state.epoch + 1}", disable=not show, leave=False, dynamic_ncols=True)
    for batch in bar:
        with autocast(device, training_precision(cfg, device)):
            loss, logs = task.loss(model, batch, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_and_step(optimizer, cfg, device)
        state.step += 1
        n += 1
        for k, v in logs.items():
            v = v.detach().double() if isinstance(v, torch.Tensor) else v
            totals[k] = totals[k] + v if k in totals else v
        if show and (n == 1 or n % max(cfg.log_every, 1) == 0):
            bar.set_postfix({k: f"{float(v):.3f}" for k, v in logs.items()})
    return _mean_over_processes({k: float(v) / max(n, 1) for k, v in totals.items()}, device)


def _mean_over_processes(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average the processes' epoch means, so the log shows the loss of the global batch
    (exactly, when each process's batch holds as many target words)."""
    if is_distributed() and values:
        t = torch.tensor(list(values.values()), dtype=torch.float64, device=_comm_device(device))
        dist.all_reduce(t)
        values = dict(zip(values, (t / dist.get_world_size()).tolist()))
    return {f"train_{k}": v for k, v in values.items()}


def _comm_device(device: torch.device) -> torch.device:
    return device if dist.get_backend() == "nccl" else torch.device("cpu")


def fit(task: Task, cfg: TrainConfig, out_dir: str | os.PathLike,
        resume: Checkpoint | str | os.PathLike | None = None) -> LoopState:
    """Train ``task.model`` for ``cfg.epochs`` epochs, writing ``last``/``best`` checkpoints and
    ``log.csv`` under ``out_dir``. ``resume``: the ``last.safetensors`` of an earlier run, as
    the training script has already read it (a :class:`Checkpoint`), or its path; its
    training state is read from beside it."""
    out_dir = Path(out_dir)
    device = resolve_device(cfg.device)
    rank = dist.get_rank() if is_distributed() else 0
    torch.manual_seed(cfg.seed + rank)  # each process its own dropout and augmentation draws
    model = task.model.to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # one input size: find the fastest convolutions once
    task.prepare_model(model, device)
    optimizer = make_adam(task.param_groups(cfg), cfg, device)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=cfg.lr_decay,
                                                           patience=cfg.lr_patience)
    state = LoopState()
    if resume is not None:
        ckpt = resume if isinstance(resume, Checkpoint) else read_checkpoint(resume)
        load_weights(model, ckpt, checkpoint_skips(model) if hasattr(getattr(model, "cfg", None), "encoder") else ())
        saved = load_training_state(state_path(ckpt.path))
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = LoopState(**saved["loop"])
        _set_rng_state(saved["rng"], rank, device)
    train_model: nn.Module = model
    if is_distributed():
        # Every trainable parameter takes part in every forward (a frozen CNN has none), so
        # DDP needs no find_unused_parameters and its extra pass over the graph.
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    start = time.time()
    while state.epoch < cfg.epochs:
        t0 = time.time()
        task.start_epoch(state.epoch, optimizer)
        loader = _loader(task, cfg, state.epoch, device)
        row: dict[str, Any] = {"epoch": state.epoch + 1}
        row.update(train_one_epoch(task, train_model, loader, optimizer, cfg, device, state))
        if is_main_process():
            row.update(task.validate(model, device))
        elapsed = _broadcast_metrics(row, task.metric, time.time() - start, device)
        row["lr"] = optimizer.param_groups[0]["lr"]
        row["epoch_seconds"] = round(time.time() - t0, 2)
        state.epoch += 1
        validated = f"val_{task.metric}" in row
        metric = float(row.get(f"val_{task.metric}", -math.inf))
        if validated:  # without validation data there is nothing to decay or stop on
            scheduler.step(metric)
        improved = metric > state.best
        state.best = max(state.best, metric)
        state.bad_epochs = 0 if improved or not validated else state.bad_epochs + 1
        state.history.append(row)
        rng = _gather_rng_state(device)
        if is_main_process():
            extra = {"epoch": state.epoch, "metrics": row, "train_config": asdict(cfg)}
            if improved:
                task.save(out_dir / "best.safetensors", extra)
            task.save(out_dir / "last.safetensors", extra)
            save_training_state(out_dir / "last.state.pt", {
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "loop": asdict(state), "train_config": asdict(cfg), "rng": rng})
            _write_log(out_dir / "log.csv", state.history)
            tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        if state.bad_epochs >= cfg.early_stop:
            break
        if cfg.max_minutes and elapsed > cfg.max_minutes * 60:
            break
    if is_distributed():
        # Only rank 0 writes checkpoints; the others would otherwise return while it is still
        # writing, and whatever follows fit (a resume, evaluating best.safetensors) would read
        # a file that is not there yet.
        dist.barrier()
    return state


def _broadcast_metrics(row: dict, metric: str, elapsed: float, device: torch.device) -> float:
    """Under torchrun only rank 0 validates, and clocks differ: every rank takes rank 0's
    metric (to step its scheduler and early-stop) and elapsed time (for ``max_minutes``), so
    all stop in lockstep. Sets the metric in ``row``; returns the elapsed seconds."""
    if not is_distributed():
        return elapsed
    value = torch.tensor([float(row.get(f"val_{metric}", -math.inf)), elapsed], dtype=torch.float64,
                         device=_comm_device(device))
    dist.broadcast(value, 0)
    if math.isfinite(float(value[0])):  # -inf: nothing was validated
        row[f"val_{metric}"] = float(value[0])
    return float(value[1])


def _gather_rng_state(device: torch.device) -> dict:
    """This process's RNG state, and under torchrun every process's (``ranks``), for rank 0 to save."""
    state = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
    if is_distributed():
        ranks: list = [None] * dist.get_world_size()
        dist.all_gather_object(ranks, state)
        state = {**ranks[0], "ranks": ranks}
    return state


def _set_rng_state(saved: dict, rank: int, device: torch.device) -> None:
    """Restore this process's RNG. A run resumed on more processes than it was saved from
    keeps the fresh seed on the new ones (the data order does not depend on it)."""
    ranks = saved.get("ranks") or [saved]
    if rank >= len(ranks):
        return
    torch.set_rng_state(ranks[rank]["torch"])
    if device.type == "cuda" and ranks[rank].get("cuda") is not None:
        torch.cuda.set_rng_state(ranks[rank]["cuda"], device)
