"""The driver of a training run: check everything, then one TorchTrainer.fit().

Before any Ray worker starts it validates the dataset (manifest, shards), the run
directory (a new run never overwrites an old one; --resume needs one) and, on resume,
the checkpoint and the model config. It opens the MLflow run, then hands over to
`djepa.platform.loop.train_worker` (which runs djepa.train_loop) and ends with a summary of where everything is.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from djepa.checkpoint import CheckpointError, load_optimizer_state, verify_checkpoint
from djepa.config import Config, ConfigError, load_config
from djepa.console import say
from djepa.data.encode import encode, encoded_dir
from djepa.data.encoded import open_encoded, training_dataset
from djepa.data.sources import SOURCES as BUNDLED  # small enough to encode on the fly when the copy is missing
from djepa.eval.online import read_points
from djepa.lock import hold
from djepa.platform.tracking import flatten, in_ray_job, start_run, tracking_uri, training_run_name



def checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoint directories, oldest first (names carry the zero-padded step)."""
    return sorted(p for p in run_dir.glob("checkpoint_*") if p.is_dir())


def latest_checkpoint(run_dir: Path) -> Path | None:
    return (checkpoints(run_dir) or [None])[-1]


def _check_same_model(cfg: Config, ckpt: Path) -> None:
    """Resuming may change train/sample/eval/tracking settings, never the network or its tokens."""
    old = load_config(ckpt / "config.yaml")
    before = flatten({"model": old.model.model_dump(mode="json"), "tokenizer": old.tokenizer.model_dump(mode="json")})
    now = flatten({"model": cfg.model.model_dump(mode="json"), "tokenizer": cfg.tokenizer.model_dump(mode="json")})
    changed = [f"{k}: {before.get(k)} -> {now.get(k)}" for k in sorted(before.keys() | now.keys())
               if before.get(k) != now.get(k)]
    if changed:
        raise ConfigError(f"cannot resume from {ckpt}: the model differs from the checkpoint's "
                          f"({'; '.join(changed)}). Use the run's own config ({ckpt / 'config.yaml'}) "
                          f"or start a new run with another train.out_dir")


def encoded_or_bundled(cfg: Config, tag: str) -> Path:
    """The encoded dataset's directory; the bundled data (small) is encoded first when it is missing."""
    import ray

    data_dir = encoded_dir(cfg)
    if not data_dir.exists() and cfg.data.source in BUNDLED:
        say(tag, f"{data_dir} not found: encoding the bundled {cfg.data.source} data first")
        if not ray.is_initialized():
            ray.init()
        encode(cfg, data_dir)
    return data_dir


def run_directory(cfg: Config) -> Path:
    if in_ray_job() and not Path(cfg.train.out_dir).is_absolute():
        raise ConfigError(f"train.out_dir={cfg.train.out_dir} is relative: in a Ray job it would land in the job's "
                          f"temporary copy of the working directory and be lost; give an absolute path on shared "
                          f"storage (e.g. --set train.out_dir=/shared/runs/{cfg.name})")
    return Path(cfg.train.out_dir).resolve()


def prepare_run(cfg: Config, resume: bool, resume_from: str | None) -> tuple[Path, dict, Path | None]:
    """All checks that need no Ray. -> (run directory, previous run.json or {}, checkpoint to start from)."""
    run_dir = run_directory(cfg)
    run_json = run_dir / "run.json"
    if run_json.exists() and not (resume or resume_from):
        raise FileExistsError(f"{run_dir} already holds a training run; continue it with --resume "
                              f"(e.g. with --set train.steps=<more>), or choose another train.out_dir")
    if resume and not run_json.exists():
        raise FileNotFoundError(f"nothing to resume: {run_json} does not exist; drop --resume to start a new run")
    previous = json.loads(run_json.read_text()) if run_json.exists() else {}
    ckpt = Path(resume_from).resolve() if resume_from else latest_checkpoint(run_dir) if resume else None
    if ckpt is not None:
        try:
            saved = verify_checkpoint(ckpt)
        except CheckpointError as err:
            older = [str(p) for p in checkpoints(run_dir) if p != ckpt]
            hint = f" or continue from an earlier one with --resume-from {older[-1]}" if older else ""
            raise CheckpointError(f"{err}{hint}") from None
        _check_same_model(cfg, ckpt)
        load_optimizer_state(ckpt, mmap=True)  # a refused optimizer.pt: named here, not retried by Ray workers
        if saved.get("parallel", cfg.train.parallel) != cfg.train.parallel:  # AdamW state is keyed differently
            raise ConfigError(f"{ckpt} was saved with train.parallel={saved['parallel']}; resume with "
                              f"--set train.parallel={saved['parallel']}")
    return run_dir, previous, ckpt


def train(cfg: Config, resume: bool = False, resume_from: str | None = None, *, on_step=None,
          parent_run_id: str | None = None) -> dict:
    """Train cfg with Ray Train; -> the summary (also printed and written to the run's summary.json).
    The run directory is locked first: a second job into it is refused, naming this one (djepa.lock).
    on_step: test hook, run on every worker before each step (djepa.train_loop.train_loop).
    parent_run_id: a new MLflow run is made a child of it (an experiment's cell, djepa.platform.experiment)."""
    with hold(run_directory(cfg), "training"):
        return _train(cfg, resume, resume_from, on_step, parent_run_id)


