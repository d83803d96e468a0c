"""FD-DINOv2 features: DINOv2 ViT-L/14's class token, as EDM2's `calculate_metrics.py` computes them.

Stein et al. (2023) and EDM2 report the Frechet distance in DINOv2 features beside FID because the
Inception network under-rates diffusion models. The network is timm's `vit_large_patch14_dinov2`
built offline (no download) at 224 px; the weights are DINOv2's own release file
(`dinov2_vitl14_pretrain.pth`, a plain state dict of tensors), read with weights_only=True.

Preprocessing, exactly EDM2's default (`resize_mode='torch'`, modelled on dgm-eval):
uint8 NCHW -> float32 bicubic resize to 224 x 224 with antialias -> /255 -> ImageNet mean/std
normalisation -> the network's normalised class token (1024-d). Grey images are repeated to 3 channels.

The release file holds position embeddings for 518 px (37 x 37 patches); DINOv2 resamples them on every
forward at another size (bicubic, scale factor (16 + 0.1) / 37, no antialias). At a fixed 224 px input that
is the same tensor every time, so it is resampled once here, the same way, when the weights are loaded.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from djepa.digest import file_sha256

URL = "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth"
SIZE, PATCH, DIMS = 224, 14, 1024
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet's, as EDM2 and DINOv2 use
RELEASE_GRID = 37  # 518 px / 14: the grid of the released position embeddings


def build_network() -> torch.nn.Module:
    """ViT-L/14 (24 blocks, width 1024, 16 heads, LayerScale) at 224 px, returning the class token; random init."""
    import timm

    return timm.create_model("vit_large_patch14_dinov2", pretrained=False, img_size=SIZE, num_classes=0)


def resample_pos_embed(pos: torch.Tensor, grid: int = SIZE // PATCH) -> torch.Tensor:
    """(1, 1 + M*M, D) -> (1, 1 + grid*grid, D) as DINOv2's interpolate_pos_encoding does (offset 0.1)."""
    cls, patches = pos[:, :1], pos[:, 1:].float()
    m, d = math.isqrt(patches.shape[1]), patches.shape[2]
    if m * m != patches.shape[1]:
        raise ValueError(f"pos_embed has {patches.shape[1]} patch positions, not a square grid")
    if m == grid:
        return pos
    scale = (grid + 0.1) / m
    out = F.interpolate(patches.reshape(1, m, m, d).permute(0, 3, 1, 2), scale_factor=(scale, scale),
                        mode="bicubic", antialias=False)  # (1, D, grid, grid)
    return torch.cat([cls, out.permute(0, 2, 3, 1).reshape(1, grid * grid, d).to(pos.dtype)], dim=1)


def release_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DINOv2's release layout -> timm's: the same names (timm mirrors them), minus the masked-image-modelling
    token that only training uses, with the position embeddings resampled to 224 px."""
    out = {k: v for k, v in state.items() if k != "mask_token"}
    out["pos_embed"] = resample_pos_embed(state["pos_embed"])
    return out


def random_release_weights(path: str | Path, seed: int = 0) -> Path:
    """Random weights in the release file's exact layout (518 px position embeddings, mask_token), for tests and
    speed benchmarks, which must not download 1.2 GB. LayerScale gammas are 1, not DINOv2's 1e-5 init, so every
    block changes the features (at 1e-5 a random network's class token barely depends on the image)."""
    import timm

    with torch.device("meta"):  # shapes only: a full random init of 300M parameters takes minutes on a CPU
        net = timm.create_model("vit_large_patch14_dinov2", pretrained=False, img_size=RELEASE_GRID * PATCH,
                                num_classes=0)
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, t in net.state_dict().items():
        if name.endswith(("norm1.weight", "norm2.weight", "norm.weight", "gamma")):
            state[name] = torch.ones(t.shape)
        elif name.endswith("bias"):
            state[name] = torch.zeros(t.shape)
        else:
            state[name] = torch.randn(t.shape, generator=gen) * 0.02
    torch.save(state | {"mask_token": torch.zeros(1, DIMS)}, path)
    return Path(path)


def load_network(weights: str | Path | None) -> tuple[torch.nn.Module, str]:
    """-> (network in eval mode, identity). weights: a local release file, or None to fetch the release
    (torch.hub's cache; a cluster node has the internet). Raises ValueError/OSError naming what failed."""
    if weights:
        path = Path(weights).expanduser()
        state = torch.load(path, map_location="cpu", weights_only=True)  # a plain state dict: nothing unpickled
        identity = f"dinov2-vitl14-{file_sha256(path)[:16]}"
    else:
        state = torch.hub.load_state_dict_from_url(URL, map_location="cpu", weights_only=True)
        identity = "dinov2-vitl14-" + Path(URL).name
    net = build_network()
    missing, unexpected = net.load_state_dict(release_to_timm(state), strict=False)
    if missing or unexpected:
        raise ValueError(f"not DINOv2 ViT-L/14 weights: missing {sorted(missing)[:5]}, unexpected "
                         f"{sorted(unexpected)[:5]}")
    return net.eval().requires_grad_(False), identity


def preprocess(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, C) -> float32 (B, 3, 224, 224), EDM2's resize_mode='torch'."""
    x = x.permute(0, 3, 1, 2).float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bicubic", antialias=True) / 255
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def features(net: torch.nn.Module, images_u8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, C) -> (B, 1024) float32 class tokens."""
    x = torch.as_tensor(images_u8).to(next(net.parameters()).device)
    return net(preprocess(x)).float()
