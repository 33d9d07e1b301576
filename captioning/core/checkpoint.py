"""The checkpoint format: one safetensors file, weights plus JSON metadata.

A checkpoint is a single ``.safetensors`` file: the model's tensors, and in the file's
string metadata the model config, the vocabulary and free-form extras (metrics, the command
that trained it), each as JSON. One file means one atomic rename on save, and loading
parses JSON and raw tensors only: nothing is ever unpickled, so a checkpoint cannot run code.

Resuming needs optimizer and RNG state too; that lives beside the weights in
``<name>.state.pt``, written with ``torch.save`` and read only with
``torch.load(weights_only=True)``, which refuses any pickle that would build arbitrary objects.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from captioning.core.errors import UserError
from captioning.core.fileio import atomic_path

FORMAT = "show-attend-answer/1"
# What a folder given as a checkpoint means: a training output folder (``fit`` writes these),
# its best checkpoint by validation, else its last.
FOLDER_CHECKPOINTS = ("best.safetensors", "last.safetensors")


@dataclass
class Checkpoint:
    kind: str  # "caption" or "vqa"
    config: dict
    vocab: dict
    extra: dict = field(default_factory=dict)
    state_dict: dict[str, torch.Tensor] = field(default_factory=dict)
    path: Path | None = None


def save_checkpoint(path: str | os.PathLike, model: nn.Module, *, kind: str, config: dict, vocab: dict,
                    extra: dict | None = None, dtype: torch.dtype | None = None, skip: tuple[str, ...] = ()) -> Path:
    """Write ``model``'s weights and the JSON metadata to ``path`` atomically.
    ``dtype`` (e.g. torch.float16) casts floating-point tensors to shrink a shipped file;
    ``skip`` leaves out tensors by name or name prefix (CNN blocks frozen at their registry
    weights, rebuilt at load: ``captioning.core.checkpoint.checkpoint_skips``)."""
    state = {name: t for name, t in model.state_dict().items() if not (skip and name.startswith(skip))}
    return write_checkpoint(path, Checkpoint(kind, config, vocab, extra or {}, state), dtype)


def write_checkpoint(path: str | os.PathLike, ckpt: Checkpoint, dtype: torch.dtype | None = None) -> Path:
    """Write a :class:`Checkpoint` (e.g. one read, re-labelled and cast to fp16 for shipping)."""
    tensors = {}
    for name, t in ckpt.state_dict.items():
        t = t.detach().cpu()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        tensors[name] = t.contiguous().clone()  # clone: safetensors refuses shared storage
    metadata = {"format": FORMAT, "kind": ckpt.kind, "config": json.dumps(ckpt.config),
                "vocab": json.dumps(ckpt.vocab), "extra": json.dumps(ckpt.extra)}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def resolve(path: str | os.PathLike, names: tuple[str, ...] = FOLDER_CHECKPOINTS) -> Path:
    """A checkpoint file, or a folder: the first of ``names`` in it (a training output folder:
    best.safetensors, else last.safetensors). The error lists what was looked for."""
    path = Path(path)
    if path.is_dir():
        for name in names:
            if (path / name).is_file():
                return path / name
        raise UserError(f"{path}: a folder without a checkpoint (looked for {' and '.join(names)})")
    if not path.exists():
        raise UserError(f"{path}: no such checkpoint")
    return path


def read_checkpoint(path: str | os.PathLike, kind: str | None = None) -> Checkpoint:
    """Read and validate a checkpoint; anything that is not one of ours raises UserError."""
    path = resolve(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise UserError(f"{path}: not a {FORMAT} checkpoint (format={meta.get('format')!r})")
            state = {name: f.get_tensor(name) for name in f.keys()}
        ckpt = Checkpoint(meta["kind"], json.loads(meta["config"]), json.loads(meta["vocab"]),
                          json.loads(meta.get("extra", "{}")), state, path)
    except UserError:
        raise
    except Exception as e:  # safetensors' own error type moved between releases; any failure here is a bad file
        raise UserError(f"{path}: not a valid checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if kind is not None and ckpt.kind != kind:
        raise UserError(f"{path}: is a {ckpt.kind!r} checkpoint, expected a {kind!r} one")
    return ckpt


def load_weights(model: nn.Module, ckpt: Checkpoint, skip: tuple[str, ...] = ()) -> nn.Module:
    """Copy the checkpoint's tensors into ``model`` strictly: every key, every shape, except
    the ``skip`` names (or prefixes) the checkpoint was saved without (the model already holds those)."""
    state = dict(ckpt.state_dict)
    if skip:
        extra = [k for k in state if k.startswith(skip)]
        if extra:
            raise UserError(f"{ckpt.path}: holds weights its config says it leaves out ({extra[0]}, ...)")
        state.update({k: v for k, v in model.state_dict().items() if k.startswith(skip)})
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise UserError(f"{ckpt.path}: weights do not fit the model its config describes ({' '.join(first[:2])[:300]})") from None
    return model


def state_path(path: str | os.PathLike) -> Path:
    """Where the resume state of checkpoint ``path`` lives: ``last.safetensors`` -> ``last.state.pt``
    (a folder: its last.safetensors, the one a run is resumed from)."""
    path = resolve(path, ("last.safetensors",)) if Path(path).is_dir() else Path(path)
    return path.with_suffix(".state.pt")


def save_training_state(path: str | os.PathLike, state: dict) -> None:
    """Optimizer, scheduler, RNG and loop counters; tensors and plain containers only."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_training_state(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no training state to resume from")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        if "weights_only" in str(e) or "Weights only" in str(e):
            # torch's own message goes on to advise weights_only=False, i.e. running the file's code: not ours to pass on
            raise UserError(f"{path}: refused as training state: it holds Python objects beyond tensors and plain "
                            "containers, which loading would have to execute (not a state file this project "
                            "wrote, or a tampered one)") from None
        raise UserError(f"{path}: refused as training state ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None


def checkpoint_skips(model: nn.Module) -> tuple[str, ...]:
    """State-dict keys a checkpoint of ``model`` (a CaptionModel or ``vqa.model.VQANet``) leaves
    out: with ``in_checkpoint`` False, the CNN blocks still at their registry weights."""
    enc = model.cfg.encoder
    if enc.in_checkpoint:
        return ()
    return tuple("encoder." + k for k in model.encoder.frozen_state_keys(enc.fine_tune_blocks))


def rebuild(model_cls, cfg):
    """``model_cls(cfg)`` as a checkpoint of ``cfg`` was saved from, before its weights are
    loaded: a CNN the checkpoint holds starts empty, one it left out starts from the registry."""
    return model_cls(cfg, encoder_weights="none" if cfg.encoder.in_checkpoint else "default")


def resume_model(ckpt: Checkpoint, model_cls, config_from_json, cached_features: bool):
    """The model a resumed training run continues (``ckpt``: the checkpoint ``--resume`` read,
    ``captioning.core.flags.read_resumed``), one rule for both tasks:
    its architecture from the checkpoint's config and its weights loaded now, not only in
    ``fit``, because a feature cache is made, and keyed, from this CNN before training starts
    (a CNN the checkpoint stores, e.g. from ``--encoder-weights FILE``, would otherwise still
    be random). With ``cached_features`` the CNN stays frozen: the run trained from cached
    features, though its checkpoint may store blocks fine-tuned before (``--init-from``)."""
    model = rebuild(model_cls, config_from_json(ckpt.config))
    load_weights(model, ckpt, checkpoint_skips(model))
    if cached_features:
        model.encoder.fine_tune(0)
    return model


def load_model(path: str | os.PathLike, kind: str, model_cls, parse: Callable[[Checkpoint], tuple[Any, Any]],
               device: str | torch.device = "cpu"):
    """The one loader of both tasks: read the ``kind`` checkpoint at ``path``, ``parse`` its
    JSON into (model config, vocabularies), rebuild the model from the config (no pretrained
    weights fetched unless the checkpoint leaves the frozen CNN out) and load its weights
    strictly -> (model in eval mode on ``device``, vocabularies, the checkpoint's ``extra``)."""
    ckpt = read_checkpoint(path, kind=kind)
    try:
        cfg, vocab = parse(ckpt)
    except (KeyError, TypeError, ValueError, UserError) as e:
        raise UserError(f"{ckpt.path}: checkpoint config is not valid ({type(e).__name__}: {e})") from None
    model = rebuild(model_cls, cfg)
    model = load_weights(model, ckpt, checkpoint_skips(model))
    return model.to(device).eval(), vocab, ckpt.extra


CHECKPOINT_DIR = Path(__file__).resolve().parents[2] / "checkpoints"


def resolve_checkpoint(path: str | os.PathLike | None, default: Path) -> tuple[Path, bool]:
    """(checkpoint path, whether it is the shipped default). ``path`` may be a training output
    folder: its best.safetensors, else last.safetensors (:func:`resolve`)."""
    if path is not None:
        return resolve(path), False
    if not default.exists():
        raise UserError(f"no default checkpoint at {default}: train one (see README, scripts/train_*.py) "
                        "or pass --checkpoint PATH")
    return default, True
