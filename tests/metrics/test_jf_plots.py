"""The evaluation figure: a valid PNG next to the CSVs, numbers per sequence, and plots=False."""

import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vidseg.metrics.davis_eval import DavisResults, write_results
from vidseg.metrics.jf_plots import BAR_COLOUR, WORST_COLOUR, plot_results, sequence_frame_j, sequence_scores

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, after checking the signature and the chunk type."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def fake_results(n_sequences=5, frames=6, seed=0):
    """DavisResults of n sequences with 1-2 objects and known per-frame J/F."""
    rng = np.random.default_rng(seed)
    seqs = []
    for s in range(n_sequences):
        n_obj = 1 + s % 2
        j = rng.random((n_obj, frames))
        f = rng.random((n_obj, frames))
        stats = np.zeros((n_obj, 6))
        stats[:, 0], stats[:, 3] = j.mean(axis=1), f.mean(axis=1)
        seqs.append({"sequence": f"seq{s}", "object_names": [f"seq{s}_{k + 1}" for k in range(n_obj)],
                     "frame_ids": [f"{t + 1:05d}" for t in range(frames)], "J": j, "F": f, "stats": stats})
    return DavisResults.from_sequences(seqs), seqs


def test_sequence_scores_are_object_means_sorted_worst_first():
    results, seqs = fake_results()
    scores = sequence_scores(results)
    expected = {}
    for seq in seqs:
        j, f = seq["stats"][:, 0].mean(), seq["stats"][:, 3].mean()
        expected[seq["sequence"]] = ((j + f) / 2, j, f)
    assert [s[0] for s in scores] == sorted(expected, key=lambda n: expected[n][0])  # worst first
    for name, jf, j, f in scores:
        assert (jf, j, f) == pytest.approx(expected[name])
    frames, j = sequence_frame_j(results, "seq1")  # two objects: mean per frame
    assert frames == seqs[1]["frame_ids"]
    np.testing.assert_allclose(j, seqs[1]["J"].mean(axis=0))


def test_write_results_writes_a_png_next_to_the_csvs(tmp_path):
    results, _ = fake_results(n_sequences=12)
    paths = write_results(results, tmp_path, "val")
    assert paths["plot"] == tmp_path / "results-val-jf.png"
    width, height = png_size(paths["plot"])
    assert 600 <= width <= 2400 and 600 <= height <= 1000  # figure inches x 100 dpi
    assert paths["plot"].stat().st_size > 20_000  # bars, lines and text, not a blank canvas
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # written atomically, no temp file
    with Image.open(paths["plot"]) as img:
        pixels = np.asarray(img.convert("RGB")).reshape(-1, 3)
    colours, counts = np.unique(pixels, axis=0, return_counts=True)
    count = {tuple(int(v) for v in c): int(n) for c, n in zip(colours, counts, strict=True)}
    assert count.get(WORST_COLOUR, 0) > 3 * 1000  # 3 worst bars (and a curve) in red
    assert count.get(BAR_COLOUR, 0) > 9 * 1000  # the other 9 bars


def test_degenerate_inputs_still_draw(tmp_path):
    # one sequence of one frame with non-numeric frame ids, and a sequence with J = 0 everywhere
    results, seqs = fake_results(n_sequences=2, frames=1)
    for entry in results.per_frame.values():
        entry["frames"] = ["first"]
    name = seqs[0]["object_names"][0]
    results.per_frame[name]["J"] = [0.0]
    path = plot_results(results, tmp_path / "tiny.png", worst=5)
    assert png_size(path)[0] == 1000


def test_plots_can_be_turned_off(tmp_path):
    results, _ = fake_results()
    paths = write_results(results, tmp_path, "val", plots=False)
    assert "plot" not in paths
    assert not list(tmp_path.glob("*.png"))


def test_many_sequences_draw_without_labels(tmp_path):
    results, _ = fake_results(n_sequences=120, frames=3)
    width, _ = png_size(plot_results(results, tmp_path / "many.png"))
    assert width == 2400  # capped width


def test_objects_that_appear_later_are_left_out_of_the_frame_mean_before_they_appear(tmp_path):
    # YouTube-VOS results: per-frame J is NaN before an object's first scored frame
    results, seqs = fake_results(n_sequences=3, frames=6)
    j = seqs[1]["J"].copy()  # seq1 has two objects
    j[1, :3] = np.nan  # object 2 appears at the 4th frame
    j[0, :1] = np.nan  # and object 1 is not scored in the first frame either
    results.per_frame["seq1_2"]["J"] = list(j[1])
    results.per_frame["seq1_1"]["J"] = list(j[0])
    frames, mean = sequence_frame_j(results, "seq1")
    assert np.isnan(mean[0])  # no object scored there
    np.testing.assert_allclose(mean[1:3], j[0, 1:3])  # object 1 alone
    np.testing.assert_allclose(mean[3:], j[:, 3:].mean(axis=0))  # both
    path = plot_results(results, tmp_path / "late.png", worst=3)
    assert png_size(path)[0] >= 600  # NaN frames are skipped, not drawn
