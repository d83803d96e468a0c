"""The figures and tables of a sampling sweep: cfg x temperature heat maps (the paper's Fig. 4), a metric and
seconds per image against auto-regressive steps (Tables 3-4), the best settings as Markdown and CSV."""
from __future__ import annotations

import csv
import math
import textwrap
from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a cluster node
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    _plt().close(fig)
    return path


def heat_map(trials: list[dict], metric: str, path: Path, title: str, best: dict | None = None) -> Path | None:
    """cfg (rows) x temperature (columns) of `metric`; failed or missing cells show 'x', the best cell is boxed."""
    cfgs = sorted({t["point"]["cfg"] for t in trials})
    temps = sorted({t["point"]["temperature"] for t in trials})
    grid = np.full((len(cfgs), len(temps)), np.nan)
    for t in trials:
        v = (t.get("metrics") or {}).get(metric)
        if v is not None and math.isfinite(v):
            grid[cfgs.index(t["point"]["cfg"]), temps.index(t["point"]["temperature"])] = v
    if np.isnan(grid).all():
        return None
    plt = _plt()
    # at least 5.5 x 4 in at 120 dpi (660 x 480 px): room for a two-line title, the colour bar and the values
    # of a 3 x 3 demo sweep (the old size, 268 px wide, cut the title off)
    fig, ax = plt.subplots(figsize=(max(5.5, 2.5 + 0.7 * len(temps)), max(4.0, 1.8 + 0.5 * len(cfgs))), dpi=120)
    im = ax.imshow(grid, cmap="viridis_r" if metric.startswith(("fid", "fd_")) else "viridis", aspect="auto")
    fig.colorbar(im, ax=ax, label=metric)
    ax.set_xticks(range(len(temps)), [f"{t:g}" for t in temps], rotation=90 if len(temps) > 8 else 0)
    ax.set_yticks(range(len(cfgs)), [f"{c:g}" for c in cfgs])
    ax.set_xlabel("temperature")
    ax.set_ylabel("cfg scale")
    small = len(temps) * len(cfgs) <= 120
    for i in range(len(cfgs)):
        for j in range(len(temps)):
            v = grid[i, j]
            r, g, b, _ = im.cmap(im.norm(v)) if not np.isnan(v) else (1, 1, 1, 1)
            ink = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"  # readable on any cell
            ax.text(j, i, "x" if np.isnan(v) else (f"{v:.3g}" if small else ""), ha="center", va="center",
                    fontsize=9, color=ink)
    if best is not None and best["point"]["cfg"] in cfgs and best["point"]["temperature"] in temps:
        i, j = cfgs.index(best["point"]["cfg"]), temps.index(best["point"]["temperature"])
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    ax.set_title(textwrap.fill(title, 60), fontsize=10)
    return _save(fig, path)


def ar_steps_plot(trials: list[dict], metrics: list[str], path: Path, title: str) -> Path | None:
    """Each metric and the seconds per image against the auto-regressive steps (one panel each)."""
    ok = sorted((t for t in trials if t.get("metrics")), key=lambda t: t["point"]["ar_steps"])
    if not ok:
        return None
    plt = _plt()
    panels = [m for m in metrics if any(m in t["metrics"] for t in ok)] + ["seconds_per_image"]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.0), dpi=110, squeeze=False)
    steps = [t["point"]["ar_steps"] for t in ok]
    for ax, m in zip(axes[0], panels):
        ys = [t.get(m) if m == "seconds_per_image" else t["metrics"].get(m) for t in ok]
        ax.plot(steps, [np.nan if y is None else y for y in ys], "o-")
        ax.set_xlabel("auto-regressive steps")
        ax.set_ylabel(m)
        ax.set_xticks(steps)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def _fmt(v) -> str:
    return "" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def best_table(rows: list[tuple[str, dict]], metrics: list[str]) -> str:
    """Markdown: one row per stage's best trial."""
    head = ["stage", "cfg", "temperature", "ar_steps", "samples", *metrics, "s/img"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for stage, t in rows:
        p = t["point"]
        vals = [stage, p["cfg"], p["temperature"], p["ar_steps"], t["num_samples"],
                *[(t.get("metrics") or {}).get(m) for m in metrics], t.get("seconds_per_image")]
        lines.append("| " + " | ".join(_fmt(v) for v in vals) + " |")
    return "\n".join(lines) + "\n"


def write_trials_csv(trials: list[dict], path: Path) -> Path:
    names = sorted({k for t in trials for k in (t.get("metrics") or {})})
    cols = ["stage", "name", "cfg", "temperature", "ar_steps", "num_samples", "status", "score", *names,
            "seconds_per_image", "mlflow_run_id", "error"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for t in trials:
            m = t.get("metrics") or {}
            w.writerow([t["stage"], t["name"], *(t["point"][k] for k in ("cfg", "temperature", "ar_steps")),
                        t["num_samples"], t["status"], t.get("score"), *(m.get(k) for k in names),
                        t.get("seconds_per_image"), t.get("mlflow_run_id"), (t.get("error") or "")[:300]])
    return path
