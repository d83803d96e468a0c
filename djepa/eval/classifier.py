"""A classifier of the real embedded digits (digits / mnist5k), trained here, deterministically.

Its penultimate activations are the "domain" features for a Frechet distance on data the
FID Inception network was never meant for (Binkowski et al. use LeNet for MNIST), its logits
give a domain Inception Score, and its predictions the class consistency of samples. It
trains on a fixed 80% of the real images (20% held out: the real-data floor of the FD) in a
few seconds on one CPU thread, and is cached under the hash of everything that defines it.
The embedded clips (moving_mnist) have their own network and recipe in djepa/video/classifier.py; the
functions here dispatch to it by data.source and cache it the same way.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from djepa.console import say
from djepa.data.sources import SOURCES, TEXT_SOURCES, load_source  # TEXT_SOURCES: djepa/text/pair_metrics.py

VERSION = "mlp-256-128-v1"  # change it when the recipe below changes: old caches are then ignored
HELD_OUT = 0.2
EPOCHS, BATCH, LR, SEED = 30, 128, 1e-3, 0
VIDEO_SOURCES = ("moving_mnist",)  # clips: djepa/video/classifier.py


class DomainClassifier(nn.Module):
    """Pixels in [0, 1] (B, H*W*C) -> (features (B, 128), logits (B, classes))."""

    def __init__(self, in_dim: int, classes: int):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_dim, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU())
        self.head = nn.Linear(128, classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.body(x)
        return f, self.head(f)


def to_input(images_u8) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float (N, H*W*C) in [0, 1]."""
    x = torch.as_tensor(images_u8)
    return x.reshape(x.shape[0], -1).float() / 255.0


