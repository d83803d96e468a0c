"""Does the domain FD rank models? Trained checkpoint vs the same model untrained vs uniform noise, with the
held-out real digits as the floor. Prints JSON.

    python benchmarks/eval_quality.py --checkpoint outputs/digits/checkpoint --num-samples 1000
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from djepa.checkpoint import load_weights, save_checkpoint  # noqa: E402
from djepa.eval.classifier import real_split  # noqa: E402
from djepa.eval.features import DomainExtractor  # noqa: E402
from djepa.eval.metrics import FeatureStats, frechet_distance, precision_recall  # noqa: E402
from djepa.models.djepa import build_model  # noqa: E402
from djepa.models.ema import make_ema  # noqa: E402
from djepa.platform.evaluator import eval_config, evaluate  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--checkpoint", default="outputs/digits/checkpoint")
    ap.add_argument("--num-samples", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="djepa-quality-"))
    sets = ["eval.features=[domain]", f"eval.workers={args.workers}", "eval.cpus_per_worker=0.5",
            f"tracking.tracking_uri=sqlite:///{tmp}/mlflow.db"]
    trained = evaluate(eval_config(args.checkpoint, sets + [f"eval.out_dir={tmp}/trained"]), args.checkpoint,
                       args.num_samples)["metrics"]
    cfg, _, _ = load_weights(args.checkpoint)
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.tokenizer)
    untrained_ckpt = tmp / "untrained"
    save_checkpoint(untrained_ckpt, cfg, model.state_dict(), make_ema(model).state_dict(), {"step": 0})
    untrained = evaluate(eval_config(untrained_ckpt, sets + [f"eval.out_dir={tmp}/untrained"]), untrained_ckpt,
                         args.num_samples)["metrics"]
    ex, split = DomainExtractor(cfg.data.source), real_split(cfg.data.source)
    ref_feats = ex(split["train_x"])[0]
    ref = FeatureStats.of(ref_feats).mu_sigma()

    def direct(images):
        f = ex(images)[0]
        p, r = precision_recall(f, ref_feats[:len(f)], k=3)
        return {"fd_domain": frechet_distance(*FeatureStats.of(f).mu_sigma(), *ref), "precision": p, "recall": r}

    n_held = len(split["held_x"])
    noise = np.random.default_rng(0).integers(0, 256, (args.num_samples, *split["held_x"].shape[1:]), dtype=np.uint8)
    with np.load(tmp / "trained" / "samples.npz") as z:
        trained_same_n = direct(z["arr_0"][:n_held])  # the floor's sample size: FD is biased upwards at small n
    print(json.dumps({
        "num_samples": args.num_samples, "checkpoint": str(args.checkpoint),
        "trained": trained, "trained_at_floor_n": {"n": n_held, **trained_same_n},
        "untrained": untrained, "uniform_noise": direct(noise),
        "held_out_real_floor": {"n": n_held, **direct(split["held_x"])},
    }, indent=1))


if __name__ == "__main__":
    main()
