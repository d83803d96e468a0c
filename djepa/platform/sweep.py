"""Coarse-to-fine search of the sampling hyper-parameters with Ray Tune (the paper's appendix C).

Each stage is one Tune experiment over a list of (cfg, temperature, ar_steps) points; each trial
runs the sharded evaluation (`djepa.platform.evaluator.evaluate`) inside the trial's placement group,
so a cluster runs `concurrent_trials` trials at once with `eval.workers` GPUs each. One resume
mechanism sits on top of the evaluation's own: the driver records every finished stage in
`<out>/sweep.json` (finished stages are not run again; their points are reused by later stages).
Inside an unfinished stage a trial answers from its evaluation's metrics.json when that evaluation
finished, and otherwise resumes from the evaluation's shards; Tune's own state is not restored.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from djepa.checkpoint import verify_checkpoint
from djepa.config import Config, ConfigError, deep_merge, validate
from djepa.console import say
from djepa.eval.sweep_plots import write_trials_csv
from djepa.lock import hold
from djepa.platform.sweep_config import STAGES, SweepConfig, choose, point, score, stage_points, trial_name
from djepa.platform.sweep_report import report
from djepa.platform.tracking import flatten
from djepa.samples import atomic_write


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=1)))  # a kill never leaves half


def _finished(out: Path, p: dict, n: int) -> dict | None:
    """The trial record of point p from its evaluation's metrics.json, if that evaluation finished with n
    samples at p (the sweep's identity, checked in sweep.json, fixes the checkpoint and everything else)."""
    f = out / "metrics.json"
    if not f.is_file():
        return None
    s = json.loads(f.read_text())
    if s["num_samples"] != n or {k: s["sampling"][k] for k in ("cfg", "temperature", "ar_steps")} != p:
        return None
    return {"point": p, "num_samples": n, "metrics": s["metrics"], "seconds_per_image": s["seconds_per_image"],
            "images_per_second": s["images_per_second"], "mlflow_run_id": (s["mlflow"] or {}).get("run_id"),
            "dir": str(out), "grid": s["grid"]}


def _trial(config: dict, ctx: dict) -> None:
    """One Tune trial: evaluate one sampling point (or answer from its finished evaluation) and report."""
    from ray import tune

    from djepa.platform.evaluator import evaluate

    p, stage, n = config["point"], ctx["stage"], ctx["num_samples"]
    name = trial_name(p)
    out = Path(ctx["out"]) / stage / name
    rec = _finished(out, p, n)
    if rec is None:
        if ctx["on_trial"] is not None:
            ctx["on_trial"](name, out)
        cfg = validate(deep_merge(ctx["cfg"], {"sample": {k: p[k] for k in ("cfg", "temperature", "ar_steps")},
                                               "eval": {"out_dir": str(out), "save_npz": ctx["keep_samples"]}}))
        evaluate(cfg, ctx["checkpoint"], n, parent_run_id=ctx["parent_run_id"], run_name=f"{stage} {name}",
                 tags={"djepa.kind": "sweep-trial", "djepa.sweep.stage": stage, "djepa.sweep.trial": name})
        rec = _finished(out, p, n)
    if not ctx["keep_samples"]:
        shutil.rmtree(out / "shards", ignore_errors=True)  # 10k samples of 256 px are 2 GB; the metrics stay
    tune.report(_flat(rec))


def _flat(rec: dict) -> dict:
    return {**rec["metrics"], "seconds_per_image": rec["seconds_per_image"], "trial": trial_name(rec["point"])}


def _dirname(trial) -> str:
    return trial_name(trial.config["point"])


def _progress_callback(stage: str, total: int, spec: SweepConfig):
    from ray import tune

    class StageProgress(tune.Callback):
        """trials done / total and the best so far, as each trial ends."""

        def __init__(self):
            self.done, self.failed, self.best = 0, 0, None

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.done += 1
            s = score(trial.last_result or {}, spec)
            if s is not None and (self.best is None or (s < self.best[0]) == (spec.direction == "min")):
                self.best = (s, trial_name(trial.config["point"]))
            self._say(f"{trial_name(trial.config['point'])} done")

        def on_trial_recover(self, iteration, trials, trial, **info):
            say("sweep", f"{stage}: {trial_name(trial.config['point'])} failed; retrying it")

        def on_trial_error(self, iteration, trials, trial, **info):
            self.failed += 1
            self._say(f"{trial_name(trial.config['point'])} FAILED after {spec.retries} retr(y/ies)")

        def _say(self, what: str):
            best = f"best {'score' if spec.weights else spec.metric} {self.best[0]:.4g} at {self.best[1]}" \
                if self.best else "no result yet"
            say("sweep", f"{stage}: {what}; {self.done + self.failed}/{total} trials ({self.failed} failed); {best}")

    return StageProgress()


def _run_stage(stage: str, points: list[dict], n: int, spec: SweepConfig, cfg: Config, ctx: dict) -> list[dict]:
    """One Tune experiment over `points` -> one record per point, in grid order (failed ones included)."""
    import ray
    from ray import tune

    if not ray.is_initialized():
        ray.init()
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # Tune's own tables are silent at verbose=0; our callback reports
    e = cfg.eval
    bundles = [{"CPU": spec.trial_cpus}] + [{"CPU": e.cpus_per_worker} | ({"GPU": 1} if e.use_gpu else {})
                                            for _ in range(e.workers)]
    trainable = tune.with_resources(tune.with_parameters(_trial, ctx=ctx | {"stage": stage, "num_samples": n}),
                                    tune.PlacementGroupFactory(bundles))
    storage = Path(ctx["out"]) / "tune"
    shutil.rmtree(storage / stage, ignore_errors=True)  # a cut-off run's Tune state: its trials resume on their own
    tuner = tune.Tuner(
        trainable, param_space={"point": tune.grid_search(points)},
        tune_config=tune.TuneConfig(max_concurrent_trials=spec.concurrent_trials, trial_dirname_creator=_dirname),
        run_config=tune.RunConfig(name=stage, storage_path=str(storage), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=spec.retries),
                                  callbacks=[_progress_callback(stage, len(points), spec)]))
    grid = tuner.fit()
    by_name = {}
    for r in grid:
        p = r.config["point"]
        folder = Path(ctx["out"]) / stage / trial_name(p)
        rec = {"stage": stage, "name": trial_name(p), "point": p, "num_samples": n, "status": "failed",
               "dir": str(folder), "error": None if r.error is None else f"{type(r.error).__name__}: {r.error}"[-2000:]}
        done = _finished(folder, p, n) if r.error is None else None
        if done is not None:
            rec |= done | {"status": "ok"}
        elif rec["error"] is None:
            rec["error"] = "the trial reported no result"
        by_name[rec["name"]] = rec
    missing = [trial_name(p) for p in points if trial_name(p) not in by_name]
    if missing:
        raise RuntimeError(f"{stage}: Tune returned no result for {missing} (state in {storage / stage})")
    return [by_name[trial_name(p)] for p in points]


