"""The training recipe of the paper, free of Ray: AdamW groups, lr / weight-decay schedules, one step.

The Ray Train loop and the local demo both call `train_step`; everything else
(logging, checkpoints, previews) is the caller's business.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property, partial

import torch
import torch.nn as nn
from torch.distributed.tensor import DTensor
from torch.utils.checkpoint import checkpoint

from djepa.config import TrainConfig
from djepa.models.djepa import DJEPA
from djepa.models.ema import ema_update

# No weight decay on the projector u, the denoiser eps, norms, biases and embeddings (paper app. B).
_NO_DECAY_MODULES = ("projector", "token_loss")


def param_groups(model: DJEPA, rule: str = "djepa") -> list[dict]:
    """rule djepa: Linear weights outside the projector and denoiser decay. rule mar (MAR's
    add_weight_decay): every parameter of 2+ dims outside them, embeddings included."""
    decay, no_decay = [], []
    if rule == "mar":
        decayed_ids = {id(p) for name, p in model.named_parameters()  # token_loss_pos is MAR's diffusion_pos_embed:
                       if p.dim() >= 2 and name.split(".")[0] not in _NO_DECAY_MODULES}  # decayed
    else:
        decayed_ids = {
            id(m.weight)
            for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and not name.startswith(_NO_DECAY_MODULES)
        }
    for p in model.parameters():
        if p.requires_grad:
            (decay if id(p) in decayed_ids else no_decay).append(p)
    return [{"params": decay, "decay": True}, {"params": no_decay, "decay": False, "weight_decay": 0.0}]


def build_optimizer(model: DJEPA, cfg: TrainConfig, fused: bool | None = None) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, cfg.no_decay), lr=cfg.lr, betas=cfg.betas, eps=cfg.adam_eps,
                             weight_decay=cfg.weight_decay_start, fused=fused)


def compile_enabled(cfg: TrainConfig, device: torch.device) -> bool:
    return cfg.compile is True or (cfg.compile == "auto" and torch.device(device).type == "cuda")


def compile_blocks(model: DJEPA, ema: DJEPA) -> int:
    """torch.compile, in place, every ViT block of both copies and the denoiser blocks of the trained one.

    Per block, as torchtitan does: every block of a kind shares one compiled graph, and the eager parts
    (mask draw, gathers, EMA lerp) cause no graph breaks. A bf16 step of D-JEPA-B issues ~5,000 aten
    ops, which is what bounds it on a GPU; fused blocks cut that. `Module.compile` keeps the state-dict
    keys. The EMA's denoiser stays eager: only sampling runs it, under CUDA graphs. Returns the count."""
    blocks = [*model.encoder_blocks, *model.predictor_blocks, *model.token_loss.net.blocks,
              *ema.encoder_blocks, *ema.predictor_blocks]
    for blk in blocks:
        blk.compile()
    return len(blocks)


def checkpoint_blocks(model: DJEPA) -> int:
    """Activation checkpointing, in place, of every encoder, predictor and denoiser block of the trained model.

    From outside the model maths: each block's `forward` becomes torch.utils.checkpoint of itself, so the
    module tree, the state-dict keys and FSDP2's per-block hooks stay as they are (the recompute runs inside
    the block's `__call__`, after FSDP has gathered its parameters). The RNG state is saved and replayed, so
    dropout draws the same masks in the recompute. The EMA copy runs without gradients: nothing to save.
    Call before `compile_blocks` (torchtitan's order): the compiled block then contains the checkpoint."""
    blocks = [*model.encoder_blocks, *model.predictor_blocks, *model.token_loss.net.blocks]
    for blk in blocks:
        blk.forward = partial(checkpoint, blk.forward, use_reentrant=False)
    return len(blocks)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Per-step linear warm-up to lr, then constant or cosine down to min_lr."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(progress, 1.0)))


def weight_decay_at(step: int, cfg: TrainConfig) -> float:
    """Linear from weight_decay_start to weight_decay_end over the run."""
    frac = min(step / max(1, cfg.steps - 1), 1.0)
    return cfg.weight_decay_start + frac * (cfg.weight_decay_end - cfg.weight_decay_start)


@dataclass
class StepResult:
    """The step's losses and gradient norm stay on the device until read. Reading any of `loss`,
    `loss_d`, `loss_p` or `grad_norm` copies all four to the host at once (one sync), so a loop that
    reads them only on log steps lets the CPU queue the next step while the GPU still runs this one."""
    values: torch.Tensor  # (4,) float32 on the device: loss, loss_d, loss_p, grad_norm
    lr: float

    @cached_property
    def host(self) -> list[float]:
        return self.values.tolist()

    loss = property(lambda self: self.host[0])
    loss_d = property(lambda self: self.host[1])
    loss_p = property(lambda self: self.host[2])  # 0.0 without a projector (the MAR baseline)
    grad_norm = property(lambda self: self.host[3])


def train_step(model: DJEPA, ema: DJEPA, opt: torch.optim.Optimizer, tokens, labels, step: int,
               cfg: TrainConfig, ema_decay: float, autocast_dtype: torch.dtype | None = None) -> StepResult:
    """One optimisation step: set schedules, forward both losses, backward, clip, AdamW, EMA."""
    lr, wd = lr_at(step, cfg), weight_decay_at(step, cfg)
    for group in opt.param_groups:
        group["lr"] = lr
        if group.get("decay"):
            group["weight_decay"] = wd
    model.train()
    device_type = tokens.device.type
    with torch.autocast(device_type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
        out = model(tokens, labels, target=ema)
    opt.zero_grad(set_to_none=True)
    out["loss"].backward()
    max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    opt.step()
    ema_update(ema, model, ema_decay)
    if isinstance(grad_norm, DTensor):  # FSDP2: the norm of sharded gradients, reduced on the device
        grad_norm = grad_norm.full_tensor()
    loss_p = out.get("loss_p", torch.zeros((), device=grad_norm.device))
    values = torch.stack([v.detach().float() for v in (out["loss"], out["loss_d"], loss_p, grad_norm)])
    return StepResult(values, lr)  # no host sync here: see StepResult
