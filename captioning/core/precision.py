"""Inference precision: fp32, or bf16 autocast where the hardware computes in bf16 natively.

Writing a caption for one image is bound by memory bandwidth, not arithmetic: every word
reads every decoder weight (a 10k-word classifier and the LSTM are about 35 MB in fp32) for
only K beam rows. bf16 halves those bytes, and CPUs with AVX512-BF16 or AMX (and CUDA GPUs
from Ampere on) multiply in bf16 natively (docs/performance.md and the README's speed table
say what that gives). Without native support bf16 is emulated and slower, hence ``auto``.

Autocast (not a bf16 copy of the model) keeps the weights in fp32, so one model serves both
precisions; the cast weights are cached for the length of one ``generate`` call. Softmaxes,
log-probabilities and beam scores stay in fp32 (``captioning.search`` casts the logits).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported by the functions: ``--help`` reads PRECISIONS without it
    import torch

from captioning.core.errors import UserError

PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` multiplies in bf16 in hardware (so bf16 is faster, not emulated)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        # Private helpers, present since torch 2.1; absent means unknown, so fp32.
        checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
        return any(check is not None and check() for check in checks)
    return False


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``auto`` -> ``bf16`` where :func:`native_bf16`, else ``fp32``; the others as given."""
    if precision not in PRECISIONS:
        raise UserError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def autocast(device: torch.device | str, precision: str):
    """The autocast context for inference at ``precision`` on ``device`` (a no-op for fp32)."""
    import torch

    device = torch.device(device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=resolve_precision(precision, device) == "bf16")
