"""Unit tests for shared.allocation: validation, Ledoit–Wolf, risk parity, mean-variance, vol targeting."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

import shared.allocation as allocation
from shared.allocation import (
    AllocationError,
    ledoit_wolf,
    mean_variance,
    risk_contributions,
    risk_parity,
    validate_covariance,
    validate_vector,
    vol_target,
)
from tooling.bench.data import factor_covariance, sample_returns


@pytest.fixture(autouse=True, params=["compiled", "numpy"])
def kernel(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs on the compiled kernels (shared/_alloc.c) and on the numpy fallback."""
    if request.param == "numpy":
        monkeypatch.setattr(allocation, "_kernel", None)
        monkeypatch.setattr(allocation, "NEWTON_MAX_N", 250)
    return str(request.param)


def test_compiled_kernel_is_built() -> None:
    """`pip install -e .` builds shared/_alloc.c; without it everything silently runs on numpy."""
    assert allocation.COMPILED


def _sample_cov(n: int, t: int, seed: int) -> np.ndarray:
    """Biased sample covariance of t Student-t draws; singular (rank t - 1) when n >= t."""
    r = sample_returns(factor_covariance(n, seed), t, seed + 100)
    r = r - r.mean(axis=0)
    return (r.T @ r) / t


def _ill_conditioned(n: int, seed: int, cond: float = 1e8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    cov = (q * np.logspace(-np.log10(cond), 0, n)) @ q.T * 1e-3
    return 0.5 * (cov + cov.T)


def _mu(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.5, 0.6, n) / 365


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cov", "message"),
    [
        (np.zeros((3, 4)), "not square: 3x4"),
        (np.zeros(3), "must be 2-D, got 1-D"),
        (np.zeros((0, 0)), "empty"),
        (np.array([[1.0, np.nan], [np.nan, 1.0]]), "contains NaN"),
        (np.array([[1.0, 0.0], [0.0, np.inf]]), "contains inf"),
        (np.array([[1.0, 0.5], [0.4, 1.0]]), "not symmetric"),
        ([["a", "b"], ["c", "d"]], "not numeric"),
    ],
)
def test_validate_covariance_names_the_problem(cov: object, message: str) -> None:
    with pytest.raises(AllocationError, match=message):
        validate_covariance(cov)  # type: ignore[arg-type]


def test_validate_covariance_rejects_indefinite_with_min_eigenvalue() -> None:
    cov = np.array([[1.0, 2.0], [2.0, 1.0]])  # eigenvalues -1 and 3
    with pytest.raises(AllocationError, match=r"not positive semi-definite \(min eigenvalue -1[,)]"):
        validate_covariance(cov)
    with pytest.raises(AllocationError, match="my_sigma is not positive semi-definite"):
        validate_covariance(cov, name="my_sigma")


def test_validate_covariance_tolerances() -> None:
    cov = factor_covariance(20, 3)
    # Asymmetry and negative eigenvalues within 1e-10 relative are accepted and symmetrised.
    noisy = cov.copy()
    noisy[0, 1] += 1e-12 * np.abs(cov).max()
    out = validate_covariance(noisy)
    assert np.array_equal(out, out.T)
    singular = _sample_cov(30, 10, 1)
    validate_covariance(singular)
    noisy[0, 1] += 1e-8 * np.abs(cov).max()
    with pytest.raises(AllocationError, match="not symmetric"):
        validate_covariance(noisy)
    shifted = cov - 1e-6 * np.eye(20) * np.linalg.eigvalsh(cov)[-1]
    shifted -= np.linalg.eigvalsh(cov)[0] * np.eye(20)
    with pytest.raises(AllocationError, match="not positive semi-definite"):
        validate_covariance(shifted)


@pytest.mark.parametrize(
    ("min_eig", "ok"), [(-0.9e-10, True), (-1.1e-10, False), (0.0, True), (-1e-3, False)]
)
def test_validate_covariance_psd_boundary(min_eig: float, ok: bool) -> None:
    """Smallest eigenvalue >= -1e-10 * largest passes, just below fails (both the fast and exact path)."""
    q, _ = np.linalg.qr(np.random.default_rng(3).standard_normal((6, 6)))
    cov = (q * np.array([2.0, 1.0, 0.5, 0.3, 0.1, min_eig * 2.0])) @ q.T
    cov = 0.5 * (cov + cov.T)
    if ok:
        validate_covariance(cov)
    else:
        with pytest.raises(AllocationError, match="not positive semi-definite"):
            validate_covariance(cov)
    assert validate_covariance(cov, check_psd=False).shape == (6, 6)


