"""The one-command demo's path, small: MNIST-5k encoded with Ray Data, trained with Ray Train, evaluated by
the sharded evaluator, swept with Ray Tune, all in one MLflow store, ending with the summary."""
import json
import re
import subprocess
import sys

import pytest

TINY = ["model.encoder_depth=1", "model.predictor_depth=1", "model.width=32", "model.num_heads=2",
        "model.token_loss.depth=1", "model.token_loss.width=32", "model.token_loss.diffusion.sample_steps=5",
        "sample.ar_steps=4", "sample.num_per_class=2"]


@pytest.mark.slow
def test_demo_pipeline_small(tmp_path):
    from mlflow.tracking import MlflowClient

    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [sys.executable, "jobs/demo.py", "--set", *TINY, f"train.out_dir={tmp_path / 'mnist' / 'run'}",
           f"data.encoded_dir={tmp_path / 'encoded'}", f"tracking.tracking_uri={db}", "train.steps=20",
           "train.max_minutes=null", "train.log_every=10", "train.checkpoint_every=10", "train.batch_size=64",
           "eval.num_samples=40", "eval.shard_size=20", "eval.reference_images=50",
           "--sweep-set", "sweep.coarse.num_samples=20", "sweep.coarse.cfg=[1.0,3.0]", "sweep.coarse.temperature=[1.0]",
           "sweep.coarse.ar_steps=4", "sweep.ar_steps.num_samples=20", "sweep.ar_steps.values=[2,4]",
           "eval.shard_size=20", "eval.reference_images=50"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-4000:]
    for line in ("[encode] mnist5k", "[eval] shard 2/2", "[sweep] coarse: best", "[demo] done", "sample grid",
                 "mlflow ui --backend-store-uri"):
        assert line in out, line
    assert re.search(r"\[train\] step +10/20", out)
    summary = json.loads((tmp_path / "mnist" / "demo.json").read_text())
    assert summary["steps"] == 20 and summary["grid"].endswith("grid.png")
    assert {"fd_domain", "is_domain", "consistency_domain"} <= set(summary["metrics"])
    assert summary["sweep"]["best"]["ar_steps"] in (2, 4) and summary["sweep"]["best"]["cfg"] in (1.0, 3.0)
    # 20 steps sample noise, and the demo says so last, with the cause and the fix
    assert summary["verdict"].startswith("VERDICT: these samples are unusable.")
    assert "likely cause: the model is undertrained (20 steps)" in summary["verdict"]
    assert out.rstrip().endswith(summary["verdict"].splitlines()[-1])

    client = MlflowClient(db)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    kinds = sorted(r.data.tags.get("djepa.kind", "training") for r in runs)
    assert kinds.count("training") == 1 and kinds.count("evaluation") == 1 and kinds.count("sweep") == 1
    assert kinds.count("sweep-trial") == 3  # 2 coarse + 1 new AR-steps point (the other is reused)
