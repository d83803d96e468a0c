"""The end of an evaluation as a stream: the reference, the shards read once into float64 sums, metrics from
the sums, and the result record. Pure: the caller (djepa/platform/evaluator.py) writes files, logs to MLflow
and prints; precision/recall come in as numbers computed where the feature extractors are."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from djepa.config import Config
from djepa.data.sources import SOURCES
from djepa.console import say
from djepa.eval.metrics import FeatureStats, frechet_distance, inception_score
from djepa.eval.reference import ReferenceError, embedded_reference, load_reference, make_hint
from djepa.eval.shards import load_shard, shard_path, shard_stats

EMBEDDED = tuple(SOURCES)  # the bundled sources: their reference is made here on first use


def resolve_reference(cfg: Config, features: dict[str, str]) -> dict | None:
    """eval.reference loaded and checked up front (features: {name: identity}, eval.features' order); for the
    embedded datasets it is made on first use, the only time the extractors are built here."""
    from djepa.eval.features import build_extractors, dims

    e = cfg.eval
    features = {k: v for k, v in features.items() if k != "clip"}  # CLIP scores prompts: no reference statistics
    if not features:
        return None
    path = e.reference
    if path is None:
        if cfg.data.source not in EMBEDDED:
            raise ReferenceError(f"eval.reference is not set: FID / FVD need reference statistics; {make_hint()} (or "
                                 f"use ADM's VIRTUAL_imagenet256_labeled.npz for ImageNet 256)")
        from djepa.eval.classifier import cache_dir

        path = cache_dir(e.cache_dir) / f"reference-{cfg.data.source}-{'-'.join(features.values())}.npz"
        if not path.is_file():
            say("eval", f"no eval.reference: computing the {cfg.data.source} reference statistics once -> {path}")
            embedded_reference(cfg.data.source, build_extractors(cfg), e.reference_images, path)
    return load_reference(path, list(features), {k: dims(k, cfg.data.source) for k in features})


def read_shards(out: Path, shards: list, sample_hash: str, image_shape: tuple):
    """-> (arrays, meta) of each shard in order, every one checked again (load_shard)."""
    for a, b in shards:
        yield load_shard(shard_path(out, a, b), sample_hash, a, b, image_shape)


class ShardSums:
    """What the metrics need, summed over the shards as they stream past: per extractor the float64 statistics,
    the logits and the features (for precision/recall), the labels, the first images (the grid) and the
    device seconds spent sampling (over the shards that recorded them)."""

    def __init__(self, names: list[str], grid_n: int):
        self.names, self.grid_n = names, grid_n
        self.stats = {k: [] for k in names}
        self.logits = {k: [] for k in names}
        self.features = {k: [] for k in names}
        self.labels, self.first, self.sampled, self.sample_seconds = [], [], 0, 0.0
        self.clip = []  # per-sample CLIP scores of a text model (eval.features clip)

    def add(self, arrays: dict, meta: dict) -> None:
        n = len(arrays["indices"])
        self.labels.append(arrays["labels"])
        if meta.get("sample_seconds") is not None:
            self.sampled, self.sample_seconds = self.sampled + n, self.sample_seconds + meta["sample_seconds"]
        if sum(map(len, self.first)) < self.grid_n:
            self.first.append(arrays["images"])
        if "clip.scores" in arrays:
            self.clip.append(arrays["clip.scores"])
        for k in self.names:
            self.stats[k].append(shard_stats(arrays, k))
            self.logits[k].append(arrays[f"{k}.logits"])
            self.features[k].append(arrays[f"{k}.features"])

    def grid_images(self) -> np.ndarray:
        return np.concatenate(self.first)[:self.grid_n]

    def seconds_per_image(self) -> float | None:
        """One worker's sampling time per image at sample.batch_size (the paper's Table 4 measure)."""
        return round(self.sample_seconds / self.sampled, 6) if self.sampled else None


def metrics_of(name: str, sums: ShardSums, reference: dict, is_splits: int,
               pr: tuple[float, float] | None = None) -> dict:
    """FD against the reference, IS, class consistency (domain features), precision/recall (given), the floor."""
    suffix = "" if name == "inception" else f"_{name}"
    fd_key = "fid" if name == "inception" else f"fd_{name}"
    mu, sigma = FeatureStats.merge(sums.stats[name]).mu_sigma()
    logits = np.concatenate(sums.logits[name])
    out = {fd_key: frechet_distance(mu, sigma, *reference["stats"][name])}
    if logits.shape[1]:  # DINOv2 has no classifier head: FD (and P/R) only
        out[f"is{suffix}"], out[f"is_std{suffix}"] = inception_score(logits, is_splits)
    if name == "domain":  # a classifier of the data's own classes: how often it agrees with the condition
        labels = np.concatenate(sums.labels)
        out[f"consistency{suffix}"] = float((logits.argmax(1) == labels).mean())
        if logits.shape[1] == 100:  # the pairs' joint logits (10 x left + right): both digits read, but swapped
            out[f"swapped{suffix}"] = float((logits.argmax(1) == 10 * (labels % 10) + labels // 10).mean())
    if pr is not None:
        out[f"precision{suffix}"], out[f"recall{suffix}"] = pr
    floor = reference["floors"].get(f"floor_fd_{name}")
    if floor is not None:
        out[f"floor_{fd_key}"] = floor
    return out


def clip_metrics(sums: ShardSums) -> dict:
    """CLIP score over every sample (djepa/text/clip_score.py), when the shards hold it."""
    if not sums.clip:
        return {}
    from djepa.text.clip_score import clip_score

    scores = np.concatenate(sums.clip)
    return clip_score([scores.sum()], [len(scores)])


def result_record(cfg: Config, n: int, checkpoint: Path, sample_hash: str, reference: dict | None, metrics: dict,
                  files: dict, timing: dict) -> dict:
    """The evaluation's result as metrics.json holds it (files: samples, grid; timing: seconds and rates)."""
    s = cfg.sample
    return {"metrics": metrics, "num_samples": n, "checkpoint": str(checkpoint),
            "samples": str(files["samples"]) if files["samples"] else None, "grid": str(files["grid"]),
            "sample_hash": sample_hash, "reference": reference["path"] if reference else None,
            "reference_sha256": reference["sha256"] if reference else None,  # exactly which file, ADM's too
            "sampling": {"seed": s.seed, "ar_steps": s.ar_steps, "cfg": s.cfg, "cfg_schedule": s.cfg_schedule,
                         "temperature": s.temperature, "batch_size": s.batch_size},
            "features": list(reference["stats"]) if reference else [], **timing,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
