"""Tokenizers: data <-> a sequence of continuous tokens on a grid of rank 1, 2 or 3.

Pixel tokenizer: patchify raw values in [-1, 1]. VAE tokenizer: diffusers
AutoencoderKL posterior, times the configured scale factor, then patchify.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from einops import rearrange

from djepa.config import TokenizerConfig, VAEConfig

# einops patterns per grid rank: (B, C, *grid) <-> (B, N, C * p^rank)
_PATTERNS = {
    1: ("b c (l p1) -> b l (c p1)", "b l (c p1) -> b c (l p1)", ("l",)),
    2: ("b c (h p1) (w p2) -> b (h w) (c p1 p2)", "b (h w) (c p1 p2) -> b c (h p1) (w p2)", ("h", "w")),
    3: (
        "b c (t p1) (h p2) (w p3) -> b (t h w) (c p1 p2 p3)",
        "b (t h w) (c p1 p2 p3) -> b c (t p1) (h p2) (w p3)",
        ("t", "h", "w"),
    ),
}


def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, *grid) -> (B, N, C * patch^rank) for grids of rank 1, 2 or 3."""
    rank = x.dim() - 2
    if rank not in _PATTERNS:
        raise ValueError(f"patchify expects a grid of rank 1, 2 or 3, got shape {tuple(x.shape)}")
    for size in x.shape[2:]:
        if size % patch:
            raise ValueError(f"grid {tuple(x.shape[2:])} is not divisible by patch size {patch}")
    return rearrange(x, _PATTERNS[rank][0], **{f"p{i + 1}": patch for i in range(rank)})


def unpatchify(tokens: torch.Tensor, patch: int, grid: tuple[int, ...]) -> torch.Tensor:
    """(B, N, C * patch^rank) -> (B, C, *grid_in_units); `grid` counts tokens per axis."""
    rank = len(grid)
    if rank not in _PATTERNS:
        raise ValueError(f"unpatchify expects a grid of rank 1, 2 or 3, got {grid}")
    names = _PATTERNS[rank][2]
    sizes = {f"p{i + 1}": patch for i in range(rank)} | dict(zip(names, grid))
    return rearrange(tokens, _PATTERNS[rank][1], **sizes)


def moments_shape(cfg: TokenizerConfig) -> tuple[int, ...]:
    """Shape of what encode_moments stores per sample, (C, [T,] H, W): the pixels themselves, or a VAE's
    (mean, log-variance) on its latent grid (twice the latent channels)."""
    if cfg.kind == "pixel":
        return cfg.input_shape
    return (2 * cfg.vae.latent_channels, *cfg.latent_shape[1:])


def scale_latent(latent: torch.Tensor, vae: VAEConfig) -> torch.Tensor:
    """VAE latent -> token space: (latent - shift) * scale. `unscale_latent` is its inverse."""
    return (latent - vae.shift_factor) * vae.scale_factor


def unscale_latent(tokens: torch.Tensor, vae: VAEConfig) -> torch.Tensor:
    return tokens / vae.scale_factor + vae.shift_factor


def moments_to_tokens(moments: torch.Tensor, cfg: TokenizerConfig,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Stored moments (B, *moments_shape) -> tokens (B, N, D); needs no VAE weights, so training
    workers that stream encoded data never load the VAE. For a VAE: a fresh posterior sample per call."""
    if cfg.kind == "vae":
        mean, logvar = moments.chunk(2, dim=1)
        std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        moments = scale_latent(mean + std * noise, cfg.vae)
    return patchify(moments, cfg.patch_size)


class PixelTokenizer(nn.Module):
    """Raw values in [-1, 1] cut into patches. No parameters; a posterior is the value itself."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        self.cfg = cfg

    def encode_moments(self, images: torch.Tensor) -> torch.Tensor:
        return images  # (B, C, H, W): deterministic, nothing to sample

    def moments_to_tokens(self, moments: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return moments_to_tokens(moments, self.cfg, generator)

    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.moments_to_tokens(self.encode_moments(images), generator)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        g = self.cfg.grid
        return unpatchify(tokens, self.cfg.patch_size, (g, g)).clamp(-1, 1)


def build_vae(cfg: VAEConfig, channels: int = 3):
    """diffusers AutoencoderKL from `weights` (path or hub id) or, when allowed, randomly initialised."""
    from diffusers import AutoencoderKL

    if cfg.weights:
        vae = AutoencoderKL.from_pretrained(cfg.weights, subfolder=cfg.subfolder)
    elif cfg.allow_random_init:
        n = len(cfg.block_out_channels)
        # Seeded: the encode actors, training previews and evaluators must all build the same random VAE.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            vae = AutoencoderKL(
                in_channels=channels,
                out_channels=channels,
                down_block_types=("DownEncoderBlock2D",) * n,
                up_block_types=("UpDecoderBlock2D",) * n,
                block_out_channels=tuple(cfg.block_out_channels),
                layers_per_block=cfg.layers_per_block,
                latent_channels=cfg.latent_channels,
                norm_num_groups=cfg.norm_num_groups,
            )
    else:
        raise ValueError(
            "tokenizer.vae.weights is not set: give a local directory or hub id of a diffusers "
            "AutoencoderKL (e.g. --set tokenizer.vae.weights=/data/kl16-vae), or set "
            "tokenizer.vae.allow_random_init=true for a smoke test with an untrained VAE"
        )
    got_stride = 2 ** (len(vae.config.block_out_channels) - 1)
    if vae.config.latent_channels != cfg.latent_channels or got_stride != cfg.stride:
        raise ValueError(
            f"VAE at {cfg.weights!r} has latent_channels={vae.config.latent_channels}, stride={got_stride}; "
            f"config says tokenizer.vae.latent_channels={cfg.latent_channels}, tokenizer.vae.stride={cfg.stride}"
        )
    return vae.eval().requires_grad_(False)


class VAETokenizer(nn.Module):
    """AutoencoderKL posterior moments -> scaled latent sample -> patches."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        self.cfg = cfg
        self.vae = build_vae(cfg.vae, cfg.channels)

    @torch.no_grad()
    def encode_moments(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [-1, 1] -> (B, 2 * latent, h, w): mean and log-variance, unscaled."""
        return self.vae.encode(images).latent_dist.parameters

    def moments_to_tokens(self, moments: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return moments_to_tokens(moments, self.cfg, generator)

    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.moments_to_tokens(self.encode_moments(images), generator)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        g = self.cfg.grid
        latent = unscale_latent(unpatchify(tokens, self.cfg.patch_size, (g, g)), self.cfg.vae)
        return self.vae.decode(latent).sample.clamp(-1, 1)


def build_tokenizer(cfg: TokenizerConfig) -> nn.Module:
    return VAETokenizer(cfg) if cfg.kind == "vae" else PixelTokenizer(cfg)
