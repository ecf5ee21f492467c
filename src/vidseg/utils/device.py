"""Device and precision resolution shared by evaluate, predict and the predictors.

torch is imported only when a device or dtype is built: the config check reads :data:`PRECISIONS` without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# Lightning's precision names that vidseg's networks run with (fp32, or mixed precision under autocast), with
# Lightning's short aliases. Validation runs at trainer.precision too, so training accepts only these.
_AUTOCAST_DTYPE_NAMES = {"32": None, "32-true": None, "bf16-mixed": "bfloat16", "16-mixed": "float16",
                         "bf16": "bfloat16", "16": "float16"}
PRECISIONS = tuple(_AUTOCAST_DTYPE_NAMES)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> CUDA if available, else CPU; anything else is passed to :class:`torch.device`."""
    import torch

    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def autocast_dtype(precision: str | int) -> torch.dtype | None:
    """Lightning-style precision ("32", "bf16-mixed", "16-mixed") -> the autocast dtype (None = fp32)."""
    import torch

    try:
        name = _AUTOCAST_DTYPE_NAMES[str(precision)]
    except KeyError:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}") from None
    return None if name is None else getattr(torch, name)
