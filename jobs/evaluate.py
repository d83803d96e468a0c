"""Generate class-balanced samples from a checkpoint's EMA weights on a pool of Ray actors and measure
FID / IS / precision / recall against reference statistics (ADM's protocol).

    python jobs/evaluate.py --checkpoint outputs/digits/checkpoint --num-samples 1000 --set eval.workers=2
    ray job submit --working-dir . -- python jobs/evaluate.py --checkpoint /ckpt/run/checkpoint_0400000 \\
        --num-samples 50000 --set sample.cfg=3.0 sample.temperature=0.98 sample.ar_steps=64 \\
        eval.workers=32 eval.use_gpu=true eval.reference=/data/VIRTUAL_imagenet256_labeled.npz

The config is the checkpoint's config.yaml, then --config (a partial YAML such as a sweep's best.yaml),
then --set (sample.*, eval.*, tracking.*). Restarting with the same arguments reuses every finished shard.

    python jobs/evaluate.py --checkpoint outputs/digits/checkpoint \
        --config outputs/digits/sweeps/checkpoint-digits/best.yaml --num-samples 1000
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from djepa.cli import parse, positive_int, run  # noqa: E402


def _flags(ap):
    ap.add_argument("--num-samples", type=positive_int, help="samples to generate (default eval.num_samples)")
    ap.add_argument("--parent-run", help="MLflow run id to nest this evaluation under (default: the training run "
                                         "of the checkpoint, from its run.json)")


if __name__ == "__main__":
    cfg, args = parse(__doc__, add_args=_flags, from_checkpoint=True)
    from djepa.platform.evaluator import evaluate  # noqa: E402  (imports Ray: only after the config is valid)

    run(evaluate, cfg, args.checkpoint, num_samples=args.num_samples, parent_run_id=args.parent_run)
