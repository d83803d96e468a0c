"""The metric maths against closed forms and reference computations (numpy / scipy)."""
import numpy as np
import pytest
import scipy.linalg
import torch

from djepa.eval.metrics import FeatureStats, frechet_distance, inception_score, precision_recall


def _random_cov(rng, d):
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_fd_of_gaussians_with_commuting_covariances_is_the_closed_form():
    """Diagonal covariances: FD = |mu1 - mu2|^2 + sum (s1 + s2 - 2 sqrt(s1 s2))."""
    rng = np.random.default_rng(0)
    d = 64
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = rng.uniform(0.1, 2.0, d), rng.uniform(0.1, 2.0, d)
    closed = ((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum()
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(closed, rel=1e-6)
    # a shift only: FD = |delta|^2
    assert frechet_distance(mu1, np.diag(s1), mu1 + 0.5, np.diag(s1)) == pytest.approx(0.25 * d, rel=1e-6)


def test_fd_equals_scipy_sqrtm_reference():
    rng = np.random.default_rng(1)
    d = 128
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = _random_cov(rng, d), _random_cov(rng, d)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-6)


def test_fd_of_a_set_against_its_own_statistics_is_zero():
    f = np.random.default_rng(2).standard_normal((500, 32)) * 3 + 1
    mu, sigma = FeatureStats.of(f).mu_sigma()
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8
    with pytest.raises(ValueError, match="same feature extractor"):
        frechet_distance(mu, sigma, mu[:4], sigma[:4, :4])


def test_stats_merged_from_shards_equal_numpy_over_the_whole():
    f = np.random.default_rng(3).standard_normal((1000, 16)).astype(np.float32) + 5  # an offset mean
    cuts = [0, 7, 300, 301, 650, 1000]
    merged = FeatureStats.merge([FeatureStats.of(f[a:b]) for a, b in zip(cuts, cuts[1:])])
    mu, sigma = merged.mu_sigma()
    f64 = f.astype(np.float64)
    np.testing.assert_allclose(mu, f64.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(f64, rowvar=False), rtol=1e-9, atol=1e-12)
    # the order of shards does not change the statistics beyond float64 rounding
    back = FeatureStats.merge([FeatureStats.of(f[a:b]) for a, b in reversed(list(zip(cuts, cuts[1:])))])
    np.testing.assert_allclose(back.mu_sigma()[1], sigma, rtol=1e-12, atol=1e-13)


def test_inception_score_of_one_hot_classes_and_of_constant_logits():
    c, per = 10, 100
    one_hot = torch.full((c * per, c), -1e4)
    one_hot[torch.arange(c * per), torch.arange(c * per) % c] = 0.0  # interleaved: each split sees every class
    mean, std = inception_score(one_hot, splits=10)
    assert mean == pytest.approx(c, rel=1e-6) and std < 1e-6
    assert inception_score(torch.zeros(1000, c))[0] == pytest.approx(1.0, abs=1e-9)
    assert inception_score(torch.randn(1, c).expand(1000, c))[0] == pytest.approx(1.0, abs=1e-9)


def test_inception_score_splits_are_in_the_given_order():
    """Class-sorted one-hot logits: every split holds one class, so IS collapses to 1 (ADM's caveat)."""
    c, per = 10, 100
    sorted_logits = torch.full((c * per, c), -50.0)  # not -inf: 0 * log 0 is nan
    sorted_logits[torch.arange(c * per), torch.arange(c * per) // per] = 0.0
    assert inception_score(sorted_logits, splits=10)[0] == pytest.approx(1.0, abs=1e-6)


def test_precision_recall_identical_and_far_apart_sets():
    f = torch.randn(300, 8, generator=torch.Generator().manual_seed(4))
    assert precision_recall(f, f.clone(), k=3) == (1.0, 1.0)
    assert precision_recall(f + 100.0, f, k=3) == (0.0, 0.0)
    # half the real modes missing: precision stays high, recall drops
    real = torch.cat([f, f + 20.0])
    p, r = precision_recall(f, real, k=3)
    assert p == 1.0 and 0.4 < r < 0.6
