"""The platform's end of an evaluation: ADM .npz, PNGs and grid, metrics.json, the MLflow run and the printed
summary, around the pure stream of djepa/eval/report.py."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from djepa.config import Config
from djepa.console import say
from djepa.conditions import is_text
from djepa.eval.report import ShardSums, clip_metrics, metrics_of, read_shards, result_record
from djepa.eval.shards import shard_path, write_adm_npz
from djepa.eval.verdict import checkpoint_verdict
from djepa.samples import save_grid


def finish(cfg: Config, out: Path, checkpoint: Path, shards: list, sample_hash: str, image_shape: tuple,
           reference: dict | None, workers, track: dict, timing: dict) -> dict:
    """Stream every shard once more (checked) into the sums, write samples.npz (+ PNGs), grid.png, metrics.json,
    log to MLflow (track: parent_run_id, run_name, tags) and print the summary. Precision/recall run on one of
    the generation actors (`workers`), where the feature extractors are."""
    n, c = shards[-1][1], cfg.model.num_classes
    names = list(reference["stats"]) if reference else []
    sums = ShardSums(names, c * max(1, min(cfg.sample.num_per_class, n // c)))
    for arrays, meta in read_shards(out, shards, sample_hash, image_shape):
        sums.add(arrays, meta)
        if cfg.eval.pngs:
            write_pngs(out / "png", arrays)
    npz = write_adm_npz(out / "samples.npz", [shard_path(out, a, b) for a, b in shards], n, image_shape,
                        captions=is_text(cfg)) if cfg.eval.save_npz else None
    grid_files = save_grid(out / "grid", sums.grid_images(), ncol=c)  # a column per class; clips: GIF + strip
    grid = grid_files["main"]
    metrics = {}
    for k in names:
        say("eval", f"{k} metrics on {n:,} samples")
        pr = None
        if reference["images"] is not None:
            pr = precision_recall(workers, k, np.concatenate(sums.features[k]), reference["images"], cfg.eval.pr_k)
        metrics |= metrics_of(k, sums, reference, cfg.eval.is_splits, pr)
    metrics |= clip_metrics(sums)
    result = result_record(cfg, n, checkpoint, sample_hash, reference, metrics, {"samples": npz, "grid": grid},
                           timing | {"seconds_per_image": sums.seconds_per_image()})
    result["verdict"] = checkpoint_verdict(metrics, cfg, checkpoint)  # None: nothing says they are unusable
    result["mlflow"] = track_evaluation(cfg, out, checkpoint, result,
                                        sorted({p for k, p in grid_files.items() if k != "main"}), **track)
    (out / "metrics.json").write_text(json.dumps(result, indent=1))
    print_summary(result, out, image_shape)
    return result


def precision_recall(workers, name: str, features: np.ndarray, real_images: np.ndarray, k: int) -> tuple:
    """On whichever actor is alive now (a lost one has been replaced in workers.live)."""
    import ray

    return ray.get(workers.live[0].precision_recall.remote(name, features, real_images, k))


def print_summary(result: dict, out: Path, image_shape: tuple) -> None:
    if result["samples"]:
        say("eval", f"samples            {result['samples']} (ADM .npz, {result['num_samples']:,} x {image_shape})")
    say("eval", f"grid               {result['grid']}")
    for k, v in result["metrics"].items():
        say("eval", f"{k:<18} {v:.4f}")
    say("eval", f"metrics            {out / 'metrics.json'}")
    if result["mlflow"]:
        say("eval", f"MLflow run         {result['mlflow']['url']}")
    if result["verdict"]:
        print("\n" + result["verdict"], flush=True)


def write_pngs(folder: Path, arrays: dict) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for img, y, i in zip(arrays["images"], arrays["labels"], arrays["indices"]):
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(folder / f"{i:06d}_{y}.png")


def training_run(checkpoint: Path) -> str | None:
    """A checkpoint inside a training run directory belongs to that run's MLflow run (run.json)."""
    for d in (checkpoint.parent, checkpoint.parent.parent):
        f = d / "run.json"
        if f.is_file():
            return json.loads(f.read_text()).get("mlflow_run_id")
    return None


def track_evaluation(cfg: Config, out: Path, checkpoint: Path, result: dict, grid: list[Path],
                     parent_run_id: str | None = None, run_name: str | None = None, tags: dict | None = None):
    """The evaluation's MLflow run, a child of parent_run_id (default: the checkpoint's training run)."""
    from djepa.platform.tracking import start_run

    parent = parent_run_id or training_run(checkpoint)
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
    for path in grid:  # grid.png; for clips grid.gif, grid.mp4 and grid-strip.png
        tracker.log_artifact(path, "samples")
    tracker.log_dict(result, "metrics.json")
    tracker.finish()
    return {"run_id": tracker.run_id, "parent_run_id": parent, "url": tracker.url}
