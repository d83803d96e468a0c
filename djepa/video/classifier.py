"""The domain classifier of the embedded Moving MNIST clips: a tiny 3-D conv net that sees appearance and motion.

The video twin of djepa/eval/classifier.py (which dispatches here by data.source and owns the cache): its 128-d
penultimate activations are the domain features of an FD on clips, its logits give a domain IS and its
predictions the class consistency of sampled clips. A classifier alone need not look at motion (the digit is
legible in any one frame), so the same features also regress the digit's per-frame displacement (an auxiliary
head used in training only): a clip whose digit jumps about or stands still then lands far from real clips in
feature space (tests/test_video_domain.py measures it). Deterministic: fixed seed, one CPU thread, the fixed
80/20 split of the image classifiers, cached under the hash of this recipe and the training clips.
"""
from __future__ import annotations

import functools
import hashlib
import json

import numpy as np
import torch
import torch.nn as nn

from djepa.eval.classifier import HELD_OUT, SEED, split_indices
from djepa.video.moving_mnist import FRAMES, SIZE, SPEED, moving_mnist

VERSION = "conv3d-16-32-64-motion-v1"  # the video recipe's own version: change it when anything below changes
SOURCES = ("moving_mnist",)
EPOCHS, BATCH, LR = 8, 64, 3e-3  # one-cycle schedule: 92.6% held-out, ~26 s on one CPU core
# Weight of the displacement loss against the cross-entropy. Measured (FD of held-out clips with their frames
# shuffled, over the real floor; held-out accuracy): 3 -> x10, 93.4% (6 epochs); 4 -> x39, 93.6%;
# 6 -> x182, 92.6%; 10 -> x250, 89.3% (6 epochs). 6 buys motion sensitivity for one point of accuracy.
MOTION_WEIGHT = 6.0


def conv(cin: int, cout: int, kernel, stride, padding) -> nn.Sequential:
    """Conv3d -> BatchNorm -> ReLU (no conv bias: the norm has one). BatchNorm makes 6 epochs enough."""
    return nn.Sequential(nn.Conv3d(cin, cout, kernel, stride, padding, bias=False), nn.BatchNorm3d(cout), nn.ReLU())


