"""Learning check (slow, ~18 min on 2 CPU cores): the demo recipe must learn, not just run.

Trains experiment=toy_vos on a fresh toy set and scores the toy val split with the official protocol:
J&F >= 0.80 and far above copying the first-frame mask. Run with `make test-slow`.
"""

import pytest

from vidseg.data.toy import generate_toy_davis
from vidseg.demo import write_copy_first_baseline
from vidseg.evaluate import evaluate
from vidseg.train import train

from .test_entrypoints import compose_config


@pytest.mark.slow
def test_toy_recipe_reaches_target_jf(tmp_path):
    root = generate_toy_davis(tmp_path / "toy", seed=3)
    cfg = compose_config("train", tmp_path / "train", ["experiment=toy_vos", f"data.root={root}"])
    result = train(cfg)
    ckpt = result["last_checkpoint"]

    model = evaluate(compose_config("evaluate", tmp_path / "eval", ["task=vos", f"ckpt={ckpt}", f"data.root={root}"]))
    baseline_dir = write_copy_first_baseline(root, "val", tmp_path / "copy_first")
    baseline = evaluate(compose_config("evaluate", tmp_path / "eval_copy",
                                       ["task=vos", f"data.root={root}", f"predictions={baseline_dir}"]))
    jf, jf_copy = model.global_metrics["J&F-Mean"], baseline.global_metrics["J&F-Mean"]
    print(f"toy val J&F: model {jf:.3f}, copy first mask {jf_copy:.3f}")
    assert jf >= 0.80
    assert jf >= jf_copy + 0.3
