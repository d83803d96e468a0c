"""Evaluation throughput without sampling: FID Inception feature extraction and VAE decode, images/s. Prints JSON.

    python benchmarks/feature_speed.py --device cuda --images 5000 --batch-sizes 200 500
    python benchmarks/feature_speed.py --device cpu --images 200 --batch-sizes 100 --no-decode

Inception: torch-fidelity's FID Inception-v3 behind `djepa.eval.features.InceptionExtractor`, exactly as the
evaluator calls it (uint8 (N, 256, 256, 3) -> resize to 299 -> pool3 features + logits, fp32), with random
weights in the real layout unless --inception-weights is given (speed does not depend on them).
Decode: the configured tokenizer's decoder (KL-16 for the ImageNet presets, random-init) on random tokens.
Together with benchmarks/sample_speed.py's s/img this gives the evaluator's per-GPU throughput:
1 / (sample s/img + decode s/img + 1 / inception img/s).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from _speed_common import Timer, env_info, max_memory_gib  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--images", type=int, default=2000, help="timed images per measurement")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[200], help="eval.feature_batch_size values")
    ap.add_argument("--inception-weights", default=None, help="default: random weights in the real layout")
    ap.add_argument("--config", default="configs/djepa-b.yaml", help="the tokenizer whose decoder is timed")
    ap.add_argument("--decode-batch-size", type=int, default=256)
    ap.add_argument("--no-decode", action="store_true")
    args = ap.parse_args(argv)

    from djepa.eval.features import InceptionExtractor, random_inception_weights

    device = torch.device(args.device)
    weights = args.inception_weights or random_inception_weights(Path(tempfile.mkdtemp()) / "inception.pth")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.images, args.image_size, args.image_size, 3), dtype=np.uint8)
    result = {"bench": "feature_speed", **env_info(device), "images": args.images, "image_size": args.image_size,
              "real_inception_weights": bool(args.inception_weights)}
    for bs in args.batch_sizes:
        ex = InceptionExtractor(str(weights), device, bs)
        ex(images[:bs])  # warm-up: cuDNN autotuning, allocations
        with Timer(device) as tm:
            feats, logits = ex(images)
        assert feats.shape == (args.images, 2048) and torch.isfinite(feats).all()
        result[f"inception_img_per_s_bs{bs}"] = round(args.images / tm.seconds, 1)
    if not args.no_decode:
        from djepa.config import load_config
        from djepa.models.tokenizer import build_tokenizer

        tok = load_config(args.config).tokenizer
        if tok.kind == "vae" and not tok.vae.weights:
            tok = tok.model_copy(update={"vae": tok.vae.model_copy(update={"allow_random_init": True})})
        tokenizer = build_tokenizer(tok).to(device).eval()
        bs = args.decode_batch_size
        tokens = torch.randn(bs, tok.num_tokens, tok.token_dim, device=device)
        with torch.no_grad():
            tokenizer.decode(tokens[: min(bs, 8)])  # warm-up
            with Timer(device) as tm:
                out = tokenizer.decode(tokens)
        result |= {"decode_config": args.config, "decode_batch_size": bs,
                   "decode_img_per_s": round(bs / tm.seconds, 1), "decoded_shape": list(out.shape)}
    result["max_memory_gib"] = max_memory_gib(device)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