def split_indices(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices of n rows: a fixed permutation cut at 80% (the data come sorted by class)."""
    perm = np.random.default_rng(SEED).permutation(n)
    cut = int(round((1 - HELD_OUT) * n))
    return perm[:cut], perm[cut:]


def real_split(source: str) -> dict[str, np.ndarray]:
    """The real images quantised exactly as samples are ([-1, 1] -> uint8 NHWC), split 80/20 by a fixed
    permutation (mnist5k comes sorted by class): train_x, train_y, held_x, held_y. For moving_mnist: uint8
    clips (N, T, H, W, 1) the same way, plus the digit's motion (djepa/video/classifier.py)."""
    if source in VIDEO_SOURCES:
        from djepa.video.classifier import real_split as clip_split

        return clip_split(source)
    if source in TEXT_SOURCES:  # the captioned composites: training composites vs held-out ones (djepa/text/pairs.py)
        from djepa.text.pairs import real_split as pairs_split

        return pairs_split(source)
    x, y = load_source(source)
    u8 = np.round((x + 1.0) * 127.5).clip(0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    train, held = split_indices(len(u8))
    return {"train_x": u8[train], "train_y": y[train], "held_x": u8[held], "held_y": y[held]}


def cache_dir(configured: str | None = None) -> Path:
    """eval.cache_dir, else $DJEPA_CACHE, else ~/.cache/djepa."""
    return Path(configured or os.environ.get("DJEPA_CACHE") or Path.home() / ".cache" / "djepa").expanduser()


def _recipe_hash(source: str, split: dict) -> str:
    if source in VIDEO_SOURCES:
        from djepa.video.classifier import recipe_hash

        return recipe_hash(source, split)
    h = hashlib.sha256(json.dumps({"v": VERSION, "source": source, "held_out": HELD_OUT, "epochs": EPOCHS,
                                   "batch": BATCH, "lr": LR, "seed": SEED}).encode())
    h.update(split["train_x"].tobytes())
    h.update(split["train_y"].tobytes())
    return h.hexdigest()[:16]


def _train(split: dict, classes: int) -> DomainClassifier:
    """Adam on one CPU thread with a fixed seed: the same weights on every machine with this torch."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(SEED)
            x, y = to_input(split["train_x"]), torch.as_tensor(split["train_y"])
            net = DomainClassifier(x.shape[1], classes)
            opt = torch.optim.Adam(net.parameters(), lr=LR)
            for _ in range(EPOCHS):
                for idx in torch.randperm(len(x)).split(BATCH):
                    loss = nn.functional.cross_entropy(net(x[idx])[1], y[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
    finally:
        torch.set_num_threads(threads)
    return net.eval().requires_grad_(False)


def _logits(net: nn.Module, samples_u8: np.ndarray, source: str) -> torch.Tensor:
    """Logits of uint8 samples: images in one batch (as always), clips checked and batched by the video module."""
    if isinstance(net, DomainClassifier):
        x = to_input(samples_u8)
        if x.shape[1] != net.body[0].in_features:
            raise ValueError(f"the {source} classifier reads {net.body[0].in_features} pixels per image, "
                             f"got samples of shape {samples_u8.shape[1:]}")
        with torch.no_grad():
            return net(x)[1]
    from djepa.video.classifier import logits

    return logits(net, samples_u8)


def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise ValueError(f"the domain classifier exists for the embedded sources {sorted(SOURCES)}, not "
                         f"data.source={source!r}; use eval.features=[inception] for other data")


def classifier_hash(source: str) -> str:
    """The classifier's identity (its recipe and training images) without training or loading it."""
    _check_source(source)
    return _recipe_hash(source, real_split(source))


def domain_classifier(source: str, cache: str | Path | None = None, verbose: bool = True
                      ) -> tuple[nn.Module, dict]:
    """-> (classifier, info: hash, held-out accuracy, cache file). Trained once, then read from the cache."""
    _check_source(source)
    split = real_split(source)
    classes = int(split["train_y"].max()) + 1
    digest = _recipe_hash(source, split)
    path = cache_dir(cache and str(cache)) / f"classifier-{source}-{digest}.safetensors"
    if source in VIDEO_SOURCES:  # a 3-D conv net with its own recipe and version
        from djepa.video import classifier as video

        net, version, train = video.VideoClassifier(classes), video.VERSION, video.train
    else:
        net, version, train = DomainClassifier(int(np.prod(split["train_x"].shape[1:])), classes), VERSION, _train
    what = f"the {source} domain classifier once ({len(split['train_x'])} real " \
           f"{'clips' if source in VIDEO_SOURCES else 'images'})"
    net = load_or_train(path, net, lambda: train(split, classes), what, {"version": version, "hash": digest}, verbose)
    held = _logits(net, split["held_x"], source).argmax(1).numpy()
    return net, {"hash": digest, "held_out_accuracy": float((held == split["held_y"]).mean()), "file": str(path)}


def class_consistency(images_u8: np.ndarray, labels: np.ndarray, source: str = "digits",
                      cache: str | Path | None = None) -> float:
    """Fraction of samples (uint8 images (N, H, W, C), or clips (N, T, H, W, C) for moving_mnist) the real-data
    classifier assigns to their conditioning label."""
    net, _ = domain_classifier(source, cache)
    return float((_logits(net, images_u8, source).argmax(1).numpy() == np.asarray(labels)).mean())


def load_or_train(path: Path, net: nn.Module, train, what: str, metadata: dict, verbose: bool = True) -> nn.Module:
    """A domain model from its cache file, or trained once by train() and cached atomically (concurrent workers
    never read half a file); frozen in eval mode either way. Shared by the image/video classifiers and the
    speech recogniser."""
    from safetensors.torch import load_file, save_file

    if path.is_file():
        net.load_state_dict(load_file(str(path)))
    else:
        if verbose:
            say("eval", f"training {what}; cached at {path}")
        net = train()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_file(net.state_dict(), str(tmp), metadata=metadata)
        os.replace(tmp, path)
    return net.eval().requires_grad_(False)
