"""Test hooks for the evaluator and the sweep (production code reads no environment variable for faults).
A hook that runs inside a Tune trial is pickled by value (register_by_value below): the trials' processes
cannot import this tests/ module."""
from pathlib import Path


def register_by_value() -> None:
    """Ray pickles with its own cloudpickle: send this module's hooks by value to the trials' processes."""
    import sys

    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def stop_after_shards(k: int):
    """on_shard for the evaluator: the driver stops after writing k shards (a killed evaluation)."""
    def on_shard(i: int, start: int, stop: int) -> None:
        if i >= k:
            raise RuntimeError(f"injected fault: stopped after {i} shard(s)")
    return on_shard


def stop_after_stage(name: str):
    """on_stage for the sweep: the driver stops once stage `name` is saved (a killed sweep)."""
    def on_stage(stage: str) -> None:
        if stage == name:
            raise RuntimeError(f"injected fault: sweep stopped after stage {stage}")
    return on_stage


class FailTrials:
    """on_trial for the sweep: the trials named in `always` fail every time, those in `once` fail the first time
    (a marker file in the trial's directory remembers it across Tune's retry)."""

    def __init__(self, always=(), once=()):
        self.always, self.once = set(always), set(once)

    def __call__(self, name: str, out: Path) -> None:
        if name in self.always:
            raise RuntimeError(f"injected fault: trial {name} fails")
        if name in self.once and not (out / "flaky").exists():
            out.mkdir(parents=True, exist_ok=True)
            (out / "flaky").touch()
            raise RuntimeError(f"injected fault: trial {name} fails once")



def cell_faults(stop=(), nan_at_step=None):
    """on_cell for the experiment: the cells in `stop` fail before they train; those in nan_at_step {cell: step}
    train and then stop on a NaN loss at that step (a cell cut off after its run directory exists)."""
    from train_faults import nan_at

    def on_cell(name: str):
        if name in stop:
            raise RuntimeError(f"injected fault: cell {name} stopped")
        return nan_at((nan_at_step or {})[name]) if name in (nan_at_step or {}) else None
    return on_cell
