"""Sampling speed (seconds per image) of Algorithm 1 for a preset, in token space, random weights.

    python benchmarks/sample_speed.py --config configs/djepa-b.yaml --device cuda --batch-size 256 \
        --ar-steps 64 --cfg 3.1 --dtype bf16

Prints ONE JSON object: environment, settings, seconds per image, and a breakdown of the timed
batches into the transformer (context encoder + feature predictor, `model.encode`/`model.predict`)
and the token sampler (`model.token_loss.sample`, the per-token diffusion / flow loop).

What is timed: `djepa.models.sampler.generate` (what `djepa.samples.sample_images` calls) for
--batches batches of --batch-size, after one warm-up batch (same batch size, --warmup-ar-steps AR
steps, so every kernel and cuBLAS heuristic is warm without paying for a full batch), each batch
bracketed by torch.cuda.synchronize. The VAE decode is NOT included (it needs the KL-16 weights;
MAR's / the paper's timings include it, a small part: ~3 ms/img for the KL-16 decoder on a GPU);
pass --decode to add a randomly initialised VAE decode of the configured architecture.

--rng row (default) draws noise as sample_images does: a RowGenerator, one torch.Generator per
image; --rng single uses one generator for the batch (shows what the per-image seeds cost).
--dtype is the sampler's precision switch (sample.dtype, applied by `djepa.fast.sampling_autocast` around
`generate`, as sample_images does): auto (the default: bf16
on CUDA, fp32 elsewhere), fp32 (TF32 off, torch's default), bf16 (transformer and denoiser under
autocast, diffusion arithmetic fp32), or tf32 (fp32 with TF32 matmuls, a benchmark-only setting).
--cuda-graphs / --no-cuda-graphs override sample.cuda_graphs (default on; CUDA only): the per-token
loop replayed as CUDA graphs (`djepa.fast.graph_token_sampler`, applied to the model before timing).
Its first batch pays one capture per distinct token count, so time --batches 2 to see the steady state.
cfg == 1.0 runs the conditional half only (the sampler doubles the batch only when cfg != 1).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from _speed_common import Timer, build, count_params, env_info, max_memory_gib, setup_dtype, sync  # noqa: E402


def graph_info(graphed) -> dict | None:
    """Captures of a djepa.fast.GraphedTokenSampler (None: sampled eagerly)."""
    return None if graphed is None else {"captured": len(graphed.cache.entries), "failed": graphed.cache.failed}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/djepa-b.yaml")
    ap.add_argument("--set", nargs="*", default=[], dest="overrides", metavar="KEY=VALUE")
    ap.add_argument("--batch-size", type=int, default=None, help="default: sample.batch_size")
    ap.add_argument("--ar-steps", type=int, default=None, help="default: sample.ar_steps")
    ap.add_argument("--cfg", type=float, default=None, help="default: sample.cfg; 1.0 = no guidance")
    ap.add_argument("--cfg-schedule", default=None, help="default: sample.cfg_schedule")
    ap.add_argument("--temperature", type=float, default=None, help="default: sample.temperature")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=["auto", "fp32", "tf32", "bf16"], default="auto")
    ap.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=None,
                    help="default: sample.cuda_graphs (on; used on CUDA only)")
    ap.add_argument("--batches", type=int, default=1, help="timed batches")
    ap.add_argument("--warmup-ar-steps", type=int, default=4, help="AR steps of the warm-up batch (0: full)")
    ap.add_argument("--warmup-batch-size", type=int, default=None, help="default: --batch-size")
    ap.add_argument("--rng", choices=["row", "single"], default="row")
    ap.add_argument("--decode", action="store_true", help="also time a random-init VAE / pixel decode")
    ap.add_argument("--no-breakdown", action="store_true", help="no synchronize around the phases")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from djepa.config import load_config
    import numpy as np

    from djepa.fast import graph_token_sampler, sampling_autocast
    from djepa.models.rng import RowGenerator
    from djepa.samples import sample_seeds
    from djepa.models.sampler import generate
    from djepa.samples import sampling_dtype

    cfg = load_config(args.config, args.overrides)
    s = cfg.sample
    bs = args.batch_size or s.batch_size
    ar_steps = args.ar_steps or s.ar_steps
    cfg_scale = s.cfg if args.cfg is None else args.cfg
    schedule = args.cfg_schedule or s.cfg_schedule
    temperature = s.temperature if args.temperature is None else args.temperature
    device = torch.device(args.device)
    graphs = s.cuda_graphs if args.cuda_graphs is None else args.cuda_graphs
    setup_dtype(args.dtype, device)  # TF32 flags only: the precision is the sampler's switch below
    sample_dtype = sampling_dtype(s.model_copy(update={"dtype": "fp32" if args.dtype == "tf32" else args.dtype}),
                                  device)

    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    model = build(cfg, device)
    build_s = time.perf_counter() - t0
    params = count_params(model)
    model.eval().requires_grad_(False)
    graphed = graph_token_sampler(model, graphs and device.type == "cuda")  # speed from outside, as sample_images

    # phase breakdown: instance-level wrappers (no source edits), synchronize around each call
    phases = {"transformer": 0.0, "token_sampler": 0.0}
    calls = {"token_sampler": 0}
    state = {"on": False}

    def wrap(fn, key):
        def inner(*a, **k):
            if not state["on"]:
                return fn(*a, **k)
            sync(device)
            t = time.perf_counter()
            out = fn(*a, **k)
            sync(device)
            phases[key] += time.perf_counter() - t
            if key in calls:
                calls[key] += 1
            return out
        return inner

    if not args.no_breakdown:
        model.encode = wrap(model.encode, "transformer")
        model.predict = wrap(model.predict, "transformer")
        model.token_loss.sample = wrap(model.token_loss.sample, "token_sampler")

    tokenizer = None
    if args.decode:
        from djepa.models.tokenizer import build_tokenizer

        tok_cfg = cfg.tokenizer
        if tok_cfg.kind == "vae" and not tok_cfg.vae.weights:
            tok_cfg = tok_cfg.model_copy(update={"vae": tok_cfg.vae.model_copy(update={"allow_random_init": True})})
        tokenizer = build_tokenizer(tok_cfg).to(device)

    num_classes = cfg.model.num_classes

    def one_batch(i: int, steps: int, bs: int = bs):
        labels = (torch.arange(bs, device=device) + i * bs) % num_classes
        seeds = sample_seeds(args.seed, np.arange(i * bs, (i + 1) * bs))
        gen = RowGenerator(seeds, device) if args.rng == "row" else \
            torch.Generator(device=device).manual_seed(args.seed + i)
        with sampling_autocast(device, sample_dtype):
            tokens = generate(model, labels, steps, cfg_scale, schedule, temperature, generator=gen)
        return tokens, None if tokenizer is None else tokenizer.decode(tokens)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    n = cfg.tokenizer.num_tokens
    warm_steps = min(n, args.warmup_ar_steps or ar_steps)
    with Timer(device) as warm:
        one_batch(-1, warm_steps, args.warmup_batch_size or bs)
    state["on"] = True
    times, finite = [], True
    for i in range(args.batches):
        with Timer(device) as tm:
            tokens, images = one_batch(i, ar_steps)
        times.append(tm.seconds)
        finite = finite and bool(torch.isfinite(tokens).all())
    state["on"] = False
    total = sum(times)
    imgs = bs * args.batches
    tl = cfg.model.token_loss
    result = {
        "bench": "sample_speed",
        **env_info(device),
        "config": args.config,
        "overrides": args.overrides,
        "name": cfg.name,
        "params": params["trainable"],
        "dtype": args.dtype,
        "autocast": str(sample_dtype),
        "cuda_graphs": graphs and device.type == "cuda",
        "graphs": graph_info(graphed),
        "batch_size": bs,
        "ar_steps": ar_steps,
        "cfg": cfg_scale,
        "guided": cfg_scale != 1.0,
        "cfg_schedule": schedule,
        "temperature": temperature,
        "token_loss": tl.kind,
        "token_sample_steps": tl.diffusion.sample_steps if tl.kind == "diffusion" else tl.flow.sample_steps,
        "rng": args.rng,
        "decode": args.decode,
        "batches": args.batches,
        "warmup_ar_steps": warm_steps,
        "warmup_batch_size": args.warmup_batch_size or bs,
        "warmup_s": round(warm.seconds, 3),
        "build_s": round(build_s, 2),
        "batch_seconds": [round(t, 3) for t in times],
        "s_per_img": round(total / imgs, 5),
        "img_per_s": round(imgs / total, 2),
        "breakdown_s": None if args.no_breakdown else {k: round(v, 3) for k, v in phases.items()}
        | {"other": round(total - sum(phases.values()), 3), "token_sampler_calls": calls["token_sampler"]},
        "max_memory_gib": max_memory_gib(device),
        "finite": finite,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
