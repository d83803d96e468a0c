"""MLflow tracking that never stops training.

The driver creates (or, on resume, reopens) the run and logs the resolved config and the
dataset manifest; rank 0 gets the run id and logs metrics and sample grids through a
`Tracker`. Every MLflow call is guarded: if the server cannot be reached the job goes on
with a warning, and the metrics stay in the run directory's metrics.jsonl.
"""
from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

from djepa.config import Config

# A dead server must not stall a training step for minutes of HTTP retries.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


# MLflow 3's UI opens an experiment in its GenAI view (traces, judges, prompts) unless this tag says it is a
# model-training one; "custom_model_development" is what its own "Machine learning" choice writes (MLflow 3.17's
# UI bundle: ExperimentKind.CUSTOM_MODEL_DEVELOPMENT). A kind a user chose in the UI is left as it is.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
# keys that say where things go, not what is trained: never part of a run name
_NOT_IN_NAME = ("train.out_dir", "tracking.", "eval.out_dir", "eval.cache_dir", "data.encoded_dir", "data.root")
PRESETS = Path(__file__).resolve().parents[2] / "configs"


def in_ray_job() -> bool:
    """True in the driver of a `ray job submit` job (its cwd is a temporary copy of the working dir)."""
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ


def tracking_uri(cfg: Config) -> str:
    """tracking.tracking_uri, else $MLFLOW_TRACKING_URI, else ./mlflow.db (absolute, since Ray moves cwd)."""
    uri = cfg.tracking.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri is None and in_ray_job():
        warnings.warn("no MLFLOW_TRACKING_URI in this Ray job: its MLflow store would be ./mlflow.db inside the job's "
                      "temporary working directory and be lost; pass --runtime-env-json '{\"env_vars\": "
                      "{\"MLFLOW_TRACKING_URI\": ...}}'", stacklevel=2)
    return uri or f"sqlite:///{Path('mlflow.db').resolve()}"


# MLflow 3.17's UI picks its view from a global GenAI / Model-training switch (default GenAI, kept in the
# browser) and ignores the experiment-kind tag while that switch exists; the URL parameter selects the
# model-training view (checked in headless Chromium).
TRAINING_VIEW = "?workflowType=machine_learning"