def test_validate_vector_messages() -> None:
    with pytest.raises(AllocationError, match="mu size mismatch: got 3, expected 4"):
        validate_vector([1.0, 2.0, 3.0], 4, "mu")
    with pytest.raises(AllocationError, match="budgets contains NaN"):
        validate_vector([1.0, np.nan], 2, "budgets")
    with pytest.raises(AllocationError, match="bounds contains inf"):
        validate_vector([1.0, -np.inf], 2, "bounds")
    with pytest.raises(AllocationError, match="budgets must be strictly positive"):
        validate_vector([1.0, 0.0], 2, "budgets", positive=True)
    with pytest.raises(AllocationError, match="w0 must be non-negative"):
        validate_vector([1.0, -0.1], 2, "w0", nonnegative=True)
    with pytest.raises(AllocationError, match="mu must be 1-D"):
        validate_vector([[1.0, 2.0]], 2, "mu")
    assert validate_vector((1, 2), 2, "mu").dtype == np.float64


def test_solver_argument_errors() -> None:
    cov = factor_covariance(4, 1)
    with pytest.raises(AllocationError, match="budgets size mismatch: got 3, expected 4"):
        risk_parity(cov, [1.0, 1.0, 1.0])
    with pytest.raises(AllocationError, match="budgets must be strictly positive"):
        risk_parity(cov, [1.0, 1.0, 0.0, 1.0])
    with pytest.raises(AllocationError, match="mu is required for objective 'utility'"):
        mean_variance(cov, objective="utility")
    with pytest.raises(AllocationError, match="unknown objective 'max_return'"):
        mean_variance(cov, np.ones(4), objective="max_return")  # type: ignore[arg-type]
    with pytest.raises(AllocationError, match="risk_aversion must be positive"):
        mean_variance(cov, np.ones(4), objective="utility", risk_aversion=0.0)
    with pytest.raises(AllocationError, match="not square: 4x3"):
        mean_variance(cov[:, :3])
    with pytest.raises(AllocationError, match="non-positive variance"):
        risk_parity(np.diag([1.0, 0.0, 1.0]))


# --------------------------------------------------------------------------------------------------
# Ledoit–Wolf
# --------------------------------------------------------------------------------------------------


def _ledoit_wolf_bruteforce(returns: np.ndarray) -> tuple[np.ndarray, float]:
    t, n = returns.shape
    x = returns - returns.mean(axis=0)
    s = x.T @ x / t
    m = np.trace(s) / n
    d2 = np.sum((s - m * np.eye(n)) ** 2) / n
    b2 = sum(np.sum((np.outer(row, row) - s) ** 2) for row in x) / n / t**2
    shrink = min(b2, d2) / d2
    return shrink * m * np.eye(n) + (1 - shrink) * s, shrink


@pytest.mark.parametrize(("n", "t"), [(5, 200), (40, 30), (120, 60)])
def test_ledoit_wolf_matches_formula_and_is_positive_definite(n: int, t: int) -> None:
    returns = sample_returns(factor_covariance(n, 7), t, 8)
    cov, shrink = ledoit_wolf(returns)
    ref, ref_shrink = _ledoit_wolf_bruteforce(returns)
    assert 0.0 <= shrink <= 1.0
    assert shrink == pytest.approx(ref_shrink, rel=1e-10)
    np.testing.assert_allclose(cov, ref, rtol=1e-10, atol=1e-14)
    eig = np.linalg.eigvalsh(cov)
    assert eig[0] > 0.0
    if n > t:
        assert shrink > 0.0
        sample = np.cov(returns, rowvar=False, bias=True)
        assert np.linalg.eigvalsh(sample)[0] < 1e-12 * eig[-1]  # the sample itself is singular
        assert eig[-1] / eig[0] < 1e4


