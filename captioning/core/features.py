"""What a batch of images is when it reaches a model: pixels, or grid features computed before.

A model's image input is either pixels (B, 3, S, S), uint8 or float in [0, 1], which its CNN
encodes, or the grid features (B, P, C) that CNN already produced for those images
(``captioning.core.feature_cache`` stores them, so frozen-CNN training skips the CNN). The
rank tells them apart; this is the one place that decides it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def is_grid_features(images: torch.Tensor) -> bool:
    """True for grid features (B, P, C); False for pixels (B, 3, S, S)."""
    return images.dim() == 3
