"""Exclusive output directories (djepa.lock): a second job into a busy directory is refused at once, naming the
holder; a holder killed with -9 leaves nothing stuck, and the next job takes the directory over."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from djepa.lock import RunDirBusy, acquire, hold, release

PY = sys.executable
TINY = ["model.encoder_depth=1", "model.predictor_depth=1", "model.width=32", "model.num_heads=2",
        "model.token_loss.depth=1", "model.token_loss.width=32", "model.token_loss.diffusion.sample_steps=5",
        "sample.ar_steps=4", "eval.num_samples=20", "eval.cfg_values=[1.0]", "train.log_every=1"]


def _holder(directory: Path) -> subprocess.Popen:
    """A process that holds `directory` until its stdin closes; returns once it holds it."""
    code = ("import sys; from djepa.lock import acquire; acquire(sys.argv[1], 'test holder'); "
            "print('held', flush=True); sys.stdin.read()")
    p = subprocess.Popen([PY, "-c", code, str(directory)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         env=os.environ | {"PYTHONPATH": os.getcwd()})
    assert p.stdout.readline().strip() == "held"
    return p


def test_busy_directory_is_refused_naming_the_holder_and_a_killed_holder_leaves_nothing_stuck(tmp_path):
    p = _holder(tmp_path / "run")
    with pytest.raises(RunDirBusy, match=rf"run is in use by test holder pid {p.pid} on .*-c"):
        acquire(tmp_path / "run", "second")
    p.send_signal(signal.SIGKILL)
    p.wait()
    with hold(tmp_path / "run", "takeover") as f:  # no stale lock after kill -9
        assert json.loads(f.read_text())["pid"] == os.getpid()
        assert acquire(tmp_path / "run", "nested") == f  # re-entrant in one process
        release(f)
    p = _holder(tmp_path / "run")  # released: another process can take it
    p.stdin.close()
    p.wait()


def test_training_sweep_and_encode_refuse_a_busy_directory_before_any_compute(tmp_path, tiny, untrained_checkpoint):
    from djepa.data.encode import encode
    from djepa.platform.sweep import run_sweep
    from djepa.platform.sweep_config import load_sweep
    from djepa.platform.trainer import train

    holders = [_holder(tmp_path / "run"), _holder(tmp_path / "sweep")]
    enc = tmp_path / "enc"
    code = ("import sys; from djepa.lock import acquire; acquire(sys.argv[1], 'encode', sys.argv[2]); "
            "print('held', flush=True); sys.stdin.read()")
    holders.append(subprocess.Popen([PY, "-c", code, str(tmp_path), str(tmp_path / ".enc.lock")], text=True,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    env=os.environ | {"PYTHONPATH": os.getcwd()}))
    assert holders[-1].stdout.readline().strip() == "held"
    try:
        with pytest.raises(RunDirBusy, match=f"pid {holders[0].pid}"):
            train(tiny(f"train.out_dir={tmp_path / 'run'}"))
        with pytest.raises(RunDirBusy, match=f"pid {holders[2].pid}"):
            encode(tiny(f"data.encoded_dir={enc}"))
        cfg, spec = load_sweep(untrained_checkpoint, None, [f"sweep.out_dir={tmp_path / 'sweep'}",
                                                            "eval.features=[]", "sweep.metric=seconds_per_image",
                                                            "sweep.ar_steps=null"])
        with pytest.raises(RunDirBusy, match=f"pid {holders[1].pid}"):
            run_sweep(cfg, spec, untrained_checkpoint)
    finally:
        for h in holders:
            h.stdin.close()
            h.wait()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".lock"]  # nothing written by the refused job
    assert not enc.exists()


def test_two_real_demo_jobs_into_one_directory(tmp_path):
    """Two `jobs/demo.py --local` processes into one train.out_dir: the second exits 2 at once naming the first;
    after the first is killed with -9 a third job takes the directory over and finishes."""
    out = tmp_path / "demo"
    cmd = [PY, "jobs/demo.py", "--local", "--set", f"train.out_dir={out}", *TINY]
    env = os.environ | {"PYTHONPATH": os.getcwd()}
    first = subprocess.Popen(cmd + ["train.steps=100000"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, env=env)
    try:
        for line in first.stdout:  # the first job prints its [train] header only after taking the lock
            if line.startswith("[train]"):
                break
        second = subprocess.run(cmd + ["train.steps=2"], capture_output=True, text=True, env=env, timeout=300)
        assert second.returncode == 2, second.stderr
        assert f"is in use by local demo pid {first.pid}" in second.stderr
        assert "Traceback" not in second.stderr
        assert json.loads((out / ".lock").read_text())["pid"] == first.pid
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    third = subprocess.run(cmd + ["train.steps=1"], capture_output=True, text=True, env=env, timeout=300)
    assert third.returncode == 0, third.stderr[-2000:]
    assert json.loads((out / "history.json").read_text())[-1]["step"] == 1
