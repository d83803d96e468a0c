"""The Ray Train worker loop: stream batches, call `train_step`, and hand off to the components.

Every rank runs `train_worker`. The loop itself is short; what happens around a step
lives in small pieces it calls: `Progress` (rank 0 prints and tracks), `save_and_report`
(checkpoints through `ray.train.report`) and `preview` (an EMA sample grid). Randomness
is re-seeded every step from (seed, rank, step), so a resumed run draws the same masks,
noise and flips as an uninterrupted one would have at the same step.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from djepa.checkpoint import load_optimizer_state, load_tensors, save_checkpoint, verify_checkpoint
from djepa.config import Config, validate
from djepa.data.encoded import batch_tokens, epochs_per_pass
from djepa.engine import (build_optimizer, checkpoint_blocks, compile_blocks, compile_enabled, lr_at, train_step,
                          weight_decay_at)
from djepa.local import fmt_eta
from djepa.models.djepa import build_model
from djepa.models.ema import ema_decay_at, make_ema
from djepa.platform.parallel import full_state, gathered_ema, load_full_state, shard
from djepa.platform.tracking import Tracker
from djepa.samples import write_preview


def say(msg: str) -> None:
    """Ray Train V2 patches print() to log *and* echo (every line twice); write to stdout directly."""
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


def step_seed(seed: int, rank: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


def pick_checkpoint(ray_ckpt: str | None, resume_from: str | None) -> str | None:
    """After a worker restart Ray hands back the latest reported checkpoint; a first start may be given
    one to continue from. The later step wins; a damaged one is skipped with a message."""
    best, best_step = None, -1
    for path in (ray_ckpt, resume_from):
        if not path:
            continue
        try:
            s = verify_checkpoint(path, content=False)["step"]  # sizes; the driver checked the content
        except Exception as err:
            say(f"[train] skipping checkpoint {path}: {err}")
            continue
        if s > best_step:
            best, best_step = path, s
    return best


class Progress:
    """Rank 0: a progress line every log_every steps, metrics to MLflow and metrics.jsonl."""

    def __init__(self, cfg: Config, run_dir: Path, tracker: Tracker, start_step: int, world: int):
        self.cfg, self.tracker, self.world = cfg, tracker, world
        self.jsonl = run_dir / "metrics.jsonl"
        self.t0 = self.last = time.perf_counter()
        self.start_step = self.last_step = start_step

    def event(self, name: str, **info) -> None:
        """A line in metrics.jsonl and on the console for things that happen once (a resume)."""
        say(f"[train] {name}: " + ", ".join(f"{k} {v}" for k, v in info.items()))
        with self.jsonl.open("a") as f:
            f.write(json.dumps({"event": name, **info}) + "\n")

    def log(self, step: int, epoch: float, means: dict[str, float], lr: float, grad_norm: float) -> dict:
        t, now = self.cfg.train, time.perf_counter()
        rate = (step - self.last_step) * t.batch_size / max(now - self.last, 1e-9)
        self.last, self.last_step = now, step
        elapsed = now - self.t0
        remaining = (t.steps - step) * elapsed / max(step - self.start_step, 1)
        if t.max_minutes:
            remaining = min(remaining, t.max_minutes * 60 - elapsed)
        rec = {**means, "lr": lr, "grad_norm": grad_norm, "img_per_s": rate, "epoch": epoch}
        say(f"[train] step {step:>7}/{t.steps} ep {epoch:.1f}  loss {means['loss']:.4f} (L_d {means['loss_d']:.4f}, "
              f"L_p {means['loss_p']:.4f})  lr {lr:.2e}  |g| {grad_norm:.2f}  {rate:,.0f} img/s  "
              f"ETA {fmt_eta(remaining)}")
        with self.jsonl.open("a") as f:
            f.write(json.dumps({"step": step, **rec}) + "\n")
        self.tracker.log_metrics(rec, step)
        return rec


def save_and_report(cfg: Config, model, ema, opt, state: dict, metrics: dict, rank: int) -> None:
    """Every rank reports (it is a barrier); rank 0 attaches the checkpoint directory."""
    step = state["step"]
    name = f"checkpoint_{step:07d}"
    model_sd, ema_sd, optim_sd = full_state(model, ema, opt)  # a collective under FSDP
    if rank != 0:
        ray.train.report(metrics, checkpoint=None, checkpoint_dir_name=name)
        return
    t = cfg.train
    scheduler = {"kind": t.lr_schedule, "base_lr": t.lr, "warmup_steps": t.warmup_steps, "steps": t.steps,
                 "lr": lr_at(step, t), "weight_decay": weight_decay_at(step, t), "next_step": step}
    with tempfile.TemporaryDirectory(prefix="djepa-ckpt-") as tmp:
        path = save_checkpoint(Path(tmp) / name, cfg, model_sd, ema_sd, {**state, "parallel": t.parallel},
                               optim_state=optim_sd, scheduler=scheduler)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(path)),
                         checkpoint_dir_name=name)


def preview(cfg: Config, ema, run_dir: Path, step: int, device, tracker: Tracker, cache: dict) -> None:
    """Rank 0 (the one given an EMA): a sample grid to previews/step_XXXXXXX.png and MLflow's samples/."""
    from djepa.models.tokenizer import build_tokenizer

    if ema is None:
        return

    if "tokenizer" not in cache:  # a VAE decoder loads once, and only on rank 0
        cache["tokenizer"] = build_tokenizer(cfg.tokenizer).to(device)
    t = time.perf_counter()
    png = write_preview(ema, cfg, run_dir / "previews", device, cache["tokenizer"], f"step_{step:07d}",
                        npz=False)["png"]
    tracker.log_artifact(png, "samples")
    say(f"[train] sample grid at step {step}: {png} ({time.perf_counter() - t:.1f}s)")


