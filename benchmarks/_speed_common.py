"""Shared helpers of benchmarks/sample_speed.py and benchmarks/train_speed.py (no djepa edits, no downloads)."""
from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

# Dense peak FLOP/s per dtype for the GPUs we may meet (vendor datasheets, no sparsity).
# fp32 = plain FP32 FMA on the CUDA cores (torch's default: TF32 off for matmuls).
_PEAKS = {
    "H100": {"bf16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12},  # SXM5 (H800 has the same compute)
    "H200": {"bf16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12},
    "A100": {"bf16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
}


def peak_flops(device: torch.device, dtype: str) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peaks in _PEAKS.items():
        if key in name:
            return peaks[dtype]
    return None


def setup_dtype(dtype: str, device: torch.device) -> torch.dtype | None:
    """fp32: TF32 off (torch default); tf32: fp32 weights, TF32 matmuls; bf16: torch.autocast bf16."""
    tf32 = dtype == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    if dtype == "bf16":
        if device.type == "cpu":
            print("note: bf16 autocast on CPU is slow and not representative", file=sys.stderr)
        return torch.bfloat16
    return None


def env_info(device: torch.device) -> dict:
    info = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
        or platform.machine(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["sm_count"] = torch.cuda.get_device_properties(device).multi_processor_count
    return info


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timer:
    def __init__(self, device):
        self.device = device

    def __enter__(self):
        sync(self.device)
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        sync(self.device)
        self.seconds = time.perf_counter() - self.t0


def build(cfg, device: torch.device):
    """The model, randomly initialised directly on `device` (fast for H on a GPU)."""
    from djepa.models.djepa import build_model

    with torch.device(device):
        model = build_model(cfg.model, cfg.tokenizer)
    return model.to(device)


def count_params(model: torch.nn.Module) -> dict:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    parts = {}
    for name, mod in model.named_children():
        parts[name] = sum(p.numel() for p in mod.parameters())
    return {"trainable": trainable, "parts": parts}


def max_memory_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
