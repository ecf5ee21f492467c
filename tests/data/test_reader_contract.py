"""Readers and writers: decord's fallback to PyAV resumes where decord stopped, hidden temporaries of atomic
writers are never read as frames or annotations, written files get ordinary permissions, training samples
use every allowed frame gap."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest

import vidseg.data.video as video
from vidseg.data.davis import DavisEvalDataset, DavisTrainDataset, check_sequence, list_sequences, sequence_paths
from vidseg.data.io import read_mask, write_image, write_json_atomic, write_mask, write_text_atomic
from vidseg.data.panoptic import write_panoptic_png
from vidseg.data.video import OverlayVideoWriter, list_image_frames, read_video_frames, write_video


def distinct_frames(n: int, h: int = 32, w: int = 64) -> list[np.ndarray]:
    """Smooth frames whose brightness steps by 20 per frame, so a decoded frame tells which one it is."""
    yy, xx = np.mgrid[0:h, 0:w]
    return [np.stack([xx * 2, yy * 3, np.full_like(xx, 20 * i)], -1).clip(0, 255).astype(np.uint8)
            for i in range(n)]


def decode_with_av(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


class DecordStandIn:
    """A decord VideoReader whose frames are PyAV's and whose get_batch breaks from frame ``fail_from`` on:
    raising (``mode="raise"``) or returning 4-channel frames (``mode="rgba"``, decord 0.6's size quirk)."""

    def __init__(self, frames: list[np.ndarray], fail_from: int, mode: str) -> None:
        self.frames, self.fail_from, self.mode = frames, fail_from, mode

    def __len__(self) -> int:
        return len(self.frames)

    def get_batch(self, indices: list[int]):
        batch = np.stack([self.frames[i] for i in indices])
        if max(indices) >= self.fail_from:
            if self.mode == "raise":
                raise RuntimeError("DECORDError: cannot copy frame")
            batch = np.concatenate([batch, batch[..., :1]], axis=-1)
        return SimpleNamespace(asnumpy=lambda: batch)


@pytest.mark.parametrize("mode", ["raise", "rgba"])
@pytest.mark.parametrize("fail_from", [0, 3, 5, 10])
def test_decord_failure_mid_video_continues_with_pyav_from_that_frame(tmp_path, monkeypatch, mode, fail_from):
    path = write_video(tmp_path / "clip.mp4", distinct_frames(11), fps=10)
    reference = decode_with_av(path)
    monkeypatch.setattr(video, "_open_decord", lambda p: DecordStandIn(reference, fail_from, mode))
    read = list(read_video_frames(path, batch_size=2, backend="decord"))
    assert len(read) == 11  # every frame once: no restart at frame 0, none skipped
    for k, (got, expected) in enumerate(zip(read, reference, strict=True)):
        assert got.shape == (32, 64, 3)
        np.testing.assert_array_equal(got, expected, err_msg=f"frame {k}")


def test_the_frames_are_the_videos_in_order(tmp_path):
    source = distinct_frames(7)
    path = write_video(tmp_path / "clip.mp4", source, fps=10)
    for backend in ("decord", "av"):
        read = list(read_video_frames(path, batch_size=3, backend=backend))
        nearest = [int(np.argmin([np.abs(f.astype(int) - s).mean() for s in source])) for f in read]
        assert nearest == list(range(7)), backend


def test_an_image_folder_with_frames_of_another_size_is_an_error_naming_the_file(tmp_path):
    write_image(tmp_path / "00000.png", distinct_frames(1)[0])
    write_image(tmp_path / "00001.png", distinct_frames(1, h=16)[0])
    with pytest.raises(video.VideoError, match=r"00001\.png: size \(16, 64\) differs"):
        list(read_video_frames(tmp_path))


# ------------------------------------------------------------------------------------------------ hidden files


def leave_hidden_temporary(path: Path) -> Path:
    """What an interrupted atomic write leaves next to ``path``: a hidden ``.<name>.<random><suffix>`` copy."""
    hidden = path.with_name(f".{path.name}.k3j9x{path.suffix}")
    shutil.copyfile(path, hidden)
    return hidden


def test_hidden_temporaries_in_an_image_folder_are_not_frames(tmp_path):
    frames = distinct_frames(3)
    for i, frame in enumerate(frames):
        write_image(tmp_path / f"{i:05d}.png", frame)
    leave_hidden_temporary(tmp_path / "00001.png")
    assert [p.name for p in list_image_frames(tmp_path)] == ["00000.png", "00001.png", "00002.png"]
    assert len(list(read_video_frames(tmp_path))) == 3


def test_hidden_temporaries_in_davis_folders_are_never_read(tmp_path, toy_davis_root):
    root = shutil.copytree(toy_davis_root, tmp_path / "davis")
    seq = list_sequences(root, split="val")[0]
    before = sequence_paths(root, seq)
    leave_hidden_temporary(root / "Annotations" / "480p" / seq / "00003.png")
    leave_hidden_temporary(root / "JPEGImages" / "480p" / seq / "00002.jpg")
    assert sequence_paths(root, seq) == before
    assert check_sequence(root, seq, require_all_masks=True) == before
    item = DavisEvalDataset(root, split="val", sequences=[seq])[0]
    assert item["frame_ids"] == [p.stem for p in before[0]] and item["annotated"].all()
    train_seq = list_sequences(root, split="train")[0]
    leave_hidden_temporary(root / "Annotations" / "480p" / train_seq / "00000.png")
    DavisTrainDataset(root, sequences=[train_seq], crop_size=(32, 32), samples_per_epoch=1, min_object_pixels=1)[0]


# ----------------------------------------------------------------------------------------------- permissions


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_written_files_get_the_permissions_of_a_plain_open(tmp_path):
    """Atomic writers go through mkstemp (mode 0600); what they leave must be readable like any file
    (0666 minus the umask), or other users and web servers cannot read results."""
    expected = 0o666 & ~current_umask()
    labels = np.zeros((8, 8), np.uint8)
    labels[2:5, 2:5] = 1
    frame = distinct_frames(1, 16, 16)[0]
    write_mask(tmp_path / "mask.png", labels)
    write_image(tmp_path / "frame.jpg", frame)
    write_image(tmp_path / "frame.png", frame)
    write_text_atomic(tmp_path / "notes.txt", "x")
    write_json_atomic(tmp_path / "scores.json", {"J": 1.0})
    write_panoptic_png(tmp_path / "pan.png", labels.astype(np.int64) * 1003)
    write_video(tmp_path / "video.mp4", [frame, frame], fps=5)
    with OverlayVideoWriter(tmp_path / "overlay.mp4", fps=5) as writer:
        writer.write(frame, np.zeros((16, 16), np.uint8))
    names = ["frame.jpg", "frame.png", "mask.png", "notes.txt", "overlay.mp4", "pan.png", "scores.json",
             "video.mp4"]
    assert sorted(os.listdir(tmp_path)) == names  # and no temporary left behind
    for name in names:
        assert oct((tmp_path / name).stat().st_mode & 0o777) == oct(expected), name


def test_overwriting_keeps_the_new_content_only(tmp_path):
    path = tmp_path / "mask.png"
    write_mask(path, np.ones((4, 4), np.uint8))
    write_mask(path, np.full((4, 4), 2, np.uint8))
    assert (read_mask(path) == 2).all() and os.listdir(tmp_path) == ["mask.png"]


# ------------------------------------------------------------------------------------------ training samples


def test_training_samples_use_every_frame_gap_up_to_the_maximum(toy_davis_root):
    def gaps(max_frame_gap: int) -> set[int]:
        ds = DavisTrainDataset(toy_davis_root, crop_size=(32, 32), samples_per_epoch=60, min_object_pixels=1,
                               max_frame_gap=max_frame_gap, seed=0)
        return {int(ds[i]["frame_indices"][2] - ds[i]["frame_indices"][1]) for i in range(len(ds))}

    assert gaps(1) == {1}  # FEELVOS: consecutive frames
    assert gaps(3) == {1, 2, 3}