def test_ledoit_wolf_errors() -> None:
    with pytest.raises(AllocationError, match="returns must be 2-D"):
        ledoit_wolf(np.ones(5))
    with pytest.raises(AllocationError, match="at least 2 rows"):
        ledoit_wolf(np.ones((1, 5)))
    with pytest.raises(AllocationError, match="returns contains NaN"):
        ledoit_wolf(np.array([[1.0, np.nan], [0.0, 1.0], [2.0, 1.0]]))


# --------------------------------------------------------------------------------------------------
# Risk parity
# --------------------------------------------------------------------------------------------------


def _assert_risk_parity(w: np.ndarray, cov: np.ndarray, budgets: np.ndarray) -> None:
    assert w.min() > 0.0
    assert abs(w.sum() - 1.0) <= 1e-12
    rc = risk_contributions(w, cov)
    assert np.abs(rc - budgets / budgets.sum()).max() <= 1e-10


@pytest.mark.parametrize("n", [5, 10, 50, 200])
@pytest.mark.parametrize("method", ["newton", "ccd"])
def test_risk_parity_equal_budgets_factor(n: int, method: str) -> None:
    cov = factor_covariance(n, seed=n)
    info: dict[str, object] = {}
    w = risk_parity(cov, method=method, info=info)  # type: ignore[arg-type]
    _assert_risk_parity(w, cov, np.ones(n))
    assert info["method"] == method
    assert isinstance(info["error"], float) and info["error"] <= 1e-12