def _fault(spec: str | None, step: int, rank: int, world: int, run_dir: Path) -> str | None:
    """Test-only hook (DJEPA_FAULT=fail@K or nan@K): fail once on the last rank, or poison step K."""
    if not spec:
        return None
    kind, at = spec.split("@")
    if int(at) != step:
        return None
    marker = run_dir / f".fault-{kind}-{at}"
    if kind == "fail" and rank == world - 1 and not marker.exists():
        marker.touch()
        raise RuntimeError(f"injected failure at step {step} (DJEPA_FAULT={spec})")
    return kind


def train_worker(config: dict) -> None:
    cfg: Config = validate(config["cfg"])
    t, run_dir = cfg.train, Path(config["run_dir"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    amp = torch.bfloat16 if device.type == "cuda" else None

    torch.manual_seed(t.seed)  # identical initial weights on every rank
    model = build_model(cfg.model, cfg.tokenizer).to(device)
    ema = make_ema(model)
    if t.grad_checkpointing:  # after the EMA copy (it needs none), before compile and sharding (torchtitan's order)
        checkpoint_blocks(model)
    if compile_enabled(t, device):  # before sharding, as torchtitan orders it
        n = compile_blocks(model, ema)
        if rank == 0:
            say(f"[train] torch.compile: {n} blocks (train.compile={t.compile}); the first steps compile")
    net, ema = shard(model, ema, t.parallel, world)  # the optimizer must see the sharded parameters
    opt = build_optimizer(model, t, fused=device.type == "cuda")
    # data position (pass of the stream, batches into it) and the EMA's update count (its decay warm-up)
    state = {"step": 0, "pass": 0, "batch_in_pass": 0, "ema_updates": 0}
    ckpt = pick_checkpoint(getattr(ray.train.get_checkpoint(), "path", None), config.get("resume_from"))
    if ckpt:
        saved = verify_checkpoint(ckpt, content=False)  # the driver checked the model and train.parallel against it
        # checkpoints from before the EMA warm-up have no ema_updates: their EMA had one update per step
        state = {k: saved[k] for k in ("step", "pass", "batch_in_pass")} | \
            {"ema_updates": saved.get("ema_updates", saved["step"])}
        model_sd, ema_sd = load_tensors(ckpt, "cpu")
        load_full_state(model, ema, opt, model_sd, ema_sd, load_optimizer_state(ckpt))

    tracker = Tracker(config.get("tracking_uri"), config.get("run_id"), config.get("experiment_id")) \
        if rank == 0 else Tracker(None, None)
    progress = Progress(cfg, run_dir, tracker, state["step"], world) if rank == 0 else None
    if ckpt and progress:
        progress.event("resumed", step=state["step"], checkpoint=str(ckpt))
    rows, per_worker = config["rows"], t.batch_size // world
    steps_per_pass = (rows * epochs_per_pass(cfg, rows) // world) // per_worker
    if steps_per_pass == 0:
        raise ValueError(f"{rows} rows cannot fill one batch of {per_worker} on each of {world} workers; "
                         f"lower train.batch_size")
    stream = ray.train.get_dataset_shard("train")
    step, cache, stop, start, late = state["step"], {}, None, time.perf_counter(), None
    last_saved = step if ckpt else -1
    while step < t.steps and stop is None:
        for batch in stream.iter_torch_batches(batch_size=per_worker, drop_last=True,
                                              local_shuffle_buffer_size=cfg.data.shuffle_buffer or None):
            torch.manual_seed(step_seed(t.seed, rank, step))
            tokens, labels = batch_tokens(batch, cfg, None, device)
            if _fault(config.get("fault"), step, rank, world, run_dir) == "nan":
                tokens = tokens * float("nan")
            decay = ema_decay_at(state["ema_updates"], cfg.model.ema_decay, cfg.model.ema_warmup)
            res = train_step(net, ema, opt, tokens, labels, step, t, decay, amp)
            step, state["ema_updates"] = step + 1, state["ema_updates"] + 1
            out_of_time = bool(t.max_minutes) and time.perf_counter() - start >= t.max_minutes * 60
            # [non-finite loss or grad norm, out of time], built on the device; one small all-reduce keeps
            # every rank's decision to stop identical (no rank left at a barrier)
            flags = torch.cat([(~torch.isfinite(res.values[[0, 3]])).any().float().reshape(1),
                               torch.full((1,), float(out_of_time), device=device)])
            if world > 1:
                dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            # The flags are read one step late, so the CPU queues step k+1 while the GPU finishes step k.
            # A step that logs, saves or draws reads its own too: nothing non-finite is ever saved.
            due = (step % t.log_every == 0 or step == t.steps or step % t.checkpoint_every == 0
                   or bool(t.preview_every and step % t.preview_every == 0))
            checks = [late] if late else []
            late = (step, flags)
            if due:
                checks, late = checks + [late], None
            for at, f in checks:
                bad, over = f.tolist()
                if bad:
                    stop, step = "nan", at  # the step that went non-finite; its state is never saved
                    break
                if over:
                    stop = "time"
            if stop == "nan":
                break
            epoch = step * t.batch_size / rows
            if step % t.log_every == 0 or step == t.steps or stop:
                means = torch.tensor([res.loss, res.loss_d, res.loss_p], device=device)
                if world > 1:
                    dist.all_reduce(means, op=dist.ReduceOp.AVG)
                metrics = dict(zip(("loss", "loss_d", "loss_p"), means.tolist()))
                if progress:
                    progress.log(step, epoch, metrics, res.lr, res.grad_norm)
            if t.preview_every and step % t.preview_every == 0:
                preview(cfg, gathered_ema(ema, cfg), run_dir, step, device, tracker, cache)
            state["step"], state["batch_in_pass"] = step, state["batch_in_pass"] + 1
            pass_done = state["batch_in_pass"] >= steps_per_pass
            if pass_done:
                state["pass"], state["batch_in_pass"] = state["pass"] + 1, 0
            if step % t.checkpoint_every == 0 or step == t.steps or stop:
                save_and_report(cfg, model, ema, opt, {**state, "epoch": epoch}, {"step": step, "loss": res.loss},
                                rank)
                last_saved = step
            if pass_done or step >= t.steps or stop:
                break
        else:  # the shard ran dry before steps_per_pass (uneven files): the pass is over
            state["pass"], state["batch_in_pass"] = state["pass"] + 1, 0
    final_ema = gathered_ema(ema, cfg) if stop != "nan" else None  # a collective under FSDP
    if rank == 0:
        _finish(cfg, final_ema, run_dir, step, stop, last_saved, device, tracker, cache)


def _finish(cfg, ema, run_dir: Path, step: int, stop: str | None, last_saved: int, device, tracker, cache) -> None:
    """Rank 0: the last sample grid, and status.json for the driver's summary."""
    if stop == "nan":
        msg = (f"loss or gradient became NaN/inf at step {step}; stopped without saving. The last good "
               f"checkpoint (step {last_saved}) is intact: lower train.blr or raise train.warmup_steps, then "
               f"continue with --resume")
    else:
        if not (cfg.train.preview_every and step % cfg.train.preview_every == 0):  # not drawn just now
            preview(cfg, ema, run_dir, step, device, tracker, cache)
        msg = f"time budget of {cfg.train.max_minutes} min reached" if stop == "time" else "finished"
    status = {"status": stop or "finished", "step": step, "message": msg, "pid": os.getpid()}
    (run_dir / "status.json").write_text(json.dumps(status, indent=1))
    say(f"[train] {msg}")
