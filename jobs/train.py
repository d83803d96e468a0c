"""Train D-JEPA with Ray Train on every worker the config asks for, streaming the encoded dataset.

    python jobs/train.py --config configs/digits.yaml [--set train.workers=2 ...]
    python jobs/train.py --config configs/digits.yaml --resume --set train.steps=6000   # continue a run
    ray job submit --working-dir . -- python jobs/train.py --config configs/djepa-b.yaml

The bundled datasets are encoded on the fly if needed; others need jobs/encode.py first.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from djepa.cli import parse, run  # noqa: E402


def _flags(ap):
    ap.add_argument("--resume", action="store_true",
                    help="continue the run in train.out_dir from its latest checkpoint (step count and schedules go on)")
    ap.add_argument("--resume-from", metavar="CHECKPOINT", help="continue from this checkpoint directory")


if __name__ == "__main__":
    cfg, args = parse(__doc__, add_args=_flags)
    from djepa.platform.trainer import train  # noqa: E402  (imports Ray: only after the config is valid)

    run(train, cfg, resume=args.resume, resume_from=args.resume_from)
