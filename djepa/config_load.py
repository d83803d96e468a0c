"""Loading the config tree: YAML files, `--set a.b=c` overrides, validation with errors naming the key path.

Re-exported by djepa.config (import from there). Config itself is imported where it is used, not at the top:
djepa.config imports this module.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from djepa.config_base import ConfigError

if TYPE_CHECKING:
    from djepa.config import Config

def _config() -> type[BaseModel]:
    from djepa.config import Config

    return Config


def _valid_keys(model: type[BaseModel], path: tuple) -> list[str]:
    """Field names of the sub-model found at `path` (ignores list indices; looks inside `X | None`)."""
    for key in path:
        field = model.model_fields.get(key) if isinstance(key, str) else None
        ann = getattr(field, "annotation", None)
        sub = [a for a in (ann, *get_args(ann)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if sub:
            model = sub[0]
        elif field is not None:
            return []
    return list(model.model_fields)


def format_errors(err: ValidationError, root: type[BaseModel] | None = None, prefix: str = "") -> str:
    """pydantic's errors as one line per key path (prefix + path), with the closest valid key for a typo."""
    lines = []
    for e in err.errors():
        loc = tuple(x for x in e["loc"] if not (isinstance(x, str) and x.startswith(("function-after", "list["))))
        key = prefix + (".".join(str(x) for x in loc) or "<root>")
        if e["type"] == "extra_forbidden":
            valid = _valid_keys(root or _config(), loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
            hint = f"; did you mean '{prefix}{'.'.join([*map(str, loc[:-1]), close[0]])}'?" if close else ""
            lines.append(f"  {key}: unknown key{hint} (valid: {', '.join(valid)})")
        else:
            got = e.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"  {key}: {e['msg']}{shown}")
    return "invalid config:\n" + "\n".join(lines)


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like key.path=value (e.g. model.depth=4)")
    key, raw = item.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override '{item}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else raw
    except yaml.YAMLError as err:
        raise ConfigError(f"override '{item}': the value is not valid YAML ({getattr(err, 'problem', err)})") from None
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override '{item}': '{part}' is a value, not a section")
            node = child
        node[path[-1]] = value
    return data


def validate(data: dict) -> Config:
    try:
        return _config().model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_errors(err)) from None


def read_yaml(path: str | Path) -> dict:
    """A YAML mapping of sections; a missing file or another top level is a ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        what = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML ({what})") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a text file ({err})") from None
    if data is None:  # an empty file would silently mean "all defaults" (the 212M-parameter model)
        raise ConfigError(f"{path} is empty; a config file needs at least one section (e.g. train:)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, not a {type(data).__name__}")
    return data


def deep_merge(base: dict, other: dict) -> dict:
    """other's leaves over base's, section by section (a partial YAML overrides only what it names)."""
    out = dict(base)
    for k, v in other.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """YAML file (or defaults) + `key.path=value` overrides -> a validated Config."""
    data = read_yaml(path) if path is not None else {}
    return validate(apply_overrides(data, overrides or []))


def save_config(cfg: Config, path: str | Path) -> None:
    path = Path(path)
    path.write_text(cfg.to_json() if path.suffix == ".json" else cfg.to_yaml())
