"""The end of an evaluation: ADM .npz, sample grid, metrics against the reference, JSON and MLflow."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from djepa.config import Config
from djepa.eval.metrics import FeatureStats, frechet_distance, inception_score
from djepa.eval.reference import ReferenceError, embedded_reference, load_reference, make_hint
from djepa.eval.shards import read_shard, shard_path, shard_stats, write_adm_npz
from djepa.eval.verdict import checkpoint_verdict
from djepa.samples import grid_scale, save_grid_png

EMBEDDED = ("digits", "mnist5k")


def say(msg: str) -> None:
    print(f"[eval] {msg}", flush=True)


def resolve_reference(cfg: Config, extractors) -> dict | None:
    """eval.reference loaded and checked up front; for the embedded datasets it is made on first use."""
    e = cfg.eval
    if not extractors:
        return None
    path = e.reference
    if path is None:
        if cfg.data.source not in EMBEDDED:
            raise ReferenceError(f"eval.reference is not set: FID needs reference statistics; {make_hint()} (or "
                                 f"use ADM's VIRTUAL_imagenet256_labeled.npz for ImageNet 256)")
        from djepa.eval.classifier import cache_dir

        names = "-".join(ex.identity for ex in extractors)
        path = cache_dir(e.cache_dir) / f"reference-{cfg.data.source}-{names}.npz"
        if not path.is_file():
            say(f"no eval.reference: computing the {cfg.data.source} reference statistics once -> {path}")
            embedded_reference(cfg.data.source, extractors, e.reference_images, path)
    return load_reference(path, [ex.name for ex in extractors], {ex.name: ex.dims for ex in extractors})


def _metrics(cfg: Config, name: str, stats: FeatureStats, logits: np.ndarray, features: np.ndarray,
             labels: np.ndarray, reference: dict, pr_fn) -> dict:
    suffix = "" if name == "inception" else f"_{name}"
    fd_key = "fid" if name == "inception" else f"fd_{name}"
    mu, sigma = stats.mu_sigma()
    out = {fd_key: frechet_distance(mu, sigma, *reference["stats"][name])}
    out[f"is{suffix}"], out[f"is_std{suffix}"] = inception_score(logits, cfg.eval.is_splits)
    if name != "inception":  # a classifier of the data's own classes: how often it agrees with the condition
        out[f"consistency{suffix}"] = float((logits.argmax(1) == labels).mean())
    if reference["images"] is not None:
        out[f"precision{suffix}"], out[f"recall{suffix}"] = pr_fn(name, features, reference["images"])
    floor = reference["floors"].get(f"floor_fd_{name}")
    if floor is not None:
        out[f"floor_{fd_key}"] = floor
    return out


def finish(cfg: Config, out: Path, checkpoint: Path, shards: list, sample_hash: str, image_shape: tuple,
           reference: dict | None, pr_fn, track: dict, timing: dict) -> dict:
    """Read every shard once more (checked), write samples.npz (+ PNGs), grid.png, metrics.json; log to MLflow
    (track: parent_run_id, run_name, tags). pr_fn(name, generated features, reference images) ->
    (precision, recall) runs where the extractors are."""
    n = shards[-1][1]
    sampled, sample_seconds = 0, 0.0  # device seconds spent sampling, summed over the shards that recorded it
    names = list(reference["stats"]) if reference else []
    stats, logits, feats, labels = {k: [] for k in names}, {k: [] for k in names}, {k: [] for k in names}, []
    paths = [shard_path(out, a, b) for a, b in shards]
    c = cfg.model.num_classes
    grid_n, first = c * max(1, min(cfg.sample.num_per_class, n // c)), []
    for (a, b), p in zip(shards, paths):
        arrays, meta = read_shard(p, sample_hash, a, b, image_shape)
        labels.append(arrays["labels"])
        if meta.get("sample_seconds") is not None:
            sampled, sample_seconds = sampled + b - a, sample_seconds + meta["sample_seconds"]
        if sum(map(len, first)) < grid_n:
            first.append(arrays["images"])
        for k in names:
            stats[k].append(shard_stats(arrays, k))
            logits[k].append(arrays[f"{k}.logits"])
            feats[k].append(arrays[f"{k}.features"])
        if cfg.eval.pngs:
            _write_pngs(out / "png", arrays)
    npz = write_adm_npz(out / "samples.npz", paths, n, image_shape) if cfg.eval.save_npz else None
    grid = save_grid_png(out / "grid.png", np.concatenate(first)[:grid_n], ncol=c,  # a column per class
                         scale=grid_scale(image_shape[0]))
    metrics = {}
    for k in names:
        say(f"{k} metrics on {n:,} samples")
        metrics |= _metrics(cfg, k, FeatureStats.merge(stats[k]), np.concatenate(logits[k]),
                            np.concatenate(feats[k]), np.concatenate(labels), reference, pr_fn)
    s = cfg.sample
    # one worker's sampling time per image at sample.batch_size (the paper's Table 4 measure)
    timing = timing | {"seconds_per_image": round(sample_seconds / sampled, 6) if sampled else None}
    result = {"metrics": metrics, "num_samples": n, "checkpoint": str(checkpoint),
              "samples": str(npz) if npz else None,
              "grid": str(grid), "sample_hash": sample_hash, "reference": reference["path"] if reference else None,
              "reference_sha256": reference["sha256"] if reference else None,  # exactly which file, ADM's too
              "sampling": {"seed": s.seed, "ar_steps": s.ar_steps, "cfg": s.cfg, "cfg_schedule": s.cfg_schedule,
                           "temperature": s.temperature, "batch_size": s.batch_size},
              "features": list(names), **timing, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    result["verdict"] = checkpoint_verdict(metrics, cfg, checkpoint)  # None: nothing says they are unusable
    result["mlflow"] = _track(cfg, out, checkpoint, result, grid, **track)
    (out / "metrics.json").write_text(json.dumps(result, indent=1))
    if npz:
        say(f"samples            {npz} (ADM .npz, {n:,} x {image_shape})")
    say(f"grid               {grid}")
    for k, v in metrics.items():
        say(f"{k:<18} {v:.4f}")
    say(f"metrics            {out / 'metrics.json'}")
    if result["mlflow"]:
        say(f"MLflow run         {result['mlflow']['url']}")
    if result["verdict"]:
        print("\n" + result["verdict"], flush=True)
    return result


def _write_pngs(folder: Path, arrays: dict) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for img, y, i in zip(arrays["images"], arrays["labels"], arrays["indices"]):
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(folder / f"{i:06d}_{y}.png")


def _parent_run(checkpoint: Path) -> str | None:
    """A checkpoint inside a training run directory belongs to that run's MLflow run (run.json)."""
    for d in (checkpoint.parent, checkpoint.parent.parent):
        f = d / "run.json"
        if f.is_file():
            return json.loads(f.read_text()).get("mlflow_run_id")
    return None


