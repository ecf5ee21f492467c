"""vidseg's RAFT forward (models/vpsnet/raft.py, RAFTFlow implementation="vidseg") against torchvision's:
the same flow, no host tensors in the update loop, no graph breaks, exact reuse of the previous frame's
encoder features, and VPSNet's outputs unchanged. Random weights, tiny frames, no downloads."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torchvision.models.optical_flow import raft_large, raft_small

from vidseg.inference.vps import VPSPredictor
from vidseg.models.vpsnet import TINY, build_flow, build_vpsnet
from vidseg.models.vpsnet.flow import RAFTFlow
from vidseg.models.vpsnet.raft import correlation_pyramid, raft_flow

H, W = 128, 160  # RAFT's smallest size is 128 px a side


def _raft(builder=raft_small):
    torch.manual_seed(0)
    return builder(weights=None).eval()


def _clip(n: int, height: int = H, width: int = W, seed: int = 0) -> list[torch.Tensor]:
    """n frames (1, 3, H, W) in [0, 1] of a panning, noisy scene."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, height, width + 4 * n, generator=g)
    return [(base[..., 4 * t: 4 * t + width] + 0.02 * torch.randn(1, 3, height, width, generator=g)).clamp(0, 1)
            for t in range(n)]


class HostTensors(TorchDispatchMode):
    """Records every op whose output is a CPU tensor (run the model on the meta device: any CPU output is a
    tensor made on the host, which on CUDA means a host-to-device copy)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        outputs = out if isinstance(out, (tuple, list)) else [out]
        if any(isinstance(t, torch.Tensor) and t.device.type == "cpu" for t in outputs):
            self.ops.append(str(func))
        return out


@pytest.mark.parametrize("builder", [raft_small, raft_large], ids=["raft_small", "raft_large"])
def test_fast_forward_equals_torchvision(builder):
    raft = _raft(builder)
    image1, image2 = (f * 2 - 1 for f in _clip(2))
    with torch.no_grad():
        expected = raft(image1, image2)[-1]  # 12 updates, torchvision's default
        flow, fmap1 = raft_flow(raft, image1, image2)
    assert expected.abs().max() > 1  # a real flow, not a trivially equal zero
    torch.testing.assert_close(flow, expected, rtol=1e-5, atol=1e-5)
    assert fmap1.shape == (1, raft.feature_encoder.output_dim, H // 8, W // 8)


def test_fast_forward_gradients_equal_torchvision():
    """A trainable (unfrozen) RAFT trains through the fast forward as through torchvision's."""
    raft = _raft()
    image1, image2 = (f * 2 - 1 for f in _clip(2))
    weight = raft.update_block.flow_head.conv2.weight
    grads = []
    for run in (lambda: raft(image1, image2, num_flow_updates=2)[-1],
                lambda: raft_flow(raft, image1, image2, num_flow_updates=2)[0]):
        raft.zero_grad()
        run().square().mean().backward()
        grads.append(weight.grad.clone())
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-6)


def test_raft_flow_module_equals_torchvision_implementation():
    """RAFTFlow's contract output (P2 flow), including the padding of frames under 128 px."""
    torch.manual_seed(0)
    fast = build_flow(name="raft_small").eval()
    base = RAFTFlow(fast.raft, implementation="torchvision").eval()
    for height, width in ((H, W), (64, 96)):
        target, reference = _clip(2, height, width)
        with torch.no_grad():
            torch.testing.assert_close(fast(target, reference), base(target, reference), rtol=1e-5, atol=1e-5)


def test_reused_encoder_features_equal_recomputing_over_a_clip():
    """Frame t's features, kept from the call where t was the target, give frame t+1 the same flow as
    encoding both frames again; the kept state is one feature map whatever the clip's length."""
    torch.manual_seed(0)
    flow = build_flow(name="raft_small").eval()
    clip = _clip(3)
    encoding = None
    with torch.no_grad():
        for t, frame in enumerate(clip):
            reference = clip[max(t - 1, 0)]
            recomputed = flow(frame, reference)
            reused, new_encoding = flow(frame, reference, encoding if t else None, return_encoding=True)
            torch.testing.assert_close(reused, recomputed, rtol=1e-5, atol=1e-5)
            # the features of frame t are those RAFT computes for it as an image of its own
            torch.testing.assert_close(new_encoding, flow.raft.feature_encoder(frame * 2 - 1), rtol=1e-5, atol=1e-5)
            if encoding is not None:
                assert new_encoding.shape == encoding.shape
            encoding = new_encoding


