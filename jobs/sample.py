"""Generate class-balanced samples from a checkpoint's EMA weights on a pool of Ray actors, into ADM's
.npz format (arr_0 uint8 N x H x W x C, arr_1 labels), without computing metrics.

    python jobs/sample.py --checkpoint outputs/digits/checkpoint --num-samples 1000 --set sample.cfg=3.0
    ray job submit --working-dir . -- python jobs/sample.py --checkpoint /ckpt/run/checkpoint_0400000 \\
        --num-samples 50000 --set eval.workers=32 eval.use_gpu=true eval.pngs=true

Sample i always has label i % num_classes and seed sample_seeds(sample.seed, i): the same images for any
number of workers or batch size. Restarting with the same arguments reuses every finished shard.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from djepa.cli import parse, positive_int, run  # noqa: E402


def _flags(ap):
    ap.add_argument("--num-samples", type=positive_int, help="samples to generate (default eval.num_samples)")


if __name__ == "__main__":
    cfg, args = parse(__doc__, add_args=_flags, from_checkpoint=True)
    from djepa.platform.evaluator import evaluate  # noqa: E402

    run(evaluate, cfg, args.checkpoint, num_samples=args.num_samples, with_metrics=False)
