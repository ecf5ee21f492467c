"""J, F, statistics and the JAndF metric: hand-computed cases and the toolkit's edge rules."""

import math

import numpy as np
import pytest
import torch

from vidseg.metrics.j_and_f import (
    GLOBAL_NAMES,
    JAndF,
    boundary_f,
    boundary_keys,
    boundary_radius,
    db_statistics,
    decay_bins,
    disk_offsets,
    evaluate_frames,
    evaluate_sequence,
    jaccard,
    seg2bmap,
    summarize,
)


def mask(shape, *pixels):
    m = np.zeros(shape, dtype=bool)
    for y, x in pixels:
        m[y, x] = True
    return m


def as_set(b):
    return {(int(y), int(x)) for y, x in zip(*np.nonzero(b), strict=True)}


# --- J ------------------------------------------------------------------------------------------------------
def test_jaccard_by_hand():
    gt = np.zeros((5, 5), bool)
    gt[1:3, 1:4] = True  # 6 pixels
    pred = np.zeros((5, 5), bool)
    pred[1:3, 1:3] = True  # 4 pixels, all inside gt
    assert jaccard(pred, gt) == pytest.approx(4 / 6)
    empty = np.zeros((5, 5), bool)
    assert jaccard(empty, empty) == 1.0  # empty union -> 1
    assert jaccard(empty, gt) == 0.0
    assert jaccard(gt, empty) == 0.0
    # batched over leading dims, torch input accepted
    out = jaccard(torch.from_numpy(np.stack([pred, empty])), torch.from_numpy(np.stack([gt, empty])))
    assert out.shape == (2,) and out.dtype == np.float64
    np.testing.assert_array_equal(out, [4 / 6, 1.0])


# --- seg2bmap -----------------------------------------------------------------------------------------------
def test_seg2bmap_interior_pixel_marks_itself_and_its_upper_left_neighbours():
    # a pixel differs from its E, S or SE neighbour: the boundary sits half a pixel towards the origin
    assert as_set(seg2bmap(mask((4, 4), (1, 1)))) == {(0, 0), (0, 1), (1, 0), (1, 1)}


def test_seg2bmap_last_row_compares_east_only():
    assert as_set(seg2bmap(mask((4, 4), (3, 1)))) == {(2, 0), (2, 1), (3, 0), (3, 1)}
    # a pixel on the last row whose east neighbour is equal is not a boundary, even with a different north
    row = np.zeros((3, 4), bool)
    row[2, :] = True
    assert as_set(seg2bmap(row)) == {(1, 0), (1, 1), (1, 2), (1, 3)}


def test_seg2bmap_last_column_compares_south_only():
    assert as_set(seg2bmap(mask((4, 4), (1, 3)))) == {(0, 2), (0, 3), (1, 2), (1, 3)}


def test_seg2bmap_bottom_right_corner_is_never_boundary():
    assert as_set(seg2bmap(mask((4, 4), (3, 3)))) == {(2, 2), (2, 3), (3, 2)}


def test_seg2bmap_full_and_empty_masks_have_no_boundary():
    assert not seg2bmap(np.ones((6, 7), bool)).any()
    assert not seg2bmap(np.zeros((6, 7), bool)).any()


def test_seg2bmap_is_batched():
    a, b = mask((4, 4), (1, 1)), mask((4, 4), (3, 3))
    out = seg2bmap(np.stack([a, b]))
    assert out.shape == (2, 4, 4) and out.dtype == bool
    assert as_set(out[1]) == as_set(seg2bmap(b))


# --- radius and disk ----------------------------------------------------------------------------------------
def test_radius_formula():
    assert boundary_radius(480, 854) == 8  # DAVIS 480p
    assert boundary_radius(40, 60) == 1
    assert boundary_radius(1080, 1920) == math.ceil(0.008 * math.hypot(1080, 1920)) == 18
    assert boundary_radius(480, 854, bound_th=3) == 3  # >= 1 is a radius in pixels
    with pytest.raises(ValueError, match="integer"):
        boundary_radius(480, 854, bound_th=2.5)