def run_url(uri: str, experiment_id: str, run_id: str) -> str:
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}{TRAINING_VIEW}"
    return (f"`mlflow ui --backend-store-uri {uri}` then "
            f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs/{run_id}{TRAINING_VIEW}")


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    """{'a': {'b': 1}} -> {'a.b': '1'}: every leaf of the config as one MLflow param."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= flatten(v, f"{key}.")
        else:
            out[key] = json.dumps(v) if isinstance(v, (list, tuple)) else str(v)
    return out


def config_diff(cfg: Config, preset: Path | None = None) -> list[str]:
    """`key=value` for every leaf in which cfg differs from its preset (configs/<cfg.name>.yaml; [] if none)."""
    from djepa.config import ConfigError, load_config

    preset = preset or PRESETS / f"{cfg.name}.yaml"
    try:
        base = flatten(load_config(preset).to_dict())
    except ConfigError:
        return []
    now = flatten(cfg.to_dict())
    return [f"{k}={v}" for k, v in now.items() if base.get(k) != v and not k.startswith(_NOT_IN_NAME)]


def training_run_name(cfg: Config, preset: Path | None = None, max_diffs: int = 3) -> str:
    """tracking.run_name, else '<config name> <what differs from the preset> <date time>', e.g.
    'mnist train.steps=600 2026-11-30 19:42': runs a person can tell apart in the MLflow run list."""
    if cfg.tracking.run_name:
        return cfg.tracking.run_name
    diffs = config_diff(cfg, preset)
    shown = " ".join(diffs[:max_diffs]) + (f" +{len(diffs) - max_diffs} more" if len(diffs) > max_diffs else "")
    return " ".join(p for p in (cfg.name, shown, time.strftime("%Y-%m-%d %H:%M")) if p)


def _reachable(uri: str) -> str | None:
    """None if the store answers, else why not."""
    if not uri.startswith(("http://", "https://")):
        return None
    import requests

    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=5).raise_for_status()
    except Exception as err:
        return f"{type(err).__name__}: {err}"
    return None


class Tracker:
    """MLflow calls for one run; a failure warns once and turns tracking off (training goes on)."""

    def __init__(self, uri: str | None, run_id: str | None, experiment_id: str | None = None):
        self.uri, self.run_id, self.experiment_id = uri, run_id, experiment_id
        self.client = None
        if uri and run_id:
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(tracking_uri=uri)

    @property
    def active(self) -> bool:
        return self.client is not None

    @property
    def url(self) -> str | None:
        return run_url(self.uri, self.experiment_id, self.run_id) if self.run_id else None

    def _call(self, what: str, fn, *args, **kwargs) -> Any:
        if self.client is None:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            warnings.warn(f"MLflow {what} failed ({type(err).__name__}: {err}); tracking is off for the rest "
                          f"of this process, training continues (metrics stay in metrics.jsonl)", stacklevel=2)
            self.client = None
            return None

    def log_metrics(self, metrics: dict[str, float], step: int, timestamp_ms: int | None = None) -> None:
        """timestamp_ms: a recorded point's own time, so that logging it again adds no row (MLflow dedupes
        identical key, value, step and timestamp)."""
        from mlflow.entities import Metric
        now = timestamp_ms or int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self._call("log_metrics", lambda: self.client.log_batch(self.run_id, metrics=batch))

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow caps a batch at 100 params
            self._call("log_params", lambda chunk=items[i:i + 100]: self.client.log_batch(self.run_id, params=chunk))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._call("log_artifact", lambda: self.client.log_artifact(self.run_id, str(path), artifact_path))

    def log_dict(self, data: dict, name: str) -> None:
        self._call("log_dict", lambda: self.client.log_dict(self.run_id, data, name))

    def set_tag(self, key: str, value: str) -> None:
        self._call("set_tag", lambda: self.client.set_tag(self.run_id, key, str(value)))

    def finish(self, status: str = "FINISHED") -> None:
        self._call("set_terminated", lambda: self.client.set_terminated(self.run_id, status))


def start_run(cfg: Config, run_dir: Path, manifest: dict | None, run_id: str | None = None,
              parent_run_id: str | None = None, run_name: str | None = None, params: dict | None = None) -> Tracker:
    """Driver side: create the run (a child of `parent_run_id` if given, or reopen `run_id` on resume), log
    config params and the manifest. Creating the SQLite database here, before any worker, avoids the
    concurrent-migration race."""
    uri = tracking_uri(cfg)
    problem = _reachable(uri)
    if problem:
        warnings.warn(f"MLflow tracking server {uri} is unreachable ({problem}); the job runs without MLflow "
                      f"(results stay in {run_dir}). Set tracking.tracking_uri or "
                      f"MLFLOW_TRACKING_URI to a live server to track", stacklevel=2)
        return Tracker(None, None)
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(cfg.tracking.experiment)
        if exp is None:
            exp_id = client.create_experiment(cfg.tracking.experiment, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        else:
            exp_id = exp.experiment_id
            if EXPERIMENT_KIND_TAG not in exp.tags:  # made by an older djepa or by hand
                client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        if run_id is None:
            tags = {"djepa.run_dir": str(run_dir)} | ({"mlflow.parentRunId": parent_run_id} if parent_run_id else {})
            run_id = client.create_run(exp_id, run_name=run_name or cfg.tracking.run_name or run_dir.name,
                                       tags=tags).info.run_id
            old = {}
        else:
            client.update_run(run_id, status="RUNNING")
            old = client.get_run(run_id).data.params
    except Exception as err:
        warnings.warn(f"MLflow at {uri} failed ({type(err).__name__}: {err}); the job runs without MLflow",
                      stacklevel=2)
        return Tracker(None, None)
    tracker = Tracker(uri, run_id, exp_id)
    params = flatten(cfg.to_dict()) if params is None else params  # an experiment's parent: what its cells share
    # Params are immutable in MLflow: a value changed on resume (e.g. more train.steps) becomes a tag.
    tracker.log_params({k: v for k, v in params.items() if k not in old})
    for k, v in params.items():
        if k in old and old[k] != v[:6000]:
            tracker.set_tag(f"resume.{k}", f"{old[k]} -> {v}")
    tracker.set_tag("djepa.config_hash", cfg.hash())
    if manifest is not None:
        tracker.log_dict(manifest, "dataset/manifest.json")
    return tracker
