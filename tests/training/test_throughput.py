"""vidseg.training.Throughput: steps/s, samples/s and frames/s written through the loggers as training goes."""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers.callbacks import MetricsFileProbe, csv_rows
from tests.helpers.configs import compose_config
from tests.helpers.training_runs import TINY_VOS_RUN
from vidseg.training import Throughput
from vidseg.training.throughput import FRAMES_PER_S, PEAK_CUDA_MIB, SAMPLES_PER_S, STEPS_PER_S, batch_counts


def test_batch_counts_reads_clips_and_single_frames_from_shapes():
    assert batch_counts({"images": torch.zeros(2, 3, 3, 4, 5, dtype=torch.uint8)}) == (2, 6)  # FEELVOS triplets
    assert batch_counts({"images": torch.zeros(4, 2, 3, 4, 5)}) == (4, 8)  # VPSNet pairs
    assert batch_counts({"images": torch.zeros(4, 3, 4, 5)}) == (4, 4)
    with pytest.raises(ValueError, match="batch_key"):
        batch_counts({"frames": torch.zeros(2, 3)})


@pytest.mark.parametrize("kwargs", [{"every_n_steps": 0}, {"warmup_steps": -1}])
def test_throughput_refuses_bad_settings(kwargs):
    with pytest.raises(ValueError, match="callbacks.throughput"):
        Throughput(**kwargs)


def test_feelvos_training_writes_throughput_while_it_trains(toy_davis_root, tmp_path):
    from vidseg.train import train

    run = tmp_path / "run"
    MetricsFileProbe.instances.clear()
    cfg = compose_config("train", run, [
        f"data.root={toy_davis_root}", *TINY_VOS_RUN, "trainer.max_steps=9",
        "callbacks.throughput.every_n_steps=2", "callbacks.throughput.warmup_steps=2",
        "+callbacks.probe._target_=tests.helpers.callbacks.MetricsFileProbe", f"+callbacks.probe.csv_dir={run / 'csv'}",
        "+callbacks.probe.at_step=7", f"+callbacks.probe.key={STEPS_PER_S}",
    ])
    train(cfg)
    (probe,) = MetricsFileProbe.instances
    # Windows of 2 steps after 2 warm-up steps end at steps 4 and 6: on disk before step 7 ended.
    assert probe.seen == [4, 6]
    assert STEPS_PER_S in probe.pbar and probe.pbar[STEPS_PER_S] > 0
    rows = [r for r in csv_rows(run / "csv" / "metrics.csv") if r.get(STEPS_PER_S)]
    assert [int(r["step"]) for r in rows] == [4, 6, 8, 9]  # the partial last window (1 step) is written at the end
    for row in rows:
        steps, samples, frames = (float(row[k]) for k in (STEPS_PER_S, SAMPLES_PER_S, FRAMES_PER_S))
        assert all(math.isfinite(v) and v > 0 for v in (steps, samples, frames))
        assert samples == pytest.approx(2 * steps)  # batch 2
        assert frames == pytest.approx(3 * samples)  # a FEELVOS sample is 3 frames
        assert not row.get(PEAK_CUDA_MIB)  # CPU run


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _Logger:
    def __init__(self) -> None:
        self.rows: list[tuple[int, dict]] = []
        self.saves = 0

    def log_metrics(self, metrics, step):
        self.rows.append((step, dict(metrics)))

    def save(self):
        self.saves += 1


def test_windows_leave_out_warmup_and_validation(monkeypatch):
    from types import SimpleNamespace

    import vidseg.training.throughput as throughput

    clock, logger = _Clock(), _Logger()
    monkeypatch.setattr(throughput.time, "perf_counter", clock)
    trainer = SimpleNamespace(global_step=0, world_size=2, loggers=[logger], sanity_checking=False,
                              strategy=SimpleNamespace(root_device=torch.device("cpu")),
                              state=SimpleNamespace(fn="fit"))
    callback = Throughput(every_n_steps=4, warmup_steps=2, prog_bar=False)
    batch = {"images": torch.zeros(3, 2, 3, 1, 1)}  # 3 clips of 2 frames

    def step(seconds: float) -> None:
        clock.now += seconds
        trainer.global_step += 1
        callback.on_train_batch_end(trainer, None, None, batch, trainer.global_step - 1)

    callback.on_train_start(trainer, None)
    step(50.0), step(50.0)  # warm-up: slow, and not measured
    step(1.0), step(1.0)
    callback.on_validation_start(trainer, None)
    clock.now += 1000.0  # validation: not training time
    callback.on_validation_end(trainer, None)
    step(1.0), step(1.0)  # the window (steps 3-6) ends here: 4 steps in 4 s
    step(2.0)
    callback.on_train_end(trainer, None)  # the partial window: 1 step in 2 s
    assert [s for s, _ in logger.rows] == [6, 7] and logger.saves == 2
    assert logger.rows[0][1] == {STEPS_PER_S: 1.0, SAMPLES_PER_S: 6.0, FRAMES_PER_S: 12.0}  # 2 processes
    assert logger.rows[1][1][STEPS_PER_S] == 0.5
    assert callback.history == [{"step": s, **m} for s, m in logger.rows]
