"""Coarse-to-fine Ray Tune search of the sampling hyper-parameters (cfg scale, temperature, auto-regressive
steps) of a checkpoint, each trial a sharded evaluation (the paper's appendix C).

    python jobs/sweep.py --checkpoint outputs/digits/checkpoint --config configs/sweep-digits.yaml
    ray job submit --working-dir . -- python jobs/sweep.py --checkpoint /ckpt/run/checkpoint_0400000 \\
        --config configs/sweep-paper.yaml --set eval.reference=/data/VIRTUAL_imagenet256_labeled.npz

--config holds a `sweep:` section (stages, metric, concurrency) and optionally sample/eval/tracking
sections over the checkpoint's config.yaml; --set takes sweep.* and any other key. Running the same
command again resumes: finished stages and trials are not run again.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from djepa.cli import parse, run  # noqa: E402
from djepa.platform.sweep_config import load_sweep  # noqa: E402

if __name__ == "__main__":
    (cfg, spec), args = parse(__doc__, from_checkpoint=load_sweep)
    from djepa.platform.sweep import run_sweep  # noqa: E402  (imports Ray: only after the config is valid)

    run(run_sweep, cfg, spec, args.checkpoint)
