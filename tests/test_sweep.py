"""The sampling sweep: grids and choice without Ray, then one small coarse-to-fine sweep on the suite's Ray."""
import json

import pytest

from djepa.cli import _checkpoint_config
from djepa.config import ConfigError
from djepa.platform.sweep_config import SweepConfig, around, choose, load_sweep, point, stage_points


def _write(tmp_path, text):
    f = tmp_path / "sweep.yaml"
    f.write_text(text)
    return f


def test_paper_grids(untrained_checkpoint, tmp_path):
    cfg, spec = load_sweep(untrained_checkpoint, "configs/sweep-paper.yaml", ["eval.features=[domain]", "sweep.metric=fd_domain",
                                                                   "sweep.coarse.ar_steps=16",
                                                                   "sweep.ar_steps.values=[4,8,16]"])
    coarse = stage_points(spec, "coarse", cfg, None)
    temps = sorted({p["temperature"] for p in coarse})
    assert len(temps) == 16 and temps[0] == 0.9 and temps[-1] == 1.05 and 0.97 in temps  # exact, no 0.9700000001
    assert len(coarse) == 64 and {p["cfg"] for p in coarse} == {1.0, 2.0, 3.0, 4.0}
    fine = stage_points(spec, "fine", cfg, point(3.0, 0.97, 16))
    assert sorted({p["cfg"] for p in fine}) == [2.7, 2.8, 2.9, 3.0, 3.1, 3.2, 3.3]
    assert sorted({p["temperature"] for p in fine}) == [0.96, 0.97, 0.98] and len(fine) == 21
    assert around(1.0, 0.3, 0.1, 1.0) == [1.0, 1.1, 1.2, 1.3]  # no cfg below 1
    ar = stage_points(spec, "ar_steps", cfg, point(3.1, 0.98, 16))
    assert [p["ar_steps"] for p in ar] == [4, 8, 16] and all(p["cfg"] == 3.1 for p in ar)
    assert SweepConfig().ar_steps.values.values() == [32, 64, 96, 128, 160, 192, 224, 256]  # paper Table 3


def test_choice_is_the_arg_best_and_never_a_failed_trial():
    t = [{"score": 3.0, "n": 0}, {"score": None, "n": 1}, {"score": 1.5, "n": 2}, {"score": 1.5, "n": 3},
         {"score": 9.0, "n": 4}]
    assert choose(t, SweepConfig(metric="fid"))["n"] == 2  # min; ties go to the first in grid order
    assert choose(t, SweepConfig(metric="is"))["n"] == 4  # IS is maximised by default
    assert choose(t, SweepConfig(metric="is", mode="min"))["n"] == 2
    assert choose([{"score": None}], SweepConfig()) is None
    from djepa.platform.sweep_config import score

    weighted = SweepConfig(weights={"fid": 1.0, "is": -0.01}, mode="min")
    assert score({"fid": 2.0, "is": 300.0}, weighted) == pytest.approx(-1.0)
    assert score({"fid": 2.0}, weighted) is None and score({"fid": float("nan")}, SweepConfig()) is None


def test_sweep_config_errors_name_the_key(untrained_checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="sweep.coarse.tempreature: unknown key; did you mean "
                                          "'sweep.coarse.temperature'"):
        load_sweep(untrained_checkpoint, _write(tmp_path, "sweep: {coarse: {tempreature: [1.0]}}"), [])
    with pytest.raises(ConfigError, match="sweep.metric: 'fid' is not a metric of this evaluation"):
        load_sweep(untrained_checkpoint, None, ["eval.features=[domain]"])
    with pytest.raises(ConfigError, match=r"sweep.ar_steps.values: \[32\] outside 1..16"):
        load_sweep(untrained_checkpoint, None, ["sweep.metric=fd_domain", "sweep.ar_steps.values=[4,32]"])
    with pytest.raises(ConfigError, match="fine is centred on the coarse"):
        load_sweep(untrained_checkpoint, None, ["sweep.coarse=null"])
    with pytest.raises(ConfigError, match="model.width differ"):
        load_sweep(untrained_checkpoint, _write(tmp_path, "sweep: {metric: fid}\nmodel: {width: 64}"), [])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny digits model trained for 300 steps: enough for cfg and temperature to matter."""
    from conftest import tiny_config

    from djepa.local import train_local

    out = tmp_path_factory.mktemp("trained")
    return train_local(tiny_config("train.steps=300", "train.max_minutes=2", "train.log_every=1000"), out).checkpoint


SWEEP = """
sweep:
  name: tiny
  metric: fd_domain
  concurrent_trials: 2
  coarse: {num_samples: 40, cfg: [1.0, 3.0], temperature: [0.9, 1.0], ar_steps: 4}
  fine: {num_samples: 40, cfg_radius: 0, temperature_radius: 0.05, temperature_step: 0.05}
  ar_steps: {num_samples: 40, values: [2, 4]}
  final: {num_samples: 60}
