"""Samples: Algorithm 1 decoded to images or clips, class-balanced interleaved labels, ADM-format .npz, a grid.

Modality-blind: a sample is uint8 (H, W, C) or (T, H, W, C); `save_grid` writes a PNG grid for images and,
for clips, the video modality's animated grid and frame strip (djepa/video/writer.py).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from djepa.conditions import Conditioner, is_text, labels_for, preview_conditions
from djepa.config import Config, SampleConfig
from djepa.fast import graph_token_sampler, sampling_autocast
from djepa.models.rng import RowGenerator
from djepa.models.sampler import generate
from djepa.models.tokenizer import build_tokenizer


def balanced_labels(n: int, num_classes: int) -> np.ndarray:
    """0, 1, ..., C-1, 0, 1, ...: any prefix is as balanced as it can be (unsorted for IS splits)."""
    return np.arange(n, dtype=np.int64) % num_classes


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) or clips (B, C, T, H, W) in [-1, 1] -> (B, H, W, C) / (B, T, H, W, C) uint8, the ADM layout."""
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(1, -1).cpu().numpy()


def atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_npz(path: str | Path, images: np.ndarray, labels: np.ndarray, captions=None) -> Path:
    """ADM's format: arr_0 uint8 (N, H, W, C) (clips: (N, T, H, W, C)), arr_1 int64 labels; a text model's samples
    also keep `captions`, each sample's prompt (a unicode array: read back without pickle)."""
    if images.dtype != np.uint8 or images.ndim not in (4, 5):
        raise ValueError(f"samples must be uint8 (N, H, W, C) or (N, T, H, W, C), got {images.dtype} {images.shape}")
    path = Path(path)

    def write(tmp):
        with open(tmp, "wb") as f:
            extra = {} if captions is None else {"captions": np.asarray(captions, dtype=str)}
            np.savez(f, images, labels, **extra)

    atomic_write(path, write)
    return path


def save_arrays(path: str | Path, arrays: dict[str, np.ndarray], meta: dict) -> Path:
    """Named arrays + a JSON `meta` string in one .npz, written atomically; read back without pickle."""
    path = Path(path)

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta, sort_keys=True)), **arrays)

    atomic_write(path, write)
    return path


def load_arrays(path: str | Path) -> tuple[dict[str, np.ndarray], dict | None]:
    """-> (arrays, meta or None) of a .npz; every member is read, so a damaged file raises here."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = arrays.pop("meta", None)
    return arrays, None if meta is None else json.loads(str(meta))


def tile(images: np.ndarray, ncol: int, line: int = 0) -> np.ndarray:
    """uint8 (N, H, W, C) -> one (rows * (H + 1) + 1, ncol * (W + 1) + 1, C) grid, `ncol` images per row
    between 1-px lines of value `line` (the video writer tiles each frame of its clips with it too)."""
    n, h, w, c = images.shape
    rows = -(-n // ncol)
    grid = np.full((rows * (h + 1) + 1, ncol * (w + 1) + 1, c), line, dtype=np.uint8)
    for i, img in enumerate(images):
        r, k = divmod(i, ncol)
        grid[1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + k * (w + 1): 1 + k * (w + 1) + w] = img
    return grid


def save_grid_png(path: str | Path, images: np.ndarray, ncol: int, scale: int = 1, line: int = 0) -> Path:
    """uint8 (N, H, W, C) -> one PNG with `ncol` images per row, each upscaled `scale` times, between 1-px lines
    of value `line` (black: the image previews; the video strip draws them grey)."""
    from PIL import Image

    grid = tile(images, ncol, line)
    pil = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    path = Path(path)
    atomic_write(path, lambda tmp: pil.save(tmp, format="PNG"))
    return path


def grid_scale(image_size: int) -> int:
    """Upscaling of a sample grid so each image is about 112 px (28x28 MNIST x4, 8x8 digits x14; 256 px x1):
    readable in the MLflow artifact view at its natural size."""
    return max(1, 112 // image_size)


def save_grid(stem: str | Path, samples: np.ndarray, ncol: int) -> dict[str, Path]:
    """The grid of uint8 samples at <stem>.png (images), or for clips (N, T, H, W, C) the video modality's files:
    <stem>.gif (the main one, animated), <stem>.mp4 and <stem>-strip.png. Keys: "main" and each file's kind."""
    stem = Path(stem)
    if samples.ndim == 5:
        from djepa.video.writer import save_video_grid, video_grid_scale

        files = save_video_grid(stem, samples, ncol=ncol, scale=video_grid_scale(samples.shape[2]))
        return {"main": files["gif"], **files}
    png = save_grid_png(stem.with_suffix(".png"), samples, ncol=ncol, scale=grid_scale(samples.shape[1]))
    return {"main": png, "png": png}


