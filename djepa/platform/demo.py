"""The one-command demo on a laptop: encode MNIST-5k, train with Ray Train, evaluate with the sharded
evaluator, sweep cfg x temperature and AR steps with Ray Tune, and end with where everything is.

Each step reuses what an earlier run of the demo finished (a trained run, finished evaluation shards,
finished sweep trials), so a demo stopped half-way picks up where it was.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from djepa.config import Config
from djepa.console import say


def _trained(cfg: Config) -> dict:
    """Train, or take the finished run already in train.out_dir."""
    from djepa.platform.trainer import train

    run_dir = Path(cfg.train.out_dir).resolve()
    done = run_dir / "summary.json"
    if done.is_file():
        summary = json.loads(done.read_text())
        # "time": the demo's train.max_minutes budget ran out, which is how the demo means to end
        if summary.get("status") in ("finished", "time") and summary.get("checkpoint") and \
                Path(summary["checkpoint"]).is_dir():
            say("demo", f"reusing the finished training run in {run_dir} ({summary['step']} steps); "
                f"--set train.out_dir=<new dir> trains a new one")
            return summary
    return train(cfg, resume=(run_dir / "run.json").is_file())


def run_demo(cfg: Config, sweep_file: str | None, sweep_overrides: list[str] = ()) -> dict:
    from djepa.platform.evaluator import eval_config, evaluate
    from djepa.platform.sweep import run_sweep
    from djepa.platform.sweep_config import load_sweep
    from djepa.platform.tracking import tracking_uri

    t0 = time.perf_counter()
    uri = tracking_uri(cfg)
    cfg = cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update={"tracking_uri": uri})})
    ceiling = f", stopping early only at the {cfg.train.max_minutes:g} min ceiling" if cfg.train.max_minutes else ""
    say("demo", f"1/3 training {cfg.name} on {cfg.data.source} with Ray Train for {cfg.train.steps} steps{ceiling}")
    trained = _trained(cfg)
    ckpt = Path(trained["checkpoint"])

    say("demo", f"2/3 evaluating {ckpt.name}: {cfg.eval.num_samples:,} samples at cfg {cfg.sample.cfg:g}")
    ecfg = eval_config(ckpt, [f"tracking.tracking_uri={uri}"])
    ev = evaluate(ecfg, ckpt)

    sweep = None
    if sweep_file:
        say("demo", f"3/3 sweeping cfg x temperature, then AR steps ({sweep_file})")
        scfg, spec = load_sweep(ckpt, sweep_file, [f"tracking.tracking_uri={uri}", *sweep_overrides])
        sweep = run_sweep(scfg, spec, ckpt)

    m = ev["metrics"]
    summary = {"seconds": round(time.perf_counter() - t0, 1), "steps": trained["step"],
               "train_seconds": trained["seconds"], "checkpoint": str(ckpt), "grid": ev["grid"],
               "samples": ev["samples"], "metrics": m, "sampling": ev["sampling"],
               "sweep": {k: sweep[k] for k in ("best", "best_metrics", "best_yaml", "plots", "out")} if sweep else None,
               "mlflow_ui": f"mlflow ui --backend-store-uri {uri}" if uri.startswith("sqlite") else uri,
               "training_run": trained.get("mlflow_url"), "verdict": ev.get("verdict"),
               "video": cfg.tokenizer.is_video}
    if cfg.data.source == "moving_mnist" and ev.get("samples"):  # checks no learned video feature decides
        from djepa.video.motion import sample_checks

        summary["motion"] = sample_checks(ev["samples"], cfg.eval.cache_dir)
    out = Path(cfg.train.out_dir).resolve().parent / "demo.json"
    out.write_text(json.dumps(summary, indent=1))
    _print(summary, out)
    return summary


def _print(s: dict, out: Path) -> None:
    m, p = s["metrics"], s["sampling"]
    print(f"\n[demo] done in {s['seconds'] / 60:.1f} min", flush=True)
    print(f"  sample grid   {s['grid']}  (a column per class" + (", animated; frames side by side in "
          f"{Path(s['grid']).with_name('grid-strip.png')})" if s["video"] else ")"))
    print(f"  trained       {s['steps']} steps in {s['train_seconds']:.0f}s -> {s['checkpoint']}")
    print(f"  evaluation    cfg {p['cfg']:g}, T {p['temperature']:g}, {p['ar_steps']} AR steps: "
          + ", ".join(f"{k} {m[k]:.3f}" for k in ("consistency_domain", "swapped_domain", "fd_domain", "is_domain",
                                                   "precision_domain", "recall_domain", "floor_fd_domain") if k in m))
    if s.get("motion"):
        from djepa.video.motion import REAL_SPEED
        mo = s["motion"]
        print(f"  motion        {mo['motion_ok']:.0%} of clips move like Moving MNIST (moving {mo['moving']:.0%}, smooth "
              f"{mo['smooth']:.0%}, steady {mo['steady']:.0%}, ink kept {mo['persistent']:.0%}; {mo['speed']:.2f} px/frame, "
              f"real {REAL_SPEED:.2f}); the MNIST image classifier reads {mo['frame_consistency']:.0%} of frames as their class")
    if s["sweep"]:
        b, bm = s["sweep"]["best"], s["sweep"]["best_metrics"] or {}
        print(f"  sweep best    cfg {b['cfg']:g}, T {b['temperature']:g}, {b['ar_steps']} AR steps: "
              + ", ".join(f"{k} {bm[k]:.3f}" for k in ("fd_domain", "is_domain", "consistency_domain") if k in bm))
        print(f"  sweep plots   {Path(s['sweep']['out']) / 'plots'}  (best settings: {s['sweep']['best_yaml']})")
    print(f"  summary       {out}")
    print(f"  MLflow        {s['mlflow_ui']}  then http://127.0.0.1:5000", flush=True)
    if s["verdict"]:
        print("\n" + s["verdict"], flush=True)
    elif "swapped_domain" in m:  # the captioned pairs: read both digits, in order
        print(f"\nVERDICT: usable samples: the real-digit classifier reads both digits in the order the caption asks "
              f"in {m['consistency_domain']:.0%} of them ({m['swapped_domain']:.0%} swapped; chance 1%).", flush=True)
    elif "consistency_domain" in m:
        what = "clip" if s["video"] else "digit"
        print(f"\nVERDICT: usable samples: the real-{what} classifier recognises {m['consistency_domain']:.0%} of them "
              f"as their class (chance {1 / 10:.0%}).", flush=True)
