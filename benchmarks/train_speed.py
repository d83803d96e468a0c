"""Training speed (images/s on one device) and model FLOP utilisation of `djepa.engine.train_step`.

    python benchmarks/train_speed.py --config configs/djepa-b.yaml --device cuda --batch-size 64 --dtype bf16

Prints ONE JSON object. The step is exactly what the Ray loop runs per worker (djepa/platform/loop.py):
`train_step(model, ema, opt, tokens, labels, step, cfg.train, ema_decay, amp)` with the fused AdamW of
`build_optimizer` on CUDA, an EMA copy on the same device (target encoder), bf16 autocast or none. Inputs
are random cached-latent tokens (B, num_tokens, token_dim) and random labels: no data loading, no VAE,
like MAR's "cached latents" numbers. Every step is re-seeded (torch.manual_seed(seed + step)) as the loop
does, so the mask ratio (one per batch, truncated normal on [0.7, 1]) varies from step to step.
--compile on (train.compile=true; default off, as train.compile) compiles the blocks first; the warm-up steps pay for
it (use --warmup 5 or more: the first steps compile a static, then a dynamic-shape graph).
--grad-checkpointing on (train.grad_checkpointing) recomputes each block in the backward: more FLOPs, less
memory; the MFU below counts the model's FLOPs only (no recompute), as MFU is usually defined.
`train_step` itself never waits for the GPU (its losses stay on the device until read); --read step
(default) reads the loss after every step as loop.py's NaN check does, --read end only after the run.

FLOPs: counted, not estimated. The same seeds are replayed on a copy of the model on the `meta` device
(no memory, no compute) under torch.utils.flop_counter.FlopCounterMode: forward of the model, the EMA
target encoder's forward, and the backward, i.e. every matmul / attention FLOP of the step (optimizer,
EMA update, norms and elementwise ops are not counted). MFU = counted FLOPs per second / the device's dense
peak for the dtype (bf16: 989 TFLOP/s on H100 SXM; fp32: 67 TFLOP/s, TF32 off; tf32: 495). For comparison,
the JSON also gives 6 * P * N (P trainable parameters, N tokens per image), the usual rough count.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from _speed_common import Timer, build, count_params, env_info, max_memory_gib, peak_flops, setup_dtype  # noqa: E402


def counted_flops(cfg, batch: int, seeds: list[int]) -> list[int]:
    """Matmul + attention FLOPs of forward (model + EMA target) and backward, per seeded step, on meta."""
    from torch.utils.flop_counter import FlopCounterMode

    from djepa.models.djepa import build_model
    from djepa.models.ema import make_ema

    with torch.device("meta"):
        model = build_model(cfg.model, cfg.tokenizer)
    ema = make_ema(model)
    model.train()
    n, c = cfg.tokenizer.num_tokens, cfg.tokenizer.token_dim
    out = []
    for s in seeds:
        tokens = torch.empty(batch, n, c, device="meta")
        labels = torch.zeros(batch, dtype=torch.long, device="meta")
        torch.manual_seed(s)
        with FlopCounterMode(display=False) as fc:
            loss = model(tokens, labels, target=ema)["loss"]
            loss.backward()
        out.append(fc.get_total_flops())
        model.zero_grad(set_to_none=True)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/djepa-b.yaml")
    ap.add_argument("--set", nargs="*", default=[], dest="overrides", metavar="KEY=VALUE")
    ap.add_argument("--batch-size", type=int, default=64, help="per device (the paper: 2048 on 32 GPUs = 64)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=["fp32", "tf32", "bf16"], default="bf16")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps")
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-flops", action="store_true")
    ap.add_argument("--compile", choices=["auto", "on", "off"], default="off",
                    help="train.compile: torch.compile of the blocks (auto: on for CUDA); warm-up pays the compile")
    ap.add_argument("--read", choices=["step", "end"], default="step", help="when the losses reach the host")
    ap.add_argument("--grad-checkpointing", choices=["on", "off"], default="off",
                    help="train.grad_checkpointing: recompute the blocks in the backward (MFU counts no recompute)")
    args = ap.parse_args(argv)

    from djepa.config import load_config
    from djepa.engine import build_optimizer, checkpoint_blocks, compile_blocks, compile_enabled, train_step
    from djepa.models.ema import make_ema

    cfg = load_config(args.config, args.overrides)
    device = torch.device(args.device)
    amp = setup_dtype(args.dtype, device)
    b, n, c = args.batch_size, cfg.tokenizer.num_tokens, cfg.tokenizer.token_dim

    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    model = build(cfg, device)
    ema = make_ema(model)
    if args.grad_checkpointing == "on":  # as the loop orders it: after the EMA copy, before compile
        checkpoint_blocks(model)
    switch = {"on": True, "off": False}.get(args.compile, "auto")
    compiled = compile_enabled(cfg.train.model_copy(update={"compile": switch}), device)
    if compiled:
        compile_blocks(model, ema)
    opt = build_optimizer(model, cfg.train, fused=device.type == "cuda")
    build_s = time.perf_counter() - t0
    params = count_params(model)

    gen = torch.Generator(device=device).manual_seed(args.seed)
    tokens = torch.randn(b, n, c, device=device, generator=gen)
    labels = torch.randint(0, cfg.model.num_classes, (b,), device=device, generator=gen)

    def step(i):
        torch.manual_seed(args.seed + i)
        return train_step(model, ema, opt, tokens, labels, i, cfg.train, cfg.model.ema_decay, amp)

    with Timer(device) as warm:
        for i in range(args.warmup):
            step(i)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timed = list(range(args.warmup, args.warmup + args.steps))
    losses = []
    with Timer(device) as tm:
        for i in timed:
            res = step(i)
            losses.append(res.loss if args.read == "step" else res)
    losses = [r if isinstance(r, float) else r.loss for r in losses]
    img_s = b * args.steps / tm.seconds

    result = {
        "bench": "train_speed",
        **env_info(device),
        "config": args.config,
        "overrides": args.overrides,
        "name": cfg.name,
        "params": params["trainable"],
        "params_parts": params["parts"],
        "dtype": args.dtype,
        "read": args.read,
        "compile": compiled,
        "grad_checkpointing": args.grad_checkpointing == "on",
        "batch_size": b,
        "tokens": [n, c],
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "warmup_s": round(warm.seconds, 3),
        "build_s": round(build_s, 2),
        "step_s": round(tm.seconds / args.steps, 4),
        "img_per_s": round(img_s, 2),
        "max_memory_gib": max_memory_gib(device),
        "losses_finite": all(torch.isfinite(torch.tensor(losses)).tolist()),
        "last_loss": round(losses[-1], 4),
    }
    if not args.no_flops:
        t1 = time.perf_counter()
        flops = counted_flops(cfg, b, [args.seed + i for i in timed])
        per_img = sum(flops) / len(flops) / b
        achieved = per_img * img_s
        peak = peak_flops(device, args.dtype)
        result |= {
            "flops_per_img": per_img,
            "flops_6PN_per_img": 6 * params["trainable"] * n,
            "achieved_tflops": round(achieved / 1e12, 2),
            "peak_tflops": None if peak is None else round(peak / 1e12, 1),
            "mfu": None if peak is None else round(achieved / peak, 4),
            "mfu_vs_bf16_peak": None if peak is None else round(achieved / peak_flops(device, "bf16"), 4),
            "flop_count_s": round(time.perf_counter() - t1, 2),
        }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
