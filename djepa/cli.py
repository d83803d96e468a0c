"""What every job in jobs/ shares: --config and --set parsing, and user errors printed without a traceback."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from djepa.config import Config, ConfigError, load_config


def parse(doc: str, default_config: str | None = "configs/digits.yaml",
          add_args: Callable[[argparse.ArgumentParser], None] | None = None,
          from_checkpoint: bool = False) -> tuple[Config, argparse.Namespace]:
    """-> (validated config, parsed arguments); a config error exits with status 2 before any compute.
    from_checkpoint: --checkpoint DIR is required and its config.yaml (+ --set) is the config."""
    from djepa.checkpoint import CheckpointError

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if from_checkpoint:
        ap.add_argument("--checkpoint", required=True, help="a djepa checkpoint directory (its EMA weights are used)")
    else:
        ap.add_argument("--config", default=default_config, help=f"YAML config (default {default_config})")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides, e.g. train.steps=200")
    if add_args:
        add_args(ap)
    args = ap.parse_args()
    try:
        if from_checkpoint:
            from djepa.platform.evaluator import eval_config

            return eval_config(args.checkpoint, args.set), args
        return load_config(args.config, args.set), args
    except (ConfigError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def run(fn: Callable, *args, **kwargs):
    """Call fn; an error the user can fix (it names the file or key) exits 2 with its message only."""
    from djepa.checkpoint import CheckpointError
    from djepa.data.encoded import DatasetError
    from djepa.eval.features import FeatureError
    from djepa.eval.reference import ReferenceError

    try:
        return fn(*args, **kwargs)
    except (ConfigError, DatasetError, CheckpointError, FeatureError, ReferenceError, FileExistsError,
            FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
