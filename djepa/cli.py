"""What every job in jobs/ shares: --config and --set parsing, and user errors printed without a traceback."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from djepa.config import Config, ConfigError, load_config


def _checkpoint_config(checkpoint: str, config_file: str | None, overrides: list[str]) -> Config:
    from djepa.config import read_yaml
    from djepa.platform.evaluator import eval_config

    return eval_config(checkpoint, overrides, read_yaml(config_file) if config_file else None)


def positive_int(text: str) -> int:
    """argparse type: a count of at least 1 (0 or -5 samples make no sense; refused before anything runs)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive count (use 1 or more)")
    return value


def parse(doc: str, default_config: str | None = "configs/digits.yaml",
          add_args: Callable[[argparse.ArgumentParser], None] | None = None,
          from_checkpoint: bool | Callable = False) -> tuple[Config, argparse.Namespace]:
    """-> (validated config, parsed arguments); a config error exits with status 2 before any compute.
    from_checkpoint: --checkpoint DIR is required; its config.yaml, then the partial YAML of --config, then
    --set make the config (a callable (checkpoint, config file, overrides) replaces that loading)."""
    from djepa.checkpoint import CheckpointError

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if from_checkpoint:
        ap.add_argument("--checkpoint", required=True, help="a djepa checkpoint directory (its EMA weights are used)")
        ap.add_argument("--config", help="a partial YAML over the checkpoint's config.yaml (e.g. a sweep's best.yaml)")
    else:
        ap.add_argument("--config", default=default_config, help=f"YAML config (default {default_config})")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides, e.g. train.steps=200")
    if add_args:
        add_args(ap)
    args = ap.parse_args()
    try:
        if from_checkpoint:
            load = from_checkpoint if callable(from_checkpoint) else _checkpoint_config
            return load(args.checkpoint, args.config, args.set), args
        return load_config(args.config, args.set), args
    except (ConfigError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def run(fn: Callable, *args, **kwargs):
    """Call fn; an error the user can fix (it names the file or key) exits 2 with its message only."""
    from djepa.checkpoint import CheckpointError
    from djepa.data.encode import BadImageError
    from djepa.data.encoded import DatasetError
    from djepa.eval.features import FeatureError
    from djepa.eval.reference import ReferenceError

    try:
        return fn(*args, **kwargs)
    except (ConfigError, DatasetError, BadImageError, CheckpointError, FeatureError, ReferenceError, FileExistsError,
            FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
