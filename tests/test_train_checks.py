"""What the training driver refuses before any Ray worker starts, and how it says so."""
import json
import shutil
import subprocess
import sys

import pytest
import torch

from djepa.checkpoint import CheckpointError, load_weights, save_checkpoint
from djepa.config import ConfigError
from djepa.data.encoded import DatasetError, open_encoded
from djepa.models.djepa import build_model
from djepa.models.ema import make_ema
from djepa.platform.trainer import prepare_run


def test_config_error_stops_before_ray(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "jobs/train.py", "--set", "model.widht=64", f"train.out_dir={run}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "model.widht: unknown key; did you mean 'model.width'?" in proc.stderr
    assert "Ray" not in proc.stdout + proc.stderr and not run.exists()


def test_missing_dataset_names_the_path_and_the_fix(tiny, tmp_path):
    with pytest.raises(DatasetError, match=r"nope does not exist; encode it with `python jobs/encode.py"):
        open_encoded(tiny(), tmp_path / "nope")


def test_corrupt_shard_is_named_and_nothing_is_changed(tiny, tmp_path, encoded_digits):
    data = tmp_path / "enc"
    shutil.copytree(encoded_digits, data)
    manifest = json.loads((data / "manifest.json").read_text())
    shard = data / manifest["files"][1]["name"]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    before = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}
    with pytest.raises(DatasetError, match=rf"shard {shard} is corrupt .*delete {data} and encode it"):
        open_encoded(tiny(), data)
    assert {p: p.read_bytes() for p in data.rglob("*") if p.is_file()} == before


def test_manifest_for_another_tokenizer_is_refused(tiny, encoded_digits):
    cfg = tiny("tokenizer.image_size=16", "tokenizer.patch_size=4")
    with pytest.raises(DatasetError, match=r"manifest.json was encoded with .*'moments_shape': \[1, 8, 8\].*"
                                           r"needs .*'moments_shape': \[1, 16, 16\]"):
        open_encoded(cfg, encoded_digits)


def _fake_run(cfg, run):
    """A run directory with two checkpoints, as a finished Ray run leaves it."""
    run.mkdir()
    (run / "run.json").write_text("{}")
    model = build_model(cfg.model, cfg.tokenizer)
    opt = torch.optim.AdamW(model.parameters())
    for step in (5, 10):
        save_checkpoint(run / f"checkpoint_{step:07d}", cfg, model.state_dict(), make_ema(model).state_dict(),
                        {"step": step, "pass": 0, "batch_in_pass": step, "parallel": "ddp"}, optim_state=opt.state_dict())
    return run


def test_truncated_checkpoint_is_named_with_a_way_out(tiny, tmp_path):
    cfg = tiny(f"train.out_dir={tmp_path / 'run'}")
    run = _fake_run(cfg, tmp_path / "run")
    assert prepare_run(cfg, resume=True, resume_from=None)[2] == run / "checkpoint_0000010"
    weights = run / "checkpoint_0000010" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(CheckpointError, match=rf"{weights} is damaged: expected [\d,]+ bytes, found 1,000 bytes.*"
                                              rf"--resume-from {run / 'checkpoint_0000005'}"):
        prepare_run(cfg, resume=True, resume_from=None)
    with pytest.raises(CheckpointError, match="model.safetensors is damaged"):
        load_weights(run / "checkpoint_0000010")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert prepare_run(cfg, resume=False, resume_from=str(run / "checkpoint_0000005"))[2] == \
        run / "checkpoint_0000005"


def test_run_directory_rules(tiny, tmp_path):
    cfg = tiny(f"train.out_dir={tmp_path / 'run'}")
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        prepare_run(cfg, resume=True, resume_from=None)
    _fake_run(cfg, tmp_path / "run")
    with pytest.raises(FileExistsError, match="already holds a training run; continue it with --resume"):
        prepare_run(cfg, resume=False, resume_from=None)
    with pytest.raises(ConfigError, match=r"model differs .*model.width: 32 -> 48"):
        prepare_run(tiny(f"train.out_dir={tmp_path / 'run'}", "model.width=48"), resume=True, resume_from=None)
    with pytest.raises(ConfigError, match=r"saved with train.parallel=ddp; resume with --set train.parallel=ddp"):
        prepare_run(tiny(f"train.out_dir={tmp_path / 'run'}", "train.parallel=fsdp"), resume=True, resume_from=None)


def test_a_ray_job_needs_absolute_outputs(tiny, tmp_path, monkeypatch):
    """In a `ray job submit` job the cwd is a temporary copy: relative outputs would be lost with it."""
    from djepa.platform.tracking import tracking_uri

    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")  # what Ray's job supervisor sets for the driver
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ConfigError, match="train.out_dir=outputs/run is relative: in a Ray job"):
        prepare_run(tiny("train.out_dir=outputs/run"), False, None)
    assert prepare_run(tiny(f"train.out_dir={tmp_path / 'run'}"), False, None)[0] == tmp_path / "run"
    with pytest.warns(UserWarning, match="no MLFLOW_TRACKING_URI in this Ray job"):
        tracking_uri(tiny())
