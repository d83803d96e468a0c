"""The Ray Train worker: read the context, build, restore, make the components, run the one loop.

Every rank runs `train_worker`; the training itself is `djepa.train_loop.train_loop`, the same
function the local demo runs. What is Ray's lives here and is passed in: the dataset shard as the
loop's feed, torch.distributed's all-reduce for the stop flags and the logged means, the checkpointer
that reports through `ray.train.report`, the MLflow tracker behind rank 0's log, and the sample-grid
previewer.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from djepa.checkpoint import load_optimizer_state, load_tensors, save_checkpoint, verify_checkpoint
from djepa.conditions import Conditioner, is_text
from djepa.config import Config, validate
from djepa.console import say
from djepa.data.encoded import batch_tokens, collate, epochs_per_pass
from djepa.engine import build_optimizer, lr_at, weight_decay_at
from djepa.eval.online import OnlineEval
from djepa.platform.parallel import full_state, gathered_ema, load_full_state, shard
from djepa.platform.tracking import Tracker
from djepa.samples import write_preview
from djepa.train_loop import Feed, Parts, Reduce, TrainLog, build_for_training, new_state, train_loop


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
            say("train", f"skipping checkpoint {path}: {err}")
            continue
        if s > best_step:
            best, best_step = path, s
    return best


class AllReduce(Reduce):
    """torch.distributed across the worker group, in place."""

    def max(self, x: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(x, op=dist.ReduceOp.MAX)
        return x

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(x, op=dist.ReduceOp.AVG)
        return x


class Checkpointer:
    """Every rank reports (`ray.train.report` is a barrier); rank 0 attaches the checkpoint directory.
    `last` is the step of the last checkpoint (-1: none), for the message after a NaN stop."""

    def __init__(self, cfg: Config, model, ema, opt, rank: int, last: int):
        self.cfg, self.model, self.ema, self.opt, self.rank, self.last = cfg, model, ema, opt, rank, last

    def __call__(self, state: dict, metrics: dict) -> None:
        step, t = state["step"], self.cfg.train
        name = f"checkpoint_{step:07d}"
        model_sd, ema_sd, optim_sd = full_state(self.model, self.ema, self.opt)  # a collective under FSDP
        self.last = step
        if self.rank != 0:
            ray.train.report(metrics, checkpoint=None, checkpoint_dir_name=name)
            return
        scheduler = {"kind": t.lr_schedule, "base_lr": t.lr, "warmup_steps": t.warmup_steps, "steps": t.steps,
                     "lr": lr_at(step, t), "weight_decay": weight_decay_at(step, t), "next_step": step}
        with tempfile.TemporaryDirectory(prefix="djepa-ckpt-") as tmp:
            path = save_checkpoint(Path(tmp) / name, self.cfg, model_sd, ema_sd, {**state, "parallel": t.parallel},
                                   optim_state=optim_sd, scheduler=scheduler)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(path)),
                             checkpoint_dir_name=name)


class Previewer:
    """A sample grid of the EMA to previews/step_XXXXXXX.png and MLflow's samples/. Called on every rank:
    under FSDP gathering the EMA is a collective; only rank 0 (given the gathered EMA) draws."""

    def __init__(self, cfg: Config, ema, run_dir: Path, device, tracker: Tracker):
        self.cfg, self.ema, self.run_dir, self.device, self.tracker = cfg, ema, run_dir, device, tracker
        self.tokenizer = None

    def __call__(self, step: int) -> None:
        self.draw(step, gathered_ema(self.ema, self.cfg))

    def draw(self, step: int, ema) -> None:
        """Rank 0 with the gathered EMA draws; the others (given None) return."""
        if ema is None:
            return
        if self.tokenizer is None:  # a VAE decoder loads once, and only on rank 0
            from djepa.models.tokenizer import build_tokenizer

            self.tokenizer = build_tokenizer(self.cfg.tokenizer).to(self.device)
        t = time.perf_counter()
        files = write_preview(ema, self.cfg, self.run_dir / "previews", self.device, self.tokenizer,
                              f"step_{step:07d}", npz=False)
        for path in sorted({p for k, p in files.items() if k != "main"}):  # clips: the GIF, MP4 and strip
            self.tracker.log_artifact(path, "samples")
        say("train", f"sample grid at step {step}: {files['main']} ({time.perf_counter() - t:.1f}s)")


class OnlinePoints:
    """Online evaluation (train.eval_every): called on every rank, as gathering the EMA is a collective under
    FSDP; rank 0 (given `online`) scores the gathered EMA. The other ranks wait at the next step's all-reduce,
    so a point costs its sampling time once per eval_every steps (printed with each point)."""

    def __init__(self, cfg: Config, ema, online: OnlineEval | None):
        self.cfg, self.ema, self.online = cfg, ema, online

    def __call__(self, step: int) -> None:
        ema = gathered_ema(self.ema, self.cfg)
        if self.online is not None and ema is not None:
            self.online(step, ema)


def online_points(cfg: Config, config: dict, ema, run_dir: Path, device, tracker: Tracker, rank: int):
    """The online evaluator of this rank, or None without train.eval_every; the reference was checked by the
    driver (config["online_reference"]) and is only read here."""
    if not cfg.train.eval_every:
        return None
    online = None
    if rank == 0:
        from djepa.eval.features import dims
        from djepa.eval.reference import load_reference

        names = [k for k in cfg.eval.features if k != "clip"]  # CLIP has no reference statistics
        ref = load_reference(config["online_reference"], names, {k: dims(k, cfg.data.source) for k in names})
        online = OnlineEval(cfg, ref, device, run_dir / "online.jsonl", tracker.log_metrics)
    return OnlinePoints(cfg, ema, online)


def restore(ckpt: str, model, ema, opt) -> dict:
    """Load a checkpoint into the (possibly sharded) model, EMA and optimizer; -> the loop's state."""
    saved = verify_checkpoint(ckpt, content=False)  # the driver checked the model and train.parallel against it
    # checkpoints from before the EMA warm-up have no ema_updates: their EMA had one update per step
    state = {k: saved[k] for k in ("step", "pass", "batch_in_pass")} | {"ema_updates": saved.get("ema_updates",
                                                                                                    saved["step"])}
    model_sd, ema_sd = load_tensors(ckpt, "cpu")
    load_full_state(model, ema, opt, model_sd, ema_sd, load_optimizer_state(ckpt))
    return state


