"""FID-50K on a Ray cluster: a pool of generation actors (one GPU each, or fractional CPUs locally).

The driver plans shards of eval.shard_size samples, keeps the finished ones (checked byte
for byte and against the evaluation's hash), and hands the rest to the actors, which run
djepa.eval's pure pieces (sample_shard, shard_features) and return arrays; the driver writes
each shard atomically the moment it arrives, so a killed evaluation restarted with the same
arguments redoes only the missing shards. At the end djepa/platform/eval_report.py streams the
shards into ADM's .npz, the float64 sums and the metrics, and logs them to MLflow.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from djepa.checkpoint import check_finite, verify_checkpoint
from djepa.conditions import Conditioner, eval_prompts, is_text
from djepa.config import Config, ConfigError, apply_overrides, deep_merge, read_yaml, validate
from djepa.console import fmt_eta, say
from djepa.eval.features import extractor_identities
from djepa.eval.report import resolve_reference
from djepa.eval.shards import (SAMPLING_MODEL_KEYS, VAE_LOCATION_KEYS, ShardError, file_digest, identity_hash,
                               clip_scores, condition_arrays, load_shard, plan, sample_shard, sampling_identity,
                               shard_features, shard_path, write_shard)
from djepa.lock import acquire, release
from djepa.platform.eval_report import finish
from djepa.platform.tracking import flatten


def eval_config(checkpoint: str | Path, overrides: list[str], extra: dict | None = None) -> Config:
    """The checkpoint's resolved config, then `extra` (a partial config, e.g. a sweep's best.yaml), then
    overrides; the model and tokenizer must stay the checkpoint's (except the token sampler's steps and solver,
    and where the VAE lives: tokenizer.vae.weights / subfolder, checked against the latent channels and stride
    when the VAE is built)."""
    checkpoint = Path(checkpoint)
    verify_checkpoint(checkpoint)
    base = validate(read_yaml(checkpoint / "config.yaml"))
    cfg = validate(apply_overrides(deep_merge(read_yaml(checkpoint / "config.yaml"), extra or {}), overrides))
    old, new = (flatten({"model": c.model.model_dump(mode="json"), "tokenizer": c.tokenizer.model_dump(mode="json")})
                for c in (base, cfg))
    allowed = {f"model.{k}" for k in SAMPLING_MODEL_KEYS} | set(VAE_LOCATION_KEYS)
    changed = sorted(k for k in new if new[k] != old.get(k) and k not in allowed)
    if changed:
        raise ConfigError(f"{', '.join(changed)} differ from the checkpoint's config.yaml: an evaluation samples "
                          f"the checkpoint's model as trained (only {', '.join(sorted(allowed))} may change)")
    return cfg


class ShardWorker:
    """One actor: the EMA model, the tokenizer and the feature extractors, loaded once."""

    def __init__(self, checkpoint: str, cfg: dict, threads: int):
        import torch

        from djepa.checkpoint import load_tensors
        from djepa.eval.features import build_extractors
        from djepa.models.djepa import build_model
        from djepa.models.tokenizer import build_tokenizer

        torch.set_num_threads(threads)  # a fixed thread count: the same bytes from every worker
        self.cfg = Config.model_validate(cfg)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        _, ema_state = load_tensors(checkpoint, self.device)
        self.ema = build_model(self.cfg.model, self.cfg.tokenizer).to(self.device)
        self.ema.load_state_dict(ema_state)
        self.ema.eval().requires_grad_(False)
        self.tokenizer = build_tokenizer(self.cfg.tokenizer).to(self.device)
        self.extractors = build_extractors(self.cfg, self.device)
        self.conditioner, self.prompts = Conditioner(self.cfg, self.device), None  # a text encoder, loaded once
        if is_text(self.cfg):
            self.prompts = eval_prompts(self.cfg)
        self.clip = None
        if "clip" in self.cfg.eval.features:
            from djepa.text.clip_score import ClipScorer

            self.clip = ClipScorer(self.cfg.eval.clip_model, self.device, fit=self.cfg.eval.clip_fit)

    def run(self, start: int, stop: int, images: np.ndarray | None = None) -> dict:
        """Samples [start, stop) (or the given images, when only features are missing) -> shard arrays."""
        t = time.perf_counter()
        sample_seconds = None
        if images is None:  # -> host uint8: the device work is done
            arrays = sample_shard(self.ema, self.tokenizer, self.cfg, start, stop, self.device, self.conditioner,
                                  self.prompts)
            sample_seconds = time.perf_counter() - t
        else:
            arrays = {"images": images, **condition_arrays(self.cfg, start, stop, self.prompts)}
        arrays |= shard_features(self.extractors, arrays["images"]) | clip_scores(self.clip, arrays)
        return {"start": start, "stop": stop, "arrays": arrays, "seconds": time.perf_counter() - t,
                "sample_seconds": sample_seconds}

    def precision_recall(self, name: str, generated: np.ndarray, real_images: np.ndarray, k: int) -> tuple:
        from djepa.eval.metrics import precision_recall

        ex = next(e for e in self.extractors if e.name == name)
        return precision_recall(generated, ex(real_images)[0].cpu().numpy(), k=k)


def default_out_dir(checkpoint: Path, sample_hash: str) -> Path:
    return checkpoint.resolve().parent / "eval" / f"{checkpoint.name}-{sample_hash[:8]}"


def _scan(out: Path, shards: list, sample_hash: str, image_shape: tuple, features: dict) -> list[tuple]:
    """-> the shards still to do, as (start, stop, images or None). Foreign shards stop the evaluation; corrupt
    ones are named, kept aside as *.corrupt and regenerated."""
    todo, foreign = [], []
    for start, stop in shards:
        p = shard_path(out, start, stop)
        if not p.exists():
            todo.append((start, stop, None))
            continue
        try:
            arrays, meta = load_shard(p, sample_hash, start, stop, image_shape)
        except ShardError as err:
            if err.kind == "foreign":
                foreign.append(str(err))
                continue
            say("eval", f"corrupt shard {p.name}: {err}; moved to {p.name}.corrupt and regenerating it")
            os.replace(p, p.with_name(p.name + ".corrupt"))
            todo.append((start, stop, None))
            continue
        if any(meta.get("features", {}).get(n) != ident for n, ident in features.items()):
            todo.append((start, stop, arrays["images"]))  # the images stand; only features are (re)computed
    if foreign:
        raise FileExistsError("shards from another evaluation are in this output directory and will not be mixed "
                              "in:\n  " + "\n  ".join(foreign) + "\nremove them or choose another eval.out_dir")
    return todo


class _Workers:
    """The generation actors, and a replacement for one that dies with its node (its shard is redone)."""

    def __init__(self, spawn, n: int):
        self.spawn, self.live = spawn, [spawn() for _ in range(n)]
        self.replaced = 0

    def replace(self, dead):
        import ray

        ray.kill(dead, no_restart=True)
        self.replaced += 1
        if self.replaced > 3 * len(self.live) + 3:
            raise RuntimeError(f"{self.replaced} generation workers were lost; the cluster keeps failing")
        new = self.spawn()
        self.live[self.live.index(dead)] = new
        return new


def _start_workers(cfg: Config, checkpoint: Path, todo: int) -> _Workers:
    import ray

    e = cfg.eval
    if not ray.is_initialized():
        ray.init()
    threads = max(1, int(e.cpus_per_worker))  # fractional CPUs locally: one thread each
    actor = ray.remote(ShardWorker).options(num_cpus=e.cpus_per_worker, num_gpus=1 if e.use_gpu else 0,
                                            max_restarts=2, max_task_retries=2)
    return _Workers(lambda: actor.remote(str(checkpoint), cfg.to_dict(), threads), min(e.workers, max(1, todo)))


def _run_todo(out: Path, todo: list, workers: _Workers | None, meta: dict, on_shard=None) -> dict:
    """Hand the missing shards to the workers, write each one as it arrives (progress, ETA); a shard whose
    worker is lost (a dead node, a killed process) goes back in the queue for a fresh worker."""
    import ray
    from ray.exceptions import ActorUnavailableError, RayActorError

    start, done, i = time.perf_counter(), 0, 0
    total = sum(b - a for a, b, _ in todo)
    queue, idle, pending = list(todo), list(workers.live) if workers else [], {}
    while queue or pending:
        while queue and idle:
            w, job = idle.pop(), queue.pop(0)
            pending[w.run.remote(*job)] = (w, job)
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        w, job = pending.pop(ref)
        try:
            res = ray.get(ref)
        except (RayActorError, ActorUnavailableError) as err:
            say("eval", f"worker lost during shard [{job[0]}, {job[1]}) ({type(err).__name__}); redoing it on a "
                        f"new worker")
            queue.insert(0, job)
            idle.append(workers.replace(w))
            continue
        idle.append(w)
        write_shard(shard_path(out, res["start"], res["stop"]), res["arrays"],
                    meta | {"start": res["start"], "stop": res["stop"], "sample_seconds": res["sample_seconds"]})
        done, i = done + res["stop"] - res["start"], i + 1
        rate = done / (time.perf_counter() - start)
        say("eval", f"shard {i}/{len(todo)} [{res['start']}, {res['stop']}) in {res['seconds']:.1f}s; "
                    f"{done:,}/{total:,} images, {rate:.1f} img/s, ETA {fmt_eta((total - done) / rate)}")
        if on_shard is not None:
            on_shard(i, res["start"], res["stop"])
    seconds = time.perf_counter() - start
    return {"generation_seconds": round(seconds, 2), "generated": done,
            "images_per_second": round(done / seconds, 2) if done else None}


def _checked(cfg: Config, checkpoint: Path, n: int, with_metrics: bool) -> Config:
    """The checks before anything is written, and the choices actors on other nodes must not make themselves:
    no features without metrics, the resolved cache."""
    from djepa.eval.classifier import cache_dir

    verify_checkpoint(checkpoint)
    check_finite(checkpoint)  # here, once: a NaN weight would otherwise give plausible-looking bad metrics
    if n < 1:  # 0 must not silently mean "the default"
        raise ConfigError(f"num_samples={n}: generate at least one sample")
    e = cfg.eval
    return cfg.model_copy(update={"eval": e.model_copy(update={"features": e.features if with_metrics else [],
                                                               "cache_dir": str(cache_dir(e.cache_dir))})})


def _write_plan(out: Path, sample_hash: str, record: dict) -> None:
    """plan.json: what these shards are; another checkpoint or sampling config is refused, never mixed in."""
    plan_file = out / "plan.json"
    if plan_file.exists():
        old = json.loads(plan_file.read_text())
        if old.get("sample_hash") != sample_hash:
            raise FileExistsError(f"{out} holds samples of another checkpoint or sampling config (hash "
                                  f"{old.get('sample_hash')}, this one {sample_hash}); choose another eval.out_dir")
    out.mkdir(parents=True, exist_ok=True)
    plan_file.write_text(json.dumps({"sample_hash": sample_hash} | record, indent=1))


def evaluate(cfg: Config, checkpoint: str | Path, num_samples: int | None = None, with_metrics: bool = True,
             parent_run_id: str | None = None, run_name: str | None = None, tags: dict | None = None,
             on_shard=None) -> dict:
    """Generate (and, with_metrics, evaluate) num_samples samples of `checkpoint`; -> the summary dict.
    The MLflow run is a child of parent_run_id (default: the checkpoint's training run), named run_name.
    on_shard(i, start, stop): test hook, called after the i-th shard of this call is written."""
    import ray

    t0 = time.perf_counter()
    checkpoint = Path(checkpoint).resolve()
    n = cfg.eval.num_samples if num_samples is None else num_samples
    cfg = _checked(cfg, checkpoint, n, with_metrics)
    e = cfg.eval
    say("eval", f"hashing {checkpoint / 'model.safetensors'}")
    identity = sampling_identity(cfg, file_digest(checkpoint / "model.safetensors"))
    sample_hash = identity_hash(identity)
    out = Path(e.out_dir).resolve() if e.out_dir else default_out_dir(checkpoint, sample_hash)
    lock = acquire(out, "sampling" if not with_metrics else "evaluation")  # a second job here is refused
    try:
        features = extractor_identities(cfg)  # here first: a missing weight file stops us before Ray starts
        reference = resolve_reference(cfg, features) if with_metrics else None
        image_shape = cfg.tokenizer.sample_shape  # (H, W, C), or (T, H, W, C) for clips
        _write_plan(out, sample_hash, {"identity": identity, "checkpoint": str(checkpoint),
                                       "shard_size": e.shard_size, "features": features})
        shards = plan(n, e.shard_size)
        todo = _scan(out, shards, sample_hash, image_shape, features)
        say("eval", f"{n:,} samples of {checkpoint} in {len(shards)} shard(s) -> {out}; {len(shards) - len(todo)} "
                    f"already done, {len(todo)} to do with {e.workers} worker(s) (hash {sample_hash})")
        workers = None
        if todo or (reference and reference.get("images") is not None):
            workers = _start_workers(cfg, checkpoint, len(todo))
        try:
            timing = _run_todo(out, todo, workers, {"sample_hash": sample_hash, "features": features}, on_shard)
            summary = finish(cfg, out, checkpoint, shards, sample_hash, image_shape, reference, workers,
                             {"parent_run_id": parent_run_id, "run_name": run_name, "tags": tags or {}}, timing)
        finally:
            for w in workers.live if workers else []:  # free the CPUs / GPUs now, not when the driver exits
                ray.kill(w)
    finally:
        release(lock)
    say("eval", f"done in {time.perf_counter() - t0:.1f}s")
    return summary
