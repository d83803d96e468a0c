"""Experiments over training settings: the config checks (no compute), the cluster config's cells built offline,
and one Ray experiment of 2 arms x 2 seeds stopped after 2 cells and resumed."""
import json
import math
import statistics

import pytest
import yaml

from djepa.config import ConfigError
from djepa.eval.curves import curves, format_mean_std
from djepa.eval.online import read_points
from djepa.platform.experiment_config import load_experiment


def write_experiment(tmp_path, base_cfg, **spec):
    base = tmp_path / "base.yaml"
    base.write_text(base_cfg.to_yaml())
    data = {"name": "tiny", "base": str(base), "arms": {"djepa": {"model.pred_loss_weight": 1.0},
                                                         "mar": {"model.pred_loss_weight": 0.0}},
            "seeds": [0, 1], "metric": "fd_domain", "out_dir": str(tmp_path / "exp")} | spec
    f = tmp_path / "experiment.yaml"
    f.write_text(yaml.safe_dump(data))
    return f


ONLINE = ("train.eval_every=5", "train.eval_samples=20", "eval.features=[domain]", "eval.is_splits=2")


def test_experiment_config_errors_name_the_key_and_cell(tiny, tmp_path):
    good = write_experiment(tmp_path, tiny(*ONLINE))
    spec, cells = load_experiment(good)
    assert list(cells) == ["djepa-s0", "djepa-s1", "mar-s0", "mar-s1"]
    arm, seed, cfg = cells["mar-s1"]
    assert (arm, seed, cfg.train.seed, cfg.model.pred_loss_weight) == ("mar", 1, 1, 0.0)
    assert cfg.train.out_dir == str(tmp_path / "exp" / "mar-s1") and spec.lower_is_better
    assert "mar" in cfg.tracking.run_name and "seed 1" in cfg.tracking.run_name
    # --set: experiment.* for the experiment, anything else for every cell
    spec, cells = load_experiment(good, ["experiment.seeds=[3]", "train.steps=7"])
    assert list(cells) == ["djepa-s3", "mar-s3"] and cells["mar-s3"][2].train.steps == 7
    # an arm with its own base config
    own = {"djepa": {"model.pred_loss_weight": 1.0}, "mnist": {"base": "configs/mnist.yaml", "train.eval_every": 50}}
    spec, cells = load_experiment(write_experiment(tmp_path, tiny(*ONLINE), arms=own))
    assert (cells["djepa-s0"][2].name, cells["mnist-s1"][2].name, cells["mnist-s1"][2].train.eval_every) == \
        ("digits", "mnist", 50)

    with pytest.raises(ConfigError, match=r"experiment\.seed: unknown key; did you mean 'experiment\.seeds'"):
        load_experiment(write_experiment(tmp_path, tiny(*ONLINE), seed=[0]))
    bad_arm = {"djepa": {"model.pred_loss_weight": 1.0}, "mar": {"model.pred_loss_wieght": 0.0}}
    with pytest.raises(ConfigError, match=r"(?s)experiment\.arms\.mar \(cell mar-s0.*pred_loss_wieght: unknown key"):
        load_experiment(write_experiment(tmp_path, tiny(*ONLINE), arms=bad_arm))
    with pytest.raises(ConfigError, match=r"(?s)experiment\.arms\.mar \(cell mar-s0.*pred_loss_weight"):
        load_experiment(write_experiment(tmp_path, tiny(*ONLINE), arms={"mar": {"model.pred_loss_weight": -1}}))
    with pytest.raises(ConfigError, match="cell djepa-s0: train.eval_every is not set"):
        load_experiment(write_experiment(tmp_path, tiny()))
    with pytest.raises(ConfigError, match="experiment.metric: 'fid' is not an online metric"):
        load_experiment(write_experiment(tmp_path, tiny(*ONLINE), metric="fid"))
    with pytest.raises(ConfigError, match=r"experiment.report_steps: \[10000000\] beyond"):
        load_experiment(write_experiment(tmp_path, tiny(*ONLINE), report_steps=[5, 10**7]))


def test_cluster_and_mnist_ablations_build_every_cell(tmp_path):
    spec, cells = load_experiment("configs/ablation-imagenet-b.yaml", ["tokenizer.vae.weights=/vae",
                                                                       "data.root=/imagenet"])
    assert len(cells) == 4 and spec.metric == "fid"
    djepa, mar = cells["djepa-s0"][2], cells["mar-s0"][2]
    assert (djepa.model.pred_loss_weight, mar.model.pred_loss_weight) == (1.0, 0.0)
    assert djepa.train.eval_every == 40 * 1_281_167 // djepa.train.batch_size  # every 40 epochs
    assert djepa.train.eval_samples == 10_000
    a, b = djepa.to_dict(), mar.to_dict()  # everything else equal
    for c in (a, b):
        c["model"].pop("pred_loss_weight"), c["train"].pop("seed"), c["train"].pop("out_dir"), c.pop("tracking")
    assert a == b
    spec, cells = load_experiment("configs/ablation-mnist.yaml")
    assert len(cells) == 6 and spec.metric == "fd_domain"


