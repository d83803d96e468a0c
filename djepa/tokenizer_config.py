"""The tokenizer's config: what a sample is (image or clip), its grid of tokens and the VAE that makes them.

Every shape the rest of the code needs comes from here (input_shape, latent_shape, grid_shape, patch_sizes,
num_tokens, token_dim, sample_shape), so the model, the data pipeline and the evaluator stay blind to the
modality. Part of djepa.config's one tree (re-exported there).
"""
from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator, model_validator

from djepa.config_base import _Strict


class VAEConfig(_Strict):
    # A local directory or a hub id readable by diffusers' AutoencoderKL.from_pretrained.
    weights: str | None = None
    subfolder: str | None = None
    # The latent scale and shift live here and nowhere else: token = (latent - shift_factor) * scale_factor
    # (MAR's KL-16: scale 0.2325, shift 0; SD3/FLUX-style VAEs publish a shift as well).
    scale_factor: float = Field(0.2325, gt=0)
    shift_factor: float = 0.0
    stride: int = Field(16, ge=1)
    # frames per latent frame of a video VAE (CogVideoX: 4); ignored by image VAEs
    temporal_stride: int = Field(4, ge=1)
    latent_channels: int = Field(16, ge=1)
    # Architecture used only when building a randomly initialised VAE (tests, smoke runs).
    block_out_channels: list[int] = [128, 128, 256, 256, 512]
    layers_per_block: int = Field(2, ge=1)
    norm_num_groups: int = Field(32, ge=1)
    allow_random_init: bool = False


class TokenizerConfig(_Strict):
    # pixel: patches of raw values (images, or video clips when frames > 0); vae: an image AutoencoderKL;
    # video_vae: CogVideoX's causal 3-D VAE (AutoencoderKLCogVideoX), frames > 0
    kind: Literal["pixel", "vae", "video_vae"] = "pixel"
    image_size: int | tuple[int, int] = 8  # a side, or [height, width] (UCF101: [240, 320])
    channels: int = Field(1, ge=1)  # image channels (3 for RGB)
    patch_size: int = Field(1, ge=1)  # spatial patch, in pixels (pixel) or latent cells (vae)
    # Video: 0 means images (a 2-D grid); T > 0 makes every sample a clip of T frames (a 3-D grid (t, h, w)).
    frames: int = Field(0, ge=0)
    temporal_patch: int = Field(1, ge=1)  # frames (pixel) or latent frames (video_vae) per token
    vae: VAEConfig = VAEConfig()

    @field_validator("image_size", mode="before")
    @classmethod
    def _size_pair(cls, v):
        # [s, s] is the same size as s: one spelling each, so the hash of a square config never changes
        if isinstance(v, (list, tuple)) and len(v) == 2 and v[0] == v[1]:
            return v[0]
        return v

    @model_validator(mode="after")
    def _grid_divides(self):
        if self.kind == "video_vae" and not self.frames:
            raise ValueError("kind video_vae needs frames > 0 (the clip length in frames)")
        if self.frames and self.kind == "vae":
            raise ValueError("kind vae is an image VAE; for clips (frames > 0) use kind video_vae or pixel")
        if not self.frames and self.temporal_patch != 1:
            raise ValueError(f"temporal_patch {self.temporal_patch} needs frames > 0 (a video tokenizer)")
        stride = self.vae.stride if self.kind != "pixel" else 1
        for axis, size in (("height", self.height), ("width", self.width)):
            if size % stride:
                raise ValueError(f"image {axis} {size} is not a multiple of vae.stride {stride}")
            if (size // stride) % self.patch_size:
                raise ValueError(f"patch_size {self.patch_size} does not divide the token grid's {axis} "
                                 f"{size // stride}")
        if self.frames:
            if self.kind == "video_vae" and self.frames % (2 * self.vae.temporal_stride):
                # CogVideoX encodes frames in groups of 8; an even count maps T -> T/4 latent frames exactly
                # (its causal first-frame path only runs on odd counts): the paper's 160 -> 40
                raise ValueError(f"frames {self.frames} must be a multiple of {2 * self.vae.temporal_stride} for "
                                 f"the video VAE (T frames -> T/{self.vae.temporal_stride} latent frames)")
            if self.latent_frames % self.temporal_patch:
                raise ValueError(f"temporal_patch {self.temporal_patch} does not divide the "
                                 f"{self.latent_frames} {'latent ' if self.kind == 'video_vae' else ''}frames")
        return self

    @property
    def height(self) -> int:
        return self.image_size if isinstance(self.image_size, int) else self.image_size[0]

    @property
    def width(self) -> int:
        return self.image_size if isinstance(self.image_size, int) else self.image_size[1]

    @property
    def is_video(self) -> bool:
        return self.frames > 0

    @property
    def latent_frames(self) -> int:
        return self.frames // self.vae.temporal_stride if self.kind == "video_vae" else self.frames

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """What the tokens are cut from: (C, [T,] H, W) in pixels or latent cells."""
        stride = self.vae.stride if self.kind != "pixel" else 1
        c = self.vae.latent_channels if self.kind != "pixel" else self.channels
        spatial = (self.height // stride, self.width // stride)
        return (c, self.latent_frames, *spatial) if self.is_video else (c, *spatial)

    @property
    def patch_sizes(self) -> tuple[int, ...]:
        """Patch per grid axis: (temporal, spatial, spatial) for video, (spatial, spatial) for images."""
        return (self.temporal_patch, self.patch_size, self.patch_size) if self.is_video else \
            (self.patch_size, self.patch_size)

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """Tokens per axis: (t, h, w) for video, (h, w) for images."""
        return tuple(s // p for s, p in zip(self.latent_shape[1:], self.patch_sizes))

    @property
    def grid(self) -> int:
        """Side of a square image token grid (images only; see grid_shape)."""
        return self.grid_shape[0]

    @property
    def num_tokens(self) -> int:
        return math.prod(self.grid_shape)

    @property
    def token_dim(self) -> int:
        return self.latent_shape[0] * math.prod(self.patch_sizes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample as the tokenizer reads it, float in [-1, 1]: (C, H, W) for images, (C, T, H, W) for video."""
        return (self.channels, *((self.frames,) if self.is_video else ()), self.height, self.width)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """One decoded sample as uint8: (H, W, C) for images (ADM's layout), (T, H, W, C) for video."""
        hwc = (self.height, self.width, self.channels)
        return (self.frames, *hwc) if self.is_video else hwc
