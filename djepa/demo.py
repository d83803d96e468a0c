"""The embedded demo without Ray: train on the bundled digits, sample a grid, check the samples.

Writes under train.out_dir: checkpoint/ (model + EMA safetensors, config), samples.png,
samples.npz (ADM format), history.json and results.json.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from djepa.checkpoint import load_weights
from djepa.config import Config
from djepa.data.sources import TEXT_SOURCES
from djepa.console import say
from djepa.lock import hold
from djepa.local import resolve_device, train_local
from djepa.samples import balanced_labels, sample_images, write_preview


def class_consistency_report(ema, cfg: Config, device) -> dict[str, float]:
    """Accuracy of the real-digit classifier on eval.num_samples samples, at each of eval.cfg_values."""
    from djepa.eval.classifier import class_consistency, domain_classifier

    _, info = domain_classifier(cfg.data.source, cfg.eval.cache_dir)
    labels = balanced_labels(cfg.eval.num_samples, cfg.model.num_classes)
    report = {"real_held_out": info["held_out_accuracy"]}
    for scale in cfg.eval.cfg_values:
        t = time.perf_counter()
        images = sample_images(ema, cfg, labels, cfg_scale=scale, seed=cfg.sample.seed + 1, device=device)
        report[f"cfg_{scale:g}"] = class_consistency(images, labels, cfg.data.source, cfg.eval.cache_dir)
        say("eval", f"class consistency at cfg {scale:g}: {report[f'cfg_{scale:g}']:.3f} "
                    f"({len(labels)} samples, {time.perf_counter() - t:.1f}s)")
    return report


def word_order_report(ema, cfg: Config, device) -> dict[str, dict]:
    """The pairs' order check (djepa/text/pair_metrics.py) on eval.num_samples held-out captions, at each cfg."""
    from djepa.conditions import conditions_of
    from djepa.text.pair_metrics import caption_scores

    captions = conditions_of(cfg, 0, cfg.eval.num_samples)
    report = {}
    for scale in cfg.eval.cfg_values:
        images = sample_images(ema, cfg, captions, cfg_scale=scale, seed=cfg.sample.seed + 1, device=device)
        report[f"cfg_{scale:g}"] = caption_scores(images, list(captions), cfg.data.source, cfg.eval.cache_dir)
        say("eval", f"cfg {scale:g}: {report[f'cfg_{scale:g}']['order_correct']:.3f} of {len(captions)} samples show "
                    f"both digits in the asked order ({report[f'cfg_{scale:g}']['swapped']:.3f} swapped)")
    return report


def run_local_demo(cfg: Config) -> dict:
    out = Path(cfg.train.out_dir).resolve()
    with hold(out, "local demo"):  # first: a second demo into this directory is refused before any compute
        return _run_local_demo(cfg, out)


def _run_local_demo(cfg: Config, out: Path) -> dict:
    device = resolve_device(cfg.train.device)
    result = train_local(cfg, out)
    _, _, ema = load_weights(result.checkpoint, device)
    preview = write_preview(ema, cfg, out, device)
    summary = {
        "steps": result.steps,
        "train_seconds": round(result.seconds, 1),
        "first_loss": result.history[0]["loss"] if result.history else None,
        "final_loss": float(np.mean([h["loss"] for h in result.history[-3:]])) if result.history else None,
        "checkpoint": str(result.checkpoint),
        "samples_png": str(preview["png"]),
        "samples_npz": str(preview["npz"]),
    }
    if cfg.data.source in ("digits", "mnist5k"):
        summary["class_consistency"] = class_consistency_report(ema, cfg, device)
    if cfg.data.source in TEXT_SOURCES:
        summary["word_order"] = word_order_report(ema, cfg, device)
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    print()
    say("demo", "done")
    print(f"  trained      {summary['steps']} steps in {summary['train_seconds']}s, loss "
          f"{summary['first_loss']:.4f} -> {summary['final_loss']:.4f}")
    print(f"  weights      {summary['checkpoint']}/model.safetensors")
    print(f"  sample grid  {summary['samples_png']}  (a column per class)")
    print(f"  samples      {summary['samples_npz']}  (ADM .npz: arr_0 uint8 NHWC, arr_1 labels)")
    if "class_consistency" in summary:
        cc = summary["class_consistency"]
        print("  consistency  " + ", ".join(f"{k} {v:.3f}" for k, v in cc.items()))
    for k, v in summary.get("word_order", {}).items():
        print(f"  order {k:<6} both digits in the asked order {v['order_correct']:.3f}, swapped {v['swapped']:.3f}")
    print(f"  results      {out / 'results.json'}")
    return summary
