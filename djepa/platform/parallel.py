"""Data parallelism for the worker loop: DDP (default) or FSDP2 (`train.parallel=fsdp`, for the H preset).

FSDP2 shards every encoder / predictor block and the rest of the model (and the EMA copy,
the same way) across the workers, so parameters, gradients and AdamW state take 1/world of
the memory each. Checkpoints hold full (unsharded) state dicts gathered to rank 0, so
model.safetensors is the same file under both; the AdamW state is keyed by parameter name
under FSDP and by index under DDP, so a run resumes under the strategy it was saved with.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

# Methods the loop calls outside forward(): FSDP2 must all-gather the root parameters for them too.
_FORWARD_METHODS = ("target_features", "encode", "predict", "class_embedding")


def shard(model: nn.Module, ema: nn.Module, strategy: str, world: int):
    """-> (the module to step, the EMA). DDP wraps the model; FSDP shards model and EMA in place."""
    if world == 1:
        return model, ema
    if strategy == "ddp":
        import ray.train.torch

        return ray.train.torch.prepare_model(model, move_to_device=False), ema
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    for m in (model, ema):
        for block in [*m.encoder_blocks, *m.predictor_blocks]:
            fully_shard(block)
        fully_shard(m)
        for name in _FORWARD_METHODS:
            register_fsdp_forward_method(m, name)
    return model, ema


def _fsdp(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_state(model: nn.Module, ema: nn.Module, opt: torch.optim.Optimizer) -> tuple[dict, dict, dict]:
    """Full state dicts of model, EMA and AdamW (keyed by parameter name). Under FSDP this is a
    collective: every rank calls it and rank 0 receives the tensors."""
    if not _fsdp(model):
        return model.state_dict(), ema.state_dict(), opt.state_dict()
    return (get_model_state_dict(model, options=_FULL), get_model_state_dict(ema, options=_FULL),
            get_optimizer_state_dict(model, opt, options=_FULL))


def load_full_state(model: nn.Module, ema: nn.Module, opt: torch.optim.Optimizer, model_sd: dict, ema_sd: dict,
                    optim_sd: dict) -> None:
    """Every rank loads the full checkpoint (it is on shared storage) into its shards."""
    if not _fsdp(model):
        model.load_state_dict(model_sd)
        ema.load_state_dict(ema_sd)
        opt.load_state_dict(optim_sd)
        return
    full = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, model_sd, options=full)
    set_model_state_dict(ema, ema_sd, options=full)
    set_optimizer_state_dict(model, opt, optim_sd, options=full)


def gathered_ema(ema: nn.Module, cfg) -> nn.Module | None:
    """The EMA weights as one plain module on rank 0 (for sample grids), None elsewhere. Under FSDP
    a collective: sampling a sharded model on rank 0 alone would wait forever for the others."""
    if not _fsdp(ema):
        return ema
    import torch.distributed as dist

    from djepa.models.djepa import build_model

    sd = get_model_state_dict(ema, options=_FULL)
    if dist.get_rank() != 0:
        return None
    full = build_model(cfg.model, cfg.tokenizer).eval().requires_grad_(False)
    full.load_state_dict(sd)
    return full