def shard_feed(cfg: Config, rows: int, world: int, device) -> Feed:
    """This rank's share of the Ray dataset "train", one pass per iter_torch_batches."""
    per_worker = cfg.train.batch_size // world
    steps_per_pass = (rows * epochs_per_pass(cfg, rows) // world) // per_worker
    if steps_per_pass == 0:
        raise ValueError(f"{rows} rows cannot fill one batch of {per_worker} on each of {world} workers; "
                         f"lower train.batch_size")
    stream, conditioner = ray.train.get_dataset_shard("train"), Conditioner(cfg, device)  # one text encoder
    text_kw = {"collate_fn": collate} if is_text(cfg) else {}  # captions stay strings
    return Feed(lambda: stream.iter_torch_batches(batch_size=per_worker, drop_last=True,
                                                  local_shuffle_buffer_size=cfg.data.shuffle_buffer or None, **text_kw),
                lambda batch: batch_tokens(batch, cfg, None, device, conditioner), steps_per_pass, rows)


def train_worker(config: dict) -> None:
    cfg: Config = validate(config["cfg"])
    run_dir = Path(config["run_dir"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if cfg.train.threads and device.type == "cpu":
        torch.set_num_threads(cfg.train.threads)

    model, ema, compiled = build_for_training(cfg, device)
    if compiled and rank == 0:
        say("train", f"torch.compile: {compiled} blocks (train.compile={cfg.train.compile}); the first steps compile")
    net, ema = shard(model, ema, cfg.train.parallel, world)  # the optimizer must see the sharded parameters
    opt = build_optimizer(model, cfg.train, fused=device.type == "cuda")
    ckpt = pick_checkpoint(getattr(ray.train.get_checkpoint(), "path", None), config.get("resume_from"))
    state = restore(ckpt, model, ema, opt) if ckpt else new_state()

    tracker = Tracker(config.get("tracking_uri"), config.get("run_id"), config.get("experiment_id")) \
        if rank == 0 else Tracker(None, None)
    log = TrainLog(cfg, state["step"], run_dir / "metrics.jsonl", tracker.log_metrics) if rank == 0 else None
    if ckpt and log:
        log.event("resumed", step=state["step"], checkpoint=str(ckpt))
    save = Checkpointer(cfg, model, ema, opt, rank, state["step"] if ckpt else -1)
    preview = Previewer(cfg, ema, run_dir, device, tracker)
    evaluate = online_points(cfg, config, ema, run_dir, device, tracker, rank)
    parts = Parts(log, save, preview, evaluate, AllReduce() if world > 1 else Reduce())
    stop, step = train_loop(cfg, net, ema, opt, state, shard_feed(cfg, config["rows"], world, device), parts,
                            device=device, rank=rank, world=world, run_dir=run_dir, on_step=config.get("on_step"))
    final_ema = gathered_ema(ema, cfg) if stop != "nan" else None  # a collective under FSDP
    if rank == 0:
        _finish(cfg, final_ema, run_dir, step, stop, save.last, preview)


def _finish(cfg, ema, run_dir: Path, step: int, stop: str | None, last_saved: int, preview: Previewer) -> None:
    """Rank 0: the last sample grid, and status.json for the driver's summary."""
    if stop == "nan":
        msg = (f"loss or gradient became NaN/inf at step {step}; stopped without saving. The last good "
               f"checkpoint (step {last_saved}) is intact: lower train.blr or raise train.warmup_steps, then "
               f"continue with --resume")
    else:
        if not (cfg.train.preview_every and step % cfg.train.preview_every == 0):  # not drawn just now
            preview.draw(step, ema)
        msg = f"time budget of {cfg.train.max_minutes} min reached" if stop == "time" else "finished"
    status = {"status": stop or "finished", "step": step, "message": msg, "pid": os.getpid()}
    (run_dir / "status.json").write_text(json.dumps(status, indent=1))
    say("train", msg)
