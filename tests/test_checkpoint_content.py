"""Checkpoints checked by content (sha256 in state.json) and by value (finite weights), and an optimizer.pt that
torch.load(weights_only=True) refuses, named in the driver before Ray starts."""
import argparse
import json
import shutil

import pytest
import torch

from djepa.checkpoint import (CheckpointError, check_finite, file_sha256, load_weights, save_checkpoint,
                              verify_checkpoint)
from djepa.models.djepa import build_model
from djepa.models.ema import make_ema


def _save(tiny, path, nan=False, optim=False):
    cfg = tiny()
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.tokenizer)
    ema = make_ema(model).state_dict()
    if nan:
        first = next(k for k, v in ema.items() if v.is_floating_point())
        ema[first] = ema[first].clone().fill_(float("nan"))
    opt = torch.optim.AdamW(model.parameters()).state_dict() if optim else None
    return save_checkpoint(path, cfg, model.state_dict(), ema, {"step": 3, "pass": 0, "batch_in_pass": 3,
                                                                 "parallel": "ddp"}, optim_state=opt)


def test_same_size_damage_is_named_by_file_and_fix(tiny, tmp_path):
    ckpt = _save(tiny, tmp_path / "checkpoint_0000003")
    state = verify_checkpoint(ckpt)
    assert state["sha256"]["model.safetensors"] == file_sha256(ckpt / "model.safetensors")
    f = ckpt / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[-4096:-4096 + 64] = bytes.fromhex("0000c07f") * 16  # 16 float32 NaNs, the size unchanged
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{f} is damaged: its content does not match the sha256 .*"
                                              rf"delete {ckpt} to fall back"):
        verify_checkpoint(ckpt)
    with pytest.raises(CheckpointError, match="does not match the sha256"):
        load_weights(ckpt)
    assert verify_checkpoint(ckpt, content=False)["step"] == 3  # the size check alone would have passed


def test_checkpoint_saved_before_hashes_is_checked_by_size(tiny, tmp_path):
    ckpt = _save(tiny, tmp_path / "old")
    state = json.loads((ckpt / "state.json").read_text())
    del state["sha256"]
    (ckpt / "state.json").write_text(json.dumps(state))
    assert verify_checkpoint(ckpt)["step"] == 3


def test_non_finite_weights_are_refused_for_evaluation(tiny, tmp_path):
    from djepa.platform.evaluator import eval_config, evaluate

    ckpt = _save(tiny, tmp_path / "checkpoint_0000003", nan=True)
    verify_checkpoint(ckpt)  # the file is intact: it was saved with NaN
    with pytest.raises(CheckpointError, match=r"tensor ema\..* holds \d+ NaN or infinite value\(s\)"):
        check_finite(ckpt)
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        load_weights(ckpt)
    out = tmp_path / "eval"
    cfg = eval_config(ckpt, ["eval.features=[]", f"eval.out_dir={out}"])
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        evaluate(cfg, ckpt, 10, with_metrics=False)
    assert not out.exists()


def test_refused_optimizer_state_is_named_before_ray_and_keeps_the_finished_run(tiny, tmp_path):
    """The driver loads optimizer.pt's structure (mmap) before anything: no Ray retries, status.json kept."""
    from djepa.platform.trainer import train

    run = tmp_path / "run"
    ckpt = _save(tiny, run / "checkpoint_0000003", optim=True)
    (run / "run.json").write_text("{}")
    (run / "status.json").write_text('{"status": "finished"}')
    f = ckpt / "optimizer.pt"
    torch.save({"state": {}, "param_groups": [], "args": argparse.Namespace(lr=1)}, f)
    state = json.loads((ckpt / "state.json").read_text())  # a consistent checkpoint: only weights_only refuses it
    state["files"]["optimizer.pt"], state["sha256"]["optimizer.pt"] = f.stat().st_size, file_sha256(f)
    (ckpt / "state.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match=rf"{f} is refused: .*weights_only=True"):
        train(tiny(f"train.out_dir={run}"), resume=True)
    assert json.loads((run / "status.json").read_text()) == {"status": "finished"}
    shutil.rmtree(ckpt)
