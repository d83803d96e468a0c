"""Activation memory of one training clip: the bytes autograd keeps for the backward pass, counted exactly.

Every tensor saved for backward goes through a saved-tensors hook; each storage is counted once and the
weights not at all. A real forward runs on the CPU (torch's CPU SDPA is a flash kernel: like a GPU's it keeps
the output and a log-sum-exp, never the L x L attention map) under the requested autocast; autocast's bf16
copies of the weights are left out too (made once a step, whatever the batch). All blocks of a
stack are identical, so models of depth 1 and 2 per stack give each block's share exactly, and the full depth
is extrapolated linearly from them (a D-JEPA-L forward at 3,000 tokens is then 4 small forwards, not one
huge one). Weights, gradients, the EMA copy and AdamW's two moments are counted from the parameter count
(fp32, as training keeps them). Not counted: transient buffers inside one block (with grad checkpointing,
the recompute of one block of one sample at a time).

    python benchmarks/video_memory.py                                 # D-JEPA-L on UCF101, 3,000 tokens
    python benchmarks/video_memory.py --config configs/djepa-l.yaml   # the ImageNet preset, 256 tokens

Prints one JSON line. No timing is involved.
"""
import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from djepa.config import load_config  # noqa: E402
from djepa.engine import checkpoint_blocks  # noqa: E402
from djepa.models.djepa import build_model  # noqa: E402


def saved_bytes(cfg, depths: tuple[int, int, int], dtype, grad_checkpointing: bool) -> int:
    """Bytes saved for backward by one training forward of one sample, for (encoder, predictor, denoiser)
    depths."""
    over = {"encoder_depth": depths[0], "predictor_depth": depths[1]}
    mcfg = cfg.model.model_copy(update=over | {"token_loss": cfg.model.token_loss.model_copy(
        update={"depth": depths[2]})})
    torch.manual_seed(0)
    model, target = build_model(mcfg, cfg.tokenizer), build_model(mcfg, cfg.tokenizer).requires_grad_(False)
    if grad_checkpointing:
        checkpoint_blocks(model)
    params = [*model.parameters(), *target.parameters()]
    weights = {p.untyped_storage().data_ptr() for p in params}
    shapes = {tuple(p.shape) for p in params}  # autocast's bf16 copies of the weights: once a step, not a clip
    seen: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in weights and tuple(t.shape) not in shapes:
            seen[ptr] = max(seen.get(ptr, 0), t.untyped_storage().nbytes())
        return t

    tok = cfg.tokenizer
    x, y = torch.randn(1, tok.num_tokens, tok.token_dim), torch.zeros(1, dtype=torch.long)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        out = model(x, y, target=target, generator=torch.Generator().manual_seed(0))
    del out
    return sum(seen.values())


def per_clip(cfg, dtype, grad_checkpointing: bool) -> int:
    base = saved_bytes(cfg, (1, 1, 1), dtype, grad_checkpointing)
    full = (cfg.model.encoder_depth, cfg.model.predictor_depth, cfg.model.token_loss.depth)
    total = base
    for axis in range(3):
        deeper = [1, 1, 1]
        deeper[axis] = 2
        total += (full[axis] - 1) * (saved_bytes(cfg, tuple(deeper), dtype, grad_checkpointing) - base)
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/djepa-l-ucf101.yaml")
    ap.add_argument("--mask-ratio", type=float, default=0.7, help="the smallest ratio drawn: the most visible "
                                                                   "tokens, so the encoder's largest step")
    args = ap.parse_args()
    cfg = load_config(args.config, [f"model.mask_ratio_min={args.mask_ratio}", "model.mask_ratio_std=1e-6",
                                    "model.attn_dropout=0", "model.proj_dropout=0"])
    with torch.device("meta"):
        params = sum(p.numel() for p in build_model(cfg.model, cfg.tokenizer).parameters())
    result = {"bench": "video_memory", "config": args.config, "tokens": cfg.tokenizer.num_tokens,
              "token_dim": cfg.tokenizer.token_dim, "mask_ratio": args.mask_ratio, "params": params,
              "state_gib": round(params * 4 * 5 / 2**30, 2),  # fp32 weights + grads + EMA + AdamW's 2 moments
              "torch": torch.__version__}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        for ckpt in (False, True):
            key = f"activations_per_clip_gib_{name}" + ("_grad_checkpointing" if ckpt else "")
            result[key] = round(per_clip(cfg, dtype, ckpt) / 2**30, 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