@pytest.mark.parametrize("method", ["newton", "ccd", "auto"])
@pytest.mark.parametrize(
    "case", ["ill_conditioned", "singular_sample", "custom_budgets", "custom_budgets_singular"]
)
def test_risk_parity_hard_cases(case: str, method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # "auto" is exercised in its large-N branch (CCD, then Newton if CCD is slow).
    monkeypatch.setattr("shared.allocation.NEWTON_MAX_N", 10)
    rng = np.random.default_rng(11)
    if case == "ill_conditioned":
        cov = _ill_conditioned(40, 2)
        assert np.linalg.cond(cov) > 1e7
    else:
        cov = _sample_cov(80, 40, 3)  # N > T: rank 39
        assert np.linalg.matrix_rank(cov) < 80
    n = cov.shape[0]
    if case == "ill_conditioned" and method == "ccd":
        # Plain CCD converges linearly at a rate set by the conditioning: it must say so, not return junk.
        with pytest.raises(AllocationError, match="risk parity did not converge"):
            risk_parity(cov, method="ccd", max_iter=30)
        return
    budgets = rng.uniform(0.1, 3.0, n) if case.startswith("custom") else np.ones(n)
    w = risk_parity(cov, budgets if case.startswith("custom") else None, method=method)  # type: ignore[arg-type]
    _assert_risk_parity(w, cov, budgets)


def test_risk_parity_auto_finishes_slow_ccd_with_newton(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shared.allocation.NEWTON_MAX_N", 10)
    cov = _ill_conditioned(40, 2)
    info: dict[str, object] = {}
    w = risk_parity(cov, info=info)
    assert info["method"] == "ccd+newton"
    _assert_risk_parity(w, cov, np.ones(40))


def test_risk_parity_diagonal_is_inverse_vol() -> None:
    vols = np.array([0.1, 0.2, 0.4, 0.8])
    w = risk_parity(np.diag(vols**2))
    np.testing.assert_allclose(w, (1 / vols) / np.sum(1 / vols), rtol=1e-12)


def test_risk_parity_warm_start_needs_fewer_iterations() -> None:
    cov = factor_covariance(100, 5)
    w_prev = risk_parity(cov)
    bumped = cov * (1.0 + 0.02 * np.random.default_rng(1).uniform(-1, 1, 100))[:, None]
    bumped = 0.5 * (bumped + bumped.T)
    for method in ("newton", "ccd"):
        cold: dict[str, int] = {}
        warm: dict[str, int] = {}
        w_cold = risk_parity(bumped, method=method, info=cold)  # type: ignore[arg-type]
        w_warm = risk_parity(bumped, method=method, w0=w_prev, info=warm)  # type: ignore[arg-type]
        assert warm["iterations"] < cold["iterations"], (method, warm, cold)
        np.testing.assert_allclose(w_warm, w_cold, rtol=1e-9)
    with pytest.raises(AllocationError, match="w0 must be strictly positive"):
        risk_parity(cov, w0=np.r_[0.0, w_prev[1:]])


def test_risk_parity_reports_non_convergence() -> None:
    with pytest.raises(AllocationError, match="risk parity did not converge"):
        risk_parity(factor_covariance(30, 1), method="ccd", max_iter=2)


def test_risk_contributions_sum_to_one_and_reject_zero_variance() -> None:
    cov = factor_covariance(6, 2)
    rc = risk_contributions(np.full(6, 1 / 6), cov)
    assert rc.sum() == pytest.approx(1.0, abs=1e-15)
    with pytest.raises(AllocationError, match="portfolio variance is not positive"):
        risk_contributions(np.zeros(6), cov)


# --------------------------------------------------------------------------------------------------
# Mean-variance
# --------------------------------------------------------------------------------------------------


def _qp(cov: np.ndarray, mu: np.ndarray, objective: str, lam: float) -> tuple[np.ndarray, ...]:
    n = cov.shape[0]
    if objective == "min_variance":
        return cov, np.zeros(n), np.ones(n)
    if objective == "utility":
        return lam * cov, mu, np.ones(n)
    return cov, np.zeros(n), mu


def _assert_kkt(cov: np.ndarray, mu: np.ndarray, objective: str, lam: float, w: np.ndarray) -> None:
    """KKT of min ½x'Qx − c'x s.t. a'x = 1, x ≥ 0 to 1e-9 relative to the gradient scale."""
    q, c, a = _qp(cov, mu, objective, lam)
    x = w / (mu @ w) if objective == "max_sharpe" else w
    assert abs(w.sum() - 1.0) <= 1e-12
    assert x.min() >= 0.0  # primal feasibility
    assert abs(a @ x - 1.0) <= 1e-10
    g = q @ x - c
    free = x > 0
    nu = float(a[free] @ g[free] / (a[free] @ a[free]))
    s = g - nu * a
    scale = max(np.abs(g).max(), np.abs(c).max(), abs(nu) * np.abs(a).max())
    assert np.abs(s[free]).max() <= 1e-9 * scale  # stationarity on the free set
    assert s.min() >= -1e-9 * scale  # dual feasibility
    assert np.abs(s * x).max() <= 1e-9 * scale * x.max()  # complementary slackness


def _objective(cov: np.ndarray, mu: np.ndarray, objective: str, lam: float, w: np.ndarray) -> float:
    if objective == "min_variance":
        return float(w @ cov @ w)
    if objective == "utility":
        return float(-(mu @ w) + 0.5 * lam * w @ cov @ w)
    return float(-(mu @ w) / np.sqrt(w @ cov @ w))


OBJECTIVES = ["min_variance", "max_sharpe", "utility"]


@pytest.mark.parametrize("n", [10, 50, 200])
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_mean_variance_kkt_factor(n: int, objective: str) -> None:
    cov = factor_covariance(n, seed=n + 1)
    mu = _mu(n, n)
    info: dict[str, int] = {}
    w = mean_variance(cov, mu, objective=objective, risk_aversion=5.0, info=info)  # type: ignore[arg-type]
    _assert_kkt(cov, mu, objective, 5.0, w)
    assert info["iterations"] >= 1 and info["n_free"] == np.count_nonzero(w)


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize(("n", "t"), [(60, 30), (200, 50)])
def test_mean_variance_kkt_singular_sample(objective: str, n: int, t: int) -> None:
    cov = _sample_cov(n, t, 4)
    assert np.linalg.matrix_rank(cov) < n
    mu = _mu(n, 9)
    w = mean_variance(cov, mu, objective=objective, risk_aversion=2.0)  # type: ignore[arg-type]
    _assert_kkt(cov, mu, objective, 2.0, w)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_mean_variance_kkt_ill_conditioned(objective: str) -> None:
    cov = _ill_conditioned(30, 5)
    mu = _mu(30, 2)
    w = mean_variance(cov, mu, objective=objective, risk_aversion=3.0)  # type: ignore[arg-type]
    _assert_kkt(cov, mu, objective, 3.0, w)


def _scipy_reference(cov: np.ndarray, mu: np.ndarray, objective: str, lam: float) -> np.ndarray:
    n = cov.shape[0]
    scale = 1.0 / np.mean(np.diag(cov))  # O(1) objective for SLSQP's absolute tolerance
    c2, m2 = cov * scale, mu * scale

    def fun(w: np.ndarray) -> tuple[float, np.ndarray]:
        sw = c2 @ w
        if objective == "min_variance":
            return float(w @ sw), 2 * sw
        if objective == "utility":
            return float(-(m2 @ w) + 0.5 * lam * (w @ sw)), -m2 + lam * sw
        vol = np.sqrt(w @ sw)
        ret = m2 @ w
        return float(-ret / vol), -m2 / vol + ret * sw / vol**3

    best = None
    for w0 in (np.full(n, 1.0 / n), np.eye(n)[int(np.argmax(mu))] * 0.9 + 0.1 / n):
        res = minimize(
            fun,
            w0,
            jac=True,
            method="SLSQP",
            bounds=[(0.0, 1.0)] * n,
            constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}],
            options={"ftol": 1e-15, "maxiter": 1000},
        )
        w = np.clip(res.x, 0.0, None)
        w /= w.sum()
        if best is None or _objective(cov, mu, objective, lam, w) < _objective(cov, mu, objective, lam, best):
            best = w
    assert best is not None
    return best


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize(("n", "singular"), [(5, False), (12, False), (20, False), (20, True)])
def test_mean_variance_agrees_with_scipy(objective: str, n: int, singular: bool) -> None:
    cov = _sample_cov(n, 12, 6) if singular else factor_covariance(n, seed=30 + n)
    mu = _mu(n, 40 + n)
    w = mean_variance(cov, mu, objective=objective, risk_aversion=4.0)  # type: ignore[arg-type]
    ref = _scipy_reference(cov, mu, objective, 4.0)
    ours = _objective(cov, mu, objective, 4.0, w)
    theirs = _objective(cov, mu, objective, 4.0, ref)
    # Ours is exact: never worse than SLSQP by more than 1e-8 relative, and SLSQP gets within 1e-8.
    assert abs(ours - theirs) <= 1e-8 * max(abs(ours), abs(theirs))
    assert ours <= theirs + 1e-12 * abs(theirs)


