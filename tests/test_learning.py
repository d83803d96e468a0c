"""A short version of the embedded demo: the loss falls clearly and the outputs have the right form."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open

from djepa.checkpoint import load_weights
from djepa.config import load_config


@pytest.mark.slow
def test_demo_job_trains_samples_and_writes_outputs(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "jobs/demo.py", "--local", "--set", "train.steps=600", "train.max_minutes=null", "train.log_every=40",
           f"train.out_dir={out}", "sample.num_per_class=3", "sample.ar_steps=8", "eval.num_samples=100",
           "model.token_loss.diffusion.sample_steps=50"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[train] step      40/600 ep 2.8" in proc.stdout and "ETA" in proc.stdout
    assert "[demo] done" in proc.stdout and str(out) in proc.stdout

    history = json.loads((out / "history.json").read_text())
    losses = [h["loss"] for h in history]
    assert len(losses) == 15 and all(np.isfinite(losses))
    assert np.mean(losses[-2:]) < 0.7 * losses[0], losses  # falls clearly

    with np.load(out / "samples.npz") as f:
        images, labels = f["arr_0"], f["arr_1"]
    assert images.dtype == np.uint8 and images.shape == (30, 8, 8, 1)
    assert labels.tolist() == [i % 10 for i in range(30)]
    assert images.min() == 0 and images.max() == 255 and len(np.unique(images)) > 10
    assert (out / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    results = json.loads((out / "results.json").read_text())
    assert results["steps"] == 600
    cc = results["class_consistency"]
    assert set(cc) == {"real_held_out", "cfg_1", "cfg_3"} and cc["real_held_out"] > 0.95
    assert 0.0 <= cc["cfg_1"] <= 1.0 and 0.0 <= cc["cfg_3"] <= 1.0

    cfg, model, ema = load_weights(out / "checkpoint")
    assert cfg == load_config(out / "checkpoint" / "config.yaml") and cfg.train.steps == 600
    with safe_open(str(out / "checkpoint" / "model.safetensors"), "pt") as f:
        assert f.metadata()["config_hash"] == cfg.hash()
        assert any(k.startswith("ema.") for k in f.keys()) and any(k.startswith("model.") for k in f.keys())

    # the domain FD ranks it: 600 steps already sit far below the untrained model and noise, above real data
    from djepa.eval.classifier import real_split
    from djepa.eval.features import DomainExtractor
    from djepa.eval.metrics import FeatureStats, frechet_distance
    from djepa.models.djepa import build_model
    from djepa.samples import balanced_labels, sample_images

    ex, split = DomainExtractor("digits"), real_split("digits")
    ref = FeatureStats.of(ex(split["train_x"])[0]).mu_sigma()
    n = len(split["held_x"])

    def fd(images):
        return frechet_distance(*FeatureStats.of(ex(images)[0]).mu_sigma(), *ref)

    torch.manual_seed(0)
    untrained = build_model(cfg.model, cfg.tokenizer).eval()
    labels = balanced_labels(n, 10)
    fd_trained, fd_untrained = fd(sample_images(ema, cfg, labels)), fd(sample_images(untrained, cfg, labels))
    fd_noise = fd(np.random.default_rng(0).integers(0, 256, (n, 8, 8, 1), dtype=np.uint8))
    fd_real = fd(split["held_x"])
    assert fd_real < fd_trained < fd_untrained / 5 and fd_trained < fd_noise / 5, \
        (fd_real, fd_trained, fd_untrained, fd_noise)


def test_demo_rejects_bad_config_before_compute():
    proc = subprocess.run([sys.executable, "jobs/demo.py", "--set", "model.encoder_dept=4"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "model.encoder_dept: unknown key" in proc.stderr and "model.encoder_depth" in proc.stderr
    assert "[train]" not in proc.stdout