class VideoClassifier(nn.Module):
    """Clips in [0, 1] (B, 1, T, H, W) -> (features (B, 128), logits (B, classes)).
    `motion` maps the features to the digit's displacement per frame, (B, (T-1) * 2): a training target only."""

    sample_shape = (FRAMES, SIZE, SIZE, 1)  # the uint8 (T, H, W, C) clip it reads

    def __init__(self, classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(
            conv(1, 16, (3, 5, 5), (1, 2, 2), (1, 2, 2)),  # (16, 8, 16, 16): every frame kept, 5x5 strokes
            conv(16, 32, 3, 2, 1),                         # (32, 4, 8, 8)
            conv(32, 64, 3, 2, 1),                         # (64, 2, 4, 4)
            nn.MaxPool3d((1, 2, 2)),                       # (64, 2, 2, 2): some tolerance to where the digit is
            nn.Flatten(), nn.Linear(64 * 2 * 2 * 2, 128), nn.ReLU())  # (128,) the features
        self.head = nn.Linear(128, classes)
        self.motion = nn.Linear(128, (FRAMES - 1) * 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.body(x)
        return f, self.head(f)


def to_input(clips_u8) -> torch.Tensor:
    """uint8 (N, T, H, W, C) -> float (N, C, T, H, W) in [0, 1], Conv3d's layout."""
    x = torch.as_tensor(clips_u8)
    return x.permute(0, 4, 1, 2, 3).float() / 255.0


def clip_input(net: VideoClassifier, clips_u8) -> torch.Tensor:
    """to_input, after checking the clips are the (T, H, W, C) the network was trained on."""
    if clips_u8.ndim != 5 or tuple(clips_u8.shape[1:]) != net.sample_shape:
        raise ValueError(f"the moving_mnist classifier reads uint8 clips (N, T, H, W, C) with (T, H, W, C) = "
                         f"{net.sample_shape}, got shape {tuple(clips_u8.shape)}; it exists only for the embedded "
                         f"Moving MNIST")
    return to_input(clips_u8)


@functools.lru_cache(maxsize=1)
def _real_clips() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """moving_mnist() once per process (~3 s of Pillow resizes); callers get copies (real_split indexes them)."""
    return moving_mnist()


def real_split(source: str = "moving_mnist") -> dict[str, np.ndarray]:
    """The real clips as uint8 (N, T, H, W, 1) (the sample layout; moving_mnist renders uint8, so these are
    exactly the data source quantised back), split 80/20 by the image classifiers' fixed permutation (the clips
    are sorted by class): train_x, train_y, train_motion, held_x, held_y, held_motion. *_motion: the digit's
    displacement per frame (N, T-1, 2) float32, in units of the top speed (so within about [-1, 1])."""
    if source not in SOURCES:
        raise ValueError(f"the video domain classifier exists for {SOURCES}, not data.source={source!r}")
    clips, labels, corners = _real_clips()
    u8 = clips[..., None]  # (N, T, H, W, 1)
    motion = (np.diff(corners, axis=1) / SPEED[1]).astype(np.float32)  # (N, T-1, 2) rows, cols per frame
    train, held = split_indices(len(u8))
    return {"train_x": u8[train], "train_y": labels[train], "train_motion": motion[train],
            "held_x": u8[held], "held_y": labels[held], "held_motion": motion[held]}


def recipe_hash(source: str, split: dict) -> str:
    h = hashlib.sha256(json.dumps({"v": VERSION, "source": source, "held_out": HELD_OUT, "epochs": EPOCHS,
                                   "batch": BATCH, "lr": LR, "motion_weight": MOTION_WEIGHT, "seed": SEED}).encode())
    for key in ("train_x", "train_y", "train_motion"):
        h.update(split[key].tobytes())
    return h.hexdigest()[:16]


def train(split: dict, classes: int) -> VideoClassifier:
    """Adam + one-cycle on one CPU thread with a fixed seed: the same weights on every machine with this torch."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(SEED)
            x, y = to_input(split["train_x"]), torch.as_tensor(split["train_y"])  # (N, 1, T, H, W), (N,)
            m = torch.as_tensor(split["train_motion"])  # (N, T-1, 2)
            net = VideoClassifier(classes)
            opt = torch.optim.Adam(net.parameters(), lr=LR)
            steps = EPOCHS * -(-len(x) // BATCH)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, LR, total_steps=steps)
            for _ in range(EPOCHS):
                for idx in torch.randperm(len(x)).split(BATCH):
                    # half the clips played backwards: a bouncing digit in reverse is another valid clip (its
                    # displacements reversed and negated), so the net cannot learn an arrow of time that real
                    # clips do not have, and sees twice the motions
                    back = torch.rand(len(idx)) < 0.5
                    xb = torch.where(back[:, None, None, None, None], x[idx].flip(2), x[idx])
                    mb = torch.where(back[:, None, None], -m[idx].flip(1), m[idx])
                    f, logits = net(xb)
                    loss = nn.functional.cross_entropy(logits, y[idx]) + \
                        MOTION_WEIGHT * nn.functional.mse_loss(net.motion(f).view_as(mb), mb)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    sched.step()
    finally:
        torch.set_num_threads(threads)
    return net.eval().requires_grad_(False)


def logits(net: VideoClassifier, clips_u8: np.ndarray, batch: int = 250) -> torch.Tensor:
    """(N, classes) logits of uint8 clips, in batches (1,000 clips at once hold ~0.3 GB of activations)."""
    with torch.no_grad():
        return torch.cat([net(clip_input(net, clips_u8[i:i + batch]))[1] for i in range(0, len(clips_u8), batch)])
