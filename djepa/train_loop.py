"""The one training loop, whoever launches it: batches -> `train_step` -> stop flags -> the components.

`train_loop` is all of training after set-up. Its data come from a `Feed` (one pass over the data
per call; the step's tokens drawn after the step's reseed) and each step it asks its `Parts`: a
`TrainLog` (rank 0's progress line and metric sinks), a checkpointer and a previewer. The local demo
(djepa/local.py) feeds it an in-memory iterator; the Ray Train worker (djepa/platform/loop.py) feeds
it its dataset shard and passes in its all-reduce and its `ray.train.report` checkpointer. Nothing
here imports Ray, MLflow or the platform.

Randomness is re-seeded every step from (seed, rank, step), so a resumed run draws the same masks,
noise and flips as an uninterrupted one would have at the same step.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from djepa.config import Config
from djepa.console import eta, fmt_eta, say
from djepa.engine import checkpoint_blocks, compile_blocks, compile_enabled, train_step
from djepa.eval.online import due as online_due
from djepa.models.djepa import DJEPA, build_model
from djepa.models.ema import ema_decay_at, make_ema


def step_seed(seed: int, rank: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


def new_state() -> dict:
    """The loop's position: step, data position (pass of the stream, batches into it) and the EMA's
    update count (its decay warm-up). Saved in every checkpoint; a resume hands it back."""
    return {"step": 0, "pass": 0, "batch_in_pass": 0, "ema_updates": 0}


def build_for_training(cfg: Config, device) -> tuple[DJEPA, DJEPA, int]:
    """The seeded model, its EMA copy, activation checkpointing and torch.compile as train.* asks.
    -> (model, ema, number of compiled blocks). Sharding and the optimizer come after (torchtitan's order)."""
    t = cfg.train
    torch.manual_seed(t.seed)  # identical initial weights on every rank
    model = build_model(cfg.model, cfg.tokenizer).to(device)
    ema = make_ema(model)
    if t.grad_checkpointing:  # after the EMA copy (it needs none), before compile (compiled with the checkpoint)
        checkpoint_blocks(model)
    compiled = compile_blocks(model, ema) if compile_enabled(t, device) else 0
    return model, ema, compiled


class TrainLog:
    """Rank 0: a progress line every log_every steps; each record to `history`, metrics.jsonl (if given)
    and a metric sink such as MLflow's `log_metrics(record, step)` (if given)."""

    def __init__(self, cfg: Config, start_step: int, jsonl: Path | None = None,
                 sink: Callable[[dict, int], None] | None = None):
        self.cfg, self.jsonl, self.sink = cfg, jsonl, sink
        self.t0 = self.last = time.perf_counter()
        self.start_step = self.last_step = start_step
        self.history: list[dict] = []

    def event(self, name: str, **info) -> None:
        """A line in metrics.jsonl and on the console for things that happen once (a resume)."""
        say("train", f"{name}: " + ", ".join(f"{k} {v}" for k, v in info.items()))
        self._write({"event": name, **info})

    def log(self, step: int, epoch: float, means: dict[str, float], lr: float, grad_norm: float) -> dict:
        t, now = self.cfg.train, time.perf_counter()
        rate = (step - self.last_step) * t.batch_size / max(now - self.last, 1e-9)
        self.last, self.last_step = now, step
        left = eta(step - self.start_step, t.steps - self.start_step, now - self.t0,
                   t.max_minutes * 60 if t.max_minutes else None)
        rec = {**means, "lr": lr, "grad_norm": grad_norm, "img_per_s": rate, "epoch": epoch}
        say("train", f"step {step:>7}/{t.steps} ep {epoch:.1f}  loss {means['loss']:.4f} (L_d {means['loss_d']:.4f}, "
                     f"L_p {means['loss_p']:.4f})  lr {lr:.2e}  |g| {grad_norm:.2f}  {rate:,.0f} img/s  "
                     f"ETA {fmt_eta(left)}")
        self.history.append({"step": step, **rec})
        self._write({"step": step, **rec})
        if self.sink:
            self.sink(rec, step)
        return rec

    def _write(self, record: dict) -> None:
        if self.jsonl:
            with self.jsonl.open("a") as f:
                f.write(json.dumps(record) + "\n")


class Reduce:
    """Across ranks, in place: single process, nothing to do. The Ray worker passes torch.distributed's."""

    def max(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        return x


@dataclass
class Feed:
    """Where the batches come from. `passes()` returns an iterable over one pass of the data (this rank's
    share); `to_tokens(batch)` runs after the step's reseed, so its draws (flips, posterior samples) are
    tied to the step. A pass ends after `steps_per_pass` batches or when the iterable runs dry."""
    passes: Callable[[], Iterable]
    to_tokens: Callable[[object], tuple[torch.Tensor, torch.Tensor]]
    steps_per_pass: int
    rows: int  # rows per epoch, for the epoch count in the progress line


@dataclass
class Parts:
    """What the loop asks each step. `save(state, metrics)` at checkpoint steps and at the end,
    `preview(step)` every train.preview_every steps and `evaluate(step)` (online evaluation, djepa/eval/online.py)
    right after the save of an evaluation step, run on every rank (they may be collectives)."""
    log: TrainLog | None = None  # rank 0's; None on the others
    save: Callable[[dict, dict], None] | None = None
    preview: Callable[[int], None] | None = None
    evaluate: Callable[[int], None] | None = None
    reduce: Reduce = field(default_factory=Reduce)


class StopFlags:
    """[non-finite loss or grad norm, out of time] per step, built on the device and reduced across ranks:
    every rank takes the same decision to stop (none is left waiting at a barrier). They are read one
    step late, so the CPU queues step k+1 while the device still runs step k; a step that logs, saves or
    draws reads its own too, and so does the step a time stop ends on: nothing non-finite is ever saved."""

    def __init__(self, reduce: Reduce):
        self.reduce, self.pending = reduce, []

    def check(self, step: int, res, out_of_time: bool, due: bool) -> tuple[str | None, int]:
        """-> (None, "time" or "nan", the step it concerns)."""
        flags = torch.cat([(~torch.isfinite(res.values[[0, 3]])).any().float().reshape(1),
                           torch.full((1,), float(out_of_time), device=res.values.device)])
        self.pending.append((step, self.reduce.max(flags)))
        ready = self.pending if due else self.pending[:-1]
        stop, at = _read(ready, step)
        if stop == "time" and not due:  # the run ends on this step and saves it: read its own flags too
            ready = self.pending
            stop, at = _read(ready, step)
        self.pending = self.pending[len(ready):]
        return stop, at


def _read(flags: list[tuple[int, torch.Tensor]], step: int) -> tuple[str | None, int]:
    stop = None
    for at, f in flags:
        bad, over = f.tolist()
        if bad:
            return "nan", at  # the step that went non-finite; its state is never saved
        stop = stop or ("time" if over else None)
    return stop, step


def train_loop(cfg: Config, net, ema: DJEPA, opt: torch.optim.Optimizer, state: dict, feed: Feed, parts: Parts, *,
               device, rank: int = 0, world: int = 1, run_dir: Path | None = None,
               on_step: Callable | None = None) -> tuple[str | None, int]:
    """Train from `state` (new_state() or a checkpoint's, updated in place) until train.steps, the time budget
    or a non-finite step. -> (stop: None, "time" or "nan"; the last step, or for "nan" the step that went
    non-finite). on_step(step, rank, world, tokens, run_dir) -> tokens is a test hook."""
    t = cfg.train
    amp = torch.bfloat16 if torch.device(device).type == "cuda" else None
    flags, step, stop, start = StopFlags(parts.reduce), state["step"], None, time.perf_counter()
    if parts.evaluate and online_due(cfg, step):  # resumed: the point of the weights it starts from, if missing
        parts.evaluate(step)
    while step < t.steps and stop is None:
        for batch in feed.passes():
            torch.manual_seed(step_seed(t.seed, rank, step))
            tokens, labels = feed.to_tokens(batch)
            if on_step:
                tokens = on_step(step, rank, world, tokens, run_dir)
            decay = ema_decay_at(state["ema_updates"], cfg.model.ema_decay, cfg.model.ema_warmup)
            res = train_step(net, ema, opt, tokens, labels, step, t, decay, amp)
            step, state["ema_updates"] = step + 1, state["ema_updates"] + 1
            out_of_time = bool(t.max_minutes) and time.perf_counter() - start >= t.max_minutes * 60
            logs, evals = step % t.log_every == 0 or step == t.steps, online_due(cfg, step)
            saves = step % t.checkpoint_every == 0 or evals  # an online point is only made of saved weights
            draws = bool(t.preview_every and step % t.preview_every == 0)
            stop, at = flags.check(step, res, out_of_time, due=logs or saves or draws)
            if stop == "nan":
                return stop, at
            epoch = step * t.batch_size / feed.rows
            if logs or stop:
                means = parts.reduce.mean(res.values[:3].clone()).tolist()
                if parts.log:
                    parts.log.log(step, epoch, dict(zip(("loss", "loss_d", "loss_p"), means)), res.lr, res.grad_norm)
            if draws and parts.preview:
                parts.preview(step)
            pass_done = _advance(state, step, feed.steps_per_pass)
            if (saves or step == t.steps or stop) and parts.save:
                parts.save({**state, "epoch": epoch}, {"step": step, "loss": res.loss})
            if parts.evaluate and (evals or (stop and t.eval_every)):  # and the step a time budget ends on
                parts.evaluate(step)
            if pass_done or step >= t.steps or stop:
                break
        else:  # the pass ran dry before steps_per_pass (uneven files): it is over
            state["pass"], state["batch_in_pass"] = state["pass"] + 1, 0
    return stop, step


def _advance(state: dict, step: int, steps_per_pass: int) -> bool:
    """Moves the data position one batch on; -> whether that ended the pass."""
    state["step"], state["batch_in_pass"] = step, state["batch_in_pass"] + 1
    if state["batch_in_pass"] < steps_per_pass:
        return False
    state["pass"], state["batch_in_pass"] = state["pass"] + 1, 0
    return True
