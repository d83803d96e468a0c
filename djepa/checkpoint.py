"""Checkpoints on disk: one directory, written atomically, never unpickled.

    model.safetensors   model.* and ema.* tensors (metadata: config hash, step)
    config.yaml         the resolved config
    optimizer.pt        AdamW state (training checkpoints; read with torch.load(weights_only=True))
    scheduler.json      the lr / weight-decay schedule and where it stands
    state.json          step, epoch, data position, RNG, and the byte size of every file above

`verify_checkpoint` compares the files with the sizes in state.json, so a truncated or
half-copied checkpoint is named before anything loads it, and then with their sha256 (also in
state.json), so a file damaged in place (same size: a bit flip, a partial overwrite) is named too.
sha256 runs at ~0.76 GB/s on one core here: ~2 s for a D-JEPA-B checkpoint's 1.7 GB of weights, ~4.5 s
with its optimizer state; a checkpoint saved before hashes were recorded is checked by size only.
`check_finite` streams the weights one tensor at a time and refuses NaN or infinite values.
"""
from __future__ import annotations

import json
import pickle
import shutil
import time
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from djepa.config import Config, load_config
from djepa.digest import file_sha256
from djepa.models.djepa import DJEPA, build_model
from djepa.models.ema import make_ema


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


def _tensors(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}{k}": v.detach().cpu().contiguous() for k, v in state.items()}


def save_checkpoint(path: str | Path, cfg: Config, model_state: dict, ema_state: dict, state: dict,
                    optim_state: dict | None = None, scheduler: dict | None = None) -> Path:
    """Write the checkpoint directory `path` (temp dir, then rename: a crash never leaves half of one).
    Takes full (unsharded) state dicts so DDP, FSDP and single-process callers share one format."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    meta = {"config_hash": cfg.hash(), "step": str(state.get("step", 0))}
    save_file(_tensors(model_state, "model.") | _tensors(ema_state, "ema."), str(tmp / "model.safetensors"),
              metadata=meta)
    (tmp / "config.yaml").write_text(cfg.to_yaml())
    if optim_state is not None:
        torch.save(optim_state, tmp / "optimizer.pt")
    if scheduler is not None:
        (tmp / "scheduler.json").write_text(json.dumps(scheduler, indent=1))
    files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
    sha = {p.name: file_sha256(p) for p in sorted(tmp.iterdir())}
    full = {**state, "config_hash": cfg.hash(), "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "files": files,
            "sha256": sha}
    (tmp / "state.json").write_text(json.dumps(full, indent=1))
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    return path


def verify_checkpoint(path: str | Path, content: bool = True) -> dict:
    """-> state.json, after checking that every file it lists is present with its recorded size and, with
    content, its recorded sha256."""
    path = Path(path)
    state_file = path / "state.json"
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist (or is not a directory)")
    try:
        state = json.loads(state_file.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{state_file} is missing: {path} is not a complete djepa checkpoint") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{state_file} is damaged ({err}); use an earlier checkpoint") from None
    for name, size in state.get("files", {}).items():
        f = path / name
        got = f.stat().st_size if f.is_file() else None
        if got != size:
            found = "missing" if got is None else f"{got:,} bytes"
            raise CheckpointError(f"{f} is damaged: expected {size:,} bytes, found {found} (an interrupted copy "
                                  f"or a full disk?). Delete {path} to fall back to an earlier checkpoint")
    for name, digest in (state.get("sha256", {}) if content else {}).items():
        if file_sha256(path / name) != digest:
            raise CheckpointError(f"{path / name} is damaged: its content does not match the sha256 recorded in "
                                  f"{state_file} when it was saved (same size, different bytes: a bad disk or copy, "
                                  f"or an edit). Copy it again from its source, or delete {path} to fall back to an "
                                  f"earlier checkpoint")
    return state


def check_finite(path: str | Path) -> None:
    """Every tensor of model.safetensors is finite (read one at a time: memory of the largest tensor only)."""
    f = Path(path) / "model.safetensors"
    try:
        with safe_open(str(f), framework="pt") as st:
            for key in st.keys():
                t = st.get_tensor(key)
                if t.is_floating_point() and not torch.isfinite(t).all():
                    bad = int((~torch.isfinite(t)).sum())
                    raise CheckpointError(f"{f}: tensor {key} holds {bad:,} NaN or infinite value(s): the run "
                                          f"diverged before this checkpoint was saved; use an earlier checkpoint")
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{f} cannot be read ({err}); delete {path} to fall back to an earlier checkpoint")


def load_tensors(path: str | Path, device="cpu") -> tuple[dict, dict]:
    """-> (model state dict, EMA state dict) from a verified checkpoint."""
    f = Path(path) / "model.safetensors"
    try:
        tensors = load_file(str(f), device=str(device))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{f} cannot be read ({err}); delete {path} to fall back to an earlier checkpoint")
    split = ({k[len(p):]: v for k, v in tensors.items() if k.startswith(p)} for p in ("model.", "ema."))
    return tuple(split)


def load_optimizer_state(path: str | Path, mmap: bool = False) -> dict:
    """AdamW state; mmap=True reads only the structure (the driver's cheap check before any worker starts)."""
    f = Path(path) / "optimizer.pt"
    if not f.is_file():
        raise CheckpointError(f"{f} is missing: {path} holds weights only and cannot resume training")
    try:
        return torch.load(f, map_location="cpu", weights_only=True, mmap=mmap)  # never unpickle arbitrary objects
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        first = str(err).strip().splitlines()[0][:300]
        raise CheckpointError(f"{f} is refused: it is not plain tensors and numbers that torch.load(weights_only=True) "
                              f"accepts ({type(err).__name__}: {first}). djepa never unpickles arbitrary objects; "
                              f"resume from a checkpoint written by djepa, or delete {path} to fall back to an "
                              f"earlier one") from None


def load_weights(path: str | Path, device="cpu") -> tuple[Config, DJEPA, DJEPA]:
    """-> (config, model, ema) from any djepa checkpoint directory."""
    path = Path(path)
    verify_checkpoint(path)
    check_finite(path)
    cfg = load_config(path / "config.yaml")
    model_state, ema_state = load_tensors(path, device)
    model = build_model(cfg.model, cfg.tokenizer).to(device)
    ema = make_ema(model)
    model.load_state_dict(model_state)
    ema.load_state_dict(ema_state)
    return cfg, model, ema
