"""Single-process training without Ray: the embedded demo and the tests use it.

`train_local` feeds the one training loop (djepa.train_loop) random batches of an in-memory
dataset (a new shuffle every epoch, optional horizontal flips), and saves the model and EMA
weights to <out>/checkpoint at train.checkpoint_every steps and at the end.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from djepa.checkpoint import save_checkpoint
from djepa.conditions import Conditioner, is_text, select
from djepa.config import Config, ConfigError
from djepa.console import say
from djepa.data.sources import check_shape, load_source
from djepa.engine import build_optimizer
from djepa.lock import hold
from djepa.models.tokenizer import build_tokenizer
from djepa.train_loop import Feed, Parts, TrainLog, build_for_training, new_state, train_loop


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class TrainResult:
    checkpoint: Path
    steps: int
    seconds: float
    history: list[dict] = field(default_factory=list)  # one entry per logged step
    online: list[dict] = field(default_factory=list)  # online evaluation points (train.eval_every), by step


def train_local(cfg: Config, out_dir: str | Path | None = None, *, on_step=None) -> TrainResult:
    """Train cfg's model on an in-memory source; returns where the weights went and the loss history.
    The output directory is locked while training (djepa.lock): a second job into it is refused.
    on_step: test hook, as in djepa.train_loop.train_loop."""
    out = Path(out_dir or cfg.train.out_dir).resolve()
    with hold(out, "local training"):
        return _train_local(cfg, out, on_step)


def in_memory(cfg: Config) -> tuple[torch.Tensor, torch.Tensor | dict]:
    """cfg.data.source as tensors, checked against the tokenizer, with the model's condition of every sample: the
    labels (checked against model.num_classes), or the captions' text embeddings, computed once here."""
    images, raw = load_source(cfg.data.source)
    check_shape(cfg.data.source, images, cfg.tokenizer)
    if is_text(cfg) != (raw.dtype == object):
        raise ConfigError(f"data.source={cfg.data.source} gives {'captions' if raw.dtype == object else 'class labels'}"
                          f" but model.condition={cfg.model.condition}")
    if is_text(cfg):
        cond = Conditioner(cfg)
        parts = [cond(raw[i:i + 1024]) for i in range(0, len(raw), 1024)]
        return torch.from_numpy(images), {k: torch.cat([p[k] for p in parts]) for k in ("text", "mask")}
    if raw.max() >= cfg.model.num_classes:
        raise ValueError(f"data has label {raw.max()} but model.num_classes={cfg.model.num_classes}")
    return torch.from_numpy(images), torch.from_numpy(raw)


def batches(cfg: Config, images: torch.Tensor, labels: torch.Tensor | dict):
    """-> a callable giving one pass (epoch) of (images, conditions) batches: a fresh permutation, then per
    batch the flips (data.hflip), all from one generator seeded with train.seed."""
    gen, b = torch.Generator().manual_seed(cfg.train.seed), cfg.train.batch_size

    def one_pass():
        perm = torch.randperm(len(images), generator=gen)
        for i in range(len(images) // b):
            idx = perm[i * b: (i + 1) * b]
            x = images[idx]
            if cfg.data.hflip:
                flip = torch.rand(len(idx), generator=gen) < 0.5
                x = torch.where(flip.view(-1, *[1] * (x.dim() - 1)), x.flip(-1), x)
            yield x, select(labels, idx)

    return one_pass


def to_device(cond, device):
    return {k: v.to(device) for k, v in cond.items()} if isinstance(cond, dict) else cond.to(device)


def _train_local(cfg: Config, out: Path, on_step) -> TrainResult:
    t = cfg.train
    device = resolve_device(t.device)
    images, labels = in_memory(cfg)
    tokenizer = build_tokenizer(cfg.tokenizer).to(device)
    model, ema, compiled = build_for_training(cfg, device)
    opt = build_optimizer(model, t, fused=device.type == "cuda")  # one kernel per step on a GPU
    n, params = len(images), sum(p.numel() for p in model.parameters())
    say("train", f"{cfg.name}: {n} images, {params:,} parameters, batch {t.batch_size}, lr {t.lr:.2e}, up to "
                 f"{t.steps} steps" + (f" or {t.max_minutes} min" if t.max_minutes else "") + f", device {device}"
                 + (", torch.compile on (the first steps compile)" if compiled else ""))

    ckpt, saved = out / "checkpoint", []

    def save(state: dict, metrics: dict) -> None:
        save_checkpoint(ckpt, cfg, model.state_dict(), ema.state_dict(), state)
        saved.append(state["step"])

    feed = Feed(batches(cfg, images, labels), lambda b: (tokenizer.encode(b[0].to(device)), to_device(b[1], device)),
                steps_per_pass=n // t.batch_size, rows=n)
    log, online = TrainLog(cfg, 0), _online(cfg, out, device) if t.eval_every else None
    start = time.perf_counter()
    parts = Parts(log=log, save=save, evaluate=(lambda s: online(s, ema)) if online else None)
    stop, step = train_loop(cfg, model, ema, opt, new_state(), feed, parts, device=device, run_dir=out,
                            on_step=on_step)
    seconds = time.perf_counter() - start
    (out / "history.json").write_text(json.dumps(log.history, indent=1))
    if stop == "nan":
        kept = f"{ckpt} (step {saved[-1]}) is intact" if saved else "nothing was saved"
        raise FloatingPointError(f"loss or gradient became NaN/inf at step {step}; {kept}. Lower train.blr or "
                                 f"raise train.warmup_steps")
    if stop == "time":
        say("train", f"time budget of {t.max_minutes} min reached at step {step}")
    return TrainResult(ckpt, step, seconds, log.history, sorted(online.points.values(), key=lambda p: p["step"])
                       if online else [])


def _online(cfg: Config, out: Path, device):
    """The online evaluator of a new local run (its reference checked now, before any step)."""
    from djepa.eval.features import extractor_identities
    from djepa.eval.online import OnlineEval
    from djepa.eval.report import resolve_reference

    path = out / "online.jsonl"
    path.unlink(missing_ok=True)  # a new run: no points of an earlier one in this directory
    return OnlineEval(cfg, resolve_reference(cfg, extractor_identities(cfg)), device, path)
