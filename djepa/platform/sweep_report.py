"""The end of a sweep: trials.csv, heat maps, the AR-steps plot, best.md and best.yaml, the parent MLflow run
and the printed summary."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from djepa.config import Config
from djepa.console import say
from djepa.eval.sweep_plots import ar_steps_plot, best_table, heat_map, write_trials_csv
from djepa.eval.verdict import checkpoint_verdict
from djepa.platform.sweep_config import STAGES, SweepConfig, trial_name


def headline_metrics(cfg: Config, spec: SweepConfig) -> list[str]:
    """FD and IS of the first feature extractor (the paper's Fig. 4), then whatever the choice uses."""
    f = cfg.eval.features[0]
    base = ["fid", "is"] if f == "inception" else [f"fd_{f}", f"is_{f}"]
    return base + [m for m in spec.metric_names if m not in base and m != "seconds_per_image"]


def best_yaml(state: dict, spec: SweepConfig, checkpoint: Path) -> str:
    """The chosen settings as a partial config: `jobs/evaluate.py --checkpoint C --config best.yaml`."""
    last = state["stages"][[s for s in STAGES if s in state["stages"]][-1]]["best"]
    head = (f"# sweep '{spec.name}' of {checkpoint}\n# best {'score' if spec.weights else spec.metric} "
            f"{last['score']:.6g} ({spec.direction}) over {last['num_samples']:,} samples\n")
    return head + yaml.safe_dump({"sample": {k: last["point"][k] for k in ("cfg", "temperature", "ar_steps")}},
                                 sort_keys=False)


def report(cfg: Config, spec: SweepConfig, state: dict, out: Path, checkpoint: Path, tracker, seconds: float) -> dict:
    metrics = headline_metrics(cfg, spec)
    stages = [s for s in STAGES if s in state["stages"]]
    trials = [t for s in stages for t in state["stages"][s]["trials"]]
    files = [write_trials_csv(trials, out / "trials.csv")]
    for s in ("coarse", "fine"):
        if s in state["stages"]:
            st = state["stages"][s]
            for m in metrics:
                files.append(heat_map(st["trials"], m, out / "plots" / f"{s}_{m}.png",
                                      f"{s}: {m}, {st['num_samples']:,} samples, {st['trials'][0]['point']['ar_steps']} "
                                      f"AR steps", st["best"]))
    if "ar_steps" in state["stages"]:
        st = state["stages"]["ar_steps"]
        p = st["best"]["point"]
        files.append(ar_steps_plot(st["trials"], metrics, out / "plots" / "ar_steps.png",
                                   f"cfg {p['cfg']:g}, temperature {p['temperature']:g}, {st['num_samples']:,} samples"))
    table = best_table([(s, state["stages"][s]["best"]) for s in stages], metrics)
    (out / "best.md").write_text(f"# Sweep '{spec.name}' of {checkpoint}\n\n{table}")
    (out / "best.yaml").write_text(best_yaml(state, spec, checkpoint))
    files += [out / "best.md", out / "best.yaml", out / "sweep.json"]
    best = state["stages"][stages[-1]]["best"]
    failed = [t for t in trials if t["status"] == "failed"]
    if tracker.active:
        tracker.log_metrics({f"{s}.best_{m}": v for s in stages
                             for m, v in (state["stages"][s]["best"].get("metrics") or {}).items()} |
                            {"best_score": best["score"], "trials_failed": len(failed),
                             "trials": sum(1 for t in trials if "reused_from" not in t)}, step=0)
        tracker.log_params({f"best.{k}": str(v) for k, v in best["point"].items()})
        for f in filter(None, files):
            tracker.log_artifact(f, "plots" if f.parent.name == "plots" else None)
    summary = {"out": str(out), "best": best["point"], "best_metrics": best.get("metrics"),
               "best_score": best["score"], "best_yaml": str(out / "best.yaml"), "failed": [t["name"] for t in failed],
               "stages": {s: {"trials": len(state["stages"][s]["trials"]), "best": state["stages"][s]["best"]["point"]}
                          for s in stages},
               "plots": [str(f) for f in files if f is not None and f.suffix == ".png"],
               "mlflow": {"run_id": tracker.run_id, "url": tracker.url} if tracker.active else None,
               "seconds": round(seconds, 1),
               "verdict": checkpoint_verdict(best.get("metrics") or {}, cfg, checkpoint)}  # even the best is noise?
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    say("sweep", f"done in {seconds:.0f}s; best {trial_name(best['point'])}: " +
        ", ".join(f"{m} {best['metrics'][m]:.4g}" for m in metrics if m in (best.get("metrics") or {})))
    print(table, flush=True)
    if failed:
        say("sweep", f"{len(failed)} trial(s) failed: {', '.join(t['stage'] + '/' + t['name'] for t in failed)} "
            f"(errors in {out / 'trials.csv'})")
    say("sweep", f"best settings      {out / 'best.yaml'}  (python jobs/evaluate.py --checkpoint {checkpoint} "
        f"--config {out / 'best.yaml'})")
    say("sweep", f"plots              {out / 'plots'}")
    say("sweep", f"all trials         {out / 'trials.csv'}")
    if tracker.active:
        say("sweep", f"MLflow sweep run   {tracker.url}")
    if summary["verdict"]:
        print("\n" + summary["verdict"].replace("these samples", "the best trial's samples"), flush=True)
    return summary
