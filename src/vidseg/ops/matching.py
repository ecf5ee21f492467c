"""FEELVOS global and local matching as torch custom ops (torch.compile treats them as opaque calls).

Each op returns (distance, argmin); the public functions return the distance only. The backward
pass uses the stored arg-min (only the arg-min pair receives gradient), so no pair matrix is kept.
"""

from __future__ import annotations

import torch

from vidseg.ops import _common as common
from vidseg.ops import cpu, reference


def _global_search(impl: str):
    if impl == "triton":
        from vidseg.ops import triton_kernels

        return triton_kernels.global_argmin
    return {"reference": reference.global_argmin, "cpu": cpu.global_argmin}[impl]


def _local_search(impl: str):
    if impl == "triton":
        from vidseg.ops import triton_kernels

        return triton_kernels.local_argmin
    return {"reference": reference.local_argmin, "cpu": cpu.local_argmin}[impl]


def _check_pair(name: str, query: torch.Tensor, other: torch.Tensor, labels: torch.Tensor) -> None:
    common.check_float("query", query)
    common.check_float(name, other)
    if query.dim() != 4 or other.dim() != 4:
        raise ValueError(f"query and {name} must be (B, C, H, W), got {tuple(query.shape)} and {tuple(other.shape)}")
    if other.shape[:2] != query.shape[:2]:
        raise ValueError(f"query {tuple(query.shape)} and {name} {tuple(other.shape)} differ in batch or channels")
    if labels.shape != (other.shape[0], *other.shape[2:]):
        raise ValueError(f"labels {tuple(labels.shape)} must be (B, H, W) of {name} {tuple(other.shape)}")


def _distance(query: torch.Tensor, other: torch.Tensor, argmin: torch.Tensor) -> torch.Tensor:
    sq = common.squared_distance_at(query.flatten(2), other.flatten(2), argmin)
    return common.distance_from_squared(sq).view(query.shape[0], argmin.shape[1], *query.shape[2:])


