"""An experiment over training settings: arms x seeds, each cell a full Ray Train run with online evaluation,
run as Ray Tune trials (the paper's Table 6 and its FID-vs-epoch curves, with seeds and error bars).

Each cell is one Tune function trial that builds and fits its own TorchTrainer (`djepa.platform.trainer.train`);
the trial itself takes `cpus_per_cell` (a fraction: its Train workers are scheduled beside it, and a whole CPU
per trial deadlocks a 2-CPU machine). Resume: a cell whose run directory's summary.json says finished with its
train.steps is not run again; an unfinished one with a run.json continues from its last checkpoint
(`train(cfg, resume=True)`); Tune's own state is not restored. One MLflow parent run, each cell's training run
its child; the aggregate files (djepa.eval.curves) are its artifacts.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from djepa.config import Config, deep_merge, validate
from djepa.console import say
from djepa.eval.online import read_points
from djepa.lock import hold
from djepa.platform.experiment_config import ExperimentConfig
from djepa.platform.experiment_report import write_outputs
from djepa.platform.tracking import flatten, tracking_uri
from djepa.samples import atomic_write


def finished(cfg: Config) -> bool:
    """Whether the cell's run finished with the wanted number of steps."""
    f = Path(cfg.train.out_dir) / "summary.json"
    if not f.is_file():
        return False
    s = json.loads(f.read_text())
    return s.get("status") == "finished" and s.get("step") == cfg.train.steps


def _cell(config: dict, ctx: dict) -> None:
    """One Tune trial: train one cell (or continue it) and report its last online point."""
    from ray import tune

    from djepa.platform.trainer import train

    name = config["cell"]
    cfg = validate(ctx["cells"][name])
    on_step = ctx["on_cell"](name) if ctx["on_cell"] is not None else None
    resume = (Path(cfg.train.out_dir) / "run.json").exists()
    summary = train(cfg, resume=resume, parent_run_id=ctx["parent_run_id"], on_step=on_step)
    last = summary["online"][-1] if summary["online"] else {}
    tune.report({"cell": name, "step": summary["step"], ctx["metric"]: last.get(ctx["metric"], float("nan"))})


def _prepare(cells: dict) -> dict:
    """What a trial must not decide for itself: the absolute MLflow URI, data and cache paths, the bundled data
    encoded and the online reference made once here (not by concurrent cells)."""
    from djepa.eval.classifier import cache_dir
    from djepa.eval.features import extractor_identities
    from djepa.eval.report import resolve_reference
    from djepa.platform.trainer import encoded_or_bundled

    out = {}
    for name, (arm, seed, cfg) in cells.items():
        data = encoded_or_bundled(cfg, "experiment")
        cfg = validate(deep_merge(cfg.to_dict(), {"tracking": {"tracking_uri": tracking_uri(cfg)},
                                                  "data": {"encoded_dir": str(data)},
                                                  "eval": {"cache_dir": str(cache_dir(cfg.eval.cache_dir))}}))
        ref = resolve_reference(cfg, extractor_identities(cfg))
        out[name] = (arm, seed, validate(deep_merge(cfg.to_dict(), {"eval": {"reference": ref["path"]}})))
    return out


def _state(out: Path, spec: ExperimentConfig, cells: dict) -> dict:
    """experiment.json: the experiment's identity (its cells' configs) and MLflow parent run."""
    identity = {"spec": spec.model_dump(mode="json", exclude={"concurrent", "cpus_per_cell", "out_dir",
                                                              "report_steps", "threshold"}),
                "cells": {n: c.hash() for n, (_, _, c) in cells.items()}}
    f = out / "experiment.json"
    if not f.is_file():
        return {"identity": identity}
    state = json.loads(f.read_text())
    if state.get("identity") != identity:
        raise FileExistsError(f"{out} holds an experiment with other cells or settings ({f}); rerun with the same "
                              f"config to resume it, or choose another experiment.out_dir")
    return state


def _save(out: Path, state: dict) -> None:
    atomic_write(out / "experiment.json", lambda tmp: Path(tmp).write_text(json.dumps(state, indent=1)))


def _parent_run(spec: ExperimentConfig, cells: dict, out: Path, state: dict):
    from djepa.platform.tracking import start_run

    configs = [flatten(c.to_dict()) for _, _, c in cells.values()]
    shared = {k: v for k, v in configs[0].items() if all(c.get(k) == v for c in configs[1:])}  # not the arms' keys
    params = shared | flatten({"experiment": spec.model_dump(mode="json")})
    first = next(iter(cells.values()))[2]  # the cells' MLflow store and experiment
    tracker = start_run(first, out, None, run_id=state.get("mlflow_run_id"), run_name=f"experiment {spec.name}",
                        params=params)
    if tracker.active:
        tracker.set_tag("djepa.kind", "experiment")
    return tracker


