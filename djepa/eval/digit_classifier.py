"""Class consistency on the embedded digits: does a sample look like its conditioning class?

A small scikit-learn MLP trained on the real 8x8 digits (deterministic seed) judges
uint8 samples. Real held-out digits score about 0.98 with it; uniform noise about 0.1.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from djepa.data.sources import load_digits_arrays


def _features(images_u8: np.ndarray) -> np.ndarray:
    """uint8 (N, 8, 8, 1) -> (N, 64) float in [0, 1]."""
    return images_u8.reshape(len(images_u8), -1).astype(np.float32) / 255.0


def real_digits_u8() -> tuple[np.ndarray, np.ndarray]:
    """The real digits quantised exactly as samples are (via [-1, 1] -> uint8)."""
    x, y = load_digits_arrays()
    u8 = np.round((x + 1.0) * 127.5).astype(np.uint8).transpose(0, 2, 3, 1)
    return u8, y


@lru_cache(maxsize=1)
def digit_classifier(seed: int = 0):
    """(classifier, held-out accuracy on real digits); trained on 80% of them."""
    from sklearn.neural_network import MLPClassifier

    x, y = real_digits_u8()
    perm = np.random.default_rng(seed).permutation(len(x))
    cut = int(0.8 * len(x))
    clf = MLPClassifier(hidden_layer_sizes=(128,), max_iter=600, random_state=seed)
    clf.fit(_features(x[perm[:cut]]), y[perm[:cut]])
    held_out = float((clf.predict(_features(x[perm[cut:]])) == y[perm[cut:]]).mean())
    return clf, held_out


def class_consistency(images_u8: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples the real-digit classifier assigns to their conditioning label."""
    if images_u8.shape[1:] != (8, 8, 1):
        raise ValueError(f"the digit classifier reads uint8 (N, 8, 8, 1) samples, got {images_u8.shape}")
    clf, _ = digit_classifier()
    return float((clf.predict(_features(images_u8)) == labels).mean())
