"""A thin layer from config dataclasses to argparse and back.

Every field of a config dataclass becomes a ``--flag`` whose default and help come from
the dataclass (its default and the comment-derived ``help`` map below), so scripts stay thin
and the resolved config saved with a checkpoint is exactly what ran.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (true/false)")


def _base_type(tp):
    """int | None -> int; plain types pass through."""
    if typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def add_dataclass_args(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = (), title: str | None = None) -> None:
    group = parser.add_argument_group(title or cls.__name__)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        tp, optional = _base_type(hints[f.name])
        if tp not in (int, float, str, bool):
            continue  # nested configs are added by their own call
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        flag = "--" + f.name.replace("_", "-")
        conv = _parse_bool if tp is bool else tp
        if optional:
            conv = (lambda c: lambda s: None if s.lower() == "none" else c(s))(conv)
        # A bool flag alone means true (--scst); --flag false still works.
        extra = {"nargs": "?", "const": True} if tp is bool else {}
        group.add_argument(flag, dest=f"{cls.__name__}.{f.name}", type=conv, default=default, metavar=tp.__name__.upper(),
                           help=f"(default: {default})", **extra)


def dataclass_from_args(cls, args: argparse.Namespace, **overrides):
    values = {}
    for f in dataclasses.fields(cls):
        key = f"{cls.__name__}.{f.name}"
        if hasattr(args, key):
            values[f.name] = getattr(args, key)
    values.update(overrides)
    return cls(**values)



def add_encoder_args(parser: argparse.ArgumentParser) -> None:
    """The CNN flags shared by train_caption.py and train_vqa.py."""
    m = parser.add_argument_group("image encoder")
    m.add_argument("--encoder", default="efficientnet_lite0", help="efficientnet_lite0, resnet50, resnet101, resnet152")
    m.add_argument("--encoder-weights", default="default", help="'default' (pretrained), 'none', or a state-dict file")
    m.add_argument("--image-size", type=int, default=None, help="input side in pixels (default: the encoder's)")
    m.add_argument("--grid-size", type=int, default=None, help="pool the CNN grid to N x N (default: native)")
    m.add_argument("--fine-tune-encoder", type=int, default=0, metavar="N", help="train the CNN's last N blocks (default 0: frozen)")
    d = parser.add_argument_group("image input")
    d.add_argument("--shards", help="pre-decoded image shards from scripts/prepare_coco.py (skips JPEG decoding); "
                   "SHARDS/train and SHARDS/val, images found by id, so VQA v2 reads the shards of COCO's caption files")
    d.add_argument("--cache-features", metavar="DIR", help="with a frozen encoder: encode every image once into DIR (fp16) and train from there")
    d.add_argument("--cache-views", type=int, default=1, help="cached views per training image: 1 clean + N-1 augmented with --augment (default 1)")


def encoder_config_from_args(args: argparse.Namespace):
    from captioning.core.encoders import EncoderConfig

    # CNN blocks frozen at the registry weights need not be stored in every checkpoint.
    in_checkpoint = args.encoder_weights != "default"
    return EncoderConfig(args.encoder, args.image_size, args.grid_size, args.fine_tune_encoder, in_checkpoint)
