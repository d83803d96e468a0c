"""Train D-JEPA on the bundled digits on this machine, then sample and check the samples.

    python jobs/demo.py [--config configs/digits.yaml] [--set train.max_minutes=1 ...]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from djepa.cli import parse  # noqa: E402
from djepa.demo import run_demo  # noqa: E402

if __name__ == "__main__":
    cfg, _ = parse(__doc__)
    run_demo(cfg)
