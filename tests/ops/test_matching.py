"""global_matching / local_matching: exactness against float64 brute force, gradients, dtypes, errors,
memory bounds and torch.compile, for the "reference" and "cpu" paths (Triton: test_triton.py)."""

from __future__ import annotations

import pytest
import torch

from tests.ops import brute
from tests.ops.memory import peak_extra_bytes, requires_peak_memory
from vidseg.ops import _common, cpu, global_matching, local_matching, reference

# opcheck's aot_dispatch tests are slow; torch.compile is tested below instead
OPCHECKS = ("test_schema", "test_autograd_registration", "test_faketensor")
PATHS = ["reference", "cpu"]
TOL = dict(atol=2e-6, rtol=0)  # fp32 evaluation of an exact arg-min pair


def _two_batch_labels(shape, num_objects):
    """Batch element 0 lacks object 2; element 1 has only objects 0 and 1 and some ignored pixels."""
    lab = brute.labels(2, *shape, num_objects=num_objects, seed=7)
    lab[0][lab[0] == 2] = 1
    lab[1] = torch.where(lab[1] == brute.IGNORE, brute.IGNORE, lab[1] % 2)
    return lab


@pytest.mark.parametrize("impl", PATHS + ["auto"])
def test_global_matches_brute_force(impl):
    n = 4
    query = brute.embeddings(2, 6, 5, 7, seed=0)
    ref = brute.embeddings(2, 6, 4, 9, seed=1)
    lab = _two_batch_labels((4, 9), n)
    out = global_matching(query, ref, lab, n, impl=impl)
    assert out.shape == (2, n, 5, 7) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), brute.global_matching(query, ref, lab, n), **TOL)
    assert (out[0, 2] == 1.0).all() and (out[1, 2:] == 1.0).all()  # absent objects: documented 1.0


@pytest.mark.parametrize("impl", PATHS)
def test_global_gathered_reference_pixels_and_edge_shapes(impl):
    n = 3
    query = brute.embeddings(1, 4, 1, 5, seed=2)  # a 1-pixel-high query
    ref = brute.embeddings(1, 4, 1, 13, seed=3)  # (B, C, 1, K) gathered pixels
    lab = brute.labels(1, 1, 13, num_objects=n, seed=4)
    out = global_matching(query, ref, lab, n, impl=impl)
    torch.testing.assert_close(out.double(), brute.global_matching(query, ref, lab, n), **TOL)
    all_ignored = torch.full_like(lab, brute.IGNORE)
    assert (global_matching(query, ref, all_ignored, n, impl=impl) == 1.0).all()


def test_global_cpu_tiles_span_objects(monkeypatch):
    """Small tiles: query and reference chunks, objects split across chunks, chunks with several objects."""
    n = 5
    query = brute.embeddings(2, 3, 9, 11, seed=5)
    ref = brute.embeddings(2, 3, 10, 12, seed=6)
    lab = brute.labels(2, 10, 12, num_objects=n, seed=7, ignore_fraction=0.1)
    monkeypatch.setattr(_common, "TILE_BYTES", cpu.GROUP * 8 * 4)
    argmin = cpu.global_argmin(query, ref, lab, n)
    assert (argmin == reference.global_argmin(query, ref, lab, n)).all()


@pytest.mark.parametrize("impl", PATHS + ["auto"])
@pytest.mark.parametrize(
    "shape, k, dilation",
    [
        ((7, 9), 2, 1),
        ((7, 9), 2, 2),  # dilated window reaching past the borders
        ((1, 11), 3, 1),  # 1-pixel-high frame
        ((5, 3), 4, 1),  # window larger than the frame
        ((6, 5), 0, 1),  # window = the pixel itself
        ((9, 8), 1, 3),
    ],
)
def test_local_matches_brute_force(impl, shape, k, dilation):
    n = 4
    query = brute.embeddings(2, 5, *shape, seed=10)
    prev = brute.embeddings(2, 5, *shape, seed=11)
    lab = _two_batch_labels(shape, n)
    out = local_matching(query, prev, lab, n, k, dilation, impl=impl)
    assert out.shape == (2, n, *shape) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), brute.local_matching(query, prev, lab, n, k, dilation), **TOL)