@torch.library.custom_op("vidseg::global_matching", mutates_args=())
def _global_matching_op(
    query: torch.Tensor, reference: torch.Tensor, ref_labels: torch.Tensor, num_objects: int, impl: str,
    validate: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    _check_pair("reference", query, reference, ref_labels)
    labels = common.check_labels(ref_labels, num_objects, validate)
    impl = common.resolve_impl(impl, query, reference)
    argmin = _global_search(impl)(query, reference, labels, num_objects)
    return _distance(query, reference, argmin), argmin


@_global_matching_op.register_fake
def _(query, reference, ref_labels, num_objects, impl, validate=True):
    batch, _, height, width = query.shape
    dtype = common.compute_dtype(query, reference)
    return (
        query.new_empty((batch, num_objects, height, width), dtype=dtype),
        query.new_empty((batch, num_objects, height * width), dtype=torch.long),
    )


@torch.library.custom_op("vidseg::local_matching", mutates_args=())
def _local_matching_op(
    query: torch.Tensor,
    previous: torch.Tensor,
    prev_labels: torch.Tensor,
    num_objects: int,
    max_distance: int,
    dilation: int,
    impl: str,
    validate: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    _check_pair("previous", query, previous, prev_labels)
    if previous.shape != query.shape:
        raise ValueError(f"query {tuple(query.shape)} and previous {tuple(previous.shape)} must have one shape")
    if max_distance < 0 or dilation < 1:
        raise ValueError(f"need max_distance >= 0 and dilation >= 1, got {max_distance}, {dilation}")
    labels = common.check_labels(prev_labels, num_objects, validate)
    impl = common.resolve_impl(impl, query, previous)
    argmin = _local_search(impl)(query, previous, labels, num_objects, max_distance, dilation)
    return _distance(query, previous, argmin), argmin


@_local_matching_op.register_fake
def _(query, previous, prev_labels, num_objects, max_distance, dilation, impl, validate=True):
    batch, _, height, width = query.shape
    dtype = common.compute_dtype(query, previous)
    return (
        query.new_empty((batch, num_objects, height, width), dtype=dtype),
        query.new_empty((batch, num_objects, height * width), dtype=torch.long),
    )


def _setup_context(ctx, inputs, output) -> None:
    query, other = inputs[0], inputs[1]
    ctx.save_for_backward(query, other, output[1])
    ctx.num_other_inputs = len(inputs) - 2


def _backward(ctx, grad_out, _grad_argmin):
    query, other, argmin = ctx.saved_tensors
    grad_query, grad_other = common.matching_backward(grad_out, query, other, argmin)
    return (grad_query, grad_other, *([None] * ctx.num_other_inputs))


_global_matching_op.register_autograd(_backward, setup_context=_setup_context)
_local_matching_op.register_autograd(_backward, setup_context=_setup_context)


def global_matching(
    query: torch.Tensor,
    reference: torch.Tensor,
    ref_labels: torch.Tensor,
    num_objects: int,
    *,
    impl: str = "auto",
    validate: bool = True,
) -> torch.Tensor:
    """FEELVOS global matching: distance of each query pixel to the nearest reference pixel of each object.

    out[b, o, p] = tanh(m / 2), m = min over reference pixels q of batch element b with label o of
    ||query[b, :, p] - reference[b, :, q]||^2 (tanh(m/2) = 1 - 2 / (1 + exp(m)), the FEELVOS distance).

    Args:
        query: (B, C, H, W) float16/bfloat16/float32/float64 embeddings of the current frame.
        reference: (B, C, Hr, Wr) same kinds; any spatial shape, e.g. (B, C, 1, K) gathered pixels.
        ref_labels: (B, Hr, Wr) integer labels in [0, num_objects) or 255 (ignored pixel).
        num_objects: N, number of objects including the background (label 0), 1 <= N <= 255.
        impl: "auto" (Triton on CUDA, "cpu" otherwise), "reference", "cpu" or "triton".
        validate: check every label value (one device-to-host read, a synchronisation on CUDA). False skips
            it for labels the caller made or checked once already (see :func:`vidseg.ops._common.check_labels`).
    Returns:
        (B, N, H, W) float32 (float64 for float64 inputs). Where object o has no reference pixel in
        batch element b, the output is 1.0 (the distance's upper bound), with zero gradient.
    Raises:
        ValueError: a label outside [0, N) other than 255 (the message names the value), when ``validate``.

    Distances are evaluated exactly in fp32/fp64 for the arg-min pair, whatever the input dtype and
    however the path ranked candidates. Differentiable w.r.t. query and reference; only the arg-min
    pair receives gradient. Extra memory is bounded independently of (H*W) * (Hr*Wr): see the
    ``global_argmin`` docstring of each path (vidseg.ops.reference / cpu / triton_kernels).
    """
    return _global_matching_op(query, reference, ref_labels, num_objects, impl, validate)[0]


def local_matching(
    query: torch.Tensor,
    previous: torch.Tensor,
    prev_labels: torch.Tensor,
    num_objects: int,
    max_distance: int = 15,
    dilation: int = 1,
    *,
    impl: str = "auto",
    validate: bool = True,
) -> torch.Tensor:
    """FEELVOS local matching to the previous frame within a (2k+1) x (2k+1) window.

    out[b, o, p] = tanh(m / 2), m = min over offsets dy, dx in {-k..k} * dilation of
    ||query[b, :, p] - previous[b, :, p + (dy, dx)]||^2 over positions inside the image whose label is o.

    Args:
        query, previous: (B, C, H, W) float16/bfloat16/float32/float64 embeddings.
        prev_labels: (B, H, W) integer labels of the previous frame in [0, num_objects) or 255 (ignored).
        num_objects: N, number of objects including the background, 1 <= N <= 255.
        max_distance: k, the window half-size in pixels (before dilation).
        dilation: spacing between window positions.
        impl: "auto" (Triton on CUDA, "cpu" otherwise), "reference", "cpu" or "triton".
        validate: as for :func:`global_matching`.
    Returns:
        (B, N, H, W) float32 (float64 for float64 inputs); 1.0 where no pixel of o is in the window
        (positions outside the image count as absent), with zero gradient there.
    Raises:
        ValueError: a label outside [0, N) other than 255 (the message names the value), when ``validate``.

    Exact fp32/fp64 distance of the arg-min pair, gradient to that pair only. Extra memory is bounded
    independently of (H*W)^2 and of the (2k+1)^2 * C window stack: see each path's ``local_argmin``.
    """
    return _local_matching_op(query, previous, prev_labels, num_objects, max_distance, dilation, impl, validate)[0]