def test_max_sharpe_needs_a_positive_mu() -> None:
    cov = factor_covariance(5, 1)
    with pytest.raises(AllocationError, match=r"at least one asset with mu > 0 \(max mu = 0\)"):
        mean_variance(cov, np.array([-0.1, -0.2, 0.0, -0.05, -0.3]), objective="max_sharpe")
    with pytest.raises(AllocationError, match="mu size mismatch: got 4, expected 5"):
        mean_variance(cov, np.ones(4), objective="max_sharpe")


def test_mean_variance_known_solutions() -> None:
    # Two uncorrelated assets: min variance ∝ 1/σ², max Sharpe ∝ μ/σ².
    var = np.array([0.04, 0.01])
    cov = np.diag(var)
    np.testing.assert_allclose(mean_variance(cov), (1 / var) / np.sum(1 / var), rtol=1e-14)
    mu = np.array([0.1, 0.02])
    np.testing.assert_allclose(
        mean_variance(cov, mu, objective="max_sharpe"), (mu / var) / np.sum(mu / var), rtol=1e-14
    )
    # A dominated asset (lower return, higher variance) gets exactly zero in utility.
    w = mean_variance(np.diag([0.01, 0.02]), np.array([0.2, 0.0]), objective="utility", risk_aversion=1.0)
    np.testing.assert_array_equal(w, [1.0, 0.0])


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_mean_variance_warm_start_needs_fewer_iterations(objective: str) -> None:
    cov = factor_covariance(200, 12)
    mu = _mu(200, 13)
    w_prev = mean_variance(cov, mu, objective=objective, risk_aversion=5.0)  # type: ignore[arg-type]
    bumped_mu = mu * (1.0 + 0.01 * np.random.default_rng(2).uniform(-1, 1, 200))
    cold: dict[str, int] = {}
    warm: dict[str, int] = {}
    w_cold = mean_variance(cov, bumped_mu, objective=objective, risk_aversion=5.0, info=cold)  # type: ignore[arg-type]
    w_warm = mean_variance(
        cov,
        bumped_mu,
        objective=objective,
        risk_aversion=5.0,
        w0=w_prev,
        info=warm,  # type: ignore[arg-type]
    )
    assert warm["iterations"] < cold["iterations"], (warm, cold)
    assert warm["iterations"] <= 3
    np.testing.assert_allclose(w_warm, w_cold, atol=1e-12)


