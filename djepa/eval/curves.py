"""Aggregating training curves over seeds: what a paper's Table 6 and its FID-vs-epoch figure are made of.

A point is one online evaluation of one cell: {"arm": ..., "seed": ..., "step": ..., <metric>: value}.
Per arm and step: mean, standard deviation (ddof=1, the spread of the seeds; 0 with one seed) and the
number of seeds that have the point. Steps-to-threshold: for each seed, the first evaluated step at which
the metric reached the threshold (FD at or below it); per arm the mean and std over the seeds that reached
it, and how many did. No interpolation between evaluations: a reader can check every number against the
points file.
"""
from __future__ import annotations

import math
from collections import defaultdict


def _stats(values: list[float]) -> dict:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "n": n}


def curves(points: list[dict], metric: str) -> dict[str, list[dict]]:
    """-> {arm: [{"step", "mean", "std", "n", "seeds"}, ...] in step order}; points without the metric (or with a
    non-finite value) are left out of the statistics and do not count towards n."""
    by = defaultdict(lambda: defaultdict(dict))  # arm -> step -> seed -> value
    for p in points:
        v = p.get(metric)
        if v is not None and math.isfinite(v):
            by[p["arm"]][p["step"]][p["seed"]] = float(v)
    return {arm: [{"step": step, **_stats(list(seeds.values())), "seeds": sorted(seeds)}
                  for step, seeds in sorted(steps.items())]
            for arm, steps in by.items()}


def table_at(points: list[dict], metric: str, steps: list[int]) -> dict[str, dict[int, dict | None]]:
    """The metric at chosen steps: {arm: {step: {"mean", "std", "n"} or None where no seed has that step}}."""
    out = {}
    for arm, rows in curves(points, metric).items():
        at = {r["step"]: r for r in rows}
        out[arm] = {s: ({k: at[s][k] for k in ("mean", "std", "n")} if s in at else None) for s in steps}
    return out


def steps_to_threshold(points: list[dict], metric: str, threshold: float, lower_is_better: bool = True) -> dict:
    """{arm: {"per_seed": {seed: first step or None}, "reached": k, "seeds": n, "mean", "std"}}; mean/std are over
    the seeds that reached the threshold (None when none did)."""
    by = defaultdict(lambda: defaultdict(list))  # arm -> seed -> [(step, value)]
    for p in points:
        v = p.get(metric)
        if v is not None and math.isfinite(v):
            by[p["arm"]][p["seed"]].append((p["step"], float(v)))
    out = {}
    for arm, seeds in by.items():
        first = {}
        for seed, series in sorted(seeds.items()):
            hits = [s for s, v in sorted(series) if (v <= threshold if lower_is_better else v >= threshold)]
            first[seed] = hits[0] if hits else None
        reached = [s for s in first.values() if s is not None]
        st = _stats([float(s) for s in reached]) if reached else {"mean": None, "std": None}
        out[arm] = {"per_seed": first, "reached": len(reached), "seeds": len(first), "mean": st["mean"],
                    "std": st["std"]}
    return out


def format_mean_std(cell: dict | None, digits: int = 3) -> str:
    """'12.345 ± 0.678 (n=3)', or '-' for a missing cell."""
    if not cell:
        return "-"
    return f"{cell['mean']:.{digits}f} ± {cell['std']:.{digits}f} (n={cell['n']})"
