"""The Moving MNIST domain classifier (djepa/video/classifier.py) through the eval code paths that pick it by
data.source: its split, determinism, cache, accuracy, FD floor, and that its features see motion, not only the
digit. It is trained once for the module (~25 s on one core), into a fresh cache directory."""
import numpy as np
import pytest
import torch

from djepa.eval.metrics import FeatureStats, frechet_distance, inception_score


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """(extractor, split, reference statistics of the 80%, FD of the held-out 20% against them)."""
    from djepa.eval.classifier import real_split
    from djepa.eval.features import DomainExtractor

    cache = str(tmp_path_factory.mktemp("video-cache"))
    ex, split = DomainExtractor("moving_mnist", cache), real_split("moving_mnist")
    ref = FeatureStats.of(ex(split["train_x"])[0]).mu_sigma()
    floor = frechet_distance(*FeatureStats.of(ex(split["held_x"])[0]).mu_sigma(), *ref)
    return ex, split, ref, floor, cache


def test_split_is_the_data_source_quantised_and_class_balanced():
    from djepa.data.sources import load_source
    from djepa.eval.classifier import real_split, split_indices

    split = real_split("moving_mnist")
    assert split["train_x"].shape == (4000, 8, 32, 32, 1) and split["held_x"].shape == (1000, 8, 32, 32, 1)
    assert split["train_x"].dtype == np.uint8 and split["train_motion"].shape == (4000, 7, 2)
    x, y = load_source("moving_mnist")  # (N, 1, T, H, W) in [-1, 1]: quantised as samples are, it is the split
    u8 = np.round((x + 1.0) * 127.5).clip(0, 255).astype(np.uint8).transpose(0, 2, 3, 4, 1)
    train, held = split_indices(len(u8))
    assert np.array_equal(u8[held], split["held_x"]) and np.array_equal(y[train], split["train_y"])
    assert set(train).isdisjoint(held) and len(train) + len(held) == len(u8)
    counts = np.bincount(split["held_y"], minlength=10)  # the clips come sorted by class: the permutation mixes
    assert counts.min() > 70 and counts.max() < 130, counts
    speed = np.linalg.norm(split["train_motion"], axis=-1)  # displacements in units of the top speed (3 px)
    assert 0 < speed.mean() < 1.0 and np.abs(split["train_motion"]).max() <= 1.5


def test_training_is_deterministic_on_a_small_split():
    from djepa.eval.classifier import real_split
    from djepa.video.classifier import logits, train

    split = {k: v[:128] for k, v in real_split("moving_mnist").items()}
    a, b = train(split, 10), train(split, 10)  # the same recipe from scratch: the same weights, bit for bit
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert logits(a, split["held_x"]).shape == (128, 10)


def test_classifier_is_cached_accurate_and_named_by_its_recipe(video):
    from djepa.eval.classifier import class_consistency, classifier_hash, domain_classifier

    ex, split, _, floor, cache = video
    info = ex.info
    assert ex.identity == f"domain-moving_mnist-{classifier_hash('moving_mnist')}" == \
        f"domain-moving_mnist-{info['hash']}"
    assert info["held_out_accuracy"] > 0.9 and classifier_hash("digits") != info["hash"]
    net, again = domain_classifier("moving_mnist", cache, verbose=False)  # read back from the cache, not trained
    assert again == info
    f, lg = ex(split["held_x"][:50])
    assert f.shape == (50, 128) and lg.shape == (50, 10)
    assert class_consistency(split["held_x"], split["held_y"], "moving_mnist", cache) == info["held_out_accuracy"]
    is_mean, _ = inception_score(ex(split["held_x"])[1], splits=10)
    assert 5 < is_mean <= 10, is_mean  # 10 classes: confident and balanced real clips score near the top
    assert 0 < floor < 5, floor


def test_features_see_motion_not_only_the_digit(video):
    """Frames shuffled in time (the digit jumps about) or frozen at frame 0 (it stands still) keep every frame's
    appearance, yet land far from real clips; played backwards (a valid bouncing clip) they do not.
    Measured: floor 1.31, shuffled 130 (x99), frozen 35.9 (x27), reversed 1.29 (the floor); held-out accuracy 0.959."""
    ex, split, ref, floor, _ = video
    held = split["held_x"]  # (1000, T, H, W, 1)
    rng = np.random.default_rng(0)

    def fd(clips):
        return frechet_distance(*FeatureStats.of(ex(clips)[0]).mu_sigma(), *ref)

    shuffled = np.stack([c[rng.permutation(len(c))] for c in held])
    frozen = np.repeat(held[:, :1], held.shape[1], axis=1)
    fd_shuffled, fd_frozen, fd_reversed = fd(shuffled), fd(frozen), fd(held[:, ::-1].copy())
    assert fd_shuffled > 20 * floor and fd_frozen > 10 * floor, (floor, fd_shuffled, fd_frozen)
    assert fd_reversed < 2 * floor, (floor, fd_reversed)


def test_embedded_reference_of_clips(video, tmp_path):
    from djepa.eval.reference import embedded_reference, load_reference

    ex, _, _, floor, _ = video
    info = embedded_reference("moving_mnist", [ex], keep=40, out=tmp_path / "ref.npz")
    ref = load_reference(tmp_path / "ref.npz", ["domain"], {"domain": 128})
    assert ref["images"].shape == (40, 8, 32, 32, 1) and ref["images"].dtype == np.uint8
    assert ref["floors"]["floor_fd_domain"] == info["floor_fd_domain"] == pytest.approx(floor)
    assert ref["meta"]["source"] == "moving_mnist" and ref["meta"]["features"]["domain"] == ex.identity


def test_samples_of_another_shape_are_refused(video):
    from djepa.eval.classifier import class_consistency

    ex, split, _, _, cache = video
    with pytest.raises(ValueError, match=r"\(T, H, W, C\) = \(8, 32, 32, 1\), got shape \(3, 32, 32, 1\)"):
        ex(split["held_x"][:3, 0])  # images, not clips
    with pytest.raises(ValueError, match=r"got shape \(3, 4, 32, 32, 1\)"):
        class_consistency(split["held_x"][:3, :4], split["held_y"][:3], "moving_mnist", cache)
    with pytest.raises(ValueError, match=r"uint8 \(N, H, W, C\) images or \(N, T, H, W, C\) clips"):
        ex(split["held_x"][:3].astype(np.float32))