def test_reuse_encodes_only_the_target():
    torch.manual_seed(0)
    flow = build_flow(name="raft_small", num_flow_updates=1).eval()
    batches = []
    flow.raft.feature_encoder.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    a, b = _clip(2)
    with torch.no_grad():
        _, encoding = flow(a, a, return_encoding=True)
        flow(b, a, encoding, return_encoding=True)
    assert batches == [2, 1]


@pytest.mark.parametrize("updates", [1, 3])
def test_no_host_tensors_in_the_forward(updates):
    """On the meta device nothing may come out on the CPU: no linspace / coordinate grid / scalar tensor built
    on the host and copied (torchvision's forward makes 29 such tensors, +7 per update)."""
    raft = _raft().to("meta")
    image1, image2 = torch.empty(2, 1, 3, H, W, device="meta")
    with torch.no_grad():
        with HostTensors() as torchvision_mode:
            raft(image1, image2, num_flow_updates=updates)
        with HostTensors() as mode:
            flow, fmap1 = raft_flow(raft, image1, image2, num_flow_updates=updates)
            raft_flow(raft, image1, fmap2=fmap1, num_flow_updates=updates)
        with HostTensors() as module_mode:
            RAFTFlow(raft)(image1, image2, fmap1, return_encoding=True)
    assert torchvision_mode.ops  # the check sees torchvision's host tensors
    assert mode.ops == [] and module_mode.ops == []
    assert flow.device.type == "meta" and flow.shape == (1, 2, H, W)


def test_forward_traces_without_graph_breaks():
    """The whole RAFTFlow forward (with and without reused features) is one graph: it can be captured
    (CUDA graphs, torch.compile(mode="reduce-overhead", fullgraph=True))."""
    torch.manual_seed(0)
    flow = build_flow(name="raft_small", num_flow_updates=2).eval()
    a, b = _clip(2)
    with torch.no_grad():
        _, encoding = flow(b, b, return_encoding=True)
        for reference_encoding in (None, encoding):
            explained = torch._dynamo.explain(flow._flow)(a, b, reference_encoding)
            assert explained.graph_break_count == 0, explained.break_reasons
            assert explained.graph_count == 1


def test_correlation_precision_options():
    raft = _raft()
    image1, image2 = (f * 2 - 1 for f in _clip(2))
    with torch.no_grad():
        exact, _ = raft_flow(raft, image1, image2, num_flow_updates=3)
        fmap1, fmap2 = raft.feature_encoder(torch.cat([image1, image2])).chunk(2)
        pyramid = correlation_pyramid(fmap1, fmap2, 4)
        bf16 = correlation_pyramid(fmap1, fmap2, 4, precision="bf16")
        for level, rounded in zip(pyramid, bf16, strict=True):
            assert rounded.dtype == torch.float32  # bf16 products, fp32 pyramid (the sampling stays exact)
            torch.testing.assert_close(rounded, level, rtol=0.02, atol=0.02 * float(level.abs().max()))
        flow = build_flow(name="raft_small", precision="tf32", num_flow_updates=3).eval()
        flow.raft.load_state_dict(raft.state_dict())
        target, reference = _clip(2)
        previous = torch.backends.cuda.matmul.allow_tf32
        seen = []
        hook = flow.raft.context_encoder.register_forward_pre_hook(
            lambda *_: seen.append(torch.backends.cuda.matmul.allow_tf32))
        torch.testing.assert_close(flow(target, reference),  # TF32 is a CUDA setting: exact on the CPU
                                   RAFTFlow(raft, num_flow_updates=3)(target, reference), rtol=1e-5, atol=1e-5)
        hook.remove()
        assert seen == [True] and torch.backends.cuda.matmul.allow_tf32 == previous  # on inside, restored after
    assert exact.shape == (1, 2, H, W)
    with pytest.raises(ValueError, match="precision must be one of"):
        build_flow(name="raft_small", precision="fp8")
    with pytest.raises(ValueError, match="need implementation='vidseg'"):
        build_flow(name="raft_small", implementation="torchvision", precision="bf16")
    with pytest.raises(ValueError, match="RAFT's"):
        build_flow(name="tiny", precision="bf16")


def test_downsample_option_keeps_the_contract():
    torch.manual_seed(0)
    flow = build_flow(name="raft_small", downsample=2, num_flow_updates=2).eval()
    target, reference = _clip(2, 256, 320)
    with torch.no_grad():
        out = flow(target, reference)
    assert out.shape == (1, 2, 64, 80)
    with pytest.raises(ValueError, match="downsample must be 1, 2 or 4"):
        build_flow(name="raft_small", downsample=3)


