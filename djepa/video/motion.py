"""A motion check for single-digit Moving MNIST clips, independent of any learned video feature.

Each frame's digit is found by its intensity centroid; from the track follow plain numbers a reader can
check against the data's definition (djepa/video/moving_mnist.py: one digit, constant speed of 0.75-1.5 px
a frame, elastic bounces):
- speed: mean centroid step in px/frame; moving: the digit travels at least MIN_SPEED px/frame on average
  (half a pixel: a frozen digit travels 0)
- smooth: no step longer than MAX_STEP px (a digit that jumps or teleports is not moving at constant speed)
- steady: the per-axis step magnitudes vary little (constant velocity; a bounce flips a sign, not a size)
- persistent: the ink of every frame is within MASS_TOL of the clip's mean (no digit fading in or out)
and per frame, the MNIST-5k image classifier (djepa/eval/classifier.py) reads a DIGIT x DIGIT crop centred on
the centroid (resized to 28 x 28 if DIGIT is not 28): the clips hold whole 28-px MNIST images, so this restores
MNIST's own framing (centred by mass). That classifier never saw a clip.
"""
from __future__ import annotations

import numpy as np

from djepa.video.moving_mnist import DIGIT

# The data move 0.75-1.5 px a frame on a 4-px course; rounding to whole pixels and bounces slow a track a little.
# Measured on the 5,000 real clips (whole frames' centroids): step spread <= 0.64 and longest step <= 2.24 px for
# 99%; with frames shuffled in time: median spread 0.90, longest step 3.2 px. These limits pass 100% of real clips
# and 3-9% of shuffled ones.
MIN_SPEED, MAX_STEP, MASS_TOL, STEADY_TOL = 0.5, 2.5, 0.35, 0.7
REAL_SPEED = 1.16  # mean speed of the 5,000 real clips' tracks, px/frame (tests/test_video_motion.py)
DESCRIPTORS = ["speed", "step_std", "max_step", "mass_cv", "travel", "mass"]


def track(clips_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, T, H, W[, 1]) -> (centroids (N, T, 2) as (row, col), ink mass (N, T) in pixel units)."""
    x = clips_u8[..., 0] if clips_u8.ndim == 5 else clips_u8
    x = x.astype(np.float64) / 255.0  # (N, T, H, W)
    mass = x.sum(axis=(2, 3))
    rows, cols = np.arange(x.shape[2]), np.arange(x.shape[3])
    safe = np.maximum(mass, 1e-9)
    r = (x.sum(axis=3) * rows).sum(axis=2) / safe
    c = (x.sum(axis=2) * cols).sum(axis=2) / safe
    return np.stack([r, c], axis=-1), mass


def descriptors(clips_u8: np.ndarray) -> np.ndarray:
    """(N, T, H, W[, 1]) -> (N, 6) float64: DESCRIPTORS per clip."""
    cen, mass = track(clips_u8)
    steps = np.diff(cen, axis=1)  # (N, T-1, 2)
    length = np.linalg.norm(steps, axis=-1)  # (N, T-1)
    axis_std = np.abs(steps).std(axis=1).max(axis=-1)  # the worse axis' spread of |step|
    mass_cv = mass.std(axis=1) / np.maximum(mass.mean(axis=1), 1e-9)
    travel = np.linalg.norm(cen[:, -1] - cen[:, 0], axis=-1)
    return np.stack([length.mean(1), axis_std, length.max(1), mass_cv, travel, mass.mean(1)], axis=1)


def motion_report(clips_u8: np.ndarray) -> dict[str, float]:
    """Fractions of clips that move, move smoothly and steadily, and keep their ink; `motion_ok` all four."""
    d = descriptors(clips_u8)
    moving = d[:, 0] >= MIN_SPEED
    smooth = d[:, 2] <= MAX_STEP
    steady = d[:, 1] <= STEADY_TOL
    persistent = d[:, 3] <= MASS_TOL
    return {"speed": float(d[:, 0].mean()), "moving": float(moving.mean()), "smooth": float(smooth.mean()),
            "steady": float(steady.mean()), "persistent": float(persistent.mean()),
            "motion_ok": float((moving & smooth & steady & persistent).mean())}


def centred_crops(clips_u8: np.ndarray, size: int = DIGIT, out_size: int = 28) -> np.ndarray:
    """(N, T, H, W[, 1]) -> (N, T, out_size, out_size, 1) uint8: each frame cut size x size around its centroid
    (black outside the frame), then resized to out_size (Pillow bilinear, as the clips were made)."""
    from PIL import Image

    x = clips_u8[..., 0] if clips_u8.ndim == 5 else clips_u8
    n, t, h, w = x.shape
    cen, _ = track(x)
    pad = size
    padded = np.zeros((n, t, h + 2 * pad, w + 2 * pad), np.uint8)
    padded[:, :, pad:pad + h, pad:pad + w] = x
    out = np.empty((n, t, out_size, out_size), np.uint8)
    top = np.rint(cen[..., 0] - (size - 1) / 2).astype(int) + pad
    left = np.rint(cen[..., 1] - (size - 1) / 2).astype(int) + pad
    for i in range(n):
        for j in range(t):
            crop = padded[i, j, top[i, j]:top[i, j] + size, left[i, j]:left[i, j] + size]
            out[i, j] = np.asarray(Image.fromarray(crop).resize((out_size, out_size), Image.BILINEAR))
    return out[..., None]


def per_frame_consistency(clips_u8: np.ndarray, labels: np.ndarray, cache=None) -> dict[str, float]:
    """The MNIST-5k image classifier on every frame's centred crop: the fraction of frames read as the clip's
    label, and of clips whose every frame is."""
    import torch

    from djepa.eval.classifier import domain_classifier, to_input

    net, _ = domain_classifier("mnist5k", cache, verbose=False)
    crops = centred_crops(clips_u8)  # (N, T, 28, 28, 1)
    n, t = crops.shape[:2]
    with torch.no_grad():
        pred = net(to_input(crops.reshape(n * t, 28, 28, 1)))[1].argmax(1).numpy().reshape(n, t)
    hit = pred == np.asarray(labels)[:, None]
    return {"frames": float(hit.mean()), "clips_all_frames": float(hit.all(axis=1).mean())}


def sample_checks(samples_npz, cache=None) -> dict[str, float]:
    """The motion report and the per-frame classifier on an evaluation's samples.npz (arr_0 clips, arr_1 labels):
    what the video demo prints beside the evaluator's domain metrics."""
    with np.load(samples_npz) as z:
        clips, labels = z["arr_0"], z["arr_1"]
    pf = per_frame_consistency(clips, labels, cache)
    return {**motion_report(clips), "frame_consistency": pf["frames"], "clips_all_frames": pf["clips_all_frames"]}