def _track(cfg: Config, out: Path, checkpoint: Path, result: dict, grid: Path, parent_run_id: str | None = None,
           run_name: str | None = None, tags: dict | None = None):
    from djepa.platform.tracking import start_run

    parent = parent_run_id or _parent_run(checkpoint)
    name = run_name or f"eval-{checkpoint.name}-cfg{cfg.sample.cfg:g}-n{result['num_samples']}"
    tracker = start_run(cfg, out, None, parent_run_id=parent, run_name=name)
    if not tracker.active:
        return None
    tracker.log_params({"eval.num_samples_run": str(result["num_samples"]), "eval.checkpoint": str(checkpoint),
                        "eval.sample_hash": result["sample_hash"], "eval.reference_file": str(result["reference"]),
                        "eval.reference_sha256": str(result["reference_sha256"])})
    for k, v in ({"djepa.kind": "evaluation"} | (tags or {})).items():
        tracker.set_tag(k, v)
    spi = result.get("seconds_per_image")
    tracker.log_metrics(result["metrics"] | ({"seconds_per_image": spi} if spi is not None else {}), step=0)
    tracker.log_artifact(grid, "samples")
    tracker.log_dict(result, "metrics.json")
    tracker.finish()
    return {"run_id": tracker.run_id, "parent_run_id": parent, "url": tracker.url}
