"""DAVIS layout checks, datasets, seeding and the datamodule (on tiny generated data)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from vidseg.data.collate import collate_single
from vidseg.data.davis import (
    DatasetLayoutError,
    DavisDataModule,
    DavisEvalDataset,
    DavisTrainDataset,
    check_sequence,
    collate_train,
    list_sequences,
    sequence_paths,
)
from vidseg.data.io import read_mask, write_image, write_mask
from vidseg.data.sampling import EpochSampler
from vidseg.errors import MaskFormatError
from vidseg.utils.seeding import worker_init_fn


def make_davis_root(
    root: Path,
    sequences: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    year: str = "2017",
    split: str = "train",
    mask_writer=write_mask,
) -> Path:
    """Write ``{name: (images (T,H,W,3) uint8, masks (T,H,W) uint8)}`` in the DAVIS layout."""
    for name, (images, masks) in sequences.items():
        for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
            write_image(root / "JPEGImages" / "480p" / name / f"{i:05d}.jpg", image)
            mask_writer(root / "Annotations" / "480p" / name / f"{i:05d}.png", mask)
    split_file = root / "ImageSets" / year / f"{split}.txt"
    split_file.parent.mkdir(parents=True, exist_ok=True)
    split_file.write_text("".join(f"{n}\n" for n in sequences))
    return root


def static_sequence(frames: int = 4, h: int = 32, w: int = 48, seed: int = 0) -> tuple[np.ndarray, ...]:
    """A textured clip whose frames are all identical, with two objects (ids 3 and 6) and a void band."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[2:16, 2:20] = 3
    mask[16:30, 26:46] = 6
    mask[:, 22:24] = 255
    return np.repeat(image[None], frames, 0), np.repeat(mask[None], frames, 0)