def test_mean_variance_warm_start_with_too_large_support_falls_back() -> None:
    cov = _sample_cov(60, 20, 8)  # rank 19: the full-support free block is singular
    w_cold = mean_variance(cov)
    w_warm = mean_variance(cov, w0=np.full(60, 1 / 60))
    np.testing.assert_allclose(w_warm, w_cold, atol=1e-12)
    _assert_kkt(cov, np.zeros(60), "min_variance", 1.0, w_warm)


# --------------------------------------------------------------------------------------------------
# Vol targeting
# --------------------------------------------------------------------------------------------------


def test_vol_target_hits_target_on_diagonal_covariance() -> None:
    cov = np.diag([0.04, 0.09, 0.16])  # vols 20%, 30%, 40%
    w = np.array([0.5, 0.3, 0.2])
    vol = np.sqrt(0.25 * 0.04 + 0.09 * 0.09 + 0.04 * 0.16)
    scaled, cash, predicted = vol_target(w, cov, 0.1)
    assert predicted == pytest.approx(0.1, rel=1e-15)
    assert np.sqrt(scaled @ cov @ scaled) == pytest.approx(0.1, rel=1e-14)
    np.testing.assert_allclose(scaled, w * 0.1 / vol, rtol=1e-14)
    assert cash == pytest.approx(1.0 - 0.1 / vol, abs=1e-15)


def test_vol_target_caps_at_max_leverage() -> None:
    cov = np.diag([0.04, 0.09, 0.16])
    w = np.array([0.5, 0.3, 0.2])
    vol = np.sqrt(w @ cov @ w)
    scaled, cash, predicted = vol_target(w, cov, 0.5)  # needs > 1x: capped at fully invested
    np.testing.assert_allclose(scaled, w, rtol=1e-15)
    assert cash == pytest.approx(0.0, abs=1e-15)
    assert predicted == pytest.approx(vol, rel=1e-14)
    scaled, cash, predicted = vol_target(w, cov, 0.5, max_leverage=1.5)
    assert np.abs(scaled).sum() == pytest.approx(1.5, rel=1e-14)
    assert cash == pytest.approx(-0.5, abs=1e-14)
    assert predicted == pytest.approx(1.5 * vol, rel=1e-14) and predicted < 0.5
    scaled, cash, predicted = vol_target(w, cov, 0.0)
    assert np.all(scaled == 0.0) and cash == 1.0 and predicted == 0.0


def test_vol_target_errors() -> None:
    cov = np.diag([0.04, 0.09])
    with pytest.raises(AllocationError, match="target must be a finite non-negative"):
        vol_target([0.5, 0.5], cov, -0.1)
    with pytest.raises(AllocationError, match="max_leverage must be positive"):
        vol_target([0.5, 0.5], cov, 0.1, max_leverage=0.0)
    with pytest.raises(AllocationError, match="non-positive predicted variance"):
        vol_target([0.0, 0.0], cov, 0.1)
    with pytest.raises(AllocationError, match="weights size mismatch"):
        vol_target([1.0], cov, 0.1)


# --------------------------------------------------------------------------------------------------
# Generators
# --------------------------------------------------------------------------------------------------


