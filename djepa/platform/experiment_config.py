"""An experiment over training settings, free of Ray: its typed config and the full training Config of every
cell (arm x seed), all validated before any compute.

    name: ablation-mnist
    base: configs/mnist.yaml           # a training config
    set: [train.steps=1000]            # overrides common to every cell
    arms:                              # arm -> dotted overrides (an optional `base:` replaces the common one)
      djepa: {model.pred_loss_weight: 1.0}
      mar: {model.pred_loss_weight: 0.0}
    seeds: [0, 1, 2]
    metric: fd_domain                  # any online metric; the table, threshold and plot use it
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from djepa.config import Config, ConfigError, apply_overrides, deep_merge, format_errors, read_yaml, validate
from djepa.platform.sweep_config import LOWER_IS_BETTER, available_metrics

REPO = Path(__file__).resolve().parents[2]


class ExperimentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "experiment"
    base: str  # the training config every arm starts from (relative to the working dir, else to the repository)
    set: list[str] = []  # key=value overrides of every cell (after base, before the arm's own)
    arms: dict[str, dict[str, Any]] = Field(min_length=1)
    seeds: list[int] = Field([0], min_length=1)
    metric: str = "fd_domain"
    mode: Literal["min", "max"] | None = None  # None: min for FID/FD, max otherwise (as the sweep)
    report_steps: list[int] | None = None  # steps of table.md; None: every evaluated step
    threshold: float | None = None  # threshold.json: the first evaluated step at which the metric reaches it
    concurrent: int = Field(1, ge=1)  # cells trained at once (each a Ray Train run with train.workers workers)
    cpus_per_cell: float = Field(0.25, gt=0)  # the Tune trial itself: it only drives its cell's Train workers
    out_dir: str | None = None  # default outputs/experiments/<name>; shared storage on a cluster

    @field_validator("arms")
    @classmethod
    def _names(cls, arms: dict) -> dict:
        for name in arms:
            if not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"arm name {name!r}: use letters, digits, - and _ (it names directories)")
        return arms

    @field_validator("seeds")
    @classmethod
    def _unique(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds {seeds} repeat a seed")
        return seeds

    @property
    def lower_is_better(self) -> bool:
        return self.mode == "min" if self.mode else self.metric.startswith(LOWER_IS_BETTER)

    def output_dir(self) -> Path:
        return Path(self.out_dir or f"outputs/experiments/{self.name}").resolve()


def cell_name(arm: str, seed: int) -> str:
    return f"{arm}-s{seed}"


def _config_path(path: str, key: str) -> Path:
    p = Path(path)
    for c in (p, REPO / p):
        if c.is_file():
            return c
    raise ConfigError(f"{key}: config file {path} not found (relative paths: to the working dir or the repository)")


def _nested(arm: str, overrides: dict[str, Any]) -> dict:
    out: dict = {}
    for key, value in overrides.items():
        node, parts = out, key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"experiment.arms.{arm}: '{key}' sets a value inside a value")
        node[parts[-1]] = value
    return out


def cell_configs(spec: ExperimentConfig, common: list[str] = ()) -> dict[str, tuple[str, int, Config]]:
    """{cell name: (arm, seed, its full training Config)}; a bad override is named with its arm and cell.
    common: --set overrides of every cell (after spec.set)."""
    out_dir = spec.output_dir()
    cells = {}
    for arm, raw in spec.arms.items():
        overrides = dict(raw)
        base = _config_path(overrides.pop("base", spec.base), f"experiment.arms.{arm}.base" if "base" in raw
                            else "experiment.base")
        for seed in spec.seeds:
            name = cell_name(arm, seed)
            data = apply_overrides(read_yaml(base), [*spec.set, *common])
            data = deep_merge(data, _nested(arm, overrides))
            data = deep_merge(data, {"train": {"seed": seed, "out_dir": str(out_dir / name)},
                                     "tracking": {"run_name": f"{spec.name} {arm} seed {seed}"}})
            try:
                cfg = validate(data)
            except ConfigError as err:
                raise ConfigError(f"experiment.arms.{arm} (cell {name}, base {base}): {err}") from None
            if not cfg.train.eval_every:
                raise ConfigError(f"cell {name}: train.eval_every is not set; an experiment compares online "
                                  f"evaluation curves (e.g. set: [train.eval_every=100])")
            known = [m for m in available_metrics(cfg) if m != "seconds_per_image" and not m.startswith(
                ("precision", "recall"))]
            if spec.metric not in known:
                raise ConfigError(f"experiment.metric: '{spec.metric}' is not an online metric of cell {name} "
                                  f"(eval.features={cfg.eval.features}); choose from {', '.join(known)}")
            late = [s for s in spec.report_steps or [] if s > cfg.train.steps]
            if late:
                raise ConfigError(f"experiment.report_steps: {late} beyond cell {name}'s train.steps="
                                  f"{cfg.train.steps}")
            cells[name] = (arm, seed, cfg)
    return cells


def load_experiment(path: str | Path, overrides: list[str] = ()) -> tuple[ExperimentConfig, dict]:
    """--config FILE and --set (experiment.* for the experiment, any other key for every cell) ->
    (the experiment, its cells), everything validated."""
    data = read_yaml(path)
    mine = [o for o in overrides if o.startswith("experiment.")]
    apply_overrides(wrapped := {"experiment": copy.deepcopy(data)}, mine)
    try:
        spec = ExperimentConfig.model_validate(wrapped["experiment"])
    except ValidationError as err:
        raise ConfigError(f"{path}: " + format_errors(err, ExperimentConfig, "experiment.")) from None
    return spec, cell_configs(spec, [o for o in overrides if not o.startswith("experiment.")])
