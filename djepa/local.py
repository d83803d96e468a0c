"""Single-process training and sampling without Ray: the embedded demo and the tests use it.

`train_local` streams random batches of an in-memory dataset through `train_step`,
prints progress, stops at `train.steps` or `train.max_minutes`, and saves the
model and EMA weights.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from djepa.checkpoint import save_checkpoint
from djepa.config import Config
from djepa.data.sources import load_arrays
from djepa.engine import build_optimizer, checkpoint_blocks, compile_blocks, compile_enabled, train_step
from djepa.lock import hold
from djepa.models.djepa import build_model
from djepa.models.ema import ema_decay_at, make_ema
from djepa.models.tokenizer import build_tokenizer


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


def fmt_eta(seconds: float) -> str:
    m, s = divmod(int(max(seconds, 0)), 60)
    return f"{m}m{s:02d}s"


def train_local(cfg: Config, out_dir: str | Path | None = None) -> TrainResult:
    """Train cfg's model on an in-memory source; returns where the weights went and the loss history.
    The output directory is locked while training (djepa.lock): a second job into it is refused."""
    out = Path(out_dir or cfg.train.out_dir).resolve()
    with hold(out, "local training"):
        return _train_local(cfg, out)


def _train_local(cfg: Config, out: Path) -> TrainResult:
    t = cfg.train
    device = resolve_device(t.device)
    torch.manual_seed(t.seed)
    gen = torch.Generator().manual_seed(t.seed)

    images, labels = load_arrays(cfg.data.source)
    expect = (cfg.tokenizer.channels, cfg.tokenizer.image_size, cfg.tokenizer.image_size)
    if images.shape[1:] != expect:
        raise ValueError(f"data.source={cfg.data.source} gives images {images.shape[1:]}, but tokenizer expects "
                         f"(channels, image_size, image_size) = {expect}")
    if labels.max() >= cfg.model.num_classes:
        raise ValueError(f"data has label {labels.max()} but model.num_classes={cfg.model.num_classes}")
    images, labels = torch.from_numpy(images), torch.from_numpy(labels)
    tokenizer = build_tokenizer(cfg.tokenizer).to(device)

    model = build_model(cfg.model, cfg.tokenizer).to(device)
    ema = make_ema(model)
    if t.grad_checkpointing:  # after the EMA copy (it needs none), before compile (compiled with the checkpoint)
        checkpoint_blocks(model)
    compiled = compile_enabled(t, device)
    if compiled:
        compile_blocks(model, ema)
    opt = build_optimizer(model, t, fused=device.type == "cuda")  # one kernel per step on a GPU
    amp = torch.bfloat16 if device.type == "cuda" else None
    n = len(images)
    params = sum(p.numel() for p in model.parameters())
    print(f"[train] {cfg.name}: {n} images, {params:,} parameters, batch {t.batch_size}, "
          f"lr {t.lr:.2e}, up to {t.steps} steps" + (f" or {t.max_minutes} min" if t.max_minutes else "")
          + f", device {device}" + (", torch.compile on (the first steps compile)" if compiled else ""), flush=True)

    history, perm, pos = [], torch.randperm(n, generator=gen), 0
    start = last = time.perf_counter()
    step = last_step = 0
    while step < t.steps:
        if pos + t.batch_size > n:  # a new shuffle every epoch
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos: pos + t.batch_size]
        pos += t.batch_size
        x = images[idx]
        if cfg.data.hflip:
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        tokens = tokenizer.encode(x.to(device))
        decay = ema_decay_at(step, cfg.model.ema_decay, cfg.model.ema_warmup)  # one EMA update per step
        res = train_step(model, ema, opt, tokens, labels[idx].to(device), step, t, decay, amp)
        if not np.isfinite(res.loss):
            raise FloatingPointError(f"loss became {res.loss} at step {step}; lower train.blr or check the data")
        step += 1
        elapsed = time.perf_counter() - start
        if step % t.log_every == 0 or step == t.steps:
            rate = (step - last_step) * t.batch_size / max(time.perf_counter() - last, 1e-9)
            last, last_step = time.perf_counter(), step
            rec = {"step": step, "loss": res.loss, "loss_d": res.loss_d, "loss_p": res.loss_p,
                   "lr": res.lr, "grad_norm": res.grad_norm, "seconds": elapsed}
            history.append(rec)
            remaining = (t.steps - step) * elapsed / step
            if t.max_minutes:
                remaining = min(remaining, t.max_minutes * 60 - elapsed)
            print(f"[train] step {step:>6}/{t.steps}  loss {res.loss:.4f} (L_d {res.loss_d:.4f}, "
                  f"L_p {res.loss_p:.4f})  lr {res.lr:.2e}  |g| {res.grad_norm:.2f}  {rate:,.0f} img/s  "
                  f"ETA {fmt_eta(remaining)}", flush=True)
        if t.max_minutes and elapsed >= t.max_minutes * 60:
            print(f"[train] time budget of {t.max_minutes} min reached at step {step}", flush=True)
            break
    seconds = time.perf_counter() - start
    ckpt = save_checkpoint(out / "checkpoint", cfg, model.state_dict(), ema.state_dict(),
                           {"step": step, "ema_updates": step})
    (out / "history.json").write_text(json.dumps(history, indent=1))
    return TrainResult(ckpt, step, seconds, history)
