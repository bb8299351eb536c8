"""Synthetic covariances and returns for the allocation tests and benchmarks."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from shared.allocation import AllocationError, FloatArray, validate_covariance


def factor_covariance(
    n: int,
    seed: int,
    *,
    annual_vols: tuple[float, float] = (0.4, 1.2),
    periods_per_year: int = 365,
) -> FloatArray:
    """A crypto-like per-period covariance from a 4-factor model (market at 60% vol + 3 sectors at 30%).

    Each asset's annual vol is uniform in ``annual_vols``; 30–70% of its variance comes from the market,
    5–20% from one sector factor, the rest is idiosyncratic. The result is divided by ``periods_per_year``.
    """
    if n < 1:
        raise AllocationError(f"n must be >= 1, got {n}")
    lo, hi = annual_vols
    if not 0.0 < lo <= hi:
        raise AllocationError(f"annual_vols must satisfy 0 < low <= high, got {annual_vols!r}")
    rng = np.random.default_rng(seed)
    vol = rng.uniform(lo, hi, n)
    var = vol * vol
    mkt_share = rng.uniform(0.3, 0.7, n)
    sec_share = rng.uniform(0.05, 0.2, n)
    beta = np.sqrt(mkt_share * var) / 0.6
    sec_load = np.sqrt(sec_share * var) / 0.3
    sector = rng.integers(0, 3, n)
    loadings = np.zeros((n, 4))
    loadings[:, 0] = beta
    loadings[np.arange(n), 1 + sector] = sec_load
    fvar = np.array([0.36, 0.09, 0.09, 0.09])
    cov = (loadings * fvar) @ loadings.T
    cov[np.diag_indices(n)] += (1.0 - mkt_share - sec_share) * var
    cov = 0.5 * (cov + cov.T) / periods_per_year
    return cov


def sample_returns(cov: ArrayLike, t: int, seed: int, *, dof: float = 4.0) -> FloatArray:
    """T×N multivariate Student-t returns (``dof`` > 2) with covariance ``cov`` and zero mean."""
    sigma = validate_covariance(cov)
    if t < 1:
        raise AllocationError(f"t must be >= 1, got {t}")
    if not dof > 2.0:
        raise AllocationError(f"dof must be > 2 for a finite covariance, got {dof!r}")
    n = sigma.shape[0]
    eig, vec = np.linalg.eigh(sigma)
    root = vec * np.sqrt(np.clip(eig, 0.0, None))
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((t, n)) @ root.T
    g = rng.chisquare(dof, t) / dof
    return z * np.sqrt((dof - 2.0) / dof) / np.sqrt(g)[:, None]
