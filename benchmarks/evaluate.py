"""Sharded generation throughput: samples/s in-process (one thread), with 1 and 2 Ray workers, the sharding
overhead (per-worker rate / in-process rate; 1.0 = free) and feature extraction images/s. Prints JSON.

    python benchmarks/evaluate.py --checkpoint outputs/digits/checkpoint --num-samples 1000
    python benchmarks/evaluate.py --checkpoint CKPT --workers 1 8 --set eval.use_gpu=true   # on a GPU node
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from djepa.checkpoint import load_tensors  # noqa: E402
from djepa.eval.features import build_extractors  # noqa: E402
from djepa.local import resolve_device  # noqa: E402
from djepa.models.djepa import build_model  # noqa: E402
from djepa.platform.evaluator import eval_config, evaluate  # noqa: E402
from djepa.samples import balanced_labels, sample_images, sampling_dtype  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed_common import env_info  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--checkpoint", default="outputs/digits/checkpoint")
    ap.add_argument("--num-samples", type=int, default=1000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--set", nargs="*", default=[])
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="djepa-bench-eval-"))
    base = ["eval.cpus_per_worker=0.5", f"tracking.tracking_uri=sqlite:///{tmp}/mlflow.db", *args.set]
    cfg = eval_config(args.checkpoint, base)
    device = resolve_device("cuda" if cfg.eval.use_gpu else "cpu")
    torch.set_num_threads(max(1, int(cfg.eval.cpus_per_worker)))

    ema = build_model(cfg.model, cfg.tokenizer).to(device)
    ema.load_state_dict(load_tensors(args.checkpoint, device)[1])
    n_plain = min(args.num_samples, 4 * cfg.sample.batch_size)
    t = time.perf_counter()
    images = sample_images(ema.eval(), cfg, balanced_labels(n_plain, cfg.model.num_classes), device=device)
    plain = n_plain / (time.perf_counter() - t)

    dtype = sampling_dtype(cfg.sample, device)
    result = {"env": env_info(device), "dtype": str(dtype or torch.float32).replace("torch.", ""),
              "num_samples": args.num_samples, "in_process_samples_per_s": round(plain, 2)}
    for w in args.workers:
        out = evaluate(eval_config(args.checkpoint, base + [f"eval.workers={w}", f"eval.out_dir={tmp}/w{w}"]),
                       args.checkpoint, args.num_samples, with_metrics=False)
        rate = out["images_per_second"]
        result[f"workers_{w}"] = {"samples_per_s": rate, "per_worker_vs_in_process": round(rate / w / plain, 3),
                                  "wall_s_incl_actor_start": out["generation_seconds"]}
    for ex in build_extractors(cfg, device):
        batch = np.concatenate([images] * max(1, 2000 // len(images)))[:2000]
        ex(batch[:ex.batch_size])  # warm-up
        t = time.perf_counter()
        ex(batch)
        result[f"features_{ex.name}_images_per_s"] = round(len(batch) / (time.perf_counter() - t), 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
