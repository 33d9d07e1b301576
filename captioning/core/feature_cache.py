"""A cache of frozen-encoder features: encode every image once, train the decoder many times.

With a frozen CNN the grid features of an image never change, so re-encoding it every epoch
wastes most of the compute (on a CPU, nearly all of it). :func:`cache_features` runs the
encoder once over an image source and stores the grids as fp16 in a ``.npy`` file,
optionally with several augmented *views* of each image so that augmentation survives the
caching; :class:`CachedFeatures` then stands in for the image source in ``CaptionDataset``
(or the VQA dataset), yielding (P, C) grids instead of pixels. Models accept either: a
(B, 3, S, S) batch is encoded, a (B, P, C) batch is taken as features.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from captioning.core.distributed import is_distributed, is_local_main_process
from captioning.core.encoders import encode_images
from captioning.core.errors import UserError
from captioning.core.fileio import atomic_path, write_json
from captioning.core.transforms import augment, to_float


def cache_key(**parts) -> str:
    """A short stable name for what a cache holds (images, encoder, size, grid, views...)."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@torch.no_grad()
def cache_features(encoder: torch.nn.Module, images, path: str | os.PathLike, *, views: int = 1,
                   augment_strength: float = 0.0, augment_color: float = 1.0, batch_size: int = 64,
                   device: str | torch.device = "cpu", seed: int = 0, progress: bool = True,
                   meta: dict | None = None) -> Path:
    """Encode every image of ``images`` (an ImageSource: i -> uint8 (3, S, S)) into
    ``path`` = array (views, N, P, C) fp16. View 0 is the clean image; views 1.. are
    augmented with ``captioning.core.transforms.augment`` (seeded, so the cache is reproducible).
    Written atomically, with ``<path>.json`` describing it."""
    path = Path(path)
    device = torch.device(device)
    encoder = encoder.to(device).eval()
    generator = torch.Generator().manual_seed(seed)
    n = len(images)
    out = None
    with atomic_path(path) as tmp:
        for start in tqdm(range(0, n, batch_size), desc=f"caching {path.name}", disable=not progress, leave=False):
            idx = range(start, min(start + batch_size, n))
            batch = torch.stack([torch.from_numpy(np.asarray(images[i])) for i in idx]).to(device)
            x = to_float(batch).contiguous(memory_format=torch.channels_last)
            for v in range(views):
                xv = x if v == 0 else augment(x, augment_strength, generator, color=augment_color)
                feats = encode_images(encoder, xv, trainable=False).to(torch.float16).cpu().numpy()  # (b, P, C)
                if out is None:
                    shape = (views, n, *feats.shape[1:])
                    _check_free_space(path, tmp, 2 * int(np.prod(shape)))
                    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=shape)
                out[v, start:start + len(idx)] = feats
        out.flush()
        del out
    write_json(path.with_suffix(".json"), {"views": views, "images": n, "augment": augment_strength,
                                           "augment_color": augment_color, **(meta or {})})
    return path


def _check_free_space(path: Path, tmp: Path, needed: int) -> None:
    """Refuse, in one line, a cache that cannot fit (the memory-mapped file would fail with a
    bus error or ENOSPC midway). COCO's 113k training images through ResNet-101 at 14 x 14 are
    113,287 x 196 x 2048 x 2 bytes = 91 GB per view; at 7 x 7, 23 GB."""
    free = shutil.disk_usage(tmp.parent).free
    if needed > free:
        raise UserError(f"{path}: the feature cache needs {needed / 1e9:.1f} GB and {free / 1e9:.1f} GB are free there "
                        "(a smaller --grid-size, fewer --cache-views, or a --cache-features folder on a bigger disk)")


class CachedFeatures:
    """Image source stand-in: item i -> its (P, C) fp16 grid. Each epoch picks, per image,
    one of the cached views, deterministically from (epoch, i) so a resumed run sees the
    same views as an uninterrupted one."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.array = np.load(self.path, mmap_mode="r")  # (views, N, P, C)
        self.views = self.array.shape[0]
        self.epoch = 0
        self.train = True  # False: always the clean view (for validation/evaluation)

    def __len__(self) -> int:
        return self.array.shape[1]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, i: int) -> np.ndarray:
        view = 0
        if self.train and self.views > 1:
            view = (i * 2654435761 + self.epoch * 40503) % self.views
        return np.array(self.array[view, i])


def cached_source(encoder: torch.nn.Module, images, cache_dir: str | os.PathLike, split: str, describe: dict, *,
                  views: int = 1, augment_strength: float = 0.0, augment_color: float = 1.0,
                  device: str | torch.device = "cpu", train: bool = True) -> CachedFeatures:
    """The features of ``images`` from ``cache_dir``, computing them on first use. ``describe``
    names what the images are (e.g. file list, encoder config); it keys the cache file, so a
    change of data, encoder, size or grid never reads a stale cache."""
    key = cache_key(split=split, views=views, augment=augment_strength, augment_color=augment_color, **describe)
    path = Path(cache_dir) / f"{split}-{key}.npy"
    # Under torchrun one process per machine encodes (the cache folder may be local to each
    # machine, or shared: the write is atomic either way) and the others wait to read it.
    if is_local_main_process() and not path.exists():
        cache_features(encoder, images, path, views=views, augment_strength=augment_strength,
                       augment_color=augment_color, device=device,
                       meta={"split": split, **{k: v for k, v in describe.items() if k != "files"}})
    if is_distributed():
        torch.distributed.barrier()
    source = CachedFeatures(path)
    source.train = train
    return source


def open_image_source(model: torch.nn.Module, records: list, split: str, args, cfg, device):
    """What a training script's dataset reads for ``split``: pixels decoded from the records'
    files (default) or from ``--shards`` (found by image id, so caption and VQA records alike
    read the shards of the same COCO images); with ``--cache-features``, the frozen encoder's
    grids. ``records`` have ``image_id`` and ``path``; ``model`` is a CaptionModel or VQANet
    (anything with ``cfg.encoder`` and ``encoder``); ``cfg`` the TrainConfig, whose
    augmentation the cached training views get. Returns None for plain files (the datasets'
    default)."""
    from captioning.core.data import ImageFiles, check_image_source

    images = None
    paths = [r.path for r in records]
    if getattr(args, "shards", None):
        from captioning.core.shards import ShardedImages

        images = ShardedImages(Path(args.shards) / split).select(records)
        check_image_source(images, records, model.image_size)  # the pixel size, before features are cached
    if not getattr(args, "cache_features", None):
        return images
    if any(p.requires_grad for p in model.encoder.parameters()):
        raise UserError("--cache-features needs a frozen encoder (drop --fine-tune-encoder)")
    from dataclasses import asdict

    train = split == "train"
    size = model.image_size
    # Keyed on the weights actually loaded: a CNN fine-tuned by an --init-from checkpoint has
    # the same name and flags as the registry's, and must not read the registry's features.
    describe = {"files": [str(p) for p in paths], "encoder": asdict(model.cfg.encoder), "size": size,
                "weights": weights_digest(model.encoder)}
    return cached_source(model.encoder, images or ImageFiles(paths, size), args.cache_features, split, describe,
                         views=args.cache_views if train else 1, augment_strength=cfg.augment if train else 0.0,
                         augment_color=cfg.augment_color, device=device, train=train)


def weights_digest(module: torch.nn.Module) -> str:
    """A hash of a module's state (parameters and buffers), for cache keys."""
    h = hashlib.sha1()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
