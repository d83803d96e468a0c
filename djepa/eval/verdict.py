"""A plain verdict on a set of samples: usable, or unusable with the likely cause and the fix.

The numbers alone (an FD of 1572.8 next to a floor of 3.8) do not tell a first-time user that the
samples are noise. Two signs say so: the real-data classifier recognises hardly more samples as their
class than chance would, or the domain FD is many times the real-data floor (held-out real images).
The cause is read from the checkpoint: a run stopped by its time budget, an EMA still mostly the
random initialisation, or simply too few steps; else the sampling settings are the suspect.
"""
from __future__ import annotations

# consistency below CHANCE_FACTOR / classes is "near chance" (noise scores ~1/classes; the demo's good
# runs 0.9+); an FD above FD_FACTOR x the real-data floor is "far above the floor" (noise: ~400x)
CHANCE_FACTOR, FD_FACTOR = 2.5, 25.0
# the EMA is called "mostly initialisation" when the init's weight decay**updates is above this
EMA_INIT_WEIGHT = 0.2


def problems(metrics: dict, num_classes: int) -> list[str]:
    """What in `metrics` (consistency_domain, fd_domain, floor_fd_domain) says the samples are unusable."""
    out = []
    cc = metrics.get("consistency_domain")
    if cc is not None and cc < CHANCE_FACTOR / num_classes:
        out.append(f"class consistency {cc:.3f} is near chance ({1 / num_classes:.2f} for {num_classes} classes): "
                   f"the classifier of real data does not see the asked-for class")
    fd, floor = metrics.get("fd_domain"), metrics.get("floor_fd_domain")
    if fd is not None and floor and fd > FD_FACTOR * floor:
        out.append(f"domain FD {fd:.1f} is {fd / floor:.0f}x the real-data floor {floor:.2f}")
    return out


def likely_cause(cfg, step: int | None) -> tuple[str, str]:
    """-> (cause, fix) for unusable samples of a checkpoint of `cfg` saved at training step `step`."""
    m, t = cfg.model, cfg.train
    if step is not None and step < t.steps and t.max_minutes:
        return (f"training stopped at step {step} of train.steps={t.steps}: the time budget "
                f"train.max_minutes={t.max_minutes:g} ran out (a slow or busy machine)",
                "continue the run with --resume and --set train.max_minutes=null (or a larger budget)")
    if step is not None and not m.ema_warmup and m.ema_decay ** step > EMA_INIT_WEIGHT:
        return (f"the EMA weights (sampled from) are still {100 * m.ema_decay ** step:.0f}% the random "
                f"initialisation: model.ema_decay={m.ema_decay:g} without warm-up after {step} steps",
                "train with model.ema_warmup=true (the default) or a lower model.ema_decay")
    if step is not None and step < 2000:
        return (f"the model is undertrained ({step} steps)",
                f"train longer: --set train.steps={max(2 * step, 1000)} (and --resume to continue this run)")
    return ("the sampling settings (sample.cfg, sample.temperature, sample.ar_steps) or the training recipe",
            "sweep the sampling settings (jobs/sweep.py); if every setting fails, check the training loss curve")


def verdict(metrics: dict, cfg, step: int | None) -> str | None:
    """A few plain lines if the samples are unusable, else None."""
    from djepa.data.sources import TEXT_SOURCES

    # the captioned pairs: consistency is the ordered pair's (90 of them), and a model blind to word order reads
    # half of them swapped
    found = problems(metrics, 90 if cfg.data.source in TEXT_SOURCES else cfg.model.num_classes)
    swapped, cc = metrics.get("swapped_domain"), metrics.get("consistency_domain")
    if swapped is not None and cc is not None and swapped > 0.5 * cc:
        found.append(f"{swapped:.0%} of samples show the two digits in the reverse order (in order: {cc:.0%}): the "
                     f"model does not read the captions' word order")
    if not found:
        return None
    cause, fix = likely_cause(cfg, step)
    return ("VERDICT: these samples are unusable.\n" + "".join(f"  - {p}\n" for p in found)
            + f"  likely cause: {cause}\n  fix: {fix}")


def checkpoint_verdict(metrics: dict, cfg, checkpoint) -> str | None:
    """`verdict` for samples of a checkpoint directory (its state.json gives the training step)."""
    from djepa.checkpoint import verify_checkpoint

    return verdict(metrics, cfg, verify_checkpoint(checkpoint).get("step"))
