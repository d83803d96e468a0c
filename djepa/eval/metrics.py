"""FID / FD, Inception Score and precision/recall on feature arrays, as ADM's suite computes them.

Statistics are accumulated in float64 as (count, sum of features, sum of outer products),
so shards computed anywhere merge exactly into the mean and covariance of the whole
(EDM2's reduction); the distances themselves are torch-fidelity's functions on arrays.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class FeatureStats:
    """Sufficient statistics of a feature set: n, sum (D,) and sum of outer products (D, D), float64."""

    n: int
    total: np.ndarray
    outer: np.ndarray

    @classmethod
    def of(cls, features) -> "FeatureStats":
        """(N, D) features (numpy or torch, on any device) -> their statistics, accumulated in float64."""
        f = torch.as_tensor(features).to(torch.float64)
        return cls(int(f.shape[0]), f.sum(0).cpu().numpy(), (f.T @ f).cpu().numpy())

    @classmethod
    def merge(cls, parts: list["FeatureStats"]) -> "FeatureStats":
        if not parts:
            raise ValueError("no feature statistics to merge")
        return cls(sum(p.n for p in parts), sum(p.total for p in parts), sum(p.outer for p in parts))

    def mu_sigma(self) -> tuple[np.ndarray, np.ndarray]:
        """-> (mean, unbiased covariance), as np.mean / np.cov(rowvar=False) over the whole set."""
        if self.n < 2:
            raise ValueError(f"a covariance needs at least 2 features, got {self.n}")
        mu = self.total / self.n
        sigma = (self.outer - self.n * np.outer(mu, mu)) / (self.n - 1)
        return mu, sigma


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2), via torch-fidelity (eigenvalues, no sqrtm)."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    a = {"mu": np.asarray(mu1, np.float64), "sigma": np.asarray(sigma1, np.float64)}
    b = {"mu": np.asarray(mu2, np.float64), "sigma": np.asarray(sigma2, np.float64)}
    if a["mu"].shape != b["mu"].shape or a["sigma"].shape != b["sigma"].shape:
        raise ValueError(f"statistics of different dimension: {a['mu'].shape} vs {b['mu'].shape}; were they made "
                         f"with the same feature extractor?")
    return float(fid_statistics_to_metric(a, b, verbose=False)[KEY_METRIC_FID])


def inception_score(logits, splits: int = 10) -> tuple[float, float]:
    """(mean, std) over `splits` consecutive chunks, in the given order (ADM: unshuffled; our
    labels are interleaved, so every chunk holds every class)."""
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

    out = isc_features_to_metric(torch.as_tensor(logits), splits=splits, shuffle=False)
    return float(out[KEY_METRIC_ISC_MEAN]), float(out[KEY_METRIC_ISC_STD])


def precision_recall(generated, real, k: int = 3, batch_size: int = 10000) -> tuple[float, float]:
    """Improved precision/recall (Kynkaanniemi et al. 2019) with k-NN balls; memory O(batch x N)."""
    from torch_fidelity.metric_prc import calculate_precision_recall_part

    # a copy: arrays from Ray's object store are read-only, which torch warns about
    g, r = (torch.tensor(np.asarray(a), dtype=torch.float32) for a in (generated, real))
    if g.shape[0] <= k or r.shape[0] <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} features per set, "
                         f"got {g.shape[0]} generated and {r.shape[0]} real")
    precision, recall = calculate_precision_recall_part(g, r, neighborhood=k, batch_size=batch_size)
    return float(precision), float(recall)
