"""Opening published checkpoint files without unpickling freely.

A `.pth`/`.ckpt` is read with torch.load(weights_only=True) and an explicit allow-list: MAR's
checkpoint-last.pth needs argparse.Namespace (its `args`) and nothing else. A file that needs any
other class is refused with the class named; nothing is ever unpickled without weights_only.
"""
from __future__ import annotations

import argparse
import pickle
import re
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

ALLOWED_CLASSES = (argparse.Namespace,)


class ConvertError(ValueError):
    """A file that cannot be converted; the message names the file and why."""


def load_state_file(path: str | Path) -> dict:
    """-> the file's top-level mapping: a .safetensors file as {name: tensor}, a torch pickle as saved."""
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise ConvertError(f"{path}: not a readable safetensors file ({err})") from None
    try:
        with torch.serialization.safe_globals(list(ALLOWED_CLASSES)):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = f"class {found.group(1)}" if found else "an object"
        raise ConvertError(
            f"{path}: refused to load, it needs {what}, which is not on the allow-list "
            f"({', '.join(c.__module__ + '.' + c.__qualname__ for c in ALLOWED_CLASSES)}). Nothing was "
            f"unpickled. If you trust the file, re-save its tensors as .safetensors and convert that.") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConvertError(f"{path}: not a readable torch checkpoint (truncated or corrupt?): {first}") from None
    if not isinstance(data, dict):
        raise ConvertError(f"{path}: expected a mapping at the top level, found {type(data).__name__}")
    return data


def tensors_only(state: dict, path: Path | str, what: str) -> dict[str, torch.Tensor]:
    """A state dict's tensors (nn.Parameter -> plain tensor); anything else is an error naming the key."""
    out = {}
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise ConvertError(f"{path}: {what} key {k!r} holds a {type(v).__name__}, not a tensor")
        out[k] = v.detach().clone().contiguous()
    return out