def test_vpsnet_outputs_unchanged_by_the_fast_flow():
    """VPSNet fusetrack with RAFT-small: the predictor's outputs over a clip are those of torchvision's RAFT
    forward, and the session keeps one flow encoding (the previous frame's)."""
    torch.manual_seed(0)
    model = build_vpsnet(variant="fusetrack", backbone={"name": "resnet18"}, num_stuff=3, num_things=2,
                         flow={"name": "raft_small", "num_flow_updates": 3},
                         **{**TINY, "stuff_area_limit": 16, "detector": {**TINY["detector"], "score_thresh": 0.0}})
    model.eval()
    frames = [(f[0] * 255).to(torch.uint8) for f in _clip(3, 64, 96)]
    results, states = {}, {}
    for implementation in ("torchvision", "vidseg"):
        model.flow.implementation = implementation
        session = VPSPredictor(model).start()
        outputs = [session.step_raw(frame) for frame in frames]
        results[implementation], states[implementation] = outputs, session.state
    for base, fast in zip(results["torchvision"], results["vidseg"], strict=True):
        assert torch.equal(base.panoptic, fast.panoptic) and torch.equal(base.track_ids, fast.track_ids)
        # equal segments; scores equal to float rounding (frame t's reused features are batch-1 convolutions)
        assert [{**s, "score": None} for s in base.segments_info] == [{**s, "score": None} for s in fast.segments_info]
        torch.testing.assert_close(fast.scores, base.scores, rtol=1e-4, atol=1e-5)
    assert len(results["vidseg"][-1].segments_info) > 1  # things were found, so tracking was exercised
    assert states["torchvision"].flow_encoding is None
    assert states["vidseg"].flow_encoding.shape == (1, 128, 128 // 8, 128 // 8)  # padded to RAFT's 128 px


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
@pytest.mark.cuda
def test_fast_forward_on_cuda_has_no_host_syncs_and_equals_torchvision():
    """At 512x1024: the fast forward (features reused) makes no synchronising call (torchvision's copies its
    neighbourhood grid from the host every update) and gives torchvision's flow; TF32 / bf16 stay close."""
    torch.manual_seed(0)
    base = build_flow(name="raft_small", implementation="torchvision").cuda().eval()
    clip = [f.cuda() for f in _clip(3, 512, 1024)]
    variants = {name: RAFTFlow(base.raft, precision=name) for name in ("32", "tf32", "bf16")}
    with torch.inference_mode():
        expected = base(clip[1], clip[0])
        recomputed = variants["32"](clip[1], clip[0])  # the same batches as torchvision's: the same kernels
        outputs = {}
        for name, flow in variants.items():
            _, encoding = flow(clip[0], clip[0], return_encoding=True)
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
            try:
                outputs[name], _ = flow(clip[1], clip[0], encoding, return_encoding=True)
            finally:
                torch.cuda.set_sync_debug_mode("default")
    scale = float(expected.abs().max())
    torch.testing.assert_close(recomputed, expected, rtol=1e-4, atol=1e-4 * scale)
    # reused features come from a batch-1 encoder call (other convolution kernels): rounding, amplified by 12 updates
    torch.testing.assert_close(outputs["32"], expected, rtol=1e-3, atol=1e-3 * scale)
    for name in ("tf32", "bf16"):  # documented as approximate: a loose check that they are the same flow
        error = (outputs[name] - expected).abs().mean() / expected.abs().mean()
        assert error < 0.05, (name, float(error))


@needs_cuda
@pytest.mark.cuda
def test_compiled_flow_equals_eager_on_cuda():
    """compile=True (reduce-overhead, CUDA graphs) over a clip with reused features equals eager; the kept
    encodings survive the next replay (cloned out of the graph's memory)."""
    torch.manual_seed(0)
    eager = build_flow(name="raft_small").cuda().eval()
    compiled = RAFTFlow(eager.raft, compile=True)
    clip = [f.cuda() for f in _clip(4, 256, 512)]
    with torch.inference_mode():
        results = []
        for flow in (eager, compiled):
            encoding, previous, outputs, encodings = None, None, [], []
            for frame in clip:
                out, encoding = flow(frame, frame if previous is None else previous, encoding, return_encoding=True)
                outputs.append(out)
                encodings.append(encoding)
                previous = frame
            results.append((outputs, encodings))
    (outputs, encodings), (compiled_outputs, compiled_encodings) = results
    for a, b in zip(outputs, compiled_outputs, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-3 * float(a.abs().max()))
    for a, b in zip(encodings, compiled_encodings, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-3)