def test_experiment_stopped_after_two_cells_resumes_only_the_others(ray_session, tiny, tmp_path, encoded_digits):
    from mlflow.tracking import MlflowClient

    from djepa.platform.experiment import run_experiment
    from eval_faults import cell_faults, register_by_value

    register_by_value()  # on_cell runs in Tune's trial processes
    base = tiny(f"data.encoded_dir={encoded_digits}", f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
                "tracking.experiment=test", "train.workers=1", "train.cpus_per_worker=0.5", "train.batch_size=64",
                "train.blr=4e-3", "train.steps=10", "train.checkpoint_every=5", "train.log_every=5",
                "train.warmup_steps=5", "sample.num_per_class=1", "train.max_minutes=null", *ONLINE)
    f = write_experiment(tmp_path, base, report_steps=[5, 10], threshold=1.0e9)
    spec, cells = load_experiment(f)
    out = tmp_path / "exp"
    # mar-s0 stops before it trains; mar-s1 stops on a NaN loss at step index 7 (after its point and checkpoint 5)
    with pytest.raises(RuntimeError, match=r"2 of 4 cell\(s\) failed \(mar-s0, mar-s1\)"):
        run_experiment(spec, cells, on_cell=cell_faults(stop=["mar-s0"], nan_at_step={"mar-s1": 7}))
    assert not (out / "mar-s0").exists()
    assert json.loads((out / "mar-s1" / "summary.json").read_text())["status"] == "nan"
    assert list(read_points(out / "mar-s1" / "online.jsonl")) == [5]
    done = {n: ((out / n / "summary.json").stat().st_mtime_ns, (out / n / "run.json").read_text())
            for n in ("djepa-s0", "djepa-s1")}

    summary = run_experiment(spec, cells)
    assert summary["cells"] == {n: "finished" for n in cells}
    for n, (mtime, run_json) in done.items():  # the finished cells were not trained again
        assert (out / n / "summary.json").stat().st_mtime_ns == mtime
        assert (out / n / "run.json").read_text() == run_json and len(json.loads(run_json)["attempts"]) == 1

    # mar-s1 continued its run from checkpoint 5 (a second attempt of the same run), not a new one
    attempts = json.loads((out / "mar-s1" / "run.json").read_text())["attempts"]
    assert len(attempts) == 2 and attempts[1]["from"].endswith("checkpoint_0000005")
    assert len(json.loads((out / "mar-s0" / "run.json").read_text())["attempts"]) == 1

    # the aggregate against a hand computation from each cell's online.jsonl
    hand = [{"arm": arm, "seed": seed, **p} for arm in ("djepa", "mar") for seed in (0, 1)
            for p in sorted(read_points(out / f"{arm}-s{seed}" / "online.jsonl").values(), key=lambda p: p["step"])]
    assert [json.loads(line) for line in (out / "points.jsonl").read_text().splitlines()] == hand
    assert [(p["step"]) for p in hand] == [5, 10] * 4
    saved = json.loads((out / "curves.json").read_text())["fd_domain"]
    assert saved == json.loads(json.dumps(curves(hand, "fd_domain")))
    table = (out / "table.md").read_text()
    for arm in ("djepa", "mar"):
        for step, row in zip((5, 10), saved[arm]):
            values = [p["fd_domain"] for p in hand if p["arm"] == arm and p["step"] == step]
            assert math.isclose(row["mean"], statistics.mean(values)) and row["n"] == 2
            assert math.isclose(row["std"], statistics.stdev(values))
            assert format_mean_std({"mean": statistics.mean(values), "std": statistics.stdev(values), "n": 2}) in table
    threshold = json.loads((out / "threshold.json").read_text())["arms"]
    assert threshold["mar"]["per_seed"] == {"0": 5, "1": 5} and threshold["mar"]["mean"] == 5.0
    assert (out / "curves.png").stat().st_size > 0 and "curves.csv" in {p.name for p in out.iterdir()}

    # one MLflow parent, a child per cell named by arm and seed, the files as its artifacts
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = client.get_run(summary["mlflow_run_id"])
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.info.run_name for r in children) == ["tiny djepa seed 0", "tiny djepa seed 1", "tiny mar seed 0",
                                                         "tiny mar seed 1"]
    assert parent.info.status == "FINISHED"
    params = parent.data.params  # what every cell shares and the experiment's own keys; not the arms' settings
    assert params["train.steps"] == "10" and params["experiment.metric"] == "fd_domain"
    assert "model.pred_loss_weight" not in params and "train.seed" not in params
    assert {"points.jsonl", "curves.csv", "curves.json", "table.md", "threshold.json", "curves.png"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)}
