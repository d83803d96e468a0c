"""The files of an experiment, from every cell's online points (djepa.eval.curves does the arithmetic):
points.jsonl, curves.csv/json (per metric, arm and step: mean, std, n), table.md (the chosen metric at
report_steps, mean ± std over seeds), threshold.json (steps to reach experiment.threshold) and curves.png."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from djepa.eval.curves import curves, format_mean_std, steps_to_threshold, table_at
from djepa.platform.experiment_config import ExperimentConfig

METRIC_PREFIXES = ("fid", "fd_", "is", "consistency")


def metrics_of(points: list[dict]) -> list[str]:
    return sorted({k for p in points for k in p if k.startswith(METRIC_PREFIXES) and not k.startswith("is_std")})


def table_md(spec: ExperimentConfig, points: list[dict]) -> str:
    steps = spec.report_steps or sorted({p["step"] for p in points})
    table = table_at(points, spec.metric, steps)
    arrow = "lower is better" if spec.lower_is_better else "higher is better"
    lines = [f"{spec.metric} ({arrow}), mean ± std over seeds (n seeds)", "",
             "| arm | " + " | ".join(f"step {s}" for s in steps) + " |", "|---" * (len(steps) + 1) + "|"]
    for arm in spec.arms:
        row = table.get(arm, {})
        lines.append(f"| {arm} | " + " | ".join(format_mean_std(row.get(s)) for s in steps) + " |")
    return "\n".join(lines) + "\n"


def plot(spec: ExperimentConfig, by_arm: dict, path: Path) -> Path | None:
    """The metric's mean per arm against steps, with a ±std band over the seeds."""
    from djepa.eval.sweep_plots import _plt, _save

    if not by_arm:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for arm in spec.arms:
        rows = by_arm.get(arm)
        if not rows:
            continue
        x = [r["step"] for r in rows]
        m = [r["mean"] for r in rows]
        ax.plot(x, m, marker="o", label=f"{arm} (n={max(r['n'] for r in rows)})")
        ax.fill_between(x, [a - r["std"] for a, r in zip(m, rows)], [a + r["std"] for a, r in zip(m, rows)], alpha=0.2)
    if spec.threshold is not None:
        ax.axhline(spec.threshold, color="grey", linestyle="--", linewidth=1, label=f"threshold {spec.threshold:g}")
    ax.set_xlabel("training step")
    ax.set_ylabel(spec.metric)
    ax.set_title(f"{spec.name}: {spec.metric}, mean ± std over seeds")
    ax.legend()
    return _save(fig, path)


def write_outputs(spec: ExperimentConfig, points: list[dict], out: Path, tracker) -> dict:
    """Write every file, log them to the parent run; -> {"curves", "table", "threshold", "table_md"}."""
    (out / "points.jsonl").write_text("".join(json.dumps(p) + "\n" for p in points))
    all_curves = {m: curves(points, m) for m in metrics_of(points)}
    (out / "curves.json").write_text(json.dumps(all_curves, indent=1))
    with open(out / "curves.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["metric", "arm", "step", "mean", "std", "n", "seeds"])
        for m, by_arm in all_curves.items():
            for arm, rows in by_arm.items():
                for r in rows:
                    w.writerow([m, arm, r["step"], r["mean"], r["std"], r["n"], " ".join(map(str, r["seeds"]))])
    md = table_md(spec, points)
    (out / "table.md").write_text(md)
    threshold = None
    if spec.threshold is not None:
        threshold = {"metric": spec.metric, "threshold": spec.threshold, "lower_is_better": spec.lower_is_better,
                     "arms": steps_to_threshold(points, spec.metric, spec.threshold, spec.lower_is_better)}
        (out / "threshold.json").write_text(json.dumps(threshold, indent=1))
    else:
        (out / "threshold.json").unlink(missing_ok=True)
    png = plot(spec, all_curves.get(spec.metric, {}), out / "curves.png")
    for name in ("points.jsonl", "curves.json", "curves.csv", "table.md", "threshold.json", "curves.png"):
        if (out / name).exists():
            tracker.log_artifact(out / name)
    steps = spec.report_steps or sorted({p["step"] for p in points})
    return {"curves": all_curves.get(spec.metric, {}), "table": table_at(points, spec.metric, steps),
            "threshold": threshold, "table_md": md, "plot": str(png) if png else None}
