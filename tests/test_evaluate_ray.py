"""The sharded evaluator on the suite's local Ray: worker-count independence, restart, corruption, MLflow."""
import json

import numpy as np
import pytest

from djepa.digest import file_sha256
from djepa.platform.evaluator import eval_config, evaluate

N = 23  # 5 shards of 5, the last one partial


@pytest.fixture
def checkpoint(untrained_checkpoint):
    return untrained_checkpoint


def _cfg(checkpoint, out, *extra):
    return eval_config(checkpoint, [f"eval.out_dir={out}", "eval.shard_size=5", "eval.cpus_per_worker=0.5",
                                    "eval.features=[domain]", "eval.reference_images=50",
                                    f"tracking.tracking_uri=sqlite:///{out.parent}/mlflow.db", *extra])


def _npz(out):
    return (out / "samples.npz").read_bytes()


def test_one_and_two_workers_give_byte_identical_samples_and_metrics(ray_session, checkpoint, tmp_path, capsys):
    one = evaluate(_cfg(checkpoint, tmp_path / "w1", "eval.workers=1"), checkpoint, N)
    two = evaluate(_cfg(checkpoint, tmp_path / "w2", "eval.workers=2", "sample.batch_size=3"), checkpoint, N)
    assert _npz(tmp_path / "w1") == _npz(tmp_path / "w2")
    assert one["metrics"] == two["metrics"]
    with np.load(tmp_path / "w1" / "samples.npz") as z:
        assert z["arr_0"].shape == (N, 8, 8, 1) and z["arr_0"].dtype == np.uint8
        assert z["arr_1"].tolist() == [i % 10 for i in range(N)]
    m = one["metrics"]
    assert set(m) == {"fd_domain", "is_domain", "is_std_domain", "precision_domain", "recall_domain",
                      "floor_fd_domain", "consistency_domain"}
    assert 0 <= m["consistency_domain"] <= 1
    assert m["fd_domain"] > m["floor_fd_domain"] > 0 and 1.0 <= m["is_domain"] <= 10.0
    saved = json.loads((tmp_path / "w1" / "metrics.json").read_text())
    assert saved["metrics"] == m and saved["sampling"]["cfg"] == 3.0 and saved["num_samples"] == N
    log = capsys.readouterr().out
    assert "shard 5/5" in log and "img/s" in log and "ETA" in log and "metrics.json" in log


def test_interrupted_then_restarted_equals_uninterrupted(ray_session, checkpoint, tmp_path, capsys):
    from eval_faults import stop_after_shards

    full = evaluate(_cfg(checkpoint, tmp_path / "full", "eval.workers=1"), checkpoint, N)
    out = tmp_path / "cut"
    with pytest.raises(RuntimeError, match="stopped after 2"):
        evaluate(_cfg(checkpoint, out, "eval.workers=1"), checkpoint, N, on_shard=stop_after_shards(2))
    assert len(list((out / "shards").glob("*.npz"))) == 2 and not (out / "samples.npz").exists()
    capsys.readouterr()
    again = evaluate(_cfg(checkpoint, out, "eval.workers=2"), checkpoint, N)
    assert "2 already done, 3 to do" in capsys.readouterr().out
    assert _npz(out) == _npz(tmp_path / "full") and again["metrics"] == full["metrics"]

    # a corrupted shard is named, kept aside and regenerated; the result is unchanged
    shard = sorted((out / "shards").glob("*.npz"))[1]
    shard.write_bytes(shard.read_bytes()[:-50])
    (out / "samples.npz").unlink()
    evaluate(_cfg(checkpoint, out, "eval.workers=1"), checkpoint, N)
    log = capsys.readouterr().out
    assert f"corrupt shard {shard.name}" in log and "1 to do" in log
    assert _npz(out) == _npz(tmp_path / "full") and shard.with_name(shard.name + ".corrupt").exists()

    # another sampling config never mixes with these shards
    with pytest.raises(FileExistsError, match="another checkpoint or sampling config"):
        evaluate(_cfg(checkpoint, out, "sample.cfg=2.0"), checkpoint, N)


def test_evaluation_is_a_child_run_of_the_training_run(ray_session, checkpoint, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("djepa")
    parent = client.create_run(exp, run_name="train").info.run_id
    (checkpoint.parent / "run.json").write_text(json.dumps({"mlflow_run_id": parent}))
    try:
        res = evaluate(_cfg(checkpoint, tmp_path / "ev", "eval.workers=1"), checkpoint, 12)
    finally:
        (checkpoint.parent / "run.json").unlink()
    run = client.get_run(res["mlflow"]["run_id"])
    assert run.data.tags["mlflow.parentRunId"] == parent and run.data.tags["djepa.kind"] == "evaluation"
    assert run.data.metrics["fd_domain"] == pytest.approx(res["metrics"]["fd_domain"])
    assert run.data.params["sample.cfg"] == "3.0" and run.data.params["eval.sample_hash"] == res["sample_hash"]
    # the result names exactly which reference file it was measured against
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert saved["reference_sha256"] == res["reference_sha256"] == file_sha256(res["reference"])
    assert run.data.params["eval.reference_sha256"] == res["reference_sha256"]
    arts = {a.path for a in client.list_artifacts(run.info.run_id)} | \
        {a.path for a in client.list_artifacts(run.info.run_id, "samples")}
    assert "metrics.json" in arts and "samples/grid.png" in arts


def test_evaluation_config_keeps_the_checkpoint_model(checkpoint):
    from djepa.config import ConfigError

    cfg = eval_config(checkpoint, ["model.token_loss.diffusion.sample_steps=3", "sample.temperature=0.9"])
    assert cfg.model.token_loss.diffusion.sample_steps == 3 and cfg.sample.temperature == 0.9
    assert cfg.model.width == 32  # the checkpoint's, not configs/digits.yaml's
    with pytest.raises(ConfigError, match="model.width differ from the checkpoint"):
        eval_config(checkpoint, ["model.width=64"])