@pytest.mark.parametrize("tile_bytes, shape", [(1, (5, 7)), (_common.TILE_BYTES, (20, 37))])
def test_local_cpu_several_tiles(tile_bytes, shape, monkeypatch):
    """Frames larger than one query tile (clipped windows, padded last tiles); tiny budget -> 1x1 tiles."""
    n = 3
    query = brute.embeddings(1, 4, *shape, seed=12)
    prev = brute.embeddings(1, 4, *shape, seed=13)
    lab = brute.labels(1, *shape, num_objects=n, seed=14)
    monkeypatch.setattr(_common, "TILE_BYTES", tile_bytes)
    argmin = cpu.local_argmin(query, prev, lab, n, 3, 1)
    assert (argmin == reference.local_argmin(query, prev, lab, n, 3, 1)).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("impl", PATHS)
def test_low_precision_inputs_give_exact_fp32_distances(impl, dtype):
    n = 3
    query = brute.embeddings(2, 8, 6, 7, seed=20, dtype=dtype)
    other = brute.embeddings(2, 8, 6, 7, seed=21, dtype=dtype)
    lab = brute.labels(2, 6, 7, num_objects=n, seed=22)
    out = global_matching(query, other, lab, n, impl=impl)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), brute.global_matching(query, other, lab, n), **TOL)
    out = local_matching(query, other, lab, n, 2, impl=impl)
    torch.testing.assert_close(out.double(), brute.local_matching(query, other, lab, n, 2, 1), **TOL)


@pytest.mark.parametrize("impl", PATHS)
def test_float64_in_float64_out(impl):
    query = brute.embeddings(1, 3, 4, 5, seed=23, dtype=torch.float64)
    lab = brute.labels(1, 4, 5, num_objects=2, seed=24)
    assert global_matching(query, query, lab, 2, impl=impl).dtype == torch.float64
    assert local_matching(query, query, lab, 2, 1, impl=impl).dtype == torch.float64


@pytest.mark.parametrize("impl", PATHS)
def test_gradcheck(impl):
    n = 3
    query = brute.embeddings(2, 3, 4, 5, seed=30, dtype=torch.float64).requires_grad_()
    ref = brute.embeddings(2, 3, 3, 4, seed=31, dtype=torch.float64).requires_grad_()
    prev = brute.embeddings(2, 3, 4, 5, seed=32, dtype=torch.float64).requires_grad_()
    ref_lab = _two_batch_labels((3, 4), n)
    prev_lab = _two_batch_labels((4, 5), n)
    assert torch.autograd.gradcheck(lambda q, r: global_matching(q, r, ref_lab, n, impl=impl), (query, ref))
    assert torch.autograd.gradcheck(
        lambda q, p: local_matching(q, p, prev_lab, n, 1, 2, impl=impl), (query, prev), fast_mode=True
    )


