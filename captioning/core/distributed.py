"""Multi-GPU and multi-node training under torchrun (DistributedDataParallel).

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; :func:`setup_distributed` joins the process
group (NCCL on GPUs, gloo on CPUs) and pins each process to its GPU. Without torchrun it
does nothing, so the same script trains on one device. ``captioning.core.trainer.fit`` then
wraps the model in DDP, shards the data with a DistributedSampler, and lets rank 0 alone
validate, log and write checkpoints.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist


def setup_distributed(backend: str | None = None, timeout_minutes: float = 60) -> tuple[int, int]:
    """(rank, world size); (0, 1) when not launched by torchrun. ``timeout_minutes`` bounds
    how long a process waits in a collective: the others wait for rank 0's validation after
    every epoch, longer than NCCL's default 10 minutes on a full COCO val set."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and backend != "gloo"
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend or ("nccl" if use_cuda else "gloo"), timeout=timedelta(minutes=timeout_minutes))
    return dist.get_rank(), dist.get_world_size()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def is_main_process() -> bool:
    """Rank 0, or the only process."""
    return not is_distributed() or dist.get_rank() == 0


def is_local_main_process() -> bool:
    """Local rank 0 (one per machine), or the only process."""
    return not is_distributed() or int(os.environ.get("LOCAL_RANK", dist.get_rank())) == 0


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
