"""Pre-decoded image shards: every image decoded and resized once, so training reads no JPEGs.

Decoding a 640 x 480 COCO JPEG and resizing it costs a CPU core several milliseconds; a GPU
that trains on thousands of images a second would need dozens of loader workers. Shards
do that work once: images become uint8 arrays (3, S, S) in numpy ``.npy`` files of shape
(N, 3, S, S), which training memory-maps (the operating system's page cache does the rest),
and ``index.json`` lists the image ids (and file names) in order so a dataset can check that
shard i is record i.

    shards/train/index.json        {"size": 256, "image_ids": [...], "file_names": [...],
                                    "shards": [{"file": ..., "count": ...}]}
    shards/train/shard-00000.npy   uint8 (count, 3, 256, 256)

``scripts/prepare_coco.py`` writes them for COCO; :class:`ShardedImages` reads them as an
``ImageSource`` (``captioning.core.data``), by position, or by image id through
:meth:`ShardedImages.select`: so the shards of COCO's caption files also serve VQA v2,
whose questions are about the same COCO images, listed in another order.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from captioning.core.errors import UserError
from captioning.core.fileio import read_json, write_json
from captioning.core.images import read_image
from captioning.core.transforms import resize_uint8

INDEX = "index.json"
FORMAT = "show-attend-answer-shards/1"


def _decode(job: tuple[str, int]) -> np.ndarray:
    path, size = job
    return resize_uint8(read_image(path), size)


def write_shards(records: Sequence, out_dir: str | os.PathLike, size: int, workers: int = 0,
                 shard_images: int = 4096, progress: bool = False) -> Path:
    """Decode and resize every record's image into ``out_dir`` (created; an earlier index there
    is replaced). Records are caption or VQA records: anything with ``image_id`` and ``path``.
    ``workers`` processes decode in parallel (0: one per CPU core); the order of the shards is
    the order of ``records``. A missing or corrupt image raises UserError."""
    out_dir = Path(out_dir)
    if not records:
        raise UserError(f"{out_dir}: no images to write")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / INDEX).unlink(missing_ok=True)  # a half-written folder must not look finished
    tmp = out_dir / ".writing"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    workers = workers or os.cpu_count() or 1
    jobs = [(str(r.path), size) for r in records]
    shards = []
    pool = multiprocessing.get_context("spawn" if os.name == "nt" else "fork").Pool(workers) if workers > 1 else None
    try:
        # imap keeps the order of ``jobs`` while the workers run ahead.
        decoded = pool.imap(_decode, jobs, chunksize=16) if pool else map(_decode, jobs)
        bar = _progress(len(jobs), progress)
        for start in range(0, len(jobs), shard_images):
            count = min(shard_images, len(jobs) - start)
            name = f"shard-{len(shards):05d}.npy"
            arr = np.lib.format.open_memmap(tmp / name, mode="w+", dtype=np.uint8, shape=(count, 3, size, size))
            for j in range(count):
                arr[j] = next(decoded)
                bar.update(1)
            arr.flush()
            del arr
            shards.append({"file": name, "count": count})
        bar.close()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if pool:
            pool.terminate()
    for s in shards:
        os.replace(tmp / s["file"], out_dir / s["file"])
    tmp.rmdir()
    write_json(out_dir / INDEX, {"format": FORMAT, "size": size, "image_ids": [r.image_id for r in records],
                                 "file_names": [Path(r.path).name for r in records], "shards": shards}, indent=None)
    return out_dir


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, unit="img", dynamic_ncols=True)


class ShardedImages:
    """The images of a shard folder, by position: ``images[i]`` is uint8 (3, S, S).

    The files are memory-mapped on first use in each process, so a DataLoader worker maps
    them itself instead of receiving a pickled copy."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        index = self.dir / INDEX
        if not index.exists():
            raise UserError(f"{self.dir}: no {INDEX} (not a shard folder, or its writing did not finish; "
                            "run scripts/prepare_coco.py)")
        meta = read_json(index, "shard index")
        try:
            if meta.get("format") != FORMAT:
                raise UserError(f"{index}: not a {FORMAT} index")
            self.size = int(meta["size"])
            self.image_ids = [int(i) for i in meta["image_ids"]]
            # Absent from indexes written before 2026-11-25; then ids alone are checked.
            self.file_names = [str(n) for n in meta["file_names"]] if "file_names" in meta else None
            self._files = [(self.dir / s["file"], int(s["count"])) for s in meta["shards"]]
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise UserError(f"{index}: not a valid shard index ({type(e).__name__}: {e})") from None
        if sum(c for _, c in self._files) != len(self.image_ids):
            raise UserError(f"{index}: {len(self.image_ids)} image ids but {sum(c for _, c in self._files)} images")
        for path, _ in self._files:
            if not path.exists():
                raise UserError(f"{path}: shard file missing")
        self._starts = np.cumsum([0] + [c for _, c in self._files])
        self._maps: list[np.ndarray] | None = None

    def _open(self) -> list[np.ndarray]:
        maps = []
        for path, count in self._files:
            try:
                arr = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as e:
                raise UserError(f"{path}: not a readable shard ({e})") from None
            if arr.dtype != np.uint8 or arr.shape != (count, 3, self.size, self.size):
                raise UserError(f"{path}: shape {arr.shape} {arr.dtype}, expected ({count}, 3, {self.size}, {self.size}) uint8")
            maps.append(arr)
        return maps

    def select(self, records: Sequence) -> ShardSelection:
        """The images of ``records`` (anything with ``image_id`` and ``path``: caption or VQA
        records), in their order, found by image id wherever they sit in the shards. A record
        the shards lack, or whose file name differs from the one shard-written under its id
        (ids reused by another image folder), raises UserError."""
        position = {image_id: i for i, image_id in enumerate(self.image_ids)}
        missing = [r.image_id for r in records if r.image_id not in position]
        if missing:
            raise UserError(f"{self.dir}: {len(missing)} of {len(records)} images are not in the shards (first: "
                            f"id {missing[0]}); prepare shards of the same images (scripts/prepare_coco.py)")
        positions = [position[r.image_id] for r in records]
        if self.file_names is not None:
            for r, p in zip(records, positions):
                if Path(r.path).name != self.file_names[p]:
                    raise UserError(f"{self.dir}: image id {r.image_id} is {self.file_names[p]} in the shards but "
                                    f"{Path(r.path).name} here (shards of another image folder?)")
        return ShardSelection(self, positions)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": None}

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < len(self):
            raise IndexError(i)
        if self._maps is None:
            self._maps = self._open()
        s = int(np.searchsorted(self._starts, i, side="right")) - 1
        return np.array(self._maps[s][i - self._starts[s]])  # a copy: torch wants writable memory


class ShardSelection:
    """Some images of a :class:`ShardedImages`, in another order (see :meth:`ShardedImages.select`):
    an ``ImageSource`` whose item i is shard image ``positions[i]``."""

    def __init__(self, shards: ShardedImages, positions: list[int]):
        self.shards, self.positions = shards, positions
        self.dir, self.size = shards.dir, shards.size
        self.image_ids = [shards.image_ids[p] for p in positions]

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.shards[self.positions[i]]
