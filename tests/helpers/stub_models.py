"""Stand-ins for FEELVOS and VPSNet whose outputs are known exactly, to test the code that drives them
(streaming sessions, tasks) without a trained network.

- :class:`ShiftPreviousFEELVOS`: FEELVOS's inference contract (``embed`` + ``segment``) whose prediction is
  the previous-frame labels it was given, moved ``shift`` feature cells to the right. A session that feeds
  it the right previous frame yields the first mask moved by ``4 * shift * t`` pixels at frame t; one that
  never updates its previous-frame labels, maps ids wrongly or resamples wrongly yields something else.
  Every ``segment`` call is recorded (inputs cloned).
- :class:`StubVPSNet`: VPSNet's inference contract (``infer_frame(image, state)``) that paints one thing
  segment whose track id is the state's frame index, and records the frames it was given.
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from vidseg.constants import IGNORE_LABEL, PANOPTIC_LABEL_DIVISOR
from vidseg.models.vpsnet import VPSState

FEATURE_STRIDE = 4  # FEELVOS's features and embeddings are at stride 4


class ShiftPreviousFEELVOS(nn.Module):
    """FEELVOS stand-in: features = embedding = the frame's mean intensity at stride 4 (so a recorded embedding
    tells which frame it came from); logits = 10 x one-hot of ``prev_labels`` (void as background) shifted
    right by ``shift`` cells (background enters from the left)."""

    def __init__(self, *, size_divisor: int = 16, shift: int = 1) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # sessions read the device from the parameters
        self.size_divisor = size_divisor
        self.output_stride = self.inference_output_stride = size_divisor
        self.shift = shift
        self.calls: list[dict[str, torch.Tensor]] = []

    def for_inference(self) -> ShiftPreviousFEELVOS:
        return self

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.shape[-2] % self.size_divisor or images.shape[-1] % self.size_divisor:
            raise AssertionError(f"frames reach the network unpadded: {tuple(images.shape)}")
        x = F.avg_pool2d(images.float().mean(1, keepdim=True), FEATURE_STRIDE)
        return x, x.clone()

    def segment(self, features, embedding, ref_embedding, ref_labels, prev_embedding, prev_labels, num_objects,
                *, validate=True):
        if isinstance(num_objects, int):  # inference passes a Python int (FEELVOS.segment's contract)
            num_objects = torch.tensor([num_objects])
        self.calls.append({k: v.detach().clone() for k, v in dict(
            features=features, embedding=embedding, ref_embedding=ref_embedding, ref_labels=ref_labels,
            prev_embedding=prev_embedding, prev_labels=prev_labels, num_objects=num_objects).items()})
        n = int(num_objects.max()) + 1
        labels = prev_labels.masked_fill(prev_labels == IGNORE_LABEL, 0)
        if int(labels.max()) >= n:  # the session's labels and its object count disagree
            raise AssertionError(f"label {int(labels.max())} with only {n} object slots")
        if self.shift:
            labels = F.pad(labels[..., : -self.shift], (self.shift, 0), value=0)
        return 10.0 * F.one_hot(labels, n).permute(0, 3, 1, 2).float()


# ----------------------------------------------------------------------------------------------------------
# VPS
# ----------------------------------------------------------------------------------------------------------

STUB_THING_CLASS = 3  # with num_stuff=3, num_things=2: stuff 0..2, things 3..4
STUB_BOX = (slice(2, 6), slice(2, 8))  # where the stub's thing segment lies


def stub_thing_id(frame_index: int) -> int:
    """Segment id the stub paints at frame ``frame_index`` of a video (its track id is the frame index)."""
    return (frame_index + 1) * PANOPTIC_LABEL_DIVISOR + STUB_THING_CLASS


class StubVPSNet(nn.Module):
    """VPSNet stand-in (num_stuff=3, num_things=2): stuff class 0 everywhere (segment id 1) and, in
    STUB_BOX, a thing of class 3 on track ``state.frame_index``. ``frames`` records every input frame."""

    num_stuff, num_things = 3, 2

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("pixel_mean", torch.zeros(3, 1, 1))
        self.frames: list[torch.Tensor] = []
        self.eval()

    def infer_frame(self, image: torch.Tensor, state: VPSState | None = None):
        state = state or VPSState()
        self.frames.append(image.clone())
        height, width = image.shape[-2:]
        panoptic = torch.ones(height, width, dtype=torch.int64)
        segment = stub_thing_id(state.frame_index)
        panoptic[STUB_BOX] = segment
        area = int((panoptic == segment).sum())
        segments = [
            {"id": 1, "category_id": 0, "isthing": False, "track_id": None, "score": None,
             "area": height * width - area},
            {"id": segment, "category_id": STUB_THING_CLASS, "isthing": True, "track_id": state.frame_index,
             "score": 0.9, "area": area},
        ]
        output = SimpleNamespace(panoptic=panoptic, segments_info=segments)
        return output, replace(state, frame_index=state.frame_index + 1, size=(height, width))
