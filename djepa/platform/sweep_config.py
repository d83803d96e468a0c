"""The sweep's plan, free of Ray: its typed config, the grids of each stage and the choice of the best trial.

Appendix C of the paper: a coarse grid of cfg x temperature at a fixed number of auto-regressive
steps, a fine grid around the coarse best, a scan of the auto-regressive steps at the best (cfg,
temperature); here also an optional final evaluation of the chosen settings with more samples.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from djepa.config import Config, ConfigError, apply_overrides, format_errors, read_yaml

STAGES = ("coarse", "fine", "ar_steps", "final")
LOWER_IS_BETTER = ("fid", "fd_", "seconds_per_image")  # metric-name prefixes minimised by default


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Span(_Strict):
    """start..stop inclusive by step (the paper's "0.90 to 1.05 step 0.01")."""
    start: float
    stop: float
    step: float = Field(gt=0)

    def values(self) -> list[float]:
        n = int(math.floor((self.stop - self.start) / self.step + 1e-6)) + 1
        if n < 1:
            raise ValueError(f"stop {self.stop} is below start {self.start}")
        return [round(self.start + i * self.step, 6) for i in range(n)]


Values = list[float] | Span


def _values(v: Values) -> list[float]:
    return v.values() if isinstance(v, Span) else [round(float(x), 6) for x in v]


class CoarseStage(_Strict):
    num_samples: int = Field(10000, ge=1)
    cfg: Values = [1.0, 2.0, 3.0, 4.0]
    temperature: Values = Span(start=0.90, stop=1.05, step=0.01)
    ar_steps: int | None = Field(None, ge=1)  # None: sample.ar_steps of the checkpoint's config


class FineStage(_Strict):
    num_samples: int = Field(10000, ge=1)
    cfg_radius: float = Field(0.3, ge=0)
    cfg_step: float = Field(0.1, gt=0)
    temperature_radius: float = Field(0.01, ge=0)
    temperature_step: float = Field(0.01, gt=0)


class ArStepsStage(_Strict):
    num_samples: int = Field(10000, ge=1)
    values: list[int] | Span = Span(start=32, stop=256, step=32)  # paper Table 3


class FinalStage(_Strict):
    num_samples: int = Field(50000, ge=1)


class SweepConfig(_Strict):
    name: str = "sweep"
    metric: str = "fid"  # any metric of the evaluator (fid, is, precision, fd_domain, ...) or seconds_per_image
    weights: dict[str, float] | None = None  # a weighted choice: score = sum(w * metric); replaces `metric`
    mode: Literal["min", "max"] | None = None  # None: min for FID/FD and seconds, max otherwise
    concurrent_trials: int = Field(1, ge=1)  # trials at once; each takes eval.workers workers (GPUs with use_gpu)
    trial_cpus: float = Field(0.25, gt=0)  # the trial process itself: it only drives its evaluator's actors
    retries: int = Field(1, ge=0)  # a failed trial is retried this often, then reported as failed
    keep_samples: bool = False  # keep every trial's shards and samples.npz (10k samples at 256 px = 2 GB)
    out_dir: str | None = None  # default <checkpoint>/../sweeps/<checkpoint>-<name>; shared storage on a cluster
    coarse: CoarseStage | None = CoarseStage()
    fine: FineStage | None = FineStage()
    ar_steps: ArStepsStage | None = ArStepsStage()
    final: FinalStage | None = None

    @model_validator(mode="after")
    def _check(self):
        if self.fine and not self.coarse:
            raise ValueError("fine is centred on the coarse stage's best: enable coarse too")
        grids = {"coarse.cfg": self.coarse and self.coarse.cfg, "coarse.temperature": self.coarse and
                 self.coarse.temperature, "ar_steps.values": self.ar_steps and self.ar_steps.values}
        for key, values in grids.items():
            if values is None:
                continue
            try:
                n = len(_values(values))
            except ValueError as err:
                raise ValueError(f"{key}: {err}") from None
            if n == 0:  # an empty grid would run nothing and then report "every trial failed"
                raise ValueError(f"sweep.{key} is an empty grid; give at least one value (or disable the stage: "
                                 f"{key.split('.')[0]}: null)")
        return self

    @property
    def direction(self) -> str:
        if self.mode:
            return self.mode
        return "min" if self.weights is None and self.metric.startswith(LOWER_IS_BETTER) else "max"

    @property
    def metric_names(self) -> list[str]:
        return sorted(self.weights) if self.weights else [self.metric]


def available_metrics(cfg: Config) -> list[str]:
    """What the evaluator reports for cfg.eval.features (precision/recall need reference images)."""
    out = ["seconds_per_image"]
    for f in cfg.eval.features:
        s = "" if f == "inception" else f"_{f}"
        out += ["fid" if f == "inception" else f"fd_{f}", f"precision{s}", f"recall{s}"]
        out += [] if f == "dinov2" else [f"is{s}", f"is_std{s}"]  # DINOv2 has no classifier head
        out += [f"consistency{s}"] if f == "domain" else []
    return out


def load_sweep(checkpoint: str | Path, config_file: str | Path | None, overrides: list[str]) -> tuple[Config, SweepConfig]:
    """--config FILE (a `sweep:` section plus optional sample/eval/tracking sections over the checkpoint's
    config) and --set (sweep.* or any other key) -> (the base evaluation config, the sweep), all validated."""
    from djepa.platform.evaluator import eval_config

    data = read_yaml(config_file) if config_file else {}
    sweep_data = data.pop("sweep", None) or {}
    mine = [o for o in overrides if o.startswith("sweep.")]
    apply_overrides(sweep := {"sweep": copy.deepcopy(sweep_data)}, mine)
    try:
        spec = SweepConfig.model_validate(sweep["sweep"])
    except ValidationError as err:
        raise ConfigError(format_errors(err, SweepConfig, "sweep.")) from None
    cfg = eval_config(checkpoint, [o for o in overrides if not o.startswith("sweep.")], data)
    known = available_metrics(cfg)
    for m in spec.metric_names:
        if m not in known:
            raise ConfigError(f"sweep.{'weights' if spec.weights else 'metric'}: '{m}' is not a metric of this "
                              f"evaluation (eval.features={cfg.eval.features}); choose from {', '.join(known)}")
    if spec.ar_steps is not None:
        too_many = [int(v) for v in _values(spec.ar_steps.values) if v > cfg.tokenizer.num_tokens or v < 1]
        if too_many:
            raise ConfigError(f"sweep.ar_steps.values: {too_many} outside 1..{cfg.tokenizer.num_tokens} (the number "
                              f"of tokens)")
    if spec.coarse and (spec.coarse.ar_steps or 0) > cfg.tokenizer.num_tokens:
        raise ConfigError(f"sweep.coarse.ar_steps={spec.coarse.ar_steps} exceeds the {cfg.tokenizer.num_tokens} tokens")
    check_points(spec, cfg)
    return cfg, spec


def check_points(spec: SweepConfig, cfg: Config) -> None:
    """Every point of the fixed grids is validated as a config before any trial runs; an invalid one is named by
    its sweep.* key (a bad point found later would fail its trial after the others had spent their compute)."""
    from djepa.config import deep_merge, validate

    grids = {"coarse": {"cfg": "sweep.coarse.cfg", "temperature": "sweep.coarse.temperature",
                        "ar_steps": "sweep.coarse.ar_steps"},
             "ar_steps": {"ar_steps": "sweep.ar_steps.values"}}
    base = point(cfg.sample.cfg, cfg.sample.temperature, cfg.sample.ar_steps)
    for stage, keys in grids.items():
        if getattr(spec, stage) is None:
            continue
        for p in stage_points(spec, stage, cfg, base):
            try:
                validate(deep_merge(cfg.to_dict(), {"sample": p}))
            except ConfigError as err:
                bad = [k for k in keys if f"sample.{k}" in str(err)] or list(keys)
                detail = str(err).replace("invalid config:", "").strip().replace("sample.", "")
                raise ConfigError(f"{', '.join(keys[k] for k in bad)}: the grid point {trial_name(p)} is not a valid "
                                  f"sampling config ({detail})") from None


# ----------------------------------------------------------------------------- grids and choice
def point(cfg: float, temperature: float, ar_steps: int) -> dict:
    return {"cfg": round(float(cfg), 6), "temperature": round(float(temperature), 6), "ar_steps": int(ar_steps)}


def trial_name(p: dict) -> str:
    return f"cfg{p['cfg']:g}_t{p['temperature']:g}_ar{p['ar_steps']}"


def around(center: float, radius: float, step: float, low: float) -> list[float]:
    """center +- radius by step, keeping values >= low."""
    k = int(math.floor(radius / step + 1e-6))
    return [v for v in (round(center + i * step, 6) for i in range(-k, k + 1)) if v >= low]


def stage_points(spec: SweepConfig, stage: str, base: Config, best: dict | None) -> list[dict]:
    """The grid of one stage; `best` is the point chosen by the stages before it."""
    s = base.sample
    if stage == "coarse":
        c = spec.coarse
        return [point(g, t, c.ar_steps or s.ar_steps) for g in _values(c.cfg) for t in _values(c.temperature)]
    if stage == "fine":
        f = spec.fine
        # cfg below 1 pushes away from the class (MAR and the paper never go there); temperatures stay > 0
        return [point(g, t, best["ar_steps"]) for g in around(best["cfg"], f.cfg_radius, f.cfg_step, 1.0)
                for t in around(best["temperature"], f.temperature_radius, f.temperature_step, 1e-6)]
    if stage == "ar_steps":
        return [point(best["cfg"], best["temperature"], int(v)) for v in _values(spec.ar_steps.values)]
    return [dict(best)]


def score(metrics: dict, spec: SweepConfig) -> float | None:
    """The selection value of one trial's metrics (None if any needed metric is missing or not finite)."""
    try:
        v = sum(w * metrics[k] for k, w in spec.weights.items()) if spec.weights else metrics[spec.metric]
    except (KeyError, TypeError):
        return None
    return float(v) if v is not None and math.isfinite(v) else None


def choose(trials: list[dict], spec: SweepConfig) -> dict | None:
    """The best finished trial by score (ties: the first in grid order); failed trials never win."""
    ok = [t for t in trials if t.get("score") is not None]
    if not ok:
        return None
    sign = 1 if spec.direction == "min" else -1
    return min(ok, key=lambda t: sign * t["score"])
