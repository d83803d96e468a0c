"""Data pipeline vs training step, and the Ray Train loop vs a plain Python loop, on the same model and data.

    python benchmarks/train_loop.py [--config configs/digits.yaml] [--steps 200] [--set ...]

Prints one JSON object:
  data_rows_per_s    rows/s a Ray Train worker pulls from its shard (iter_torch_batches + flip/posterior draw)
  train_rows_per_s   rows/s the training step consumes in the Ray Train loop (1 worker)
  plain_rows_per_s   the same steps in a plain loop over the same shards, in one process
  ray_over_plain     step time ratio (Ray / plain); close to 1 means the platform costs nothing
Both loops use one torch thread: a 1-CPU Ray worker gets OMP_NUM_THREADS=1.
"""
import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import ray  # noqa: E402
import ray.train  # noqa: E402
import torch  # noqa: E402
from ray.train.torch import TorchTrainer  # noqa: E402

from djepa.config import load_config, validate  # noqa: E402
from djepa.data.encode import encode, encoded_dir  # noqa: E402
from djepa.data.encoded import batch_tokens, open_encoded, read_shard, training_dataset  # noqa: E402
from djepa.engine import build_optimizer, train_step  # noqa: E402
from djepa.models.djepa import build_model  # noqa: E402
from djepa.models.ema import make_ema  # noqa: E402
from djepa.train_loop import step_seed  # noqa: E402
from djepa.platform.trainer import train  # noqa: E402


def pull_rows(config: dict) -> None:
    """Ray Train worker that only reads: the rate the pipeline can feed a training step."""
    cfg = validate(config["cfg"])
    shard = ray.train.get_dataset_shard("train")
    n, t0 = 0, None
    for batch in shard.iter_torch_batches(batch_size=cfg.train.batch_size, drop_last=True,
                                          local_shuffle_buffer_size=cfg.data.shuffle_buffer or None):
        batch_tokens(batch, cfg)
        if t0 is None:  # the first batch carries the pipeline start-up
            t0 = time.perf_counter()
            continue
        n += len(batch["label"])
        if n >= config["rows"]:
            break
    # Result.metrics only carries reports with a checkpoint: hand the number over in a file
    Path(config["out"]).write_text(json.dumps({"rows_per_s": n / (time.perf_counter() - t0)}))


def plain_loop(cfg, data_dir, manifest, steps: int) -> float:
    """The same model and recipe stepped without Ray; -> rows/s after a warm-up."""
    torch.set_num_threads(1)
    shape = tuple(manifest["moments_shape"])
    parts = [read_shard(data_dir / f["name"], shape) for f in manifest["files"]]
    data = {k: torch.from_numpy(np.concatenate([p[k] for p in parts])) for k in ("label", "moments", "moments_flip")}
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, cfg.tokenizer)
    ema, opt, b = make_ema(model), build_optimizer(model, cfg.train), cfg.train.batch_size
    times = []
    for step in range(steps):
        torch.manual_seed(step_seed(cfg.train.seed, 0, step))
        idx = torch.randint(len(data["label"]), (b,))
        t = time.perf_counter()
        tokens, labels = batch_tokens({k: v[idx] for k, v in data.items()}, cfg)
        train_step(model, ema, opt, tokens, labels, step, cfg.train, cfg.model.ema_decay)
        times.append(time.perf_counter() - t)
    kept = times[len(times) // 5:]  # after warm-up; a mean, like the Ray loop's rate between log lines
    return b * len(kept) / sum(kept)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/digits.yaml")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--set", nargs="*", default=[])
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="djepa-bench-"))
    cfg = load_config(args.config, [f"train.steps={args.steps}", "train.workers=1", "train.cpus_per_worker=1",
                                    "train.max_minutes=null", f"train.log_every={max(1, args.steps // 10)}",
                                    f"train.checkpoint_every={args.steps}", "sample.num_per_class=1",
                                    f"train.out_dir={tmp / 'run'}", f"tracking.tracking_uri=sqlite:///{tmp}/mlflow.db",
                                    *args.set])
    ray.init(include_dashboard=False, log_to_driver=False)
    data_dir = encoded_dir(cfg)
    if not data_dir.exists():
        encode(cfg, data_dir)
    manifest = open_encoded(cfg, data_dir)

    TorchTrainer(pull_rows, train_loop_config={"cfg": cfg.to_dict(), "rows": 50 * cfg.train.batch_size,
                                                "out": str(tmp / "pull.json")},
                 scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
                 run_config=ray.train.RunConfig(name="pull", storage_path=str(tmp)),
                 datasets={"train": training_dataset(cfg, data_dir, manifest)}).fit()
    pulled = json.loads((tmp / "pull.json").read_text())["rows_per_s"]
    train(cfg)
    logged = [json.loads(line) for line in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    ray_rate = statistics.median(e["img_per_s"] for e in logged[2:] if "img_per_s" in e)  # skip start-up
    plain_rate = plain_loop(cfg, data_dir, manifest, args.steps)
    print(json.dumps({
        "benchmark": "train_loop", "config": args.config, "batch_size": cfg.train.batch_size, "steps": args.steps,
        "data_rows_per_s": round(pulled), "train_rows_per_s": round(ray_rate),
        "plain_rows_per_s": round(plain_rate), "ray_over_plain": round(plain_rate / ray_rate, 3),
        "device": "cpu", "dtype": "float32", "torch_threads": 1, "cpus": ray.cluster_resources().get("CPU"),
        "versions": {"torch": torch.__version__, "ray": ray.__version__, "python": platform.python_version()},
    }))


if __name__ == "__main__":
    main()
