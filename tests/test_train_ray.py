"""Ray Train on the local session Ray: two DDP workers learn, checkpoint, survive an injected failure,
continue a finished run, stop on NaN, and record it all in one MLflow run."""
import json

import pytest
from mlflow.tracking import MlflowClient

from djepa.checkpoint import verify_checkpoint
from djepa.engine import lr_at
from djepa.platform.trainer import checkpoints, train
from train_faults import fail_once, nan_at


def ray_config(tiny, tmp_path, data, *extra):
    return tiny(f"data.encoded_dir={data}", f"train.out_dir={tmp_path / 'run'}",
                f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}", "tracking.experiment=test",
                "train.workers=2", "train.cpus_per_worker=0.5", "train.batch_size=64", "train.blr=4e-3",
                "train.checkpoint_every=10", "train.keep_checkpoints=2", "train.log_every=5",
                "train.warmup_steps=38", "sample.num_per_class=1", "train.max_minutes=null", *extra)


def events(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_train_survives_a_failure_then_continues(ray_session, tiny, tmp_path, encoded_digits):
    run = tmp_path / "run"
    online = ("train.eval_every=10", "train.eval_samples=20", "eval.features=[domain]", "eval.is_splits=2")
    cfg = ray_config(tiny, tmp_path, encoded_digits, "train.steps=30", *online)
    summary = train(cfg, on_step=fail_once(13))  # the last rank raises once, before step 14
    assert summary["status"] == "finished" and summary["step"] == 30
    assert (run / ".fault-fail-13").exists()  # the failure did happen
    assert [e["step"] for e in events(run) if e.get("event") == "resumed"] == [10]  # from the last checkpoint
    logged = [e for e in events(run) if "loss" in e]
    assert [e["step"] for e in logged] == [5, 10, 15, 20, 25, 30]  # steps 11-13 redone, none lost
    assert logged[-1]["loss"] < 0.8 * logged[0]["loss"]
    assert [p.name for p in checkpoints(run)] == ["checkpoint_0000020", "checkpoint_0000030"]
    assert verify_checkpoint(run / "checkpoint_0000030")["step"] == 30
    # the EMA's update count (its decay warm-up) came back from checkpoint 10: one update per step, none twice
    assert verify_checkpoint(run / "checkpoint_0000030")["ema_updates"] == 30
    # online evaluation: the point of step 10 was made before the failure and is not made again
    assert [p["step"] for p in summary["online"]] == [10, 20, 30]

    # continue the finished run: the step count and the warm-up go on where they stopped
    more = ray_config(tiny, tmp_path, encoded_digits, "train.steps=40", *online)
    assert train(more, resume=True)["step"] == 40
    assert verify_checkpoint(run / "checkpoint_0000040")["ema_updates"] == 40
    logged = [e for e in events(run) if "loss" in e]
    assert [e["step"] for e in logged] == [5, 10, 15, 20, 25, 30, 35, 40]
    for e in logged:  # lr logged at step k is the lr of step index k-1 of one uninterrupted schedule
        assert e["lr"] == pytest.approx(lr_at(e["step"] - 1, more.train))
    assert logged[-1]["lr"] > logged[-3]["lr"]  # still warming up across the resume

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("test")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # MLflow 3 opens its training view
    (mlrun,) = client.search_runs([exp.experiment_id])  # one run across the failure and the resume
    assert mlrun.info.run_name.startswith("digits model.encoder_depth=1 model.predictor_depth=1 model.width=32 +")
    assert mlrun.data.params["model.width"] == "32" and mlrun.data.params["train.workers"] == "2"
    assert mlrun.data.tags["resume.train.steps"] == "30 -> 40"
    for key in ("loss_d", "loss_p", "lr", "grad_norm"):
        assert [m.step for m in client.get_metric_history(mlrun.info.run_id, key)] == [5, 10, 15, 20, 25, 30, 35, 40]
    # each online point once in online.jsonl and once in MLflow, across a worker failure and a resume (both
    # replay the recorded points with their own timestamps: MLflow keeps identical rows once)
    assert [json.loads(x)["step"] for x in (run / "online.jsonl").read_text().splitlines()] == [10, 20, 30, 40]
    for key in ("online/fd_domain", "online/consistency_domain", "online/seconds"):
        assert [m.step for m in client.get_metric_history(mlrun.info.run_id, key)] == [10, 20, 30, 40]
    samples = [a.path for a in client.list_artifacts(mlrun.info.run_id, "samples")]
    assert samples == ["samples/step_0000030.png", "samples/step_0000040.png"]
    assert [a.path for a in client.list_artifacts(mlrun.info.run_id, "dataset")] == ["dataset/manifest.json"]
    assert mlrun.data.tags["djepa.checkpoint"] == str(run / "checkpoint_0000040")
    assert client.get_run(mlrun.info.run_id).info.status == "FINISHED"


def test_nan_stops_and_keeps_the_last_good_checkpoint(ray_session, tiny, tmp_path, encoded_digits):
    run = tmp_path / "run"
    cfg = ray_config(tiny, tmp_path, encoded_digits, "train.workers=1", "train.steps=20", "train.checkpoint_every=5")
    with pytest.raises(FloatingPointError, match=r"NaN/inf at step 8.*checkpoint \(step 5\) is intact"):
        train(cfg, on_step=nan_at(7))
    assert [p.name for p in checkpoints(run)] == ["checkpoint_0000005"]
    assert verify_checkpoint(run / "checkpoint_0000005")["step"] == 5
    assert json.loads((run / "status.json").read_text())["status"] == "nan"
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (mlrun,) = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    assert mlrun.info.status == "FAILED"


def test_fsdp_shards_recovers_and_saves_plain_weights(ray_session, tiny, tmp_path, encoded_digits):
    from djepa.checkpoint import load_weights

    run = tmp_path / "run"
    cfg = ray_config(tiny, tmp_path, encoded_digits, "train.parallel=fsdp", "train.steps=10",
                     "train.checkpoint_every=5", "train.warmup_steps=2")
    assert train(cfg, on_step=fail_once(7))["step"] == 10  # the restart loads a checkpoint into the shards
    assert [e["step"] for e in events(run) if e.get("event") == "resumed"] == [5]
    logged = [e for e in events(run) if "loss" in e]
    assert [e["step"] for e in logged] == [5, 10] and logged[1]["loss"] < logged[0]["loss"]
    saved, model, ema = load_weights(run / "checkpoint_0000010")  # full tensors under plain names
    assert saved.train.parallel == "fsdp"
    assert any((p - q).abs().max() > 0 for p, q in zip(model.parameters(), ema.parameters()))