def sampling_dtype(s: SampleConfig, device: torch.device | str) -> torch.dtype | None:
    """sample.dtype for `device` -> the autocast dtype around `generate` (None: plain fp32)."""
    bf16 = s.dtype == "bf16" or (s.dtype == "auto" and torch.device(device).type == "cuda")
    return torch.bfloat16 if bf16 else None


_MASK64 = (1 << 64) - 1


def sample_seeds(seed: int, indices: np.ndarray) -> list[int]:
    """The seed of sample `index` (EDM2): a function of (sample.seed, index) only, so any subset of a run
    can be regenerated and no sample depends on its batch, the batch size or the number of workers.
    SplitMix64 of (seed << 32) + index, as 63 bits: torch's CPU generator keeps only the low 32 bits of a
    seed, so the plain (seed << 32) + index gave every sample.seed the same images on a CPU."""
    out = []
    for i in indices:
        z = ((seed << 32) + int(i) + 0x9E3779B97F4A7C15) & _MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        out.append((z ^ (z >> 31)) >> 1)
    return out


@torch.no_grad()
def sample_images(model, cfg: Config, labels: np.ndarray, cfg_scale: float | None = None,
                  seed: int | None = None, device: torch.device | str = "cpu", tokenizer=None,
                  indices: np.ndarray | None = None, conditioner: Conditioner | None = None) -> np.ndarray:
    """Conditional samples -> uint8 (N, *tokenizer.sample_shape): (N, H, W, C) or clips (N, T, H, W, C), in batches
    of sample.batch_size. `labels`: the raw conditions (class ids, or captions for a text model; djepa.conditions).
    Sample i (of `indices`, default 0..N-1) draws all its noise from its own seed. Pass `tokenizer` to reuse a
    loaded VAE and `conditioner` a loaded text encoder.
    Precision and CUDA graphs follow sample.dtype and sample.cuda_graphs, applied here from outside the model
    (djepa.fast; graphs stay installed on `model` for its next call); the decoder runs in fp32 as before."""
    s = cfg.sample
    if tokenizer is None:
        tokenizer = build_tokenizer(cfg.tokenizer).to(device)
    indices = np.arange(len(labels)) if indices is None else np.asarray(indices)
    seeds = sample_seeds(s.seed if seed is None else seed, indices)
    graph_token_sampler(model, s.cuda_graphs)  # used on CUDA only: eager elsewhere
    conditioner = conditioner or Conditioner(cfg, device)
    out = []
    for i in range(0, len(labels), s.batch_size):
        y = conditioner(labels[i: i + s.batch_size])
        rows = RowGenerator(seeds[i: i + s.batch_size], device)
        with sampling_autocast(device, sampling_dtype(s, device)):
            tokens = generate(model, y, s.ar_steps, s.cfg if cfg_scale is None else cfg_scale, s.cfg_schedule,
                              s.temperature, generator=rows)
        out.append(to_uint8(tokenizer.decode(tokens)))
    return np.concatenate(out)


def write_preview(model, cfg: Config, out_dir: str | Path, device="cpu", tokenizer=None, stem: str = "samples",
                  npz: bool = True) -> dict[str, Path]:
    """A grid of sample.num_per_class samples per class or prompt (a row per sample index, a column per condition;
    djepa.conditions.preview_conditions), as <stem>.png (clips: <stem>.gif, .mp4, -strip.png; "png" is then the
    strip) and, with npz, the samples as <stem>.npz."""
    out = Path(out_dir)
    raw, ncol = preview_conditions(cfg)
    images = sample_images(model, cfg, raw, device=device, tokenizer=tokenizer)
    paths = save_grid(out / stem, images, ncol=ncol)
    paths.setdefault("png", paths.get("strip"))
    if npz:
        paths["npz"] = save_npz(out / f"{stem}.npz", images, labels_for(cfg, raw),
                                raw if is_text(cfg) else None)
    return paths
