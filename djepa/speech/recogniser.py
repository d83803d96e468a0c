"""A recogniser of the embedded spoken digits, trained here, deterministically: the speech twin of the digits
classifier (djepa/eval/classifier.py), whose caching and 80/20 split it shares.

Input: a normalised log-mel (80, T) of any length (mel.py, the data set's stored statistics), stretched in time
to FRAMES frames (linear interpolation), so a fast and a slow "three seven" look alike and the order of the
words is the order along the input. Output: two heads on 128-d features, the first digit (10 classes) and the
second (10 digits or NONE); an utterance is recognised when both are right. The 128-d penultimate activations
are the features of a Frechet distance against the real held-out utterances (the floor: held-out vs training).
Trained on 240 utterances (the fixed 80%), 60 held out, in a few seconds on one CPU thread; cached under the
hash of this recipe and the training utterances.
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from djepa.eval.classifier import HELD_OUT, SEED, cache_dir, load_or_train
from djepa.speech.mel import N_MELS, log_mel, normalise
from djepa.speech.spoken_digits import NONE, SpokenDigits, info, real_split, text_of

VERSION = "conv1d-128x3-two-heads-v1"  # change it when the recipe below changes: old caches are then ignored
FRAMES = 64  # every utterance stretched to 64 frames (the data: 14-98 frames, 0.17-1.15 s)
EPOCHS, BATCH, LR = 40, 32, 2e-3


def conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    """Conv1d (kernel 5, no bias: the norm has one) -> BatchNorm -> ReLU."""
    return nn.Sequential(nn.Conv1d(cin, cout, 5, stride, 2, bias=False), nn.BatchNorm1d(cout), nn.ReLU())


class Recogniser(nn.Module):
    """Normalised log-mel stretched to (B, 80, FRAMES) -> (features (B, 128), logits (B, 10 + 11))."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            conv(N_MELS, 128, 1),   # (128, 64)
            conv(128, 128, 2),      # (128, 32)
            conv(128, 128, 2),      # (128, 16): each column sees ~0.3 s, one digit word
            nn.Flatten(), nn.Dropout(0.3), nn.Linear(128 * FRAMES // 4, 128), nn.ReLU())  # (128,) the features
        self.head = nn.Linear(128, 10 + NONE + 1)  # first digit | second digit or NONE

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.body(x)
        return f, self.head(f)


def to_input(mels) -> torch.Tensor:
    """Normalised log-mels, each (80, T_i) -> (N, 80, FRAMES): stretched in time, linearly."""
    return torch.stack([F.interpolate(torch.as_tensor(m, dtype=torch.float32)[None], size=FRAMES, mode="linear",
                                      align_corners=False)[0] for m in mels])


def mels_of(waves) -> list[torch.Tensor]:
    """Waveforms -> normalised log-mels with the embedded data's stored statistics (what samples are scored by)."""
    stats = info()["mel_stats"]
    return [normalise(log_mel(w), stats) for w in waves]


@functools.lru_cache(maxsize=1)
def _split() -> tuple[SpokenDigits, SpokenDigits, torch.Tensor, torch.Tensor]:
    train, held = real_split()
    return train, held, to_input(mels_of(train.waves)), to_input(mels_of(held.waves))


def recipe_hash(train: SpokenDigits) -> str:
    h = hashlib.sha256(json.dumps({"v": VERSION, "held_out": HELD_OUT, "frames": FRAMES, "epochs": EPOCHS,
                                   "batch": BATCH, "lr": LR, "seed": SEED, "stats": info()["mel_stats"]}).encode())
    for w in train.waves:
        h.update(w.tobytes())
    h.update(train.digits.tobytes())
    return h.hexdigest()[:16]


def train(x: torch.Tensor, digits: np.ndarray) -> Recogniser:
    """Adam + one-cycle on one CPU thread with a fixed seed: the same weights on every machine with this torch."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(SEED)
            y = torch.as_tensor(digits)  # (N, 2)
            net = Recogniser()
            opt = torch.optim.Adam(net.parameters(), lr=LR)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, LR, total_steps=EPOCHS * -(-len(x) // BATCH))
            for _ in range(EPOCHS):
                for idx in torch.randperm(len(x)).split(BATCH):
                    logits = net(x[idx])[1]
                    loss = F.cross_entropy(logits[:, :10], y[idx, 0]) + F.cross_entropy(logits[:, 10:], y[idx, 1])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    sched.step()
    finally:
        torch.set_num_threads(threads)
    return net.eval().requires_grad_(False)


def predict(net: Recogniser, mels) -> np.ndarray:
    """Normalised log-mels -> (N, 2) int64 (first, second or NONE)."""
    with torch.no_grad():
        logits = net(to_input(mels) if not torch.is_tensor(mels) else mels)[1]
    return torch.stack([logits[:, :10].argmax(1), logits[:, 10:].argmax(1)], 1).numpy()


def features(net: Recogniser, mels) -> np.ndarray:
    """Normalised log-mels -> (N, 128) float64 features for a Frechet distance."""
    with torch.no_grad():
        return net(to_input(mels) if not torch.is_tensor(mels) else mels)[0].double().numpy()


def recognised(net: Recogniser, mels, texts: list[str]) -> float:
    """Fraction of utterances whose recognised digits read as their text ('three seven')."""
    return float(np.mean([text_of(*p) == t.strip().lower() for p, t in zip(predict(net, mels), texts)]))


def recogniser(cache: str | Path | None = None, verbose: bool = True) -> tuple[Recogniser, dict]:
    """-> (recogniser, info: hash, held-out accuracy, cache file). Trained once, then read from the cache."""
    train_set, held, x_train, x_held = _split()
    digest = recipe_hash(train_set)
    path = cache_dir(cache and str(cache)) / f"recogniser-spoken_digits-{digest}.safetensors"
    net = load_or_train(path, Recogniser(), lambda: train(x_train, train_set.digits),
                        f"the spoken-digits recogniser once ({len(train_set.ids)} real utterances)",
                        {"version": VERSION, "hash": digest}, verbose)
    accuracy = float((predict(net, x_held) == held.digits).all(1).mean())
    return net, {"hash": digest, "held_out_accuracy": accuracy, "file": str(path)}


def floor_fd(net: Recogniser) -> float:
    """The real-data floor: Frechet distance of the held-out utterances' features to the training ones'."""
    from djepa.eval.metrics import FeatureStats, frechet_distance

    _, _, x_train, x_held = _split()
    return frechet_distance(*FeatureStats.of(features(net, x_held)).mu_sigma(),
                            *FeatureStats.of(features(net, x_train)).mu_sigma())