def test_factor_covariance_and_sample_returns() -> None:
    cov = factor_covariance(50, 1)
    assert np.array_equal(cov, factor_covariance(50, 1))
    validate_covariance(cov)
    annual_vol = np.sqrt(np.diag(cov) * 365)
    assert annual_vol.min() >= 0.4 - 1e-12 and annual_vol.max() <= 1.2 + 1e-12
    corr = cov / np.outer(np.sqrt(np.diag(cov)), np.sqrt(np.diag(cov)))
    assert corr[np.triu_indices(50, 1)].min() > 0.2  # market factor: all positively correlated
    r = sample_returns(cov, 20000, 3)
    assert r.shape == (20000, 50)
    est = np.cov(r, rowvar=False)
    assert np.abs(np.sqrt(np.diag(est)) / np.sqrt(np.diag(cov)) - 1).max() < 0.1


# --------------------------------------------------------------------------------------------------
# Compiled path: hard matrices, bounds
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["auto", "newton", "ccd"])
@pytest.mark.parametrize("case", ["random", "ill_conditioned", "singular", "singular_budgets"])
def test_risk_parity_contributions_equal_budgets(case: str, method: str, kernel: str) -> None:
    rng = np.random.default_rng(21)
    n = 60
    if case == "random":
        a = rng.standard_normal((n, 2 * n))
        cov = a @ a.T / (2 * n)
    elif case == "ill_conditioned":
        cov = _ill_conditioned(n, 4, cond=1e6)
    else:
        cov = _sample_cov(n, 25, 5)  # rank 24
        assert np.linalg.matrix_rank(cov) < n
    budgets = rng.uniform(0.2, 5.0, n) if case == "singular_budgets" else np.ones(n)
    info: dict[str, object] = {}
    w = risk_parity(cov, budgets, method=method, max_iter=5000, info=info)  # type: ignore[arg-type]
    _assert_risk_parity(w, cov, budgets)
    assert info["error"] <= 1e-10  # type: ignore[operator]


