"""A thin layer from config dataclasses to argparse and back.

Every field of a config dataclass becomes a ``--flag`` (``--field-name``, or the name in the
field's ``metadata["flag"]``) of the field's type, whose default is the field's default, whose
choices a field may name (``metadata["choices"]``), and whose help is its ``metadata["help"]``
or else its comment (on the field's line, or the comment lines just above it; see
:func:`field_help`). So scripts stay thin, the comment a reader of the code sees is the help a
user sees, and the resolved config saved with a checkpoint is exactly what ran. Also here: the
image-encoder flags both training scripts share, and what a ``--resume`` may change.
"""

from __future__ import annotations

import argparse
import ast
import copy
import dataclasses
import functools
import inspect
import io
import textwrap
import tokenize
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


@functools.cache
def _comments(cls) -> dict[str, str]:
    """{field name: its comment} for the fields ``cls`` itself declares, read from its source."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # no source (a frozen install): no comments, metadata only
        return {}
    by_line: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            by_line[tok.start[0]] = tok.string.lstrip("#").strip()
    lines = source.splitlines()
    out = {}
    for node in ast.parse(source).body[0].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            text = by_line.get(node.end_lineno)  # on the field's (last) line
            if text is None:  # or the comment-only lines just above it
                above, line = [], node.lineno - 1
                while line >= 1 and lines[line - 1].strip().startswith("#"):
                    above.insert(0, by_line.get(line, ""))
                    line -= 1
                text = " ".join(above) or None
            if text:
                out[node.target.id] = text
    return out


def field_help(cls, f: dataclasses.Field) -> str | None:
    """A config field's help: ``metadata["help"]``, else the comment beside (or above) it in
    the class, or in the base class that declares it."""
    if "help" in f.metadata:
        return f.metadata["help"]
    for klass in cls.__mro__:
        if dataclasses.is_dataclass(klass) and f.name in _comments(klass):
            return _comments(klass)[f.name]
    return None


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
        # A field may name its flag and its choices (a registry's keys, read when the parser is built).
        flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
        choices = f.metadata.get("choices")
        conv = _parse_bool if tp is bool else tp
        if optional:
            conv = (lambda c: lambda s: None if s.lower() == "none" else c(s))(conv)
        extra = {"choices": list(choices() if callable(choices) else choices)} if choices else {"metavar": tp.__name__.upper()}
        if tp is bool:  # a bool flag alone means true (--scst); --flag false still works
            extra.update(nargs="?", const=True)
        text = field_help(cls, f)
        # argparse formats help with %: a literal % in a comment must not be read as a format
        text = (text.replace("%", "%%") + " " if text else "") + f"(default: {default})"
        group.add_argument(flag, dest=f"{cls.__name__}.{f.name}", type=conv, default=default, help=text, **extra)


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
    from captioning.core.encoders import ENCODERS

    m = parser.add_argument_group("image encoder")
    m.add_argument("--encoder", default="efficientnet_lite0", choices=list(ENCODERS),
                   help="a CNN of the registry (captioning/core/encoders.py; default efficientnet_lite0)")
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


# The encoder flags a resumed run cannot change: they shape the model it continues.
ENCODER_DESTS = ("encoder", "encoder_weights", "image_size", "grid_size", "fine_tune_encoder")


def given_dests(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The dests ``argv`` sets explicitly, as opposed to those left at their defaults."""
    probe = copy.deepcopy(parser)
    for action in probe._actions:
        action.default = argparse.SUPPRESS
        action.required = False
    return set(vars(probe.parse_known_args(argv)[0]))


def resume_command(parser: argparse.ArgumentParser, command: list[str], recorded: list[str],
                   fixed: tuple[str, ...]) -> list[str]:
    """Check a resume's flags against the run it continues and return the command to record.

    ``command`` is this run's (``sys.argv``), ``recorded`` the one stored in the checkpoint
    (both script first); ``fixed`` the dests
    (or dest prefixes ending in ".") that shape the model or the data, which a resumed run
    cannot change: given with another value than the run had, they are refused, all named in
    one line. The command recorded is the original one with this one's flags after it (the
    last value of a flag wins, as argparse reads it), so it names what produced the weights."""
    argv = list(command[1:])
    if not recorded:
        return list(command)
    old, new = parser.parse_known_args(recorded[1:])[0], parser.parse_known_args(argv)[0]
    flags = {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings}
    changed = [f"{flags.get(d, d)} {getattr(new, d)} (the run has {getattr(old, d)})"
               for d in sorted(given_dests(parser, argv))
               if any(d == f or (f.endswith(".") and d.startswith(f)) for f in fixed)
               and getattr(new, d) != getattr(old, d, None)]
    if changed:
        from captioning.core.errors import UserError

        raise UserError(f"--resume cannot change the model or its data: {', '.join(changed)}; resume with the "
                        "run's values or start a new run")
    return list(recorded) + list(argv)


def read_resumed(args: argparse.Namespace, kind: str):
    """The checkpoint ``--resume`` names (a file, or a folder's last.safetensors), read once for
    the whole run: its recorded command, vocabulary, config and weights all come from this one
    read (``fit`` takes it too). ``args.resume`` is set to its path. None without ``--resume``."""
    if not args.resume:
        return None
    from captioning.core.checkpoint import read_checkpoint, resolve

    args.resume = str(resolve(args.resume, ("last.safetensors",)))
    return read_checkpoint(args.resume, kind)


def recorded_command(parser: argparse.ArgumentParser, command: list[str], resumed, fixed: tuple[str, ...]) -> list[str]:
    """The command a training script records in its checkpoints: ``command`` itself, or when
    resuming (``resumed``: the checkpoint :func:`read_resumed` read) the command that produced
    the weights being continued, checked and extended by :func:`resume_command`."""
    if resumed is None:
        return list(command)
    return resume_command(parser, command, resumed.extra.get("command", []), fixed)
