"""Inputs validated before compute: config files, sample counts, sweep grids, reference files."""
import os
import subprocess
import sys

import numpy as np
import pytest

from djepa.config import ConfigError, load_config, parse_override
from djepa.eval.reference import ReferenceError
from djepa.platform.sweep_config import load_sweep

PY = sys.executable
ENV = os.environ | {"PYTHONPATH": os.getcwd()}


def test_config_files_that_make_no_sense_are_refused_by_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  width: 32\n  depth: [1, 2\ntrain: {}\n")
    with pytest.raises(ConfigError, match=rf"{bad}:4:\d+: not valid YAML"):
        load_config(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing here\n")
    with pytest.raises(ConfigError, match=f"{empty} is empty"):
        load_config(empty)
    listed = tmp_path / "list.yaml"
    listed.write_text("- model\n- train\n")
    with pytest.raises(ConfigError, match="top level must be a mapping of sections, not a list"):
        load_config(listed)
    with pytest.raises(ConfigError, match=r"override 'train.betas=\[0.9,': the value is not valid YAML"):
        parse_override("train.betas=[0.9,")
    job = subprocess.run([PY, "jobs/train.py", "--config", str(bad)], capture_output=True, text=True, env=ENV)
    assert job.returncode == 2 and "Traceback" not in job.stderr
    assert f"error: {bad}:4:" in job.stderr


@pytest.mark.parametrize("count", ["0", "-5"])
def test_num_samples_below_one_is_refused_before_anything_is_written(untrained_checkpoint, count):
    before = sorted(p.name for p in untrained_checkpoint.parent.rglob("*"))
    for job in ("jobs/sample.py", "jobs/evaluate.py"):
        r = subprocess.run([PY, job, "--checkpoint", str(untrained_checkpoint), "--num-samples", count],
                           capture_output=True, text=True, env=ENV)
        assert r.returncode == 2
        assert f"--num-samples: {count} is not a positive count" in r.stderr
    assert sorted(p.name for p in untrained_checkpoint.parent.rglob("*")) == before


def test_every_sweep_grid_point_is_checked_up_front_and_named_by_its_sweep_key(untrained_checkpoint):
    base = ["sweep.metric=seconds_per_image", "eval.features=[]", "sweep.ar_steps.values=[2, 4]"]
    with pytest.raises(ConfigError, match=r"sweep.coarse.cfg: the grid point cfg-1_t0.9_ar4 is not a valid "
                                          r"sampling config \(cfg: Input should be greater than or equal to 0"):
        load_sweep(untrained_checkpoint, None, base + ["sweep.coarse.cfg=[-1.0, 1.0]"])
    with pytest.raises(ConfigError, match="sweep.coarse.temperature: the grid point cfg1_t0_ar4"):
        load_sweep(untrained_checkpoint, None, base + ["sweep.coarse.cfg=[1.0]", "sweep.coarse.temperature=[0, 1]"])
    with pytest.raises(ConfigError, match="sweep.coarse.cfg is an empty grid"):
        load_sweep(untrained_checkpoint, None, base + ["sweep.coarse.cfg=[]"])
    with pytest.raises(ConfigError, match="sweep.ar_steps.values is an empty grid"):
        load_sweep(untrained_checkpoint, None, base[:2] + ["sweep.ar_steps.values=[]"])
    cfg, spec = load_sweep(untrained_checkpoint, None, base + ["sweep.coarse.cfg=[0, 1.0]"])
    assert spec.coarse.cfg == [0, 1.0]


def test_failure_report_of_a_bad_point_never_raises(untrained_checkpoint, tmp_path):
    """The reporter of a failed trial re-used the trial's point; an invalid one raised and lost the finished trials."""
    from mlflow.tracking import MlflowClient

    from djepa.platform.sweep import _log_failed
    from djepa.platform.tracking import start_run

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg, _ = load_sweep(untrained_checkpoint, None, ["sweep.metric=seconds_per_image", "eval.features=[]",
                                                     "sweep.ar_steps=null", f"tracking.tracking_uri={uri}"])
    parent = start_run(cfg, tmp_path, None)
    rec = {"point": {"cfg": -1.0, "temperature": 1.0, "ar_steps": 4}, "dir": str(tmp_path / "t"), "stage": "coarse",
           "name": "cfg-1_t1_ar4", "error": "ConfigError: sample.cfg"}
    _log_failed(cfg, rec, parent.run_id)
    assert MlflowClient(uri).get_run(rec["mlflow_run_id"]).info.status == "FAILED"


def test_reference_with_another_feature_dimension_is_refused_before_sampling(untrained_checkpoint, tmp_path):
    from djepa.platform.evaluator import eval_config, evaluate

    ref = tmp_path / "ref.npz"
    np.savez(ref, mu_domain=np.zeros(64), sigma_domain=np.eye(64))
    out = tmp_path / "eval"
    cfg = eval_config(untrained_checkpoint, ["eval.features=[domain]", f"eval.reference={ref}",
                                             f"eval.out_dir={out}", f"tracking.tracking_uri=sqlite:///{tmp_path}/m.db"])
    with pytest.raises(ReferenceError, match=rf"{ref} \(eval.reference\) has 'mu_domain' of shape \(64,\) .* the "
                                             r"domain features have dimension 128"):
        evaluate(cfg, untrained_checkpoint, 20)
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # no plan.json, no shard: nothing was sampled