def _train(cfg: Config, resume: bool, resume_from: str | None, on_step, parent_run_id: str | None = None) -> dict:
    run_dir, previous, ckpt = prepare_run(cfg, resume, resume_from)
    data_dir = encoded_or_bundled(cfg, "train")
    manifest = open_encoded(cfg, data_dir)

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "status.json").unlink(missing_ok=True)
    online_ref = _online_reference(cfg, run_dir, fresh=not previous)
    tracker = start_run(cfg, run_dir, manifest, previous.get("mlflow_run_id"), parent_run_id=parent_run_id,
                        run_name=training_run_name(cfg))
    attempts = previous.get("attempts", []) + [{"started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                                "config_hash": cfg.hash(), "from": str(ckpt) if ckpt else None}]
    run_info = {"mlflow_run_id": tracker.run_id or previous.get("mlflow_run_id"),
                "experiment_id": tracker.experiment_id, "tracking_uri": tracking_uri(cfg),
                "encoded_dir": str(data_dir), "attempts": attempts}
    (run_dir / "run.json").write_text(json.dumps(run_info, indent=1))
    (run_dir / "config.yaml").write_text(cfg.to_yaml())

    trainer = _torch_trainer(cfg, run_dir, data_dir, manifest, tracker, ckpt, on_step, online_ref)
    t = cfg.train
    say("train", f"{cfg.name}: {t.workers} worker(s) ({'GPU' if t.use_gpu else 'CPU'}), global batch "
                 f"{t.batch_size}, lr {t.lr:.2e}, {manifest['rows']:,} rows from {data_dir}, run dir {run_dir}")
    start = time.perf_counter()
    try:
        result = trainer.fit()
    except BaseException as err:
        tracker.finish("FAILED" if not isinstance(err, KeyboardInterrupt) else "KILLED")
        last = latest_checkpoint(run_dir)
        raise RuntimeError(f"training failed ({type(err).__name__}); the last checkpoint is {last}; after fixing "
                           f"the cause continue with --resume") from err
    status = json.loads((run_dir / "status.json").read_text()) if (run_dir / "status.json").exists() else {}
    final = Path(result.checkpoint.path) if result.checkpoint else latest_checkpoint(run_dir)
    summary = {"status": status.get("status", "unknown"), "message": status.get("message"),
               "step": status.get("step"), "seconds": round(time.perf_counter() - start, 1),
               "checkpoint": str(final) if final else None, "run_dir": str(run_dir),
               "metrics": result.metrics, "mlflow_run_id": tracker.run_id, "mlflow_url": tracker.url,
               "online": sorted(read_points(run_dir / "online.jsonl").values(), key=lambda p: p["step"])}
    if final:
        tracker.set_tag("djepa.checkpoint", str(final))
    tracker.log_artifact(run_dir / "config.yaml")
    tracker.finish("FAILED" if summary["status"] == "nan" else "FINISHED")
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    _print_summary(summary)
    if summary["status"] == "nan":
        raise FloatingPointError(summary["message"])
    return summary


def _online_reference(cfg: Config, run_dir: Path, fresh: bool) -> str | None:
    """With train.eval_every: the reference checked (or, for the bundled data, made) before any worker starts;
    a new run drops online points an earlier run left in the directory. -> its path for the workers."""
    if not cfg.train.eval_every:
        return None
    from djepa.eval.features import extractor_identities
    from djepa.eval.report import resolve_reference

    if fresh:
        (run_dir / "online.jsonl").unlink(missing_ok=True)
    return resolve_reference(cfg, extractor_identities(cfg))["path"]


def _torch_trainer(cfg: Config, run_dir: Path, data_dir: Path, manifest: dict, tracker, ckpt: Path | None, on_step,
                   online_ref: str | None = None):
    """Ray's TorchTrainer for the run: every worker runs train_worker on its share of the encoded dataset."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from djepa.platform.loop import train_worker

    t = cfg.train
    resources = {"CPU": t.cpus_per_worker} | ({"GPU": 1} if t.use_gpu else {})
    loop_config = {"cfg": cfg.to_dict(), "run_dir": str(run_dir), "rows": manifest["rows"],
                   "resume_from": str(ckpt) if ckpt else None, "tracking_uri": tracker.uri,
                   "run_id": tracker.run_id, "experiment_id": tracker.experiment_id,
                   "on_step": on_step, "online_reference": online_ref}
    return TorchTrainer(
        train_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(num_workers=t.workers, use_gpu=t.use_gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=run_dir.name, storage_path=str(run_dir.parent),
            failure_config=ray.train.FailureConfig(max_failures=t.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=t.keep_checkpoints)),
        datasets={"train": training_dataset(cfg, data_dir, manifest)},
    )


def _print_summary(s: dict) -> None:
    print()
    say("train", s["message"] or s["status"])
    print(f"  steps        {s['step']} in {s['seconds']} s")
    if s["metrics"]:
        print(f"  last loss    {s['metrics'].get('loss', float('nan')):.4f}")
    for p in s["online"]:  # the online evaluation's curve (train.eval_every)
        print(f"  online {p['step']:>7} " + ", ".join(f"{k} {v:.3f}" for k, v in p.items()
                                                   if k.startswith(("fid", "fd_", "is", "consistency"))
                                                   and not k.startswith("is_std")))
    print(f"  checkpoint   {s['checkpoint']}")
    print(f"  run dir      {s['run_dir']}  (metrics.jsonl, previews/, summary.json)")
    print(f"  MLflow       {s['mlflow_url'] or 'not tracked (see the warning above)'}", flush=True)
