"""Atomic file writes: a reader never sees half a file, and a crash never corrupts the old one.

Every file this project writes (checkpoints, results, attention maps, logs' snapshots) goes
through :func:`atomic_write`: the data lands in a temporary file in the same folder, is
flushed to disk, then renamed over the target in one step (``os.replace`` is atomic on POSIX
and Windows when both paths are on one filesystem).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from captioning.core.errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _open_permissions(tmp: str) -> None:
    """mkstemp creates 0600 files; give the final file the usual 0666 & ~umask."""
    os.chmod(tmp, 0o666 & ~_umask())


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on a clean exit, rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    binary = "b" in mode
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    _open_permissions(tmp)
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_path(path: str | os.PathLike) -> contextlib.AbstractContextManager[Path]:
    """Like :func:`atomic_write` for libraries that want a file name, not a file object
    (``safetensors.torch.save_file``, ``matplotlib.savefig``, ``torch.save``)."""
    return _atomic_path(Path(path))


@contextlib.contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    _open_permissions(tmp)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        _open_permissions(tmp)  # again: some writers (safetensors) recreate the file as 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_if_changed(path: str | os.PathLike, data: str | bytes) -> bool:
    """Write ``data`` atomically unless ``path`` already holds exactly it (so rerunning a
    dataset conversion leaves file times, and whatever watches them, alone). True if written."""
    path = Path(path)
    binary = isinstance(data, bytes)
    if path.exists() and (path.read_bytes() if binary else path.read_text(encoding="utf-8")) == data:
        return False
    with atomic_write(path, "wb" if binary else "w", None if binary else "utf-8") as f:
        f.write(data)
    return True


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    with atomic_write(path) as f:
        json.dump(obj, f, indent=indent)
        f.write("\n")


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Parsed JSON of ``path``, ``what`` naming it in errors ("results file"); a missing,
    unreadable or corrupt file is the user's mistake: one-line UserError."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, not a {what}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: {what} is not valid JSON ({e})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read {what} ({e.strerror or e})") from None


def check_writable(path: str | os.PathLike) -> None:
    """Refuse, before any work, an output ``path`` that cannot be created: one of its parents is
    a file ("out.png/map.png"), the nearest existing folder is not writable, or the path is a
    folder. Raises a one-line UserError."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give a file name")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{path}: cannot be written, {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise UserError(f"{path}: cannot be written, the folder {parent} is not writable")
            return
