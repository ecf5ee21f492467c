"""Device and precision resolution shared by evaluate, predict and the predictors."""

from __future__ import annotations

import torch

_AUTOCAST_DTYPES = {"32": None, "32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> CUDA if available, else CPU; anything else is passed to :class:`torch.device`."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def autocast_dtype(precision: str | int) -> torch.dtype | None:
    """Lightning-style precision ("32", "bf16-mixed", "16-mixed") -> the autocast dtype (None = fp32)."""
    try:
        return _AUTOCAST_DTYPES[str(precision)]
    except KeyError:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(_AUTOCAST_DTYPES)}") from None
