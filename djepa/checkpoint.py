"""Weights on disk: safetensors only (never unpickle), with the resolved config beside them."""
from __future__ import annotations

import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

from djepa.config import Config, load_config
from djepa.models.djepa import DJEPA, build_model
from djepa.models.ema import make_ema


def save_weights(path: str | Path, model: DJEPA, ema: DJEPA, cfg: Config, extra: dict | None = None) -> Path:
    """A directory with model.safetensors (model.* and ema.* tensors) and config.yaml, written atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors |= {f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.state_dict().items()}
    meta = {"config_hash": cfg.hash(), **{k: str(v) for k, v in (extra or {}).items()}}
    save_file(tensors, str(tmp / "model.safetensors"), metadata=meta)
    (tmp / "config.yaml").write_text(cfg.to_yaml())
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    return path


def load_weights(path: str | Path, device="cpu") -> tuple[Config, DJEPA, DJEPA]:
    """-> (config, model, ema) from a directory written by save_weights."""
    path = Path(path)
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"{path} holds no model.safetensors: not a djepa checkpoint directory")
    cfg = load_config(path / "config.yaml")
    tensors = load_file(str(path / "model.safetensors"), device=str(device))
    model = build_model(cfg.model, cfg.tokenizer).to(device)
    ema = make_ema(model)
    for prefix, module in (("model.", model), ("ema.", ema)):
        module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    return cfg, model, ema
