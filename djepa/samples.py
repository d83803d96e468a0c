"""Sample I/O: class-balanced interleaved labels, ADM-format .npz, and a PNG grid."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch


def balanced_labels(n: int, num_classes: int) -> np.ndarray:
    """0, 1, ..., C-1, 0, 1, ...: any prefix is as balanced as it can be (unsorted for IS splits)."""
    return np.arange(n, dtype=np.int64) % num_classes


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] -> (B, H, W, C) uint8, the ADM layout."""
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_npz(path: str | Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """ADM's format: arr_0 uint8 (N, H, W, C), arr_1 int64 labels."""
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"samples must be uint8 (N, H, W, C), got {images.dtype} {images.shape}")
    path = Path(path)

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, images, labels)

    _atomic_write(path, write)
    return path


def save_grid_png(path: str | Path, images: np.ndarray, ncol: int, scale: int = 1) -> Path:
    """uint8 (N, H, W, C) -> one PNG with `ncol` images per row, each upscaled `scale` times."""
    from PIL import Image

    n, h, w, c = images.shape
    rows = -(-n // ncol)
    grid = np.zeros((rows * (h + 1) + 1, ncol * (w + 1) + 1, c), dtype=np.uint8)
    for i, img in enumerate(images):
        r, k = divmod(i, ncol)
        grid[1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + k * (w + 1): 1 + k * (w + 1) + w] = img
    pil = Image.fromarray(grid[..., 0] if c == 1 else grid)
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    path = Path(path)
    _atomic_write(path, lambda tmp: pil.save(tmp, format="PNG"))
    return path