def test_gradient_reaches_only_the_argmin_pair():
    query = torch.tensor([[[[0.0]], [[0.0]]]], requires_grad=True)  # (1, 2, 1, 1)
    ref = torch.tensor([[[[1.0, 3.0, 0.5]], [[0.0, 0.0, 0.0]]]], requires_grad=True)  # (1, 2, 1, 3)
    lab = torch.tensor([[[0, 0, 1]]])
    out = global_matching(query, ref, lab, 3)
    torch.testing.assert_close(out.flatten(), torch.tanh(torch.tensor([0.5, 0.125, float("inf")])))
    out.sum().backward()
    sech2 = lambda s: 1 / torch.cosh(torch.tensor(s / 2)) ** 2  # noqa: E731
    # d tanh(|q - r|^2 / 2) / dr = -sech^2(sq/2) * (q - r); reference pixel 1 is not an arg-min
    expected = torch.tensor([[sech2(1.0) * 1.0, 0.0, sech2(0.25) * 0.5], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(ref.grad[0, :, 0], expected)
    torch.testing.assert_close(query.grad[0, :, 0, 0], -expected.sum(1))


@pytest.mark.parametrize("bad", [3, -1, 254, 256])
def test_bad_label_values_raise(bad):
    query = brute.embeddings(1, 2, 3, 3, seed=40)
    lab = torch.zeros(1, 3, 3, dtype=torch.long)
    lab[0, 1, 2] = bad
    with pytest.raises(ValueError, match=str(bad)):
        global_matching(query, query, lab, 3)
    with pytest.raises(ValueError, match=str(bad)):
        local_matching(query, query, lab, 3, 1)


def test_bad_arguments_raise():
    query = brute.embeddings(1, 2, 3, 3, seed=41)
    lab = torch.zeros(1, 3, 3, dtype=torch.long)
    with pytest.raises(TypeError):
        global_matching(query, query, lab.float(), 3)
    with pytest.raises(ValueError, match="impl"):
        global_matching(query, query, lab, 3, impl="cuda")
    with pytest.raises(ValueError):
        local_matching(query, query[..., :2], lab, 3)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        global_matching(query, query, lab, 3, impl="triton")


def test_auto_picks_cpu_path_on_cpu():
    query = brute.embeddings(1, 2, 3, 3, seed=42)
    assert _common.resolve_impl("auto", query) == "cpu"


def test_custom_ops_pass_opcheck():
    query = brute.embeddings(2, 3, 4, 5, seed=50).requires_grad_()
    other = brute.embeddings(2, 3, 4, 5, seed=51).requires_grad_()
    lab = brute.labels(2, 4, 5, num_objects=3, seed=52)
    torch.library.opcheck(torch.ops.vidseg.global_matching.default, (query, other, lab, 3, "cpu"), test_utils=OPCHECKS)
    torch.library.opcheck(
        torch.ops.vidseg.local_matching.default, (query, other, lab, 3, 1, 1, "cpu"), test_utils=OPCHECKS
    )


def test_torch_compile_fullgraph_forward_and_backward():
    n = 3
    query = brute.embeddings(2, 3, 4, 5, seed=53).requires_grad_()
    other = brute.embeddings(2, 3, 4, 5, seed=54).requires_grad_()
    lab = brute.labels(2, 4, 5, num_objects=n, seed=55)

    def loss(q, o):
        return (global_matching(q, o, lab, n) * 2 + local_matching(q, o, lab, n, 1)).square().sum()

    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    grads = torch.autograd.grad(compiled(query, other), (query, other))
    expected = torch.autograd.grad(loss(query, other), (query, other))
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want)


# Memory: with a 1 MB tile budget, the working set stays at a few budgets while the pair matrix /
# window stack of these sizes is >= 4x the asserted bound.
BUDGET, BOUND = 1 << 20, 12 << 20


@requires_peak_memory
@pytest.mark.parametrize("impl, channels", [("reference", 4), ("cpu", 16)])
def test_global_peak_memory_is_bounded(impl, channels, monkeypatch):
    monkeypatch.setattr(_common, "TILE_BYTES", BUDGET)
    n, side = 2, 72
    query = brute.embeddings(1, channels, side, side, seed=60)
    ref = brute.embeddings(1, channels, side, side, seed=61)
    lab = brute.labels(1, side, side, num_objects=n, seed=62)
    pair_matrix = (side * side) ** 2 * 4  # 108 MB
    assert pair_matrix >= 4 * BOUND
    global_matching(query[..., :4, :4], ref[..., :4, :4], lab[..., :4, :4], n, impl=impl)  # warm-up
    peak = peak_extra_bytes(lambda: global_matching(query, ref, lab, n, impl=impl))
    assert peak < BOUND, f"{impl}: {peak / 2**20:.1f} MB"


@requires_peak_memory
@pytest.mark.parametrize("impl", PATHS)
def test_local_peak_memory_is_bounded(impl, monkeypatch):
    monkeypatch.setattr(_common, "TILE_BYTES", BUDGET)
    n, side, channels, k = 2, 48, 16, 15
    query = brute.embeddings(1, channels, side, side, seed=63)
    prev = brute.embeddings(1, channels, side, side, seed=64)
    lab = brute.labels(1, side, side, num_objects=n, seed=65)
    window_stack = side * side * (2 * k + 1) ** 2 * channels * 4  # 142 MB
    assert window_stack >= 4 * BOUND
    local_matching(query[..., :4, :4], prev[..., :4, :4], lab[..., :4, :4], n, k, impl=impl)  # warm-up
    peak = peak_extra_bytes(lambda: local_matching(query, prev, lab, n, k, impl=impl))
    assert peak < BOUND, f"{impl}: {peak / 2**20:.1f} MB"
