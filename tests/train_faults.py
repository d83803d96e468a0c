"""Faults that tests pass into training as the `on_step` hook (production code reads no variable for them).

A hook runs on every rank before each step: `hook(step, rank, world, tokens, run_dir) -> tokens`.
Ray's workers cannot import this test module, so Ray pickles it by value into them.
"""
import sys

import ray.cloudpickle
import torch

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def fail_once(at: int):
    """The last rank raises once, before step index `at` (a marker file in run_dir says it happened)."""
    def hook(step: int, rank: int, world: int, tokens: torch.Tensor, run_dir) -> torch.Tensor:
        marker = run_dir / f".fault-fail-{at}"
        if step == at and rank == world - 1 and not marker.exists():
            marker.touch()
            raise RuntimeError(f"injected failure at step {step}")
        return tokens
    return hook


def nan_at(at: int):
    """Every rank trains step index `at` on NaN tokens."""
    def hook(step: int, rank: int, world: int, tokens: torch.Tensor, run_dir) -> torch.Tensor:
        return tokens * float("nan") if step == at else tokens
    return hook
