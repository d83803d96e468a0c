"""Console output shared by every job: one `say` and one ETA format.

`say` writes to stdout directly and flushes: Ray Train V2 patches print() inside workers so that
every line would be logged *and* echoed (each line twice), and a progress line must show at once.
"""
from __future__ import annotations

import sys


def say(tag: str, msg: str) -> None:
    """'[tag] msg' on its own line, flushed."""
    sys.stdout.write(f"[{tag}] {msg}\n")
    sys.stdout.flush()


def fmt_eta(seconds: float) -> str:
    """12m05s (hours stay in minutes: 125m00s reads fine and sorts)."""
    m, s = divmod(int(max(seconds, 0)), 60)
    return f"{m}m{s:02d}s"


def eta(done: int, total: int, elapsed: float, budget_s: float | None = None) -> float:
    """Seconds left for `total - done` units at the rate so far, capped by a time budget if one is set."""
    left = (total - done) * elapsed / max(done, 1)
    return min(left, budget_s - elapsed) if budget_s else left