def _on_edge(stage: str, points: list[dict], best: dict) -> list[str]:
    """'cfg 1.5 is the largest tried', for each grid dimension whose extreme value won."""
    out = []
    for k in ("cfg", "temperature") if stage in ("coarse", "fine") else ():
        values = sorted({p[k] for p in points})
        if len(values) > 1 and best[k] in (values[0], values[-1]) and not (k == "cfg" and best[k] == 1.0):
            out.append(f"{k} {best[k]:g} is the {'smallest' if best[k] == values[0] else 'largest'} tried")
    return out


def _prepare(cfg: Config, spec: SweepConfig, checkpoint: Path) -> tuple[Config, Path]:
    """Everything a trial on another node must not decide for itself: absolute MLflow URI, cache and the
    reference statistics (made once here, not by concurrent trials)."""
    from djepa.eval.classifier import cache_dir
    from djepa.eval.features import extractor_identities
    from djepa.eval.report import resolve_reference
    from djepa.platform.tracking import tracking_uri

    ref = resolve_reference(cfg, extractor_identities(cfg))
    cfg = validate(deep_merge(cfg.to_dict(), {
        "tracking": {"tracking_uri": tracking_uri(cfg)},
        "eval": {"cache_dir": str(cache_dir(cfg.eval.cache_dir)), "reference": ref["path"] if ref else None}}))
    out = Path(spec.out_dir).resolve() if spec.out_dir else \
        checkpoint.parent / "sweeps" / f"{checkpoint.name}-{spec.name}"
    return cfg, out


