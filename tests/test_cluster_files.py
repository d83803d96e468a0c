"""The shipped cluster launcher files: valid against Ray's own schema (offline, no credentials), pinned to
constraints.txt, and never opening the dashboard / job port or MLflow to the internet."""
import copy
import re
from pathlib import Path

import pytest
import yaml

FILES = ["cluster.yaml", "cluster-aws.yaml"]
PUBLIC_PORTS = {5000, 6379, 8265, 10001}  # MLflow, GCS, dashboard / job API, Ray client


def _load(name):
    return yaml.safe_load(Path(name).read_text())


def _commands(cfg):
    keys = ["initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
            "head_start_ray_commands", "worker_start_ray_commands"]
    return [c for k in keys for c in cfg.get(k) or []]


def _validate(cfg):
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(cfg)))


@pytest.mark.parametrize("name", FILES)
def test_valid_against_rays_launcher_schema(name):
    cfg = _load(name)
    _validate(cfg)
    bad = copy.deepcopy(cfg)
    bad["max_wrkers"] = 2  # the validation is real: a typo fails it
    with pytest.raises(Exception, match="max_wrkers"):
        _validate(bad)


@pytest.mark.parametrize("name", FILES)
def test_pins_equal_constraints(name):
    pins = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)$", Path("constraints.txt").read_text(), re.M))
    found = re.findall(r'"?([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([0-9][^\s"]*)"?', " ".join(_commands(_load(name))))
    assert {"torch", "torchvision", "ray", "mlflow"} <= {p for p, _ in found}
    for package, version in found:
        assert pins.get(package) == version, f"{name} pins {package}=={version}, constraints.txt has {pins.get(package)}"
    assert any("-c ~/djepa/constraints.txt" in c for c in _commands(_load(name)))  # the rest from the same pins
    assert not any("ray-wheels" in c or "dev0" in c for c in _commands(_load(name)))  # no nightly Ray


@pytest.mark.parametrize("name", FILES)
def test_nothing_is_published(name):
    cfg = _load(name)
    cmds = _commands(cfg)
    head = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in " ".join(cmds)
    server = next(c for c in cmds if "mlflow_server.py start" in c)
    assert "--host 0.0.0.0" not in server and "--root /shared/mlflow" in server
    for rule in (cfg.get("provider", {}).get("security_group") or {}).get("IpPermissions", []):
        ports = set(range(rule.get("FromPort", 0), rule.get("ToPort", 65535) + 1))
        assert not (ports & PUBLIC_PORTS and any(r.get("CidrIp") == "0.0.0.0/0" for r in rule.get("IpRanges", [])))
