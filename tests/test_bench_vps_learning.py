"""bench.vps_learning: the mean and spread over unseen seeds, and its table."""

from __future__ import annotations

import pytest
from bench.vps_learning import METRICS, main, summarise, table


def test_summary_is_the_mean_and_range_over_seeds_and_the_table_shows_percent() -> None:
    per_seed = {"VPSNet image": {101: dict.fromkeys(METRICS, 0.5), 102: dict.fromkeys(METRICS, 0.7)},
                "baseline": {101: dict.fromkeys(METRICS, 0.1), 102: dict.fromkeys(METRICS, 0.2)}}
    per_seed["VPSNet image"][102]["AQ"] = 0.1
    summary = summarise(per_seed)
    assert summary["VPSNet image"]["VPQ"] == pytest.approx({"mean": 0.6, "min": 0.5, "max": 0.7})
    assert summary["VPSNet image"]["AQ"] == pytest.approx({"mean": 0.3, "min": 0.1, "max": 0.5})
    lines = table(summary).splitlines()
    assert lines[0] == "| method | VPQ | thing | stuff | STQ | AQ |"
    assert lines[2].startswith("| VPSNet image | 60.0 (50.0..70.0) |") and "| 30.0 (10.0..50.0) |" in lines[2]
    assert lines[3].startswith("| baseline | 15.0 (10.0..20.0)")


def test_nothing_to_score_is_refused(capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main([])
    assert stop.value.code == 2 and "nothing to score" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--ckpt", "image"])
    assert "expected VARIANT=PATH" in capsys.readouterr().err
