"""Train D-JEPA on the bundled digits on this machine, then sample and check the samples.

    python jobs/demo.py [--config configs/digits.yaml] [--set train.max_minutes=1 ...]
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from djepa.config import ConfigError, load_config  # noqa: E402
from djepa.demo import run_demo  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/digits.yaml")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides, e.g. train.steps=200")
    args = ap.parse_args()
    try:
        cfg = load_config(args.config, args.set)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    run_demo(cfg)


if __name__ == "__main__":
    main()
