"""`ray job submit` end to end, as the README shows it: a real local Ray head started here on its own ports
(and stopped here, touching no other Ray process), the training job on the embedded digits, then the
evaluation of the checkpoint it wrote, and both runs with their metrics and artifacts in MLflow."""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "token")  # the job client of a Ray 2.60 head started with `ray start`
        yield mp

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
TINY = ["model.encoder_depth=1", "model.predictor_depth=1", "model.width=32", "model.num_heads=2",
        "model.token_loss.depth=1", "model.token_loss.width=32", "model.token_loss.diffusion.sample_steps=5",
        "sample.ar_steps=4", "sample.num_per_class=1"]


def _ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def head(monkeypatch_module):
    """`ray start --head --block` in a process group of its own; every port chosen here, its own temp dir."""
    gcs, dash, client, nm, om, agent, agent_grpc, metrics, renv = _ports(9)
    tmp = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Ray's unix sockets live under it
    env = os.environ | {"RAY_AUTH_MODE": "token", "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    log = open(Path(tmp) / "head.log", "w")
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus=2", "--num-gpus=0", f"--temp-dir={tmp}",
           f"--port={gcs}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--include-dashboard=true",
           f"--ray-client-server-port={client}", f"--node-manager-port={nm}", f"--object-manager-port={om}",
           f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
           f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={renv}"]
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    try:
        from ray.job_submission import JobSubmissionClient

        t0 = time.monotonic()
        while True:  # the job API answers once the head is up (a subprocess: nothing else to wait on)
            assert proc.poll() is None, (Path(tmp) / "head.log").read_text()[-3000:]
            try:
                JobSubmissionClient(url).list_jobs()
                break
            except Exception as err:
                assert time.monotonic() - t0 < 120, f"the Ray head's job API did not answer ({err}): " + \
                    (Path(tmp) / "head.log").read_text()[-3000:]
                time.sleep(1)
        yield {"url": url, "env": env}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # this head's processes only: no `ray stop`
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        current = Path("/tmp/ray/ray_current_cluster")  # `ray start` left its address for ray.init() to find
        if current.is_file() and current.read_text().strip().endswith(f":{gcs}"):
            current.unlink()


def _submit(head, tmp_path, *args, timeout=600) -> str:
    """`ray job submit` as a user types it; a failed job fails the test with its log tail."""
    runtime = {"env_vars": {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
                            "DJEPA_CACHE": os.environ["DJEPA_CACHE"]}}
    cmd = [str(BIN / "ray"), "job", "submit", "--address", head["url"], "--working-dir", str(REPO),
           "--runtime-env-json", json.dumps(runtime), "--", "python", *args]
    res = subprocess.run(cmd, env=head["env"], capture_output=True, text=True, timeout=timeout, cwd=REPO)
    out = res.stdout + res.stderr
    assert res.returncode == 0 and "succeeded" in out, f"job {args[0]} failed (rc {res.returncode}):\n{out[-4000:]}"
    return out


def test_train_then_evaluate_through_ray_job_submit(head, tmp_path):
    from mlflow.tracking import MlflowClient

    run = tmp_path / "run"
    out = _submit(head, tmp_path, "jobs/train.py", "--config", "configs/digits.yaml", "--set", *TINY,
                  f"train.out_dir={run}", f"data.encoded_dir={tmp_path / 'encoded'}", "train.steps=20",
                  "train.max_minutes=null", "train.workers=1", "train.cpus_per_worker=1", "train.batch_size=64",
                  "train.log_every=10", "train.checkpoint_every=10", "train.warmup_steps=5")
    assert "checkpoint_0000020" in out  # the job's summary names the checkpoint it wrote
    ckpt = run / "checkpoint_0000020"
    assert (ckpt / "model.safetensors").is_file()  # outputs at the absolute path, not the job's temp copy

    out = _submit(head, tmp_path, "jobs/evaluate.py", "--checkpoint", str(ckpt), "--num-samples", "40", "--set",
                  "eval.shard_size=20", "eval.workers=1", "eval.cpus_per_worker=0.5", "eval.reference_images=50")
    metrics = json.loads(next((run / "eval").glob("*/metrics.json")).read_text())
    assert "fd_domain" in out and metrics["num_samples"] == 40

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    train_run = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    eval_run = next(r for r in runs if r.data.tags.get("djepa.kind") == "evaluation")
    assert eval_run.data.tags["mlflow.parentRunId"] == train_run.info.run_id  # nested under the training run
    assert {"loss", "loss_d", "loss_p", "lr"} <= set(train_run.data.metrics)
    assert train_run.info.status == eval_run.info.status == "FINISHED"
    assert "config.yaml" in {a.path for a in client.list_artifacts(train_run.info.run_id)}
    assert eval_run.data.metrics["fd_domain"] == pytest.approx(metrics["metrics"]["fd_domain"])
    assert "samples/grid.png" in {a.path for a in client.list_artifacts(eval_run.info.run_id, "samples")}