eval: {workers: 1, cpus_per_worker: 0.5, shard_size: 20, features: [domain], reference_images: 50}
"""


def test_coarse_to_fine_sweep_resumes_and_reports(ray_session, trained, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from djepa.platform.sweep import run_sweep
    from eval_faults import FailTrials, register_by_value, stop_after_stage

    register_by_value()  # the on_trial hooks run in Tune's trial processes

    out, db = tmp_path / "sweep", f"sqlite:///{tmp_path}/mlflow.db"
    args = (trained, _write(tmp_path, SWEEP), [f"sweep.out_dir={out}", f"tracking.tracking_uri={db}"])

    # 1. killed after the coarse stage; one coarse trial fails once and is retried
    with pytest.raises(RuntimeError, match="stopped after stage coarse"):
        run_sweep(*load_sweep(*args), trained, on_trial=FailTrials(once=["cfg3_t1_ar4"]),
                  on_stage=stop_after_stage("coarse"))
    state = json.loads((out / "sweep.json").read_text())
    coarse = state["stages"]["coarse"]["trials"]
    assert [t["status"] for t in coarse] == ["ok"] * 4 and (out / "coarse" / "cfg3_t1_ar4" / "flaky").exists()
    assert "cfg3_t1_ar4 failed; retrying it" in capsys.readouterr().out
    stamps = {p: p.stat().st_mtime_ns for p in [*(out / "tune" / "coarse").rglob("*"), *(out / "coarse").rglob("*")]}

    # 2. the same command resumes; one fine trial fails for good and is reported, not dropped
    cfg, spec = load_sweep(*args)
    best = state["stages"]["coarse"]["best"]["point"]
    fine_points = stage_points(spec, "fine", cfg, best)
    doomed = next(f"cfg{p['cfg']:g}_t{p['temperature']:g}_ar4" for p in fine_points if p != best)
    summary = run_sweep(cfg, spec, trained, on_trial=FailTrials(always=[doomed]))
    log = capsys.readouterr().out
    assert "coarse: finished earlier (4 trials); not run again" in log and f"{doomed} FAILED" in log
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # coarse's Tune state and trials untouched

    state = json.loads((out / "sweep.json").read_text())
    stages = state["stages"]
    for name, st in stages.items():  # every stage's choice is the arg-min of its finished trials
        ok = [t for t in st["trials"] if t["status"] == "ok"]
        assert st["best"]["score"] == min(t["metrics"]["fd_domain"] for t in ok), name
    # the fine grid is centred on the coarse best: same cfg, temperatures best -+ 0.05, the centre not re-sampled
    fine = stages["fine"]["trials"]
    assert [t["point"] for t in fine] == fine_points
    assert {p["cfg"] for p in fine_points} == {best["cfg"]}
    temps = sorted(p["temperature"] for p in fine_points)
    assert temps[1] == best["temperature"] and temps[1] - temps[0] == pytest.approx(temps[2] - temps[1])
    centre = next(t for t in fine if t["point"] == best)
    assert centre["reused_from"] == "coarse" and not (out / "fine" / centre["name"]).exists()
    failed = next(t for t in fine if t["name"] == doomed)
    assert failed["status"] == "failed" and "injected fault" in failed["error"] and failed["score"] is None
    assert [p["ar_steps"] for p in stages["ar_steps"]["points"]] == [2, 4]
    assert summary["best"] == stages["final"]["best"]["point"] == stages["ar_steps"]["best"]["point"]
    assert summary["failed"] == [doomed] and stages["final"]["trials"][0]["num_samples"] == 60
    assert all(t["seconds_per_image"] > 0 for s in stages.values() for t in s["trials"] if t["status"] == "ok")
    assert not list(out.glob("*/*/shards/*.npz"))  # keep_samples is off: only metrics and grids remain

    # best.yaml is a config jobs/evaluate.py --config accepts
    again = _checkpoint_config(str(trained), str(out / "best.yaml"), [])
    assert {k: getattr(again.sample, k) for k in ("cfg", "temperature", "ar_steps")} == summary["best"]

    # MLflow: one parent with the figures and a child per trial run (the failed one marked FAILED)
    client = MlflowClient(db)
    parent = client.get_run(summary["mlflow"]["run_id"])
    runs = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    ran = [t for s in stages.values() for t in s["trials"] if "reused_from" not in t]
    assert len(runs) == len(ran) == 4 + 2 + 1 + 1
    assert sorted(r.data.tags["djepa.sweep.trial"] for r in runs if r.info.status == "FAILED") == [doomed]
    coarse_runs = [r for r in runs if r.data.tags["djepa.sweep.stage"] == "coarse"]
    assert len(coarse_runs) == 4 and all("fd_domain" in r.data.metrics for r in coarse_runs)
    arts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"best.yaml", "best.md", "trials.csv", "sweep.json"} <= arts
    assert {"plots/coarse_fd_domain.png", "plots/fine_is_domain.png", "plots/ar_steps.png"} <= plots
    assert parent.data.params["best.cfg"] == str(summary["best"]["cfg"]) and parent.info.status == "FINISHED"