def copy_root(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# -------------------------------------------------------------------------------------------- layout errors


def test_missing_root_explains_how_to_get_data(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        list_sequences(tmp_path / "nowhere")
    msg = str(info.value)
    assert str((tmp_path / "nowhere").resolve()) in msg
    assert "davischallenge.org/davis2017/code.html" in msg
    assert "python -m vidseg.data.toy --root data/toy_davis" in msg and "data.root=data/toy_davis" in msg


def test_missing_split_lists_available(toy_davis_root: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"split file not found.*test-dev.*available: 2017/train.txt"):
        list_sequences(toy_davis_root, split="test-dev")


def test_missing_sequence_folder_is_named(tmp_path: Path, toy_davis_root: Path) -> None:
    root = copy_root(toy_davis_root, tmp_path / "d")
    seq = list_sequences(root, split="val")[0]
    shutil.rmtree(root / "Annotations" / "480p" / seq)
    with pytest.raises(FileNotFoundError, match=str(root / "Annotations" / "480p" / seq)):
        list_sequences(root, split="val")
    with pytest.raises(FileNotFoundError, match="resolution 'Full-Resolution'"):
        list_sequences(root, split="train", resolution="Full-Resolution")


def test_size_mismatch_names_files(tmp_path: Path, toy_davis_root: Path) -> None:
    root = copy_root(toy_davis_root, tmp_path / "d")
    seq = list_sequences(root, split="val")[0]
    bad = root / "Annotations" / "480p" / seq / "00002.png"
    write_mask(bad, np.zeros((10, 10), np.uint8))
    with pytest.raises(DatasetLayoutError, match=rf"{bad}.*10x10.*00000\.jpg"):
        check_sequence(root, seq)
    with pytest.raises(DatasetLayoutError, match="size mismatch"):
        DavisEvalDataset(root, split="val")


def test_count_mismatch_names_files(tmp_path: Path, toy_davis_root: Path) -> None:
    root = copy_root(toy_davis_root, tmp_path / "d")
    seq = list_sequences(root, split="train")[0]
    ann = root / "Annotations" / "480p" / seq
    (ann / "00003.png").unlink()
    frames, masks = sequence_paths(root, seq)  # allowed: annotations can cover some frames only
    assert len(frames) == len(masks) + 1
    with pytest.raises(DatasetLayoutError, match=r"every frame annotated.*00003\.png"):
        DavisTrainDataset(root, split="train")
    write_mask(ann / "00099.png", np.zeros((64, 112), np.uint8))  # an annotation without a frame
    with pytest.raises(DatasetLayoutError, match=r"00099\.png"):
        sequence_paths(root, seq)


def test_first_frame_without_annotation_or_objects(tmp_path: Path, toy_davis_root: Path) -> None:
    root = copy_root(toy_davis_root, tmp_path / "d")
    seq = list_sequences(root, split="val")[0]
    first = root / "Annotations" / "480p" / seq / "00000.png"
    write_mask(first, np.zeros((64, 112), np.uint8))
    with pytest.raises(MaskFormatError, match=rf"{first}.*no object"):
        DavisEvalDataset(root, split="val")[0]
    first.unlink()
    with pytest.raises(DatasetLayoutError, match=r"first frame .*00000\.jpg has no annotation"):
        check_sequence(root, seq)


def test_rgb_mask_and_corrupt_jpeg_are_errors(tmp_path: Path, toy_davis_root: Path) -> None:
    root = copy_root(toy_davis_root, tmp_path / "d")
    seq = list_sequences(root, split="val")[0]
    rgb = root / "Annotations" / "480p" / seq / "00001.png"
    Image.fromarray(np.zeros((64, 112, 3), np.uint8)).save(rgb)
    with pytest.raises(MaskFormatError, match=rf"{rgb}.*RGB"):
        DavisEvalDataset(root, split="val")[0]
    shutil.copy(toy_davis_root / "Annotations" / "480p" / seq / "00001.png", rgb)
    jpg = root / "JPEGImages" / "480p" / seq / "00004.jpg"
    jpg.write_bytes(jpg.read_bytes()[:300])  # header survives, pixel data truncated
    with pytest.raises(OSError, match=rf"{jpg}.*corrupt"):
        DavisEvalDataset(root, split="val")[0]


# ------------------------------------------------------------------------------------------------- DAVIS 2016


def test_davis_2016_binary_masks(tmp_path: Path) -> None:
    images, masks = static_sequence(frames=3)
    binary = np.where(masks == 3, 255, 0).astype(np.uint8)  # 0/255 as DAVIS 2016 stores them

    def write_gray(path: Path, labels: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(labels, mode="L").save(path)

    root = make_davis_root(tmp_path / "d16", {"blob": (images, binary)}, year="2016", split="val",
                           mask_writer=write_gray)
    item = DavisEvalDataset(root, year="2016", split="val")[0]
    assert item["num_objects"] == 1
    assert set(item["masks"].unique().tolist()) == {0, 1}
    # DAVIS 2016's own ImageSets/<res>/<split>.txt lists frame paths.
    shutil.rmtree(root / "ImageSets" / "2016")
    legacy = root / "ImageSets" / "480p" / "val.txt"
    legacy.parent.mkdir(parents=True)
    legacy.write_text("".join(f"/JPEGImages/480p/blob/{i:05d}.jpg /Annotations/480p/blob/{i:05d}.png\n"
                              for i in range(3)))
    assert list_sequences(root, year="2016", split="val") == ["blob"]
    train = DavisTrainDataset(root, year=2016, split="val", crop_size=(32, 48), samples_per_epoch=2)
    assert set(train[0]["masks"].unique().tolist()) <= {0, 1}


# ---------------------------------------------------------------------------------------------- train samples


def test_train_sample_shapes_and_dtypes(toy_davis_root: Path) -> None:
    ds = DavisTrainDataset(toy_davis_root, split="train", crop_size=(48, 80), samples_per_epoch=5,
                           min_object_pixels=2, seed=1)
    assert len(ds) == 5
    item = ds[0]
    assert item["images"].shape == (3, 3, 48, 80) and item["images"].dtype == torch.uint8
    assert item["masks"].shape == (3, 48, 80) and item["masks"].dtype == torch.int64
    n = item["num_objects"]
    assert isinstance(n, int) and 1 <= n <= 3
    ref_ids = set(item["masks"][0].unique().tolist()) - {0, 255}
    assert ref_ids == set(range(1, n + 1))  # compacted to 1..n
    assert set(item["masks"].unique().tolist()) <= set(range(n + 1)) | {255}
    assert item["frame_indices"][2] == item["frame_indices"][1] + 1  # [reference, q, q + 1]


def _remap_root(tmp_path: Path, frames: int = 4) -> Path:
    """Static frames; ids 3 and 6 everywhere, id 4 only in odd frames."""
    images, masks = static_sequence(frames=frames)
    masks = masks.copy()
    masks[1::2, 20:28, 6:14] = 4
    return make_davis_root(tmp_path / "remap", {"seq": (images, masks)})


def test_train_remapping_absent_ids_compaction_void(tmp_path: Path) -> None:
    root = _remap_root(tmp_path)
    raw = read_mask(root / "Annotations" / "480p" / "seq" / "00001.png")
    # scale 1 + full-size crop: geometry is the identity or a horizontal flip.
    ds = DavisTrainDataset(root, crop_size=raw.shape, scale=(1.0, 1.0), samples_per_epoch=12,
                           min_object_pixels=2, max_retries=2, seed=0)
    seen_ref_parity = set()
    for i in range(len(ds)):
        item = ds[i]
        ref = int(item["frame_indices"][0])
        seen_ref_parity.add(ref % 2)
        masks = item["masks"].numpy()
        # the reference and the (previous, current) pair have their own flip draws
        flipped = [not np.array_equal(masks[k] == 255, raw == 255) for k in range(3)]
        assert flipped[1] == flipped[2]
        lut = {0: 0, 3: 1, 6: 2 + (ref % 2), 255: 255, 4: 2 if ref % 2 else 0}
        assert item["num_objects"] == 2 + ref % 2
        for k, fi in enumerate(item["frame_indices"].tolist()):
            source = read_mask(root / "Annotations" / "480p" / "seq" / f"{fi:05d}.png")
            expected = np.vectorize(lut.get)(source)
            np.testing.assert_array_equal(masks[k], np.fliplr(expected) if flipped[k] else expected)
    assert seen_ref_parity == {0, 1}


def test_small_reference_objects_are_redrawn_never_turned_into_background(tmp_path: Path) -> None:
    """A sequence whose every frame has a 4-pixel object can never give a valid reference: samples come from
    the other sequence, and no object is ever zeroed to pass the check (issue 8, point 4)."""
    images, masks = static_sequence(frames=4)
    tiny = masks.copy()
    tiny[:, 30:32, 0:2] = 9
    root = make_davis_root(tmp_path / "two", {"tiny": (images, tiny), "fine": (images, masks)})
    ds = DavisTrainDataset(root, crop_size=(32, 48), scale=(1.0, 1.0), samples_per_epoch=40,
                           min_object_pixels=10, max_retries=2, seed=0)
    for i in range(len(ds)):
        item = ds[i]
        assert item["sequence"] == "fine"
        assert item["num_objects"] == 2 and set(item["masks"][0].unique().tolist()) == {0, 1, 2, 255}


def test_no_valid_sample_anywhere_is_an_error_naming_the_fix(tmp_path: Path) -> None:
    images, masks = static_sequence(frames=3)
    tiny = masks.copy()
    tiny[:, 30:32, 0:2] = 9
    root = make_davis_root(tmp_path / "tiny", {"tiny": (images, tiny)})
    ds = DavisTrainDataset(root, crop_size=(32, 48), scale=(1.0, 1.0), samples_per_epoch=1, min_object_pixels=10,
                           max_retries=1, seed=0)
    with pytest.raises(DatasetLayoutError, match=r"10 pixels at stride 4.*min_object_pixels"):
        ds[0]


def test_small_reference_objects_cause_redraws(tmp_path: Path) -> None:
    images, masks = static_sequence(frames=4)
    masks = masks.copy()
    masks[0, 30:32, 0:2] = 9  # a 4-pixel object only in frame 0
    root = make_davis_root(tmp_path / "small", {"seq": (images, masks)})
    ds = DavisTrainDataset(root, crop_size=(32, 48), scale=(1.0, 1.0), samples_per_epoch=20,
                           min_object_pixels=10, seed=0)
    refs = [int(ds[i]["frame_indices"][0]) for i in range(len(ds))]
    assert 0 not in refs  # a reference containing the tiny object is always redrawn


def test_reference_has_its_own_draw_previous_and_current_share_one(tmp_path: Path) -> None:
    """Official num_frames_individual_preproc=1: the reference frame is augmented on its own."""
    root = make_davis_root(tmp_path / "static", {"seq": static_sequence(frames=3, h=40, w=56)})
    ds = DavisTrainDataset(root, crop_size=(36, 44), scale=(1.0, 1.3), samples_per_epoch=12,
                           min_object_pixels=1, seed=0)
    crops, reference_differs = set(), 0
    for i in range(len(ds)):
        item = ds[i]
        images, masks = item["images"], item["masks"]
        # Identical input frames + one shared draw -> identical previous and current; image/mask aligned.
        assert torch.equal(images[1], images[2]) and torch.equal(masks[1], masks[2])
        reference_differs += int(not torch.equal(images[0], images[1]))
        crops.add(images[1].numpy().tobytes())
    assert len(crops) > 1  # the draw differs between samples
    assert reference_differs >= len(ds) // 2  # and the reference's draw is not the pair's


def test_padding_uses_void_in_masks(tmp_path: Path) -> None:
    root = make_davis_root(tmp_path / "pad", {"seq": static_sequence(frames=2, h=32, w=48)})
    ds = DavisTrainDataset(root, crop_size=(64, 64), scale=(1.0, 1.0), samples_per_epoch=1,
                           min_object_pixels=1, seed=0)
    masks = ds[0]["masks"]
    assert masks.shape == (3, 64, 64)
    assert (masks == 255).sum() >= 3 * (64 * 64 - 32 * 48)  # padded area is void, not background


# ---------------------------------------------------------------------------------------------------- seeding


def _signature(batch: dict) -> bytes:
    return batch["images"].numpy().tobytes()


def test_draws_depend_on_epoch_and_index_only(tmp_path: Path) -> None:
    # One static sequence: only the albumentations draw (crop, scale, flip) distinguishes samples, so this
    # catches items that share an RNG stream or a worker's copy of the parent's Compose RNG.
    root = make_davis_root(tmp_path / "static", {"seq": static_sequence(frames=2, h=40, w=56)})
    ds = DavisTrainDataset(root, crop_size=(32, 40), samples_per_epoch=6, min_object_pixels=1, seed=0)

    def run(epochs: int, workers: int, skip: int = 0) -> list[list[bytes]]:
        sampler = EpochSampler(len(ds), seed=0)
        loader = DataLoader(ds, batch_size=1, sampler=sampler, num_workers=workers, worker_init_fn=worker_init_fn,
                            persistent_workers=workers > 0, collate_fn=collate_train)
        out = []
        for epoch in range(epochs):
            sampler.set_epoch(epoch)
            if skip and epoch == epochs - 1:
                sampler.skip_batches(epoch, skip, batch_size=1)
            out.append([_signature(b) for b in loader])
        return out

    epoch0, epoch1 = run(2, workers=2)
    assert len(set(epoch0)) == 6 and set(epoch0) != set(epoch1)  # items and epochs differ
    assert run(2, workers=0) == [epoch0, epoch1]  # the same draws whatever the workers
    assert run(2, workers=1, skip=4)[1] == epoch1[4:]  # a resumed pass continues the uninterrupted one
    assert ds[(1, 3)]["images"].equal(ds[(1, 3)]["images"])  # an item is a function of its key


@pytest.fixture
def restore_global_rngs():
    """worker_init_fn reseeds python/numpy/torch: put the test process's RNG states back afterwards."""
    import random

    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    yield
    random.setstate(states[0])
    np.random.set_state(states[1])
    torch.set_rng_state(states[2])


def test_worker_init_fn_mixes_rank(monkeypatch: pytest.MonkeyPatch, restore_global_rngs):
    import vidseg.utils.seeding as seeding

    class Info:
        seed = 1234
        dataset = None

    monkeypatch.setattr(seeding, "get_worker_info", lambda: Info)
    seeds = []
    for rank in (0, 1, 0):
        monkeypatch.setattr(seeding, "global_rank", lambda rank=rank: rank)
        worker_init_fn(0)
        seeds.append(torch.initial_seed())
    assert seeds[0] != seeds[1] and seeds[0] == seeds[2]


def test_ranks_draw_disjoint_items_of_one_epoch_order() -> None:
    shares = [list(EpochSampler(10, seed=3, num_replicas=3, rank=r)) for r in range(3)]
    keys = [k for share in shares for k in share]
    assert all(len(s) == 3 for s in shares) and len(set(keys)) == 9  # 10 // 3 each, no item twice
    assert {e for e, _ in keys} == {0}
    order = EpochSampler(10, seed=3).order(0)
    assert [i for _, i in shares[1]] == list(order[:9][1::3])


# ----------------------------------------------------------------------------------------------- eval dataset


def test_eval_items(toy_davis_root: Path) -> None:
    ds = DavisEvalDataset(toy_davis_root, split="val")
    assert len(ds) == 2
    item = ds[1]
    assert item["name"] == list_sequences(toy_davis_root, split="val")[1]
    assert item["images"].shape == (8, 3, 64, 112) and item["images"].dtype == torch.uint8
    assert item["masks"].shape == (8, 64, 112) and item["masks"].dtype == torch.int64
    assert item["annotated"].all()
    assert item["frame_ids"] == [f"{i:05d}" for i in range(8)]
    assert item["num_objects"] == int(item["masks"][0].max()) >= 1
    short = DavisEvalDataset(toy_davis_root, split="val", max_frames=3, max_sequences=1)
    assert len(short) == 1 and short[0]["images"].shape[0] == 3


def test_eval_with_first_frame_annotation_only(tmp_path: Path, toy_davis_root: Path) -> None:
    root = copy_root(toy_davis_root, tmp_path / "d")
    seq = list_sequences(root, split="val")[0]
    for p in sorted((root / "Annotations" / "480p" / seq).glob("*.png"))[1:]:
        p.unlink()  # like test-dev: only frame 0 is annotated
    item = DavisEvalDataset(root, split="val", sequences=[seq])[0]
    assert item["annotated"].tolist() == [True] + [False] * 7
    assert (item["masks"][1:] == 255).all()


# ------------------------------------------------------------------------------------------------- datamodule


def test_collate_train_variable_object_counts() -> None:
    items = [
        {"images": torch.zeros(3, 3, 4, 5, dtype=torch.uint8), "masks": torch.zeros(3, 4, 5).long(),
         "num_objects": n, "sequence": f"s{n}", "frame_indices": torch.tensor([0, 1, 2])}
        for n in (1, 3)
    ]
    batch = collate_train(items)
    assert batch["images"].shape == (2, 3, 3, 4, 5) and batch["masks"].shape == (2, 3, 4, 5)
    assert batch["num_objects"].dtype == torch.int64 and batch["num_objects"].tolist() == [1, 3]
    assert batch["frame_indices"].shape == (2, 3) and batch["sequence"] == ["s1", "s3"]
    assert collate_single([items[0]]) is items[0]
    with pytest.raises(ValueError):
        collate_single(items)


def test_datamodule_loaders(toy_davis_root: Path) -> None:
    dm = DavisDataModule(toy_davis_root, crop_size=[48, 80], scale=[1.0, 1.2], samples_per_epoch=4,
                         batch_size=2, num_workers=0, val_max_sequences=1, val_max_frames=4,
                         min_object_pixels=2)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert loader.drop_last and loader.worker_init_fn is worker_init_fn
    batches = list(loader)
    assert len(batches) == 2
    batch = batches[0]
    assert batch["images"].shape == (2, 3, 3, 48, 80) and batch["images"].dtype == torch.uint8
    assert batch["masks"].shape == (2, 3, 48, 80) and batch["num_objects"].shape == (2,)
    val = list(dm.val_dataloader())
    assert len(val) == 1 and val[0]["images"].shape == (4, 3, 64, 112)  # a dict, no batch dimension
    assert isinstance(val[0]["name"], str)


def test_datamodule_reports_missing_data_in_setup(tmp_path: Path) -> None:
    dm = DavisDataModule(tmp_path / "missing")  # constructing is fine: errors belong to setup()
    with pytest.raises(FileNotFoundError, match="vidseg.data.toy"):
        dm.setup("fit")
    with pytest.raises(RuntimeError, match="setup"):
        dm.val_dataloader()


@pytest.mark.parametrize(("min_object_pixels", "accepted"), [(10, True), (11, False)])
def test_min_object_pixels_is_inclusive_and_counted_at_stride_4(tmp_path: Path, min_object_pixels: int,
                                                               accepted: bool) -> None:
    """The only object covers rows 0-3 x columns 0-39 of 32 x 48 frames: 160 pixels, of which the stride-4 grid
    (rows 0, 4, ..; columns 0, 4, ..) sees exactly 10. 10 passes (>= 10); 11 fails although 160 >= 11."""
    images, _ = static_sequence(frames=3)
    masks = np.zeros((3, 32, 48), np.uint8)
    masks[:, 0:4, 0:40] = 1
    root = make_davis_root(tmp_path / "edge", {"edge": (images, masks)})
    ds = DavisTrainDataset(root, crop_size=(32, 48), scale=(1.0, 1.0), hflip=False, samples_per_epoch=1,
                           min_object_pixels=min_object_pixels, max_retries=1, seed=0)
    if accepted:
        item = ds[0]
        assert item["num_objects"] == 1 and int((item["masks"][0] == 1).sum()) == 160
    else:
        with pytest.raises(DatasetLayoutError, match=rf"{min_object_pixels} pixels at stride 4"):
            ds[0]