def _run_cells(todo: list[str], spec: ExperimentConfig, ctx: dict, out: Path) -> dict[str, str | None]:
    """One Tune experiment over the unfinished cells -> {cell: error or None}."""
    import ray
    from ray import tune

    if not ray.is_initialized():
        ray.init()
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    trainable = tune.with_resources(tune.with_parameters(_cell, ctx=ctx), {"CPU": spec.cpus_per_cell})
    storage = out / "tune"
    shutil.rmtree(storage / "cells", ignore_errors=True)  # a cut-off run's Tune state: the cells resume on their own
    tuner = tune.Tuner(
        trainable, param_space={"cell": tune.grid_search(todo)},
        tune_config=tune.TuneConfig(max_concurrent_trials=spec.concurrent,
                                    trial_dirname_creator=lambda t: t.config["cell"]),
        run_config=tune.RunConfig(name="cells", storage_path=str(storage), verbose=0))
    errors = {name: "Tune returned no result" for name in todo}
    for r in tuner.fit():
        errors[r.config["cell"]] = None if r.error is None else f"{type(r.error).__name__}: {r.error}"[-2000:]
    return errors


def run_experiment(spec: ExperimentConfig, cells: dict, *, on_cell=None) -> dict:
    """Run (or resume) every cell, then write points, curves, table, threshold and plot; -> the summary.
    cells: djepa.platform.experiment_config.cell_configs(spec). Test hook: on_cell(name) runs inside a cell's Tune
    trial before it trains and may return an on_step hook for that cell's training (trainer.train); picklable: it
    travels to the trial's process."""
    out = spec.output_dir()
    out.mkdir(parents=True, exist_ok=True)
    with hold(out, "experiment"):  # a second experiment into `out` is refused, naming this one (djepa.lock)
        return _run_locked(spec, cells, out, on_cell)


def _run_locked(spec: ExperimentConfig, cells: dict, out: Path, on_cell) -> dict:
    t0 = time.perf_counter()
    state = _state(out, spec, cells)
    cells = _prepare(cells)
    tracker = _parent_run(spec, cells, out, state)
    state["mlflow_run_id"] = tracker.run_id
    _save(out, state)
    todo = [n for n, (_, _, c) in cells.items() if not finished(c)]
    say("experiment", f"{spec.name}: {len(spec.arms)} arm(s) x {len(spec.seeds)} seed(s) = {len(cells)} cells, "
                      f"{len(cells) - len(todo)} finished earlier, {len(todo)} to run ({spec.concurrent} at once) "
                      f"-> {out}")
    ctx = {"cells": {n: c.to_dict() for n, (_, _, c) in cells.items()}, "parent_run_id": tracker.run_id,
           "metric": spec.metric, "on_cell": on_cell}
    try:
        errors = _run_cells(todo, spec, ctx, out) if todo else {}
        points = []
        for name, (arm, seed, cfg) in cells.items():
            if finished(cfg):
                run_points = read_points(Path(cfg.train.out_dir) / "online.jsonl").values()
                points += [{"arm": arm, "seed": seed, **p} for p in sorted(run_points, key=lambda p: p["step"])]
        summary = write_outputs(spec, points, out, tracker)
        summary |= {"cells": {n: ("finished" if finished(c) else errors.get(n) or "not finished")
                              for n, (_, _, c) in cells.items()},
                    "seconds": round(time.perf_counter() - t0, 1), "mlflow_run_id": tracker.run_id,
                    "mlflow_url": tracker.url}
        atomic_write(out / "summary.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=1)))
        failed = {n: e for n, e in errors.items() if e}
        for n, e in failed.items():
            say("experiment", f"cell {n} FAILED: {e[-300:]}")
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(cells)} cell(s) failed ({', '.join(failed)}); the finished "
                               f"ones are kept: run the same command again to resume")
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.finish()
    _print(summary, out)
    return summary


def _print(s: dict, out: Path) -> None:
    print()
    say("experiment", f"{len(s['cells'])} cells finished in {s['seconds']} s")
    print(s["table_md"])
    for name in ("points.jsonl", "curves.csv", "curves.json", "table.md", "threshold.json", "curves.png"):
        if (out / name).exists():
            print(f"  {name:<15}{out / name}")
    print(f"  MLflow         {s['mlflow_url'] or 'not tracked (see the warning above)'}", flush=True)
