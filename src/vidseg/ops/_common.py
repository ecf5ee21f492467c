"""Helpers shared by every implementation path: validation, dispatch, exact evaluation and gradients.

Every matching path (reference, cpu, triton) only *searches*: it returns the arg-min reference pixel
per (batch, object, query pixel). The value and the gradient are then computed here, once, from that
arg-min pair with a direct fp32 (fp64 for fp64 inputs) difference. So a path that ranks candidates
with the fast but cancellation-prone |x|^2 + |y|^2 - 2 x.y expansion still returns an exact distance
for the pair it picked, and the backward pass never needs the pair matrix.
"""

from __future__ import annotations

import os

import torch

from vidseg.constants import IGNORE_LABEL  # noqa: F401  (re-exported to the ops)

IMPLS = ("auto", "reference", "cpu", "triton")
# Pair tiles (query chunk x reference chunk) of the tiled paths stay below this many bytes; it sets
# every path's working memory, independently of (H*W)^2 and of the (2k+1)^2*C window stack. Large
# enough that a DAVIS frame takes a few dozen tensor ops (each op costs dispatch and a thread
# synchronisation), small enough to stay near the CPU caches.
TILE_BYTES = 16 << 20
# Finite stand-in for "+inf" in ranking tiles: inf - inf would give NaN in the arg-min trick, and any
# real squared distance is far below it (fp32 max is 3.4e38).
PENALTY = 1e30


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (bf16/fp16/fp32 inputs are computed in fp32)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def check_float(name: str, t: torch.Tensor) -> None:
    if t.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise TypeError(f"{name} must be a float16/bfloat16/float32/float64 tensor, got {t.dtype}")


def check_labels(labels: torch.Tensor, num_objects: int, validate: bool = True) -> torch.Tensor:
    """Validate a label map (values in [0, num_objects) or 255) and return it as int64.

    ``validate=False`` checks only the dtype and ``num_objects`` (host-side facts) and skips the value check,
    which reads a device flag back to the host (one synchronisation per call on CUDA): for callers that made
    the labels themselves or validated them once already (an inference session checks its first frame).

    Raises:
        ValueError naming the first offending value.
    """
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
    if not 1 <= num_objects <= IGNORE_LABEL:
        raise ValueError(f"num_objects must be in [1, {IGNORE_LABEL}], got {num_objects}")
    labels = labels.long()
    if not validate:
        return labels
    bad = ((labels < 0) | (labels >= num_objects)) & (labels != IGNORE_LABEL)
    if bool(bad.any()):
        value = int(labels[bad][0])
        raise ValueError(
            f"label value {value} is outside [0, {num_objects}) and is not the ignore label {IGNORE_LABEL}"
        )
    return labels


def resolve_impl(impl: str, *tensors: torch.Tensor) -> str:
    """Map impl="auto" to a concrete path: "triton" for CUDA fp16/bf16/fp32 tensors, else "cpu"."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl != "auto":
        if impl == "triton":
            check_triton_usable(*tensors)
        return impl
    if all(t.is_cuda for t in tensors) and all(t.dtype != torch.float64 for t in tensors) and triton_available():
        return "triton"
    return "cpu"


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def check_triton_usable(*tensors: torch.Tensor) -> None:
    if not triton_available():
        raise RuntimeError("impl='triton' needs the triton package")
    if any(t.dtype == torch.float64 for t in tensors):
        raise TypeError("impl='triton' supports float16/bfloat16/float32 inputs; use impl='cpu' for float64")
    on_cpu = any(not t.is_cuda for t in tensors)
    if on_cpu and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("impl='triton' needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors)")


def overlap(length: int, shift: int) -> tuple[int, int]:
    """Range [lo, hi) of positions i with 0 <= i + shift < length (empty when lo >= hi)."""
    return max(0, -shift), min(length, length - shift)


def displacements(max_displacement: int) -> list[tuple[int, int]]:
    """Cost-volume channel order: (dy, dx) row-major from -r to r."""
    span = range(-max_displacement, max_displacement + 1)
    return [(dy, dx) for dy in span for dx in span]


def squared_distance_at(query: torch.Tensor, reference: torch.Tensor, argmin: torch.Tensor) -> torch.Tensor:
    """Exact squared distance of each arg-min pair.

    Args:
        query: (B, C, P) float, reference: (B, C, R) float, argmin: (B, N, P) int64 (-1 = none).
    Returns:
        (B, N, P) in compute_dtype, +inf where argmin is -1. Extra memory: one (B, C, P) gather.
    """
    dtype = compute_dtype(query, reference)
    q, r = query.to(dtype), reference.to(dtype)
    batch, channels, pixels = q.shape
    sq = q.new_full((batch, argmin.shape[1], pixels), float("inf"))
    if r.shape[2] == 0:
        return sq
    for o in range(argmin.shape[1]):  # one object at a time keeps the gather at (B, C, P)
        index = argmin[:, o].clamp(min=0)[:, None, :].expand(batch, channels, pixels)
        sq[:, o] = (q - r.gather(2, index)).square().sum(1)
    return sq.masked_fill_(argmin < 0, float("inf"))


def distance_from_squared(sq: torch.Tensor) -> torch.Tensor:
    """FEELVOS distance d = tanh(sq / 2) = 1 - 2 / (1 + exp(sq)); +inf (nothing to match) gives 1."""
    return torch.tanh(sq * 0.5)


def matching_backward(
    grad_out: torch.Tensor, query: torch.Tensor, reference: torch.Tensor, argmin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of out = tanh(|q_p - r_argmin(p)|^2 / 2) w.r.t. query and reference.

    Only the arg-min pair receives gradient. Shapes: grad_out (B, N, H, W), query (B, C, H, W),
    reference (B, C, Hr, Wr), argmin (B, N, H*W). Extra memory: O(B*C*(H*W + Hr*Wr)), one object at
    a time. Returns gradients in the inputs' dtypes.
    """
    dtype = compute_dtype(query, reference)
    q = query.flatten(2).to(dtype)
    r = reference.flatten(2).to(dtype)
    grad = grad_out.flatten(2).to(dtype)
    batch, channels, pixels = q.shape
    grad_q = torch.zeros_like(q)
    grad_r = torch.zeros_like(r)
    if r.shape[2] > 0:
        for o in range(argmin.shape[1]):
            index = argmin[:, o].clamp(min=0)[:, None, :].expand(batch, channels, pixels)
            diff = q - r.gather(2, index)
            half_sq = diff.square().sum(1) * 0.5
            # d tanh(s/2) / ds = sech^2(s/2) / 2; pixels without a match get no gradient
            weight = grad[:, o] * torch.cosh(half_sq).square().reciprocal() * (argmin[:, o] >= 0)
            contribution = diff * weight[:, None]  # = 2 * (q - r) * dL/ds
            grad_q += contribution
            grad_r.scatter_add_(2, index, -contribution)
    return grad_q.view(query.shape).to(query.dtype), grad_r.view(reference.shape).to(reference.dtype)
