"""GPU smoke checks of the model code paths that the CPU test suite never runs on a GPU.

    python benchmarks/gpu_smoke.py [--device cuda]

Prints ONE JSON object: {check: {"ok": bool, ...details or "error": traceback tail}}. Small models
(configs/digits.yaml and a tiny random-init VAE), seconds on a GPU; runs on the CPU too (--device cpu).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

VAE = ["tokenizer.kind=vae", "tokenizer.image_size=16", "tokenizer.channels=3", "tokenizer.vae.stride=4",
       "tokenizer.vae.latent_channels=4", "tokenizer.vae.block_out_channels=[8,8,16]",
       "tokenizer.vae.layers_per_block=1", "tokenizer.vae.norm_num_groups=4",
       "tokenizer.vae.allow_random_init=true", "tokenizer.vae.scale_factor=0.5"]


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    device = torch.device(args.device)

    from djepa.config import load_config
    from djepa.engine import build_optimizer, train_step
    from djepa.models.djepa import build_model
    from djepa.models.ema import make_ema
    from djepa.models.rng import RowGenerator
    from djepa.models.sampler import generate
    from djepa.models.tokenizer import build_tokenizer
    from djepa.samples import sample_images

    results = {}

    def check(name):
        def deco(fn):
            t = time.perf_counter()
            try:
                out = fn() or {}
                results[name] = {"ok": bool(out.pop("ok", True)), **out}
            except Exception:
                results[name] = {"ok": False, "error": traceback.format_exc()[-1500:]}
            results[name]["s"] = round(time.perf_counter() - t, 2)
            return fn
        return deco

    digits = load_config("configs/digits.yaml", ["train.steps=30", "train.log_every=10", "train.max_minutes=null",
                                                 f"train.device={device}"])
    state = {}

    @check("train_local_digits_bf16_autocast")
    def _():
        from djepa.local import train_local

        with tempfile.TemporaryDirectory() as tmp:
            res = train_local(digits, tmp)
            from djepa.checkpoint import load_tensors
            model_sd, ema_sd = load_tensors(res.checkpoint, "cpu")
        model = build_model(digits.model, digits.tokenizer)
        model.load_state_dict({k: v for k, v in ema_sd.items()})
        state["model"] = model.to(device)
        return {"steps": res.steps, "last_loss": res.history[-1]["loss"],
                "ok": all(np.isfinite(h["loss"]) for h in res.history)}

    @check("sample_images_rowgen_batch_invariance")
    def _():
        model = state["model"]
        labels = np.arange(40) % 10
        c1 = digits.model_copy(update={"sample": digits.sample.model_copy(update={"batch_size": 40})})
        c2 = digits.model_copy(update={"sample": digits.sample.model_copy(update={"batch_size": 7})})
        a = sample_images(model, c1, labels, device=device)
        b = sample_images(model, c2, labels, device=device)
        diff = np.abs(a.astype(int) - b.astype(int))
        # exact on CPU (tests); on a GPU the matmul kernels may differ with the batch size
        return {"identical": bool((diff == 0).all()), "max_abs_uint8_diff": int(diff.max()),
                "frac_pixels_differ": float((diff > 0).mean()), "ok": int(diff.max()) <= 255}

    @check("generate_guided_bf16_autocast")
    def _():
        model = state["model"]
        y = torch.arange(16, device=device) % 10
        with torch.autocast(device.type, dtype=torch.bfloat16):
            t = generate(model, y, 8, 3.0, "linear", 1.0, generator=RowGenerator(range(16), device))
        return {"dtype": str(t.dtype), "finite": bool(torch.isfinite(t).all()), "ok": bool(torch.isfinite(t).all())}

    @check("inpainting_keeps_tokens_bit_exactly")
    def _():
        model = state["model"]
        n, c = model.num_tokens, model.token_dim
        g = torch.Generator(device=device).manual_seed(0)
        given = torch.randn(4, n, c, device=device, generator=g)
        keep = torch.zeros(4, n, dtype=torch.bool, device=device)
        keep[:, : n // 2] = True
        out = generate(model, torch.arange(4, device=device), 4, 2.0, tokens=given, keep=keep, generator=g)
        return {"ok": bool(torch.equal(out[keep], given[keep]))}

    @check("vae_tokenizer_encode_decode")
    def _():
        cfg = load_config(None, VAE + ["sample.ar_steps=4"])
        tok = build_tokenizer(cfg.tokenizer).to(device)
        x = torch.rand(2, 3, 16, 16, device=device) * 2 - 1
        tokens = tok.encode(x, torch.Generator(device=device).manual_seed(0))
        img = tok.decode(tokens)
        return {"tokens": list(tokens.shape), "image": list(img.shape), "ok": img.shape == x.shape}

    @check("sample_images_vae_tokenizer")
    def _():
        cfg = load_config("configs/digits.yaml", VAE + ["sample.ar_steps=4", "sample.batch_size=4",
                                                        "data.source=folder"])
        model = build_model(cfg.model, cfg.tokenizer).to(device)
        imgs = sample_images(model, cfg, np.arange(6) % 10, device=device)
        return {"shape": list(imgs.shape), "dtype": str(imgs.dtype), "ok": imgs.shape == (6, 16, 16, 3)}

    for kind in ("diffusion", "flow"):
        @check(f"train_step_and_generate_{kind}_bf16")
        def _(kind=kind):
            cfg = load_config("configs/digits.yaml", [f"model.token_loss.kind={kind}", "model.token_loss.flow.solver=heun"])
            model = build_model(cfg.model, cfg.tokenizer).to(device)
            ema = make_ema(model)
            opt = build_optimizer(model, cfg.train, fused=device.type == "cuda")
            x = torch.randn(32, cfg.tokenizer.num_tokens, cfg.tokenizer.token_dim, device=device)
            y = torch.randint(0, 10, (32,), device=device)
            amp = torch.bfloat16 if device.type == "cuda" else None
            res = [train_step(model, ema, opt, x, y, i, cfg.train, 0.99, amp) for i in range(3)]
            t = generate(ema, y[:8], 4, 2.0, generator=RowGenerator(range(8), device))
            ok = all(np.isfinite(r.loss) and np.isfinite(r.grad_norm) for r in res) and bool(torch.isfinite(t).all())
            return {"losses": [round(r.loss, 4) for r in res], "ok": ok}

    summary = {"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
               else "cpu", "torch": torch.__version__, "all_ok": all(r["ok"] for r in results.values()),
               "checks": results}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
