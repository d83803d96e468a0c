"""Domain metrics of two-digit composites (pairs.py), read by the image classifier of their digits on each half.

The classifier of MNIST-5k (mnist_pairs) or of the 8x8 digits (digits_pairs) from djepa/eval/classifier.py
reads the left and the right half separately, as it reads single digits; it never saw a composite.
- per half: the fraction of left (right) halves read as the asked left (right) digit
- order_correct: both halves read as asked, in the asked order
- swapped: both read, in the reverse order (the signature of a model that ignores word order; with a != b it
  excludes order_correct, so such a model scores about 0.5 on each)
- features: the classifier's 128-d features of the left and of the right half, concatenated (256-d), for a
  Frechet distance against real composites. That distance sees whether each half looks like a real digit and how
  the two halves co-vary, but not which caption asked for the image, nor the order of the digits: the data has
  every ordered pair as often as its reverse, so halves swapped have the real distribution of features. Order is
  measured by order_correct / swapped only.
- logits: the two halves' log-probabilities summed over the 100 ordered pairs (code 10 * left + right), so the
  evaluator's argmax == label is order_correct and its Inception Score is over ordered pairs.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import torch

from djepa.eval.features import Extractor
from djepa.text.pairs import CLASSES, DIGIT_SOURCE, PER_PAIR, SEED, caption_digits, halves

VERSION = "pairs-halves-v1"  # change it when the composites or this feature map change: old references are ignored


def _check(source: str) -> str:
    if source not in DIGIT_SOURCE:
        raise ValueError(f"pair metrics exist for data.source in {sorted(DIGIT_SOURCE)}, not {source!r}")
    return DIGIT_SOURCE[source]


def pair_classifier(source: str, cache=None, verbose: bool = False):
    """-> (the digit classifier of `source`'s digits, its info: hash, held-out accuracy on single digits, file)."""
    from djepa.eval.classifier import domain_classifier

    return domain_classifier(_check(source), cache, verbose=verbose)


def pair_identity(source: str, digit_hash: str | None = None) -> str:
    """What the features and a reference of `source` depend on: the digit classifier (its hash, computed here when
    not given) and the composites' recipe."""
    from djepa.eval.classifier import classifier_hash

    digit_hash = digit_hash or classifier_hash(_check(source))
    digest = hashlib.sha256(json.dumps({"v": VERSION, "seed": SEED, "per_pair": PER_PAIR[source],
                                        "classifier": digit_hash}).encode()).hexdigest()
    return f"domain-{source}-{digest[:16]}"


def half_outputs(net, composites) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 composites (N, H, 2W, C), numpy or torch -> (features (N, 256): left's 128 then right's 128,
    left logits (N, 10), right logits (N, 10)) of the digit classifier `net`."""
    from djepa.eval.classifier import to_input

    left, right = halves(composites)
    pixels = int(np.prod(left.shape[1:]))
    if pixels != net.body[0].in_features:
        raise ValueError(f"the digit classifier reads {net.body[0].in_features} pixels per half, got composites of "
                         f"shape {tuple(composites.shape[1:])}; pair metrics exist only for the embedded pairs")
    with torch.no_grad():
        fl, ll = net(to_input(left))  # (N, 128), (N, 10)
        fr, lr = net(to_input(right))
    return torch.cat([fl, fr], dim=1), ll, lr


def pair_features(composites_u8, source: str = "mnist_pairs", cache=None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 composites (N, H, 2W, C) -> (features (N, 256), left logits (N, 10), right logits (N, 10))."""
    net, _ = pair_classifier(source, cache)
    return half_outputs(net, composites_u8)


def joint_logits(left_logits: torch.Tensor, right_logits: torch.Tensor) -> torch.Tensor:
    """(N, 10), (N, 10) -> (N, 100) log p(left = a) + log p(right = b) at column 10 * a + b: the halves read as one
    ordered pair, whose argmax is (argmax left, argmax right) and whose softmax is the product of the halves'."""
    lp, rp = left_logits.log_softmax(1), right_logits.log_softmax(1)
    return (lp[:, :, None] + rp[:, None, :]).reshape(len(lp), CLASSES * CLASSES)  # (N, 10, 10) -> (N, 100)


def scores_of(left_pred, right_pred, left, right) -> dict[str, float]:
    """Predicted and asked classes per half (N,) each -> left, right, order_correct, swapped fractions."""
    pl, pr, a, b = (np.asarray(v) for v in (left_pred, right_pred, left, right))
    hit_l, hit_r = pl == a, pr == b
    swapped = (pl == b) & (pr == a) & (a != b)
    return {"left": float(hit_l.mean()), "right": float(hit_r.mean()), "order_correct": float((hit_l & hit_r).mean()),
            "swapped": float(swapped.mean())}


def pair_scores(composites_u8, left, right, source: str = "mnist_pairs", cache=None) -> dict[str, float]:
    """How often the digit classifier reads each half as asked, both in the asked order, both in reverse."""
    _, ll, lr = pair_features(composites_u8, source, cache)
    return scores_of(ll.argmax(1).numpy(), lr.argmax(1).numpy(), left, right)


def caption_scores(composites_u8, captions, source: str = "mnist_pairs", cache=None) -> dict[str, float]:
    """pair_scores of images against the captions they were asked for (every caption parsed by caption_digits)."""
    asked = np.array([caption_digits(c) for c in captions], np.int64).reshape(-1, 2)
    return pair_scores(composites_u8, asked[:, 0], asked[:, 1], source, cache)


class PairExtractor(Extractor):
    """The "domain" extractor of mnist_pairs / digits_pairs: features (N, 256), logits over ordered pairs (N, 100)."""

    name, dims = "domain", 2 * 128

    def __init__(self, source: str, cache: str | None = None, device="cpu", batch_size: int = 200):
        super().__init__(device, batch_size)
        net, info = pair_classifier(source, cache, verbose=True)
        self.net, self.info = net.to(self.device), info
        self.identity = pair_identity(source, info["hash"])

    def forward(self, x):
        if x.ndim != 4:
            raise ValueError(f"pair features need uint8 composites (N, H, 2W, C), got shape {tuple(x.shape)}")
        features, left, right = half_outputs(self.net, x)
        return features, joint_logits(left, right)
