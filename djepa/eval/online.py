"""Online evaluation during training: the EMA scored every `train.eval_every` steps, a curve per metric.

Each point samples `train.eval_samples` images with the same per-sample seeds (sample.seed and the
index, as the evaluator does), so successive points differ only by the weights. It scores them with
eval.features against the reference (FD, IS, class consistency; no precision/recall, which would cost a
nearest-neighbour search per point) and appends the point to `online.jsonl` before it goes to the sink
(MLflow). A point is made only for a step whose weights were saved first, so a run that fails and
resumes from its last checkpoint never holds a point of weights it lost; a point missing because the run
died between the save and the point is made on resume from the same weights. Every worker start replays
the recorded points into the sink with their own timestamps: MLflow keeps one row per (key, value, step,
timestamp), so a replay adds nothing that is already there.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from djepa.config import Config
from djepa.console import say
from djepa.eval.report import ShardSums, clip_metrics, metrics_of
from djepa.eval.shards import clip_scores, sample_shard, shard_features


def due(cfg: Config, step: int) -> bool:
    """Whether `step` gets a point: every train.eval_every steps, and the last step."""
    t = cfg.train
    return bool(t.eval_every) and step > 0 and (step % t.eval_every == 0 or step == t.steps)


def read_points(path: Path) -> dict[int, dict]:
    """online.jsonl -> {step: point}; a line cut by a kill (the last one) is ignored, and made again."""
    points = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                p = json.loads(line)
            except json.JSONDecodeError:
                continue
            points[p["step"]] = p
    return points


class OnlineEval:
    """`online(step, ema)` -> the point at `step` (made once; later calls return and re-log the recorded one).
    reference: a loaded reference (eval.report.resolve_reference); sink(metrics, step, timestamp_ms) e.g. MLflow."""

    def __init__(self, cfg: Config, reference: dict, device, path: Path,
                 sink: Callable[[dict, int, int], None] | None = None):
        self.cfg, self.reference, self.device, self.path, self.sink = cfg, reference, device, Path(path), sink
        self.points = read_points(self.path)
        # built at the first point (a VAE decoder, Inception, CLIP: not before)
        self.tokenizer = self.extractors = self.clip = None
        for p in sorted(self.points.values(), key=lambda p: p["step"]):
            self._log(p)

    def __call__(self, step: int, ema) -> dict:
        if step in self.points:
            self._log(self.points[step])
            return self.points[step]
        if self.tokenizer is None:
            from djepa.eval.features import build_extractors
            from djepa.models.tokenizer import build_tokenizer

            self.tokenizer = build_tokenizer(self.cfg.tokenizer).to(self.device)
            self.extractors = build_extractors(self.cfg, self.device)
            if "clip" in self.cfg.eval.features:
                from djepa.text.clip_score import ClipScorer

                self.clip = ClipScorer(self.cfg.eval.clip_model, self.device, fit=self.cfg.eval.clip_fit)
        t0, n = time.perf_counter(), self.cfg.train.eval_samples
        arrays = sample_shard(ema, self.tokenizer, self.cfg, 0, n, self.device)
        arrays |= shard_features(self.extractors, arrays["images"]) | clip_scores(self.clip, arrays)
        sums = ShardSums([ex.name for ex in self.extractors], 0)
        sums.add(arrays, {})
        metrics = {}
        for ex in self.extractors:
            metrics |= metrics_of(ex.name, sums, self.reference, self.cfg.eval.is_splits)
        metrics |= clip_metrics(sums)
        point = {"step": step, **{k: v for k, v in metrics.items() if not k.startswith("floor_")},
                 "seconds": round(time.perf_counter() - t0, 2), "timestamp_ms": int(time.time() * 1000)}
        with self.path.open("a") as f:  # on disk before the sink: a replay can then only repeat it
            f.write(json.dumps(point) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.points[step] = point
        self._log(point)
        head = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k.startswith(("fid", "fd_", "consistency")))
        say("train", f"online eval at step {step}: {head} ({n} samples, {point['seconds']:.1f}s)")
        return point

    def _log(self, point: dict) -> None:
        if self.sink:
            metrics = {f"online/{k}": v for k, v in point.items() if k not in ("step", "timestamp_ms")}
            self.sink(metrics, point["step"], point["timestamp_ms"])