def _identity(cfg: Config, spec: SweepConfig, checkpoint: Path) -> dict:
    """What makes two runs the same sweep (resources and output choices may change between restarts)."""
    from djepa.eval.shards import file_digest, sampling_identity

    how = spec.model_dump(mode="json", exclude={"concurrent_trials", "trial_cpus", "retries", "keep_samples", "out_dir"})
    return {"sampling": sampling_identity(cfg, file_digest(checkpoint / "model.safetensors")), "sweep": how,
            "features": cfg.eval.features, "reference": cfg.eval.reference}


def _state(out: Path, identity: dict) -> dict:
    f = out / "sweep.json"
    if not f.is_file():
        return {"identity": identity, "stages": {}}
    state = json.loads(f.read_text())
    if state.get("identity") != identity:
        raise FileExistsError(f"{out} holds a sweep of another checkpoint or with other settings ({f}); rerun "
                              f"with the same config to resume it, or choose another sweep.out_dir")
    return state


def _save(out: Path, state: dict) -> None:
    write_json(out / "sweep.json", state)


def _parent_run(cfg: Config, spec: SweepConfig, out: Path, checkpoint: Path, state: dict):
    from djepa.platform.eval_report import training_run
    from djepa.platform.tracking import start_run

    tracker = start_run(cfg, out, None, run_id=state.get("mlflow_run_id"), parent_run_id=training_run(checkpoint),
                        run_name=f"sweep-{spec.name}-{checkpoint.name}")
    if tracker.active and not state.get("mlflow_run_id"):
        tracker.set_tag("djepa.kind", "sweep")
        tracker.log_params(flatten({"sweep": spec.model_dump(mode="json")}) | {"sweep.checkpoint": str(checkpoint)})
    return tracker


def _log_failed(cfg: Config, rec: dict, parent_run_id: str | None) -> None:
    """A trial that failed after its retries still gets a child run: status FAILED, its params and the error."""
    from djepa.platform.tracking import start_run

    if parent_run_id is None or rec.get("mlflow_run_id"):
        return
    try:
        c = validate(deep_merge(cfg.to_dict(), {"sample": {k: rec["point"][k] for k in ("cfg", "temperature",
                                                                                     "ar_steps")}}))
    except ConfigError:  # reporting a failure must never raise and lose the finished trials' results
        c = cfg
    t = start_run(c, Path(rec["dir"]), None, parent_run_id=parent_run_id,
                  run_name=f"{rec['stage']} {rec['name']} (failed)")
    for k, v in {"djepa.kind": "sweep-trial", "djepa.sweep.stage": rec["stage"], "djepa.sweep.trial": rec["name"],
                 "djepa.error": rec["error"][-4000:]}.items():
        t.set_tag(k, v)
    t.finish("FAILED")
    rec["mlflow_run_id"] = t.run_id


def run_sweep(cfg: Config, spec: SweepConfig, checkpoint: str | Path, *, on_trial=None, on_stage=None) -> dict:
    """Run (or resume) every enabled stage, then write the figures, best.yaml and the summary.
    Test hooks: on_trial(name, out) runs inside a Tune trial before it evaluates (picklable: it travels to the
    trial's process); on_stage(stage) runs on the driver after a stage is saved in sweep.json."""
    t0 = time.perf_counter()
    checkpoint = Path(checkpoint).resolve()
    verify_checkpoint(checkpoint)
    cfg, out = _prepare(cfg, spec, checkpoint)
    with hold(out, "sweep"):  # a second sweep into `out` is refused, naming this one (djepa.lock)
        return _run_sweep_locked(cfg, spec, checkpoint, out, t0, on_trial, on_stage)


