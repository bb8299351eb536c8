"""Pure portfolio-allocation functions: validation, shrinkage, risk parity, mean-variance, vol targeting.

Everything here is numpy/scipy only and free of I/O, so it can be called from a worker or a notebook.
All weights are long-only and fully invested (they sum to 1) unless a function says otherwise.
Covariances and volatilities share one horizon: a daily covariance gives a daily volatility.

Algorithms (see ``/work/shared/notes/allocation-anchors.md`` for the measured reference figures):

* :func:`risk_parity` minimises Spinu's convex log-barrier objective ``½ y'Σy − Σ b_i log y_i`` and
  normalises ``w = y / Σy``. At the optimum ``y_i (Σy)_i = b_i`` so relative risk contributions equal the
  budgets exactly. Small problems use Newton's method with a backtracking line search (one Cholesky of
  ``Σ + diag(b/y²)`` per iteration, positive definite even for a singular Σ); large ones use cyclical
  coordinate descent (closed-form coordinate minimiser, one ``O(N)`` update per coordinate).
* :func:`mean_variance` runs an exact primal active-set method on the KKT system of
  ``min ½ x'Qx − c'x  s.t.  a'x = 1, x ≥ 0``; each iteration solves the free block with one Cholesky.
  It starts from a single free asset (or the support of ``w0``) so a singular Σ is fine.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import scipy.linalg as sla
from numpy.typing import ArrayLike, NDArray
from scipy.linalg.blas import daxpy as _daxpy

FloatArray = NDArray[np.float64]
Objective = Literal["min_variance", "max_sharpe", "utility"]

#: Risk parity uses Newton up to this many assets and coordinate descent above it (measured crossover).
NEWTON_MAX_N = 250
#: In ``"auto"`` mode above ``NEWTON_MAX_N``, coordinate-descent sweeps before switching to Newton.
AUTO_CCD_SWEEPS = 40
_SYM_RTOL = 1e-10
_PSD_RTOL = 1e-10


class AllocationError(ValueError):
    """An allocation input is invalid or an optimiser could not reach its tolerance."""


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def _as_float(x: ArrayLike, name: str) -> FloatArray:
    try:
        return np.array(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise AllocationError(f"{name} is not numeric: {exc}") from exc


def _check_finite(arr: FloatArray, name: str) -> None:
    if np.isnan(arr).any():
        raise AllocationError(f"{name} contains NaN")
    if np.isinf(arr).any():
        raise AllocationError(f"{name} contains inf")


def validate_covariance(cov: ArrayLike, *, name: str = "covariance", check_psd: bool = True) -> FloatArray:
    """Return ``cov`` as a symmetric float64 copy after checking it is a usable covariance matrix.

    Checks, in order: numeric, 2-D, square, non-empty, no NaN, no inf, symmetric within ``1e-10`` of the
    largest absolute entry, and (if ``check_psd``) positive semi-definite: smallest eigenvalue
    ``>= -1e-10 * largest``. The PSD check is ``O(N³)``: a Cholesky of a slightly shifted copy, and an
    eigendecomposition only when that fails (≈ 15 ms / 50 ms at N=1000). Pass ``check_psd=False`` (or the
    solvers' ``check=False``) when the matrix was validated before.

    Raises:
        AllocationError: naming the first failed check, e.g. ``"covariance is not square: 3x4"``.
    """
    arr = _as_float(cov, name)
    if arr.ndim != 2:
        raise AllocationError(f"{name} must be 2-D, got {arr.ndim}-D with shape {arr.shape}")
    rows, cols = arr.shape
    if rows != cols:
        raise AllocationError(f"{name} is not square: {rows}x{cols}")
    if rows == 0:
        raise AllocationError(f"{name} is empty: 0x0")
    if not np.isfinite(arr).all():
        _check_finite(arr, name)
    scale = float(np.abs(arr).max())
    asym = float(np.abs(arr - arr.T).max())
    if asym > _SYM_RTOL * scale:
        raise AllocationError(
            f"{name} is not symmetric (max |C - C.T| = {asym:.3g}, largest entry {scale:.3g})"
        )
    arr = 0.5 * (arr + arr.T)
    if check_psd and not _psd_fast(arr):
        eig = np.linalg.eigvalsh(arr)
        lo, hi = float(eig[0]), float(eig[-1])
        if lo < -_PSD_RTOL * max(hi, 0.0) or hi < 0.0:
            raise AllocationError(
                f"{name} is not positive semi-definite (min eigenvalue {lo:.6g}, max eigenvalue {hi:.6g})"
            )
    return arr


def _psd_fast(arr: FloatArray) -> bool:
    """Sufficient PSD test: Cholesky of ``C + δI`` with ``δ = ½·1e-10·max diag ≤ ½·1e-10·λ_max``.

    Success proves ``λ_min ≥ −δ`` (up to Cholesky rounding, ~N·eps·λ_max, far below the tolerance), so the
    matrix passes; failure is decided exactly by the eigendecomposition. About 4× cheaper than ``eigvalsh``.
    """
    d = np.diag(arr)
    if d.min() < 0.0:
        return False
    shifted = arr.copy()
    shifted[np.diag_indices_from(shifted)] += 0.5 * _PSD_RTOL * float(d.max())
    try:
        sla.cholesky(shifted, lower=True, overwrite_a=True, check_finite=False)
    except np.linalg.LinAlgError:
        return False
    return True


def validate_vector(
    v: ArrayLike,
    n: int,
    name: str,
    *,
    positive: bool = False,
    nonnegative: bool = False,
) -> FloatArray:
    """Return ``v`` as a finite 1-D float64 copy of length ``n`` (for mu, budgets, bounds, weights).

    Raises:
        AllocationError: ``"<name> size mismatch: got 3, expected 4"``, ``"<name> contains NaN"``,
            ``"<name> must be strictly positive (min -0.1 at index 2)"`` and similar.
    """
    arr = _as_float(v, name)
    if arr.ndim != 1:
        raise AllocationError(f"{name} must be 1-D, got {arr.ndim}-D with shape {arr.shape}")
    if arr.size != n:
        raise AllocationError(f"{name} size mismatch: got {arr.size}, expected {n}")
    _check_finite(arr, name)
    if positive and n and arr.min() <= 0.0:
        i = int(arr.argmin())
        raise AllocationError(f"{name} must be strictly positive (min {arr[i]:.6g} at index {i})")
    if nonnegative and n and arr.min() < 0.0:
        i = int(arr.argmin())
        raise AllocationError(f"{name} must be non-negative (min {arr[i]:.6g} at index {i})")
    return arr


def _cov(cov: ArrayLike, check: bool) -> FloatArray:
    if check:
        return validate_covariance(cov)
    arr = np.asarray(cov, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] == 0:
        raise AllocationError(f"covariance is not square: {'x'.join(map(str, arr.shape))}")
    return arr


# --------------------------------------------------------------------------------------------------
# Shrinkage
# --------------------------------------------------------------------------------------------------


def ledoit_wolf(returns: ArrayLike) -> tuple[FloatArray, float]:
    """Ledoit–Wolf (2004) shrinkage of the sample covariance towards a scaled identity.

    ``returns`` is T×N (rows are periods). With ``X`` the demeaned returns, ``S = X'X / T``,
    ``m = tr(S)/N``, ``d² = ‖S − mI‖²/N``, ``b̄² = Σ_t ‖x_t x_t' − S‖² / (N T²)``, ``b² = min(b̄², d²)``,
    the estimate is ``(b²/d²) m I + (1 − b²/d²) S`` (Frobenius norms). It is positive definite whenever
    the shrinkage is positive, including N > T.

    Returns:
        ``(covariance, shrinkage)`` with shrinkage in [0, 1].
    """
    x = _as_float(returns, "returns")
    if x.ndim != 2:
        raise AllocationError(f"returns must be 2-D (T x N), got {x.ndim}-D with shape {x.shape}")
    t, n = x.shape
    if t < 2 or n < 1:
        raise AllocationError(f"returns needs at least 2 rows and 1 column, got {t}x{n}")
    _check_finite(x, "returns")
    x = x - x.mean(axis=0)
    s = (x.T @ x) / t
    m = float(np.trace(s)) / n
    s_fro2 = float(np.sum(s * s))
    d2 = (s_fro2 - 2.0 * m * float(np.trace(s)) + n * m * m) / n  # ‖S − mI‖² / N
    # Σ_t ‖x_t x_t' − S‖² = Σ_t ‖x_t‖⁴ − T ‖S‖²
    row_sq = np.einsum("ij,ij->i", x, x)
    bbar2 = max((float(np.sum(row_sq**2)) - t * s_fro2) / (n * t * t), 0.0)
    if d2 <= 0.0:
        shrinkage = 0.0  # S already is a scaled identity
    else:
        shrinkage = min(bbar2, d2) / d2
    est = (1.0 - shrinkage) * s
    est[np.diag_indices(n)] += shrinkage * m
    return est, float(shrinkage)


# --------------------------------------------------------------------------------------------------
# Risk parity
# --------------------------------------------------------------------------------------------------


def risk_contributions(w: ArrayLike, cov: ArrayLike) -> FloatArray:
    """Relative risk contributions ``RC_i = w_i (Σw)_i / w'Σw`` (they sum to 1).

    Raises:
        AllocationError: if the portfolio variance ``w'Σw`` is not positive.
    """
    sigma = np.asarray(cov, dtype=np.float64)
    wv = np.asarray(w, dtype=np.float64)
    rc = wv * (sigma @ wv)
    total = float(rc.sum())
    if not total > 0.0:
        raise AllocationError(f"portfolio variance is not positive ({total:.6g}); contributions undefined")
    return rc / total


def _rc_error(y: FloatArray, sy: FloatArray, b: FloatArray) -> float:
    rc = y * sy
    return float(np.abs(rc / rc.sum() - b).max())


def _rp_newton(
    sigma: FloatArray, b: FloatArray, y: FloatArray, tol: float, max_iter: int
) -> tuple[FloatArray, int, float]:
    sy = sigma @ y
    diag = np.diag_indices(sigma.shape[0])
    err = _rc_error(y, sy, b)
    it = 0
    while err > tol and it < max_iter:
        it += 1
        g = sy - b / y
        h = sigma.copy()
        h[diag] += b / (y * y)
        try:
            cf = sla.cho_factor(h, overwrite_a=True, check_finite=False)
        except np.linalg.LinAlgError as exc:  # pragma: no cover - H is PD in exact arithmetic
            raise AllocationError(f"risk parity Newton Hessian not positive definite: {exc}") from exc
        dy = -sla.cho_solve(cf, g, check_finite=False)
        neg = dy < 0.0
        step = 1.0
        if neg.any():
            step = min(1.0, 0.99 * float(np.min(-y[neg] / dy[neg])))
        sdy = sigma @ dy
        f0 = 0.5 * float(y @ sy) - float(b @ np.log(y))
        slope = float(g @ dy)
        slack = 1e-14 * (abs(f0) + 1.0)
        for _ in range(60):
            y_new = y + step * dy
            sy_new = sy + step * sdy
            f_new = 0.5 * float(y_new @ sy_new) - float(b @ np.log(y_new))
            if f_new <= f0 + 1e-4 * step * slope + slack:
                break
            step *= 0.5
        else:
            break  # no decrease possible: rounding floor reached
        y = y_new
        sy = sigma @ y  # fresh product, no drift
        err = _rc_error(y, sy, b)
    return y, it, err


def _rp_ccd(
    sigma: FloatArray, b: FloatArray, y: FloatArray, tol: float, max_iter: int
) -> tuple[FloatArray, int, float]:
    """Cyclical coordinate descent on Spinu's objective (Griveau-Billion, Richard & Roncalli).

    Coordinate i minimises ``½σ_ii x_i² + c_i x_i − b_i log x_i`` with ``c_i = (Σx)_i − σ_ii x_i``:
    ``x_i = (sqrt(c_i² + 4σ_ii b_i) − c_i) / (2σ_ii)``; ``Σx`` is updated in place with one BLAS daxpy.
    """
    n = sigma.shape[0]
    rows = np.ascontiguousarray(sigma)
    d = np.diag(rows).tolist()
    four_db = (4.0 * np.diag(rows) * b).tolist()
    half_inv_d = (0.5 / np.diag(rows)).tolist()
    x = y.tolist()
    sx = rows @ y
    err = _rc_error(y, sx, b)
    sweeps = 0
    coords = range(n)
    while err > tol and sweeps < max_iter:
        sweeps += 1
        for i in coords:
            xi = x[i]
            c = float(sx[i]) - d[i] * xi
            xn = (math.sqrt(c * c + four_db[i]) - c) * half_inv_d[i]
            if xn != xi:
                sx = _daxpy(rows[i], sx, a=xn - xi)
                x[i] = xn
        xa = np.array(x)
        sx = rows @ xa  # fresh product each sweep, no drift
        err = _rc_error(xa, sx, b)
    return np.array(x), sweeps, err


def risk_parity(
    cov: ArrayLike,
    budgets: ArrayLike | None = None,
    *,
    tol: float = 1e-12,
    max_iter: int = 200,
    w0: ArrayLike | None = None,
    method: Literal["auto", "newton", "ccd"] = "auto",
    check: bool = True,
    info: dict[str, Any] | None = None,
) -> FloatArray:
    """Long-only, fully invested weights whose relative risk contributions equal ``budgets``.

    Args:
        cov: N×N covariance (may be singular, e.g. a sample covariance with N > T).
        budgets: positive risk budgets, normalised to sum 1; default equal (ERC).
        tol: stop when ``max_i |RC_i − b_i| <= tol``. If rounding stalls Newton before ``tol``, the result
            is still accepted when the error is ≤ ``max(tol, 1e-10)``.
        max_iter: Newton iterations or coordinate-descent sweeps.
        w0: strictly positive warm start (e.g. the previous rebalance's weights).
        method: ``"newton"``, ``"ccd"`` or ``"auto"``: Newton for N ≤ ``NEWTON_MAX_N``, else CCD, finishing
            with Newton if CCD has not converged after ``AUTO_CCD_SWEEPS`` sweeps (ill-conditioned Σ).
        check: validate ``cov`` (including the ``O(N³)`` PSD check). Disable only for pre-validated input.
        info: if a dict is given it receives ``iterations`` (Newton steps plus CCD sweeps), ``error`` and
            ``method`` (``"newton"``, ``"ccd"`` or ``"ccd+newton"``).

    Raises:
        AllocationError: invalid input, a zero-variance asset, or no convergence.
    """
    sigma = _cov(cov, check)
    n = sigma.shape[0]
    if budgets is None:
        b = np.full(n, 1.0 / n)
    else:
        b = validate_vector(budgets, n, "budgets", positive=True)
        b = b / b.sum()
    d = np.diag(sigma)
    if d.min() <= 0.0:
        i = int(d.argmin())
        raise AllocationError(f"covariance has a non-positive variance {d[i]:.6g} at index {i}")
    if w0 is None:
        y = b / np.sqrt(d)
    else:
        y = validate_vector(w0, n, "w0", positive=True)
    var = float(y @ sigma @ y)
    if not var > 0.0:
        raise AllocationError(f"start portfolio has non-positive variance {var:.6g}")
    y = y / math.sqrt(var)  # optimal scale of Spinu's objective when Σb = 1
    if method == "newton" or (method == "auto" and n <= NEWTON_MAX_N):
        chosen = "newton"
        y, iters, err = _rp_newton(sigma, b, y, tol, max_iter)
    elif method == "ccd":
        chosen = "ccd"
        y, iters, err = _rp_ccd(sigma, b, y, tol, max_iter)
    elif method == "auto":
        # CCD converges linearly at a rate set by the conditioning; if it is slow, finish with Newton.
        chosen = "ccd"
        y, iters, err = _rp_ccd(sigma, b, y, tol, min(max_iter, AUTO_CCD_SWEEPS))
        if err > tol:
            chosen = "ccd+newton"
            y = y / math.sqrt(float(y @ sigma @ y))
            y, more, err = _rp_newton(sigma, b, y, tol, max_iter)
            iters += more
    else:
        raise AllocationError(f"unknown risk parity method {method!r}; use 'auto', 'newton' or 'ccd'")
    if info is not None:
        info.update(iterations=iters, error=err, method=chosen)
    if not err <= max(tol, 1e-10):
        raise AllocationError(
            f"risk parity did not converge: max |RC - budget| = {err:.3g} after {iters} {chosen} iterations"
        )
    return y / y.sum()


# --------------------------------------------------------------------------------------------------
# Mean-variance (exact primal active set)
# --------------------------------------------------------------------------------------------------


def _solve_free(
    q: FloatArray, c: FloatArray, a: FloatArray, free: NDArray[np.intp]
) -> tuple[FloatArray, float]:
    """Solve ``min ½x'Qx − c'x s.t. a'x = 1`` on the free block; returns ``(x_F, ν)``."""
    qf = q[np.ix_(free, free)]
    cf_, af = c[free], a[free]
    try:
        fac = sla.cho_factor(qf, check_finite=False)
        u = sla.cho_solve(fac, cf_, check_finite=False)
        v = sla.cho_solve(fac, af, check_finite=False)
        av = float(af @ v)
        if av > 0.0:
            nu = (1.0 - float(af @ u)) / av
            return u + nu * v, nu
    except np.linalg.LinAlgError:
        pass
    # Singular free block: solve the bordered KKT system directly.
    k = free.size
    kkt = np.zeros((k + 1, k + 1))
    kkt[:k, :k] = qf
    kkt[:k, k] = -af
    kkt[k, :k] = af
    rhs = np.concatenate([cf_, [1.0]])
    try:
        sol = np.linalg.solve(kkt, rhs)
    except np.linalg.LinAlgError as exc:
        raise AllocationError(
            f"mean-variance KKT system singular on a free set of {k} assets (covariance rank deficient)"
        ) from exc
    return sol[:k], float(sol[k])


def _active_set(
    q: FloatArray, c: FloatArray, a: FloatArray, x: FloatArray, free_mask: NDArray[np.bool_], max_iter: int
) -> tuple[FloatArray, int]:
    """Primal active set for ``min ½x'Qx − c'x s.t. a'x = 1, x ≥ 0`` from a feasible ``x``."""
    n = x.size
    for it in range(1, max_iter + 1):
        free = np.flatnonzero(free_mask)
        xf_star, nu = _solve_free(q, c, a, free)
        if xf_star.min() >= 0.0:
            x[:] = 0.0
            x[free] = xf_star
            s = q[:, free] @ xf_star - c - nu * a
            s[free] = 0.0
            j = int(s.argmin())
            scale = max(float(np.abs(c).max()), abs(nu) * float(np.abs(a).max()), 1e-300)
            if s[j] >= -1e-12 * scale:
                return x, it
            free_mask[j] = True
            continue
        # Step towards the free-block optimum until the first weight hits zero; fix it there.
        xf = x[free]
        p = xf_star - xf
        blocking = xf_star < 0.0
        ratios = np.full(free.size, np.inf)
        ratios[blocking] = xf[blocking] / (xf[blocking] - xf_star[blocking])
        k = int(ratios.argmin())
        alpha = min(max(float(ratios[k]), 0.0), 1.0)
        xf = xf + alpha * p
        xf[k] = 0.0
        xf[xf < 0.0] = 0.0
        x[free] = xf
        drop = free[xf <= 0.0]
        free_mask[drop] = False
        if not free_mask.any():  # pragma: no cover - a'x = 1 keeps one asset free
            raise AllocationError("mean-variance active set emptied the free set")
    raise AllocationError(f"mean-variance active set did not converge in {max_iter} iterations (N={n})")


def mean_variance(
    cov: ArrayLike,
    mu: ArrayLike | None = None,
    *,
    objective: Objective = "min_variance",
    risk_aversion: float = 1.0,
    w0: ArrayLike | None = None,
    max_iter: int | None = None,
    check: bool = True,
    info: dict[str, Any] | None = None,
) -> FloatArray:
    """Long-only, fully invested mean-variance weights, solved exactly by a primal active-set method.

    Objectives:
        * ``"min_variance"``: min ``w'Σw``.
        * ``"utility"``: max ``μ'w − (λ/2) w'Σw`` with ``λ = risk_aversion``.
        * ``"max_sharpe"``: max ``μ'w / sqrt(w'Σw)`` via ``y = w / μ'w``: min ``y'Σy`` s.t. ``μ'y = 1``,
          ``y ≥ 0``, then ``w = y / Σy``. Needs at least one ``μ_i > 0``.

    Args:
        w0: warm start (non-negative); the search starts on its support.
        max_iter: active-set iterations (default ``10 N + 100``).
        check: validate ``cov`` (the PSD check is ``O(N³)``); disable only for pre-validated input.
        info: if a dict is given it receives ``iterations``, ``n_free``, ``multiplier`` and ``objective``.

    Raises:
        AllocationError: invalid input, missing ``mu``, no positive ``mu`` for max-Sharpe, or a singular
            KKT system.
    """
    sigma = _cov(cov, check)
    n = sigma.shape[0]
    d = np.diag(sigma)
    if objective not in ("min_variance", "max_sharpe", "utility"):
        raise AllocationError(
            f"unknown objective {objective!r}; use 'min_variance', 'max_sharpe' or 'utility'"
        )
    mu_v: FloatArray | None = None
    if objective != "min_variance":
        if mu is None:
            raise AllocationError(f"mu is required for objective {objective!r}")
        mu_v = validate_vector(mu, n, "mu")
    ones = np.ones(n)
    if objective == "min_variance":
        q, c, a = sigma, np.zeros(n), ones
        start = int(d.argmin())
    elif objective == "utility":
        assert mu_v is not None
        lam = float(risk_aversion)
        if not (math.isfinite(lam) and lam > 0.0):
            raise AllocationError(f"risk_aversion must be positive and finite, got {risk_aversion!r}")
        q, c, a = lam * sigma, mu_v, ones
        start = int((mu_v - 0.5 * lam * d).argmax())
    else:
        assert mu_v is not None
        if mu_v.max() <= 0.0:
            raise AllocationError(
                f"max_sharpe needs at least one asset with mu > 0 (max mu = {mu_v.max():.6g})"
            )
        q, c, a = sigma, np.zeros(n), mu_v
        score = np.where(mu_v > 0.0, mu_v / np.sqrt(np.maximum(d, 1e-300)), -np.inf)
        start = int(score.argmax())

    x = np.zeros(n)
    free_mask = np.zeros(n, dtype=bool)
    if w0 is not None:
        w_start = validate_vector(w0, n, "w0", nonnegative=True)
        scale = float(a @ w_start)
        if scale > 0.0:
            x = w_start / scale
            free_mask = x > 0.0
    if not free_mask.any():
        x[start] = 1.0 / a[start]
        free_mask[start] = True
    limit = max_iter if max_iter is not None else 10 * n + 100
    try:
        x, iters = _active_set(q, c, a, x, free_mask, limit)
    except AllocationError:
        if w0 is None:
            raise
        # A warm start whose support makes the free block singular: restart cold.
        x = np.zeros(n)
        free_mask = np.zeros(n, dtype=bool)
        x[start] = 1.0 / a[start]
        free_mask[start] = True
        x, iters = _active_set(q, c, a, x, free_mask, limit)
    total = float(x.sum())
    if not total > 0.0:  # pragma: no cover - a'x = 1 with x ≥ 0
        raise AllocationError("mean-variance solution has no positive weight")
    w = x / total
    if info is not None:
        info.update(iterations=iters, n_free=int(np.count_nonzero(w)), objective=objective)
    return w


# --------------------------------------------------------------------------------------------------
# Volatility targeting
# --------------------------------------------------------------------------------------------------


def vol_target(
    weights: ArrayLike, cov: ArrayLike, target: float, *, max_leverage: float = 1.0
) -> tuple[FloatArray, float, float]:
    """Scale risky ``weights`` so predicted volatility ``sqrt(w'Σw)`` equals ``target``.

    ``target`` uses the covariance's horizon (a daily Σ needs a daily vol). The scale is capped so the
    gross invested weight ``Σ|w|`` never exceeds ``max_leverage``; the remainder ``1 − Σw`` is cash.

    Returns:
        ``(scaled_weights, cash_weight, predicted_vol)``; predicted_vol equals ``target`` unless capped.
    """
    sigma = validate_covariance(cov, check_psd=False)
    n = sigma.shape[0]
    w = validate_vector(weights, n, "weights")
    tgt = float(target)
    if not (math.isfinite(tgt) and tgt >= 0.0):
        raise AllocationError(f"target must be a finite non-negative volatility, got {target!r}")
    lev = float(max_leverage)
    if not (math.isfinite(lev) and lev > 0.0):
        raise AllocationError(f"max_leverage must be positive and finite, got {max_leverage!r}")
    var = float(w @ sigma @ w)
    if not var > 0.0:
        raise AllocationError(f"weights have non-positive predicted variance {var:.6g}; cannot target vol")
    vol = math.sqrt(var)
    gross = float(np.abs(w).sum())
    k = min(tgt / vol, lev / gross)
    scaled = k * w
    return scaled, 1.0 - float(scaled.sum()), k * vol


# --------------------------------------------------------------------------------------------------
# Generators for tests and benchmarks
# --------------------------------------------------------------------------------------------------


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