def test_disk_rows_match_skimage_disk_definition():
    for r in (0, 1, 2, 5, 8):
        dy, half = disk_offsets(r)
        yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
        disk = (yy**2 + xx**2) <= r * r  # skimage.morphology.disk(r)
        np.testing.assert_array_equal(disk.sum(axis=1), 2 * half + 1)
        assert list(dy) == list(range(-r, r + 1))


# --- F ------------------------------------------------------------------------------------------------------
def test_boundary_f_by_hand():
    # 10x10 -> radius ceil(0.008 * 14.1) = 1: a plus-shaped disk.
    gt = mask((10, 10), (4, 4))  # boundary {(3,3),(3,4),(4,3),(4,4)}
    pred = mask((10, 10), (4, 6))  # boundary {(3,5),(3,6),(4,5),(4,6)}
    # pred (3,5),(4,5) touch gt (3,4),(4,4) -> P = 2/4; symmetrically R = 2/4; F = 0.5
    assert boundary_f(pred, gt) == pytest.approx(0.5)
    # a 2-pixel radius reaches every boundary pixel two columns away
    assert boundary_f(pred, gt, bound_th=2) == 1.0


def test_boundary_f_uses_a_disk_not_a_square():
    gt = mask((10, 10), (4, 4))  # boundary includes (4,4)
    pred = mask((10, 10), (6, 6))  # boundary includes (5,5): only a diagonal step away from (4,4)
    assert boundary_f(pred, gt) == 0.0  # disk(1) has no diagonals; a 3x3 square would match
    assert boundary_f(pred, gt, bound_th=2) > 0  # (1,1) is inside disk(2)


def test_boundary_f_border_is_not_a_boundary():
    # pred's boundary is the left image column; outside the image must not count as GT boundary
    # (cv2.dilate's default border), nor wrap around to the right edge
    gt = np.zeros((10, 10), bool)
    gt[:, :3] = True  # boundary: column 2
    gt[:5, 9] = True  # and (4, 9): one step from pred's (4, 0) if shifts wrapped around
    pred = np.zeros((10, 10), bool)
    pred[:, 0] = True  # boundary: column 0
    assert boundary_f(pred, gt) == 0.0  # 2 columns apart, radius 1
    assert boundary_f(pred[:, :5], gt[:, :5], bound_th=2) == 1.0


def test_boundary_f_empty_rules():
    empty, full = np.zeros((8, 8), bool), np.ones((8, 8), bool)
    obj = np.zeros((8, 8), bool)
    obj[2:5, 2:5] = True
    assert boundary_f(empty, obj) == 0.0  # no predicted boundary, GT boundary -> P=1, R=0 -> 0
    assert boundary_f(obj, empty) == 0.0  # predicted boundary, no GT boundary -> P=0, R=1 -> 0
    assert boundary_f(empty, empty) == 1.0
    # the rules look at boundaries: a mask filling the frame has none
    assert boundary_f(full, obj) == 0.0
    assert boundary_f(full, full) == 1.0
    assert boundary_f(obj, obj) == 1.0


def test_boundary_f_batched_equals_per_image():
    rng = np.random.default_rng(0)
    pred = rng.random((2, 3, 20, 30)) < 0.3
    gt = rng.random((2, 3, 20, 30)) < 0.3
    out = boundary_f(pred, gt)
    assert out.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            assert out[i, j] == boundary_f(pred[i, j], gt[i, j])


def blocky_labels(rng, shape, n_ids, block=3):
    """(T, H, W) int labels in 0..n_ids-1 made of block x block squares (random masks are all boundary)."""
    t, h, w = shape
    coarse = rng.integers(0, n_ids, (t, -(-h // block), -(-w // block)))
    return np.kron(coarse, np.ones((1, block, block), dtype=int))[:, :h, :w]


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 1, 7), (2, 7, 1), (3, 2, 2), (4, 9, 13), (2, 30, 41)])
@pytest.mark.parametrize("n", [0, 1, 3])
def test_boundary_keys_equal_seg2bmap_of_every_object(shape, n):
    rng = np.random.default_rng(sum(shape) + n)
    labels = blocky_labels(rng, shape, n + 3, block=1 if min(shape[1:]) < 3 else 3)  # ids above n: background
    labels[labels == n + 2] = 255
    expected = np.flatnonzero(np.stack([seg2bmap(labels == o) for o in range(1, n + 1)])) if n else []
    got = boundary_keys(labels, n)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)


