"""What every job in jobs/ shares: --config and --set parsing, and user errors printed without a traceback."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from djepa.config import Config, ConfigError, load_config


def parse(doc: str, default_config: str | None = "configs/digits.yaml",
          add_args: Callable[[argparse.ArgumentParser], None] | None = None) -> tuple[Config, argparse.Namespace]:
    """-> (validated config, parsed arguments); a config error exits with status 2 before any compute."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=default_config, help=f"YAML config (default {default_config})")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides, e.g. train.steps=200")
    if add_args:
        add_args(ap)
    args = ap.parse_args()
    try:
        return load_config(args.config, args.set), args
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def run(fn: Callable, *args, **kwargs):
    """Call fn; an error the user can fix (it names the file or key) exits 2 with its message only."""
    from djepa.checkpoint import CheckpointError
    from djepa.data.encoded import DatasetError

    try:
        return fn(*args, **kwargs)
    except (ConfigError, DatasetError, CheckpointError, FileExistsError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