def _assert_box_kkt(
    cov: np.ndarray, c: np.ndarray, w: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> None:
    """KKT of min ½w'Σw − c'w s.t. Σw = 1, lo ≤ w ≤ hi to 1e-9 relative to the gradient scale."""
    assert abs(w.sum() - 1.0) <= 1e-12
    assert (w >= lo - 1e-15).all() and (w <= hi + 1e-15).all()
    g = cov @ w - c
    tol = 1e-9 * max(np.abs(g).max(), np.abs(c).max())
    free = (w > lo + 1e-14) & (w < hi - 1e-14)
    assert free.any()
    nu = float(g[free].mean())
    s = g - nu
    assert np.abs(s[free]).max() <= tol
    assert s[w <= lo + 1e-14].min(initial=0.0) >= -tol  # at the lower bound: may not want to grow
    assert s[w >= hi - 1e-14].max(initial=0.0) <= tol  # at the upper bound: may not want to shrink


def _box(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lo = np.where(rng.random(n) < 0.3, rng.uniform(0.0, 0.5 / n, n), 0.0)
    hi = rng.uniform(1.5 / n, 0.25, n)
    return lo, hi * max(1.0, 1.2 / hi.sum())


@pytest.mark.parametrize("n", [8, 40, 150])
@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("singular", [False, True])
def test_mean_variance_bounds_kkt(n: int, objective: str, singular: bool) -> None:
    cov = _sample_cov(n, max(n // 2, 5), 7) if singular else factor_covariance(n, 50 + n)
    mu = _mu(n, n + 3)
    lo, hi = _box(n, n)
    info: dict[str, float] = {}
    w = mean_variance(cov, mu, objective=objective, risk_aversion=4.0, lower=lo, upper=hi,  # type: ignore[arg-type]
                      info=info)
    if objective == "min_variance":
        c = np.zeros(n)
    elif objective == "utility":
        c = mu / 4.0
    else:  # max-Sharpe optimum = utility optimum at t = w'Σw / μ'w
        c = mu * float(w @ cov @ w) / float(mu @ w)
    _assert_box_kkt(cov, c, w, lo, hi)
    assert (w <= hi).any() and np.isclose(w, hi).any()  # the caps bind


def test_mean_variance_bounds_agree_with_scipy() -> None:
    cov = factor_covariance(12, 3)
    mu = _mu(12, 4)
    lo, hi = np.full(12, 0.02), np.full(12, 0.2)
    for objective in OBJECTIVES:
        w = mean_variance(cov, mu, objective=objective, risk_aversion=4.0, lower=lo, upper=hi)  # type: ignore[arg-type]
        best = None
        for w0 in (np.full(12, 1 / 12), np.clip(mu, 0.02, 0.2) / np.clip(mu, 0.02, 0.2).sum()):
            res = minimize(
                lambda x, o=objective: _objective(cov * 100, mu * 100, o, 4.0, x), w0, method="SLSQP",
                bounds=list(zip(lo, hi, strict=True)), options={"ftol": 1e-15, "maxiter": 1000},
                constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1.0}])
            val = _objective(cov, mu, objective, 4.0, res.x)
            best = val if best is None else min(best, val)
        assert best is not None
        ours = _objective(cov, mu, objective, 4.0, w)
        assert ours <= best + 1e-9 * abs(best), objective


def test_mean_variance_bounds_errors_and_trivial_bounds() -> None:
    cov = factor_covariance(5, 1)
    mu = _mu(5, 1)
    with pytest.raises(AllocationError, match=r"infeasible bounds: sum\(upper\) = 0.5 < 1"):
        mean_variance(cov, upper=np.full(5, 0.1))
    with pytest.raises(AllocationError, match=r"infeasible bounds: sum\(lower\) = 1.5 > 1"):
        mean_variance(cov, lower=np.full(5, 0.3))
    with pytest.raises(AllocationError, match=r"infeasible bounds: lower 0\.3 > upper 0\.2 at index 0"):
        mean_variance(cov, lower=np.r_[0.3, np.zeros(4)], upper=np.r_[0.2, np.ones(4)])
    with pytest.raises(AllocationError, match="lower must be non-negative"):
        mean_variance(cov, lower=np.r_[-0.1, np.zeros(4)])
    with pytest.raises(AllocationError, match="upper size mismatch"):
        mean_variance(cov, upper=np.ones(4))
    with pytest.raises(AllocationError, match="no feasible portfolio has a positive"):
        mean_variance(cov, np.r_[0.01, -np.ones(4)], objective="max_sharpe", upper=np.full(5, 0.25))
    # Exactly tight bounds: the only feasible portfolio.
    w = mean_variance(cov, lower=np.full(5, 0.2), upper=np.full(5, 0.2))
    np.testing.assert_allclose(w, np.full(5, 0.2), atol=1e-15)
    # Non-binding bounds give the unbounded answer.
    for objective in OBJECTIVES:
        free = mean_variance(cov, mu, objective=objective)  # type: ignore[arg-type]
        boxed = mean_variance(cov, mu, objective=objective, lower=np.zeros(5), upper=np.ones(5))  # type: ignore[arg-type]
        np.testing.assert_allclose(boxed, free, atol=1e-12)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_mean_variance_bounds_warm_start(objective: str) -> None:
    cov = factor_covariance(100, 9)
    mu = _mu(100, 10)
    lo, hi = _box(100, 3)
    kw = {"objective": objective, "risk_aversion": 5.0, "lower": lo, "upper": hi}
    w_prev = mean_variance(cov, mu, **kw)  # type: ignore[arg-type]
    bumped = mu * (1.0 + 0.01 * np.random.default_rng(5).uniform(-1, 1, 100))
    cold: dict[str, int] = {}
    warm: dict[str, int] = {}
    w_cold = mean_variance(cov, bumped, info=cold, **kw)  # type: ignore[arg-type]
    w_warm = mean_variance(cov, bumped, w0=w_prev, info=warm, **kw)  # type: ignore[arg-type]
    np.testing.assert_allclose(w_warm, w_cold, atol=1e-11)
    assert warm["iterations"] < cold["iterations"], (warm, cold)


def test_compiled_and_numpy_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared import _alloc

    cov = _sample_cov(120, 60, 2)
    mu = _mu(120, 2)
    monkeypatch.setattr(allocation, "_kernel", _alloc)
    ours = [risk_parity(cov)] + [mean_variance(cov, mu, objective=o) for o in OBJECTIVES]  # type: ignore[arg-type]
    monkeypatch.setattr(allocation, "_kernel", None)
    ref = [risk_parity(cov)] + [mean_variance(cov, mu, objective=o) for o in OBJECTIVES]  # type: ignore[arg-type]
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-10)