def test_boundary_keys_across_chunks(monkeypatch):
    # frames scanned in several chunks keep their own offsets
    import vidseg.metrics.j_and_f as jf

    labels = blocky_labels(np.random.default_rng(5), (7, 12, 10), 4)
    whole = boundary_keys(labels, 3)
    monkeypatch.setattr(jf, "_CHUNK_PIXELS", 2 * 12 * 10)
    np.testing.assert_array_equal(boundary_keys(labels, 3), whole)


def dilate_disk(b, r):
    """Plain dilation of (H, W) bool by the disk of radius r; outside the image is never set (cv2's border)."""
    h, w = b.shape
    out = np.zeros_like(b)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dy * dy + dx * dx <= r * r:
                src = b[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
                out[max(0, dy) : h - max(0, -dy), max(0, dx) : w - max(0, -dx)] |= src
    return out


def f_by_dilation(pred, gt, r):
    """The toolkit's f_measure written out with dense dilations (its cv2.dilate + disk calls)."""
    fg, gb = seg2bmap(pred), seg2bmap(gt)
    n_fg, n_gt = fg.sum(), gb.sum()
    if n_fg == 0 and n_gt > 0:
        p, rc = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        p, rc = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        p, rc = 1.0, 1.0
    else:
        p = np.sum(fg & dilate_disk(gb, r)) / float(n_fg)
        rc = np.sum(gb & dilate_disk(fg, r)) / float(n_gt)
    return 0.0 if p + rc == 0 else 2 * p * rc / (p + rc)


@pytest.mark.parametrize("radius", [1, 3, 8])
def test_boundary_f_equals_dense_dilation(radius):
    # random blobs and shifted copies: many boundary pixels matched on far disk rows, some never
    rng = np.random.default_rng(radius)
    gt = blocky_labels(rng, (6, 40, 50), 2, block=5).astype(bool)
    pred = np.roll(gt, (int(rng.integers(-4, 5)), int(rng.integers(-4, 5))), axis=(1, 2))
    pred[::2] ^= blocky_labels(rng, (3, 40, 50), 2, block=2).astype(bool) & (rng.random((3, 40, 50)) < 0.1)
    got = boundary_f(pred, gt, bound_th=radius)
    expected = [f_by_dilation(p, g, radius) for p, g in zip(pred, gt, strict=True)]
    np.testing.assert_array_equal(got, expected)  # same counts, same divisions: bit-equal


@pytest.mark.parametrize("n_objects", [3, 20])  # 20: the pair ids no longer fit in a byte
def test_evaluate_frames_equals_per_object_masks(n_objects):
    rng = np.random.default_rng(n_objects)
    gt = blocky_labels(rng, (4, 30, 44), n_objects + 1, block=4).astype(np.uint8)
    gt[gt == n_objects] = 255  # void in the GT is background
    gt[0, :4, :4] = n_objects + 5  # an id above num_objects is not scored
    noise = rng.integers(0, n_objects + 1, gt.shape)
    pred = np.where(rng.random(gt.shape) < 0.1, noise, np.where(gt > n_objects, 0, gt)).astype(np.uint8)
    res = evaluate_frames(gt, pred, n_objects)
    gt0 = np.where(gt == 255, 0, gt)
    for k, obj in enumerate(range(1, n_objects + 1)):
        np.testing.assert_array_equal(res["J"][k], jaccard(pred == obj, gt0 == obj))
        np.testing.assert_array_equal(res["F"][k], [f_by_dilation(p, g, 1) for p, g in zip(pred == obj, gt0 == obj,
                                                                                          strict=True)])
    assert res["J"].shape == res["F"].shape == (n_objects, 4) and res["J"].dtype == np.float64


def test_evaluate_frames_of_one_object_equals_its_masks():
    # one object takes its own counting path (DAVIS 2016): void, ids above 1 and an empty frame included
    rng = np.random.default_rng(1)
    gt = blocky_labels(rng, (5, 30, 44), 2, block=4).astype(np.uint8)
    gt[1, :8, :8] = 255  # void: background
    gt[2, -6:, -6:] = 7  # an id above num_objects: background
    gt[3] = 0  # no object, and none predicted: J = 1
    pred = np.where(rng.random(gt.shape) < 0.15, 1 - (gt == 1), gt == 1).astype(np.uint8)
    pred[3] = 0
    res = evaluate_frames(gt, pred, 1)
    np.testing.assert_array_equal(res["J"][0], jaccard(pred == 1, gt == 1))
    assert res["J"][0, 3] == 1.0 and res["J"].shape == (1, 5)
    multi = evaluate_frames(np.where(gt == 1, 1, 0), pred, 2)  # the histogram path, with an unused object 2
    np.testing.assert_array_equal(res["J"][0], multi["J"][0])


def test_core_module_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, vidseg.metrics.j_and_f as m; assert 'torch' not in sys.modules, 'torch imported'; "
            "assert m.JAndF.__module__ == 'vidseg.metrics.vos_metrics'; assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- statistics ---------------------------------------------------------------------------------------------
def test_db_statistics_by_hand():
    mean, recall, decay = db_statistics(np.array([1.0, 0.0, 0.6, 0.4, 1.0]))
    assert mean == pytest.approx(0.6)
    assert recall == pytest.approx(3 / 5)  # > 0.5: 1, 0.6, 1
    # 5 frames: bins [0,1], [1,2], [2,3], [3,4] (inclusive ends) -> mean(1, 0) - mean(0.4, 1)
    assert decay == pytest.approx(0.5 - 0.7)


def test_db_statistics_ignores_nan_in_means():
    mean, recall, _ = db_statistics(np.array([1.0, np.nan, 0.0]))
    assert mean == 0.5
    assert recall == pytest.approx(1 / 3)  # NaN > 0.5 is False, as upstream


def test_decay_past_256_frames_is_correct():
    n = 300
    values = np.linspace(1.0, 0.0, n)
    ids = decay_bins(n)
    assert list(ids) == [0, 75, 150, 224, 299]
    _, _, decay = db_statistics(values)
    assert decay == pytest.approx(values[0:76].mean() - values[224:300].mean())
    # The official code casts the indices to uint8: 299 wraps to 43, the last bin is empty, Decay is NaN.
    wrapped = ids.astype(np.uint8)
    assert wrapped[4] == 43 and values[wrapped[3] : wrapped[4] + 1].size == 0
    # up to 256 frames the indices are the official ones
    assert (decay_bins(256) == decay_bins(256).astype(np.uint8)).all()


def test_db_statistics_rejects_no_frames():
    with pytest.raises(ValueError):
        db_statistics(np.array([]))


# --- sequences ----------------------------------------------------------------------------------------------
def two_object_sequence(t=5, h=12, w=16):
    gt = np.zeros((t, h, w), np.uint8)
    gt[:, 2:6, 2:6] = 1
    gt[:, 7:11, 9:14] = 2
    return gt


def test_evaluate_sequence_skips_first_and_last_frame():
    gt = two_object_sequence()
    pred = gt.copy()
    pred[0] = 0  # first and last frames are not scored
    pred[-1] = 0
    res = evaluate_sequence(gt, pred, sequence="s")
    assert res["J"].shape == res["F"].shape == (2, 3)
    assert (res["J"] == 1).all() and (res["F"] == 1).all()
    assert res["frame_ids"] == ["1", "2", "3"]
    assert res["object_names"] == ["s_1", "s_2"]
    np.testing.assert_array_equal(res["stats"][:, [0, 1, 3, 4]], 1.0)


def test_missing_object_is_zero_padded():
    gt = two_object_sequence()
    gt[2, 7:11, 9:14] = 0  # object 2 absent from the GT in frame 2
    pred = np.where(gt == 2, 0, gt)  # object 2 never predicted
    res = evaluate_sequence(gt, pred)
    np.testing.assert_array_equal(res["J"][1], [0.0, 1.0, 0.0])  # both empty in frame 2 -> 1
    np.testing.assert_array_equal(res["F"][1], [0.0, 1.0, 0.0])
    assert (res["J"][0] == 1).all()


def test_extra_object_is_an_error_naming_the_sequence():
    gt = two_object_sequence()
    pred = gt.copy()
    pred[2, 0, 0] = 3
    with pytest.raises(ValueError, match=r"'bear'.*object id 3.*frame 2"):
        evaluate_sequence(gt, pred, sequence="bear")
    # ids in the first and last frame are never read (as upstream)
    pred = gt.copy()
    pred[0, 0, 0] = pred[-1, 0, 0] = 7
    evaluate_sequence(gt, pred)


def test_object_count_from_first_frame_and_void():
    gt = two_object_sequence()
    gt[0, 0, :] = 255  # void is not an object
    gt[3, 0, 0] = 4  # an id missing from the first frame is not an object either
    gt[2, 0, :3] = 255  # void in scored frames is background
    res = evaluate_sequence(gt, np.where(gt > 2, 0, gt))
    assert res["num_objects"] == 2
    assert (res["J"] == 1).all()
    assert evaluate_sequence(gt, gt * 0, num_objects=3)["J"].shape == (3, 3)


def test_sequence_needs_three_frames():
    gt = two_object_sequence(t=2)
    with pytest.raises(ValueError, match=">= 3 frames"):
        evaluate_sequence(gt, gt)


# --- metric -------------------------------------------------------------------------------------------------
def perturbed(gt, seed):
    rng = np.random.default_rng(seed)
    pred = gt.copy()
    pred[rng.random(gt.shape) < 0.05] = 0
    return pred


@pytest.mark.filterwarnings("ignore:The ``compute`` method")  # compute after reset, on purpose
def test_metric_matches_functional_and_names_objects():
    gt_a, gt_b = two_object_sequence(), two_object_sequence(t=6)[:, :, ::-1].copy()
    gt_b[gt_b == 2] = 0  # one object
    pred_a, pred_b = perturbed(gt_a, 1), perturbed(gt_b, 2)
    metric = JAndF()
    metric.update(torch.from_numpy(pred_a), torch.from_numpy(gt_a), sequence="a")
    metric.update(pred_b, gt_b, sequence="b")
    out = metric.compute()
    assert set(out) == set(GLOBAL_NAMES)
    rows = np.concatenate(
        [evaluate_sequence(gt_a, pred_a)["stats"], evaluate_sequence(gt_b, pred_b)["stats"]]
    )
    assert out == summarize(rows)
    assert out["J-Mean"] == np.mean(rows[:, 0])  # mean over objects, not over sequences
    assert out["J&F-Mean"] == (out["J-Mean"] + out["F-Mean"]) / 2
    assert metric.object_names == ["a_1", "a_2", "b_1"]
    assert [r["name"] for r in metric.per_object()] == ["a_1", "a_2", "b_1"]
    metric.reset()
    assert metric.object_names == [] and metric.sequence_results == []
    assert all(math.isnan(v) for v in metric.compute().values())


def test_metric_forward_returns_the_sequence_and_keeps_accumulating():
    gt = two_object_sequence()
    metric = JAndF()
    first = metric(perturbed(gt, 3), gt, sequence="x")
    assert first == summarize(evaluate_sequence(gt, perturbed(gt, 3))["stats"])
    metric(gt, gt, sequence="y")
    assert metric.object_names == ["x_1", "x_2", "y_1", "y_2"]
    assert len(metric.compute()) == len(GLOBAL_NAMES)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")  # `gathered` only receives states
def test_ddp_style_merge_equals_one_process():
    seqs = [(f"s{i}", two_object_sequence(t=4 + i)) for i in range(3)]
    single, rank0, rank1 = JAndF(), JAndF(), JAndF()
    for i, (name, gt) in enumerate(seqs):
        pred = perturbed(gt, i)
        single.update(pred, gt, sequence=name)
        (rank0 if i % 2 == 0 else rank1).update(pred, gt, sequence=name)
    expected = single.compute()
    # what the "cat" all-gather leaves on every rank: one tensor of all rows (order does not matter)
    gathered = JAndF()
    gathered.stats = torch.cat([torch.cat(rank1.stats), torch.cat(rank0.stats)])
    got = gathered.compute()
    assert got.keys() == expected.keys()
    for k in expected:
        assert got[k] == pytest.approx(expected[k], abs=1e-15)
    rank0.merge_state(rank1)
    assert rank0.compute() == pytest.approx(expected, abs=1e-15)
    assert rank0._reductions["stats"].__name__ == "dim_zero_cat"
