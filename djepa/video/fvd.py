"""Frechet Video Distance: I3D Kinetics-400 logits of 16-frame clips, Frechet distance between two sets.

The protocol (PROTOCOL, written into every result) is the original TF code's (google-research
frechet_video_distance: `preprocess` + `create_id3_embedding`) with StyleGAN-V's clip rule:

- clip: frames [0, 16) of each video, stride 1 (StyleGAN-V: 16 consecutive frames, subsample factor 1,
  from the start for generated videos; here for every set). Longer videos are cut, not averaged over clips.
- frames: uint8 -> float32 -> bilinear resize of every frame straight to 224 x 224 (aspect ratio not
  kept, no crop, as the TF code, TATS and cd-fvd do) -> 2 x / 255 - 1, so [-1, 1]. The resize is
  torch's (align_corners=False, half-pixel centres, no antialias), as TATS and cd-fvd compute it; TF1's
  resize_bilinear sampled without half-pixel centres, the one difference StyleGAN-V also names.
- grey (C = 1) is repeated to three channels (what common_metrics_on_video_quality does).
- features: the 400 pre-softmax logits averaged over time, the TF graph's `RGB/inception_i3d/Mean:0`.
  No logits are handed on for an Inception Score: video IS is defined with C3D on UCF-101, not I3D.

Clips shorter than 16 frames (the Moving MNIST demo has 8) cannot enter I3D as they are (its last pool
needs 9 or more). short_clips="repeat" (the default) resamples them to 16 frames by nearest neighbour in
time, frame floor(i * T / 16) for i = 0..15 (8 frames: each twice): slow motion, no jump back to the first
frame as looping would add. Such an FVD compares only with FVDs of the same clip length, never with
published 16-frame numbers; short_clips="error" refuses them instead.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from djepa.digest import file_sha256
from djepa.eval.features import Extractor, FeatureError
from djepa.eval.metrics import FeatureStats, frechet_distance
from djepa.video.i3d import FIX, RELEASE_BLOB, git_blob_sha1, load_network, random_i3d_weights, read_state_dict

__all__ = ["PROTOCOL", "I3DExtractor", "i3d_identity", "to_input", "fvd", "random_i3d_weights"]

FRAMES, SIZE = 16, 224
SHORT_CLIPS = ("repeat", "error")
PROTOCOL = {
    "network": "i3d-kinetics400-rgb (TF-Hub deepmind/i3d-kinetics-400/1, VideoGPT's PyTorch conversion)",
    "layer": "logits-400 (pre-softmax, mean over time)",
    "frames": FRAMES, "stride": 1, "start": 0,
    "resolution": SIZE,
    "resize": "bilinear to 224x224 per frame, align_corners=False, no antialias, aspect not kept",
    "value_range": [-1, 1],
    "grey": "repeated to RGB",
    "short_clips": "repeat: frame floor(i * T / 16) for i < 16",
}


def to_input(videos: torch.Tensor, short_clips: str = "repeat") -> torch.Tensor:
    """uint8 (N, T, H, W, C), C = 1 or 3 -> float32 (N, 3, 16, 224, 224) in [-1, 1], on the videos' device."""
    if videos.dtype != torch.uint8 or videos.ndim != 5 or videos.shape[-1] not in (1, 3):
        raise ValueError(f"FVD needs uint8 videos (N, T, H, W, C) with C = 1 or 3, got {videos.dtype} "
                         f"{tuple(videos.shape)}")
    n, t, h, w, c = videos.shape
    if t >= FRAMES:
        videos = videos[:, :FRAMES]  # frames 0..15, stride 1
    elif short_clips == "repeat":
        idx = torch.arange(FRAMES, device=videos.device) * t // FRAMES  # nearest neighbour in time
        videos = videos[:, idx]
    else:
        raise ValueError(f"FVD's I3D reads {FRAMES} frames and these videos have {t}; make longer clips, or pass "
                         f"short_clips='repeat' to resample them to {FRAMES} (comparable only at equal length)")
    x = videos.reshape(n * FRAMES, h, w, c).permute(0, 3, 1, 2).float()  # (N*16, C, H, W) in [0, 255]
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False, antialias=False)
    if c == 1:
        x = x.expand(-1, 3, -1, -1)
    x = x.reshape(n, FRAMES, 3, SIZE, SIZE).transpose(1, 2)  # (N, 3, 16, 224, 224)
    return x * (2 / 255) - 1  # a bilinear resize is a convex combination: [0, 255] stays [0, 255]


def i3d_identity(weights: str | None) -> tuple[Path, str, bool]:
    """-> (weights file, identity, whether it is the published file), checked without building the network: a
    missing file, a pickle holding more than tensors or another layout is refused (FeatureError with the fix)."""
    if not weights:
        raise FeatureError(f"FVD needs the I3D weights file (no download at run time); {FIX}")
    try:
        path = Path(weights).expanduser()
        read_state_dict(path)
    except (OSError, ValueError) as err:
        raise FeatureError(str(err)) from None
    return path, f"i3d-kinetics400-{file_sha256(path)[:16]}", git_blob_sha1(path) == RELEASE_BLOB


class I3DExtractor(Extractor):
    """uint8 videos (N, T, H, W, C) -> (I3D features (N, 400) float32, empty logits (N, 0)).

    weights: the I3D state-dict file (eval.i3d_weights). batch_size counts clips: a 16 x 224 x 224 clip peaks
    at ~70 MB of fp32 activations (its input and padded copy, 10 MB each, the first unit's conv output and batch
    norm, 26 MB each), so an image batch size of 200 would want ~14 GB. short_clips: "repeat" or "error" for videos under 16 frames (module
    docstring). `protocol` is the dict a result should record beside the FVD."""

    name, dims = "i3d", 400
    frames_used = FRAMES  # the base class copies only frames [0, 16) of each clip to the network

    def __init__(self, weights: str | None, device="cpu", batch_size: int = 16, short_clips: str = "repeat"):
        if short_clips not in SHORT_CLIPS:
            raise ValueError(f"short_clips must be one of {SHORT_CLIPS}, got {short_clips!r}")
        super().__init__(device, batch_size)
        path, self.identity, release = i3d_identity(weights)
        self.short_clips = short_clips
        self.protocol = PROTOCOL | ({"short_clips": "error"} if short_clips == "error" else {}) | {
            "weights": self.identity, "published_weights": release}
        net = load_network(path).to(self.device)
        # channels-last 3-D: the same numbers (to ~1e-8), ~1.5x faster convolutions on CPU (measured here)
        self.memory_format = torch.channels_last_3d if self.device.type == "cpu" else torch.contiguous_format
        self.net = net.to(memory_format=self.memory_format)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.net(to_input(x, self.short_clips).contiguous(memory_format=self.memory_format))
        return f, f.new_zeros(len(f), 0)


def fvd(features_a, features_b) -> float:
    """FVD of two feature sets (N, 400) (numpy or torch): the Frechet distance of their Gaussians, computed as
    FID is (djepa.eval.metrics). Both need at least 2 clips; published numbers typically use 2048 (StyleGAN-V, TATS, cd-fvd)."""
    mu_a, sigma_a = FeatureStats.of(features_a).mu_sigma()
    mu_b, sigma_b = FeatureStats.of(features_b).mu_sigma()
    return frechet_distance(mu_a, sigma_a, mu_b, sigma_b)
