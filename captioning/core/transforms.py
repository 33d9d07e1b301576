"""Reading images safely and turning them into the tensors the encoders take.

Images enter the model as float tensors in [0, 1], shape (B, 3, S, S); each encoder
normalises with its own mean/std on the device (see ``captioning.core.encoders``), so the data path
can ship uint8 and stay cheap. Decoding is guarded: a missing file, a file that is not an
image, a truncated image or a decompression bomb raise :class:`UserError` with one line.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def resize_uint8(im: Image.Image, size: int) -> np.ndarray:
    """Resize to a ``size`` x ``size`` square (bicubic) -> uint8 array (3, size, size)."""
    im = im.resize((size, size), Image.BICUBIC)
    return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float in [0, 1], on whatever device ``images`` is on."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images


def preprocess(images: list[Image.Image], size: int) -> torch.Tensor:
    """PIL images -> uint8 batch (B, 3, size, size)."""
    return torch.from_numpy(np.stack([resize_uint8(im, size) for im in images]))


def augment(images: torch.Tensor, strength: float = 1.0, generator: torch.Generator | None = None,
            color: float = 1.0) -> torch.Tensor:
    """Light photometric and geometric augmentation on a float batch (B, 3, H, W) in [0, 1],
    on the device it lives on: random resized crop (scale 0.75-1), brightness/contrast/
    saturation jitter, and random grayscale. ``strength`` scales every jitter; 0 is identity.
    ``color`` scales the photometric part again (brightness, contrast, saturation, grayscale):
    0 keeps colours exact, for data whose words name colours a jitter would blur (the five
    emoji skin tones are mostly steps of brightness).

    No horizontal flip: captions name left and right, and emoji are not mirror-symmetric.
    """
    if strength <= 0:
        return images
    b, _, h, w = images.shape
    dev = images.device

    def rand(*shape):
        return torch.rand(*shape, device="cpu", generator=generator).to(dev)

    # Random resized crop via an affine grid: scale s in [1 - 0.25*strength, 1], shift within bounds.
    s = 1.0 - 0.25 * strength * rand(b)
    tx = (1.0 - s) * (2 * rand(b) - 1)
    ty = (1.0 - s) * (2 * rand(b) - 1)
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0] = s
    theta[:, 1, 1] = s
    theta[:, 0, 2] = tx
    theta[:, 1, 2] = ty
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)

    gray = (0.299 * out[:, 0] + 0.587 * out[:, 1] + 0.114 * out[:, 2]).unsqueeze(1)  # (B, 1, H, W)
    strength = strength * color  # the geometric part above is done; the rest is colour
    bright = 1.0 + 0.3 * strength * (2 * rand(b, 1, 1, 1) - 1)
    contrast = 1.0 + 0.3 * strength * (2 * rand(b, 1, 1, 1) - 1)
    sat = 1.0 + 0.4 * strength * (2 * rand(b, 1, 1, 1) - 1)
    out = out * bright
    mean = gray.mean(dim=(2, 3), keepdim=True)
    out = (out - mean) * contrast + mean
    out = (out - gray) * sat + gray
    to_gray = (rand(b, 1, 1, 1) < 0.1 * strength).float()
    out = to_gray * gray.expand_as(out) + (1 - to_gray) * out
    return out.clamp_(0.0, 1.0)