def _stage_trials(stage: str, points: list[dict], n: int, state: dict, spec: SweepConfig, cfg: Config, ctx: dict,
                  parent_run_id: str | None) -> list[dict]:
    """The stage's trials in grid order: points measured with as many samples in an earlier stage are taken,
    the rest run in one Tune experiment; failed ones are reported (and logged as FAILED runs), not dropped."""
    earlier = {(t["name"], t["num_samples"]): t for s in state["stages"].values() for t in s["trials"]
               if t["status"] == "ok"}
    todo = [p for p in points if (trial_name(p), n) not in earlier]
    resumed = sum(_finished(Path(ctx["out"]) / stage / trial_name(p), p, n) is not None for p in todo)
    say("sweep", f"{stage}: {len(points)} point(s) x {n:,} samples, {len(points) - len(todo)} known from earlier "
                 f"stages, {len(todo)} to run ({resumed} finished before a restart; {spec.concurrent_trials} at "
                 f"once, {cfg.eval.workers} worker(s) each)")
    ran = {t["name"]: t for t in (_run_stage(stage, todo, n, spec, cfg, ctx) if todo else [])}
    trials = [ran.get(trial_name(p)) or earlier[(trial_name(p), n)] | {"reused_from": earlier[
        (trial_name(p), n)]["stage"], "stage": stage} for p in points]
    for t in trials:
        t["score"] = score(t.get("metrics") or {}, spec)
        if t["status"] == "failed":
            _log_failed(cfg, t, parent_run_id)
            say("sweep", f"{stage}: trial {t['name']} FAILED: {t['error'][-300:]}")
    return trials


def _run_sweep_locked(cfg: Config, spec: SweepConfig, checkpoint: Path, out: Path, t0: float, on_trial,
                      on_stage) -> dict:
    state = _state(out, _identity(cfg, spec, checkpoint))
    tracker = _parent_run(cfg, spec, out, checkpoint, state)
    state["mlflow_run_id"], state["checkpoint"] = tracker.run_id, str(checkpoint)
    _save(out, state)
    ctx = {"cfg": cfg.to_dict(), "checkpoint": str(checkpoint), "out": str(out), "parent_run_id": tracker.run_id,
           "keep_samples": spec.keep_samples, "on_trial": on_trial}
    stages = [s for s in STAGES if getattr(spec, s) is not None]
    say("sweep", f"{' -> '.join(stages)} on {checkpoint} -> {out}; choosing by {spec.metric_names} "
                 f"({spec.direction})")
    best = point(cfg.sample.cfg, cfg.sample.temperature, cfg.sample.ar_steps)
    try:
        for stage in stages:
            n = getattr(spec, stage).num_samples
            points = stage_points(spec, stage, cfg, best)
            saved = state["stages"].get(stage)
            if saved and saved["points"] == points and saved["num_samples"] == n:
                say("sweep", f"{stage}: finished earlier ({len(points)} trials); not run again")
                trials = saved["trials"]
            else:
                trials = _stage_trials(stage, points, n, state, spec, cfg, ctx, tracker.run_id)
            chosen = choose(trials, spec)
            if chosen is None:
                write_trials_csv(trials, out / "trials.csv")
                raise RuntimeError(f"{stage}: every trial failed; see {out / 'trials.csv'} and the errors above")
            state["stages"][stage] = {"points": points, "num_samples": n, "trials": trials, "best": chosen}
            _save(out, state)
            best = chosen["point"]
            say("sweep", f"{stage}: best {trial_name(best)} with score {chosen['score']:.4g}")
            for edge in _on_edge(stage, points, best):
                say("sweep", f"{stage}: note: the best {edge}; the optimum may lie outside this grid (widen it to "
                             f"be sure)")
            if on_stage is not None:
                on_stage(stage)
        summary = report(cfg, spec, state, out, checkpoint, tracker, time.perf_counter() - t0)
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.finish()
    return summary
