"""Pure portfolio-allocation functions: validation, shrinkage, risk parity, mean-variance, vol targeting.

Everything here is free of I/O, so it can be called from a worker or a notebook. The solvers' inner
loops run in a small C extension (``shared/_alloc.c``, built by ``pip install -e .``, Cholesky from
SciPy's LAPACK); when it is not built, the same algorithms run in numpy (``COMPILED`` says which).
All weights are long-only and fully invested (they sum to 1) unless a function says otherwise.
Covariances and volatilities share one horizon: a daily covariance gives a daily volatility.

Algorithms (``cse bench allocate`` compares them with Riskfolio-Lib, skfolio and PyPortfolioOpt):

* :func:`risk_parity` minimises Spinu's convex log-barrier objective ``½ y'Σy − Σ b_i log y_i`` and
  normalises ``w = y / Σy``. At the optimum ``y_i (Σy)_i = b_i`` so relative risk contributions equal the
  budgets exactly. Small problems use Newton's method with a backtracking line search (one Cholesky of
  ``Σ + diag(b/y²)`` per iteration, positive definite even for a singular Σ); large ones use cyclical
  coordinate descent (closed-form coordinate minimiser, one ``O(N)`` update per coordinate).
* :func:`mean_variance` runs an exact primal active-set method on the KKT system of
  ``min ½ x'Qx − c'x  s.t.  a'x = 1, lo ≤ x ≤ hi``; each iteration solves the free block with one
  Cholesky. It starts from a single free asset (or the support of ``w0``) so a singular Σ is fine.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import scipy.linalg as sla
from numpy.typing import ArrayLike, NDArray
from scipy.linalg.blas import daxpy as _daxpy

from shared.errors import AllocationError  # raised here: invalid input, or no convergence

try:
    from shared import _alloc as _kernel
except ImportError:  # pragma: no cover - built by `pip install -e .`; numpy is the fallback
    _kernel = None  # type: ignore[assignment]  # mypy cannot type an optional module (python/mypy#1297)

FloatArray = NDArray[np.float64]
Objective = Literal["min_variance", "max_sharpe", "utility"]

#: True when the compiled kernels (``shared/_alloc.c``) are importable; otherwise numpy does the work.
COMPILED = _kernel is not None
#: In ``"auto"`` mode risk parity uses Newton up to this many assets and coordinate descent above it
#: (numpy: measured crossover; compiled: a CCD sweep costs one pass over Σ, a Newton step a Cholesky).
NEWTON_MAX_N = 8 if COMPILED else 250
#: In ``"auto"`` mode above ``NEWTON_MAX_N``, coordinate-descent sweeps before switching to Newton.
AUTO_CCD_SWEEPS = 40
_SYM_RTOL = 1e-10
_PSD_RTOL = 1e-10


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
    if _kernel is not None:
        arr = np.ascontiguousarray(arr)
        if _kernel.check_cov(arr, rows, check_psd) == 0:  # one pass; symmetrises arr in place
            return arr
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
    arr = np.ascontiguousarray(cov, dtype=np.float64)
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
    if method not in ("auto", "newton", "ccd"):
        raise AllocationError(f"unknown risk parity method {method!r}; use 'auto', 'newton' or 'ccd'")
    newton = method == "newton" or (method == "auto" and n <= NEWTON_MAX_N)
    if _kernel is not None:
        mode = 0 if newton else 1 if method == "ccd" else 2
        status, iters, err, used = _kernel.rp(sigma, b, y, n, tol, max_iter, mode, AUTO_CCD_SWEEPS)
        if status != 0:  # pragma: no cover - H is PD in exact arithmetic
            raise AllocationError("risk parity Newton Hessian not positive definite")
        chosen = ("newton", "ccd", "ccd+newton")[used]
    elif newton:
        chosen = "newton"
        y, iters, err = _rp_newton(sigma, b, y, tol, max_iter)
    elif method == "ccd":
        chosen = "ccd"
        y, iters, err = _rp_ccd(sigma, b, y, tol, max_iter)
    else:  # auto above NEWTON_MAX_N
        # CCD converges linearly at a rate set by the conditioning; if it is slow, finish with Newton.
        chosen = "ccd"
        y, iters, err = _rp_ccd(sigma, b, y, tol, min(max_iter, AUTO_CCD_SWEEPS))
        if err > tol:
            chosen = "ccd+newton"
            y = y / math.sqrt(float(y @ sigma @ y))
            y, more, err = _rp_newton(sigma, b, y, tol, max_iter)
            iters += more
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


def _solve_free(qf: FloatArray, cf: FloatArray, af: FloatArray, target: float) -> tuple[FloatArray, float]:
    """Solve ``min ½z'Q_FF z − c_F'z s.t. a_F'z = target`` on the free block; returns ``(z, ν)``."""
    try:
        fac = sla.cho_factor(qf, check_finite=False)
        uv = sla.cho_solve(fac, np.column_stack((cf, af)), check_finite=False)
        u, v = uv[:, 0], uv[:, 1]
        av = float(af @ v)
        if av > 0.0:
            nu = (target - float(af @ u)) / av
            return u + nu * v, nu
    except np.linalg.LinAlgError:
        pass
    # Singular free block: solve the bordered KKT system directly.
    k = cf.size
    kkt = np.zeros((k + 1, k + 1))
    kkt[:k, :k] = qf
    kkt[:k, k] = -af
    kkt[k, :k] = af
    rhs = np.concatenate([cf, [target]])
    try:
        sol = np.linalg.solve(kkt, rhs)
    except np.linalg.LinAlgError as exc:
        raise AllocationError(
            f"mean-variance KKT system singular on a free set of {k} assets (covariance rank deficient)"
        ) from exc
    return sol[:k], float(sol[k])


def _face_point(
    q: FloatArray, c: FloatArray, a: FloatArray, x: FloatArray, state: NDArray[np.int8]
) -> tuple[FloatArray, float]:
    """Optimum of the equality-constrained QP with the bound weights held where they are."""
    free = np.flatnonzero(state == 0)
    fixed = np.flatnonzero((state != 0) & (x != 0.0))
    if free.size == 0:
        raise AllocationError("mean-variance active set emptied the free set")
    target = 1.0 - float(a[fixed] @ x[fixed])
    cf = c[free] - q[np.ix_(free, fixed)] @ x[fixed] if fixed.size else c[free]
    z, nu = _solve_free(q[np.ix_(free, free)], cf, a[free], target)
    out = x.copy()
    out[free] = z
    return out, nu


def _box_qp_numpy(
    q: FloatArray, c: FloatArray, a: FloatArray, lo: FloatArray, hi: FloatArray, x: FloatArray,
    state: NDArray[np.int8], max_iter: int,
) -> tuple[int, int, float]:
    """Numpy twin of the compiled ``mv`` kernel (same algorithm, same tolerances)."""
    cmax, amax = float(np.abs(c).max()), float(np.abs(a).max())
    for it in range(1, max_iter + 1):
        free = np.flatnonzero(state == 0)
        z_full, nu = _face_point(q, c, a, x, state)
        z = z_full[free]
        lo_f, hi_f = lo[free], hi[free]
        if (z >= lo_f).all() and (z <= hi_f).all():
            x[free] = z
            supp = np.flatnonzero(x)
            s = q[:, supp] @ x[supp] - c - nu * a
            viol = np.where(state == 1, -s, np.where(state == 2, s, -np.inf))
            viol[lo >= hi] = -np.inf  # lower == upper: fixed for good
            j = int(viol.argmax())
            scale = max(cmax, abs(nu) * amax, 1e-300)
            if viol[j] <= 1e-12 * scale:
                return 0, it, nu
            state[j] = 0
            continue
        # Step towards the face optimum until the first free weight reaches a bound; fix it there.
        xf = x[free]
        ratios = np.full(free.size, np.inf)
        below, above = z < lo_f, z > hi_f
        ratios[below] = (xf[below] - lo_f[below]) / (xf[below] - z[below])
        ratios[above] = (hi_f[above] - xf[above]) / (z[above] - xf[above])
        k = int(ratios.argmin())
        alpha = min(max(float(ratios[k]), 0.0), 1.0)
        xf = xf + alpha * (z - xf)
        xf[k] = lo_f[k] if below[k] else hi_f[k]
        at_lo, at_hi = xf <= lo_f, xf >= hi_f
        xf = np.clip(xf, lo_f, hi_f)
        state[free[at_lo]] = 1
        state[free[at_hi]] = 2
        x[free] = xf
    return 1, max_iter, 0.0


def _box_qp(
    q: FloatArray, c: FloatArray, a: FloatArray, lo: FloatArray, hi: FloatArray, x: FloatArray,
    state: NDArray[np.int8], max_iter: int,
) -> tuple[int, float]:
    """Primal active set for ``min ½x'Qx − c'x s.t. a'x = 1, lo ≤ x ≤ hi`` from a feasible ``x``.

    ``state`` marks each weight free (0), at its lower (1) or upper bound (2); ``x`` and ``state`` are
    updated in place. Each iteration solves the free block with one Cholesky (bordered KKT if singular).
    Returns ``(iterations, ν)``.
    """
    n = x.size
    done = 0
    if _kernel is not None:
        status, done, nu = _kernel.mv(q, c, a, lo, hi, x, state, n, max_iter)
        if status == 0:
            return done, nu
    if done < max_iter:  # numpy alone, or after a singular free block (bordered KKT system)
        status, more, nu = _box_qp_numpy(q, c, a, lo, hi, x, state, max_iter - done)
        done += more
        if status == 0:
            return done, nu
    raise AllocationError(f"mean-variance active set did not converge in {max_iter} iterations (N={n})")


def _bounds(
    lower: ArrayLike | None, upper: ArrayLike | None, n: int
) -> tuple[FloatArray, FloatArray, bool]:
    """Validated ``(lo, hi, bounded)``; raises if no long-only fully invested portfolio fits."""
    lo = np.zeros(n) if lower is None else validate_vector(lower, n, "lower", nonnegative=True)
    hi = np.full(n, np.inf) if upper is None else validate_vector(upper, n, "upper", nonnegative=True)
    bad = np.flatnonzero(lo > hi)
    if bad.size:
        i = int(bad[0])
        raise AllocationError(f"infeasible bounds: lower {lo[i]:.6g} > upper {hi[i]:.6g} at index {i}")
    if float(lo.sum()) > 1.0 + 1e-12:
        raise AllocationError(f"infeasible bounds: sum(lower) = {lo.sum():.6g} > 1")
    if float(hi.sum()) < 1.0 - 1e-12:
        raise AllocationError(f"infeasible bounds: sum(upper) = {hi.sum():.6g} < 1")
    bounded = (lower is not None and bool(lo.any())) or (upper is not None and bool((hi < 1.0).any()))
    if not bounded:  # 0 ≤ w ≤ 1 holds anyway; max-Sharpe's y = w/μ'w needs no upper bound
        return np.zeros(n), np.full(n, np.inf), False
    return lo, hi, bounded


def _fill(lo: FloatArray, hi: FloatArray, order: NDArray[np.intp]) -> tuple[FloatArray, NDArray[np.int8]]:
    """A feasible start: every weight at its lower bound, the rest filled up to the bounds in ``order``."""
    order = np.concatenate((order[hi[order] > lo[order]], order[hi[order] <= lo[order]]))  # fixed ones last
    x = lo.copy()
    state = np.ones(lo.size, dtype=np.int8)
    rem = 1.0 - float(lo.sum())
    room = np.cumsum((hi - lo)[order])
    k = min(int(np.searchsorted(room, rem)), lo.size - 1)
    full = order[:k]
    x[full] = hi[full]
    state[full] = 2
    i = order[k]
    x[i] = min(lo[i] + rem - (float(room[k - 1]) if k else 0.0), hi[i])
    state[i] = 0
    return x, state


def _warm(
    w0: FloatArray, lo: FloatArray, hi: FloatArray, order: NDArray[np.intp]
) -> tuple[FloatArray, NDArray[np.int8]]:
    """``w0`` clipped into the box and moved onto the budget, largest holdings adjusted first."""
    x = np.clip(w0, lo, hi)
    x[x <= lo + 1e-12] = lo[x <= lo + 1e-12]  # a previous optimum is on its bounds up to rounding
    x[x >= hi - 1e-12] = hi[x >= hi - 1e-12]
    rem = 1.0 - float(x.sum())
    pref = np.argsort(-w0, kind="stable") if rem > 0 else np.argsort(w0, kind="stable")
    for i in pref:
        if abs(rem) <= 1e-15:
            break
        new = min(max(x[i] + rem, lo[i]), hi[i])
        rem -= new - x[i]
        x[i] = new
    if abs(rem) > 1e-12:  # pragma: no cover - _bounds guarantees a feasible box
        return _fill(lo, hi, order)
    state = np.where(x <= lo, 1, np.where(x >= hi, 2, 0)).astype(np.int8)
    state[(w0 > 0.0) & (x > lo) & (x < hi)] = 0
    if not (state == 0).any():
        state[int(np.argmax(x - lo))] = 0
    return x, state


def _max_sharpe_box(
    sigma: FloatArray, mu: FloatArray, lo: FloatArray, hi: FloatArray, x: FloatArray,
    state: NDArray[np.int8], limit: int,
) -> tuple[int, float]:
    """Max-Sharpe in a box: utility problems ``min ½x'Σx − t μ'x`` along the efficient frontier.

    ``x(t)`` is optimal for max-Sharpe iff ``t = x'Σx / μ'x`` (the utility KKT then are the Sharpe KKT).
    Sharpe increases with ``t`` while ``x'Σx/μ'x > t``; on one face of the box ``x(t)`` is affine in
    ``t`` and the root is ``t* = p'Σp / μ'p`` with ``p`` the face point at ``t = 0``. Newton-like face
    steps, safeguarded by a bracket on ``t``. Returns ``(inner iterations, t)``.
    """
    ones = np.ones(x.size)
    iters = 0
    var, ret = float(x @ sigma @ x), float(mu @ x)
    t = var / ret if ret > 0.0 else float(np.mean(np.diag(sigma))) / float(mu.max())
    t_lo, t_hi = 0.0, math.inf
    for _ in range(200):
        it, _nu = _box_qp(sigma, t * mu, ones, lo, hi, x, state, limit)
        iters += it
        var, ret = float(x @ sigma @ x), float(mu @ x)
        t_fp = var / ret if ret > 0.0 else math.inf
        if abs(t_fp - t) <= 1e-13 * t:
            return iters, t
        if t_fp > t:
            t_lo = t
        else:
            t_hi = t
        p, _ = _face_point(sigma, np.zeros(x.size), ones, x, state)
        pr = float(mu @ p)
        cand = float(p @ sigma @ p) / pr if pr > 0.0 else math.nan
        if not t_lo < cand < t_hi:
            cand = t_fp if t_lo < t_fp < t_hi else (
                math.sqrt(t_lo * t_hi) if t_lo > 0.0 and t_hi < math.inf
                else (4.0 * t if t_hi == math.inf else 0.25 * t))
        if t_hi < math.inf and t_lo > 0.0 and t_hi - t_lo <= 1e-14 * t_hi:
            return iters, t  # a kink of the frontier between two faces
        t = cand
    raise AllocationError("max_sharpe with bounds did not converge in 200 frontier steps")


def _objective_mu(objective: Objective, mu: ArrayLike | None, n: int) -> FloatArray | None:
    """Validated ``mu`` for an objective that uses it (None for min-variance); rejects unknown objectives."""
    if objective not in ("min_variance", "max_sharpe", "utility"):
        raise AllocationError(
            f"unknown objective {objective!r}; use 'min_variance', 'max_sharpe' or 'utility'"
        )
    if objective == "min_variance":
        return None
    if mu is None:
        raise AllocationError(f"mu is required for objective {objective!r}")
    return validate_vector(mu, n, "mu")


def _objective_qp(
    objective: Objective, mu_v: FloatArray | None, risk_aversion: float, d: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray, float]:
    """The active-set QP ``min ½x'Σx − c'x`` s.t. ``a'x = 1`` that ``objective`` reduces to.

    Returns ``(c, a, score, λ)``: ``score`` ranks the assets for the cold start and ``λ`` converts
    the budget multiplier back to the objective's units (1 except for the utility).
    """
    n = d.shape[0]
    if objective == "min_variance":
        return np.zeros(n), np.ones(n), -d, 1.0
    assert mu_v is not None
    if objective == "utility":
        lam = float(risk_aversion)
        if not (math.isfinite(lam) and lam > 0.0):
            raise AllocationError(f"risk_aversion must be positive and finite, got {risk_aversion!r}")
        # min ½x'Σx − (μ/λ)'x: same optimum as the utility
        return mu_v / lam, np.ones(n), mu_v - 0.5 * lam * d, lam
    if mu_v.max() <= 0.0:
        raise AllocationError(
            f"max_sharpe needs at least one asset with mu > 0 (max mu = {mu_v.max():.6g})"
        )
    return np.zeros(n), mu_v, np.where(mu_v > 0.0, mu_v / np.sqrt(np.maximum(d, 1e-300)), -np.inf), 1.0


def _start_point(
    w0: ArrayLike | None, a: FloatArray, lo: FloatArray, hi: FloatArray, order: NDArray[np.intp],
    bounded: bool,
) -> tuple[FloatArray, NDArray[np.int8]]:
    """The active set's first point and state: ``w0`` (warm start) if usable, else a cold start.

    A warm start is moved into the box when there is one, else scaled onto the budget ``a'x = 1``.
    A cold start fills the bounds in ``order``, or without bounds puts the whole budget on the
    best-ranked asset.
    """
    n = a.shape[0]
    if w0 is not None:
        w_start = validate_vector(w0, n, "w0", nonnegative=True)
        if bounded:
            return _warm(w_start, lo, hi, order)
        scale = float(a @ w_start)
        if scale > 0.0:
            x = w_start / scale
            return x, np.where(x > 0.0, 0, 1).astype(np.int8)
    if bounded:
        return _fill(lo, hi, order)
    x = np.zeros(n)
    state = np.ones(n, dtype=np.int8)
    j = int(order[0])
    x[j] = 1.0 / a[j]
    state[j] = 0
    return x, state


def mean_variance(
    cov: ArrayLike,
    mu: ArrayLike | None = None,
    *,
    objective: Objective = "min_variance",
    risk_aversion: float = 1.0,
    w0: ArrayLike | None = None,
    lower: ArrayLike | None = None,
    upper: ArrayLike | None = None,
    max_iter: int | None = None,
    check: bool = True,
    info: dict[str, Any] | None = None,
) -> FloatArray:
    """Long-only, fully invested mean-variance weights, solved exactly by a primal active-set method.

    Objectives:
        * ``"min_variance"``: min ``w'Σw``.
        * ``"utility"``: max ``μ'w − (λ/2) w'Σw`` with ``λ = risk_aversion``.
        * ``"max_sharpe"``: max ``μ'w / sqrt(w'Σw)`` via ``y = w / μ'w``: min ``y'Σy`` s.t. ``μ'y = 1``,
          ``y ≥ 0``, then ``w = y / Σy``. Needs at least one ``μ_i > 0``. With bounds it walks the
          efficient frontier of utility problems instead (a few warm-started solves).

    Args:
        w0: warm start (non-negative); the search starts on its support.
        lower, upper: optional per-asset bounds ``lower ≤ w ≤ upper`` (``lower ≥ 0``).
        max_iter: active-set iterations (default ``10 N + 100``).
        check: validate ``cov`` (the PSD check is ``O(N³)``); disable only for pre-validated input.
        info: if a dict is given it receives ``iterations``, ``n_free``, ``multiplier`` and ``objective``.

    Raises:
        AllocationError: invalid input, missing ``mu``, no positive ``mu`` for max-Sharpe, infeasible
            bounds (e.g. ``sum(upper) < 1``) or a singular KKT system.
    """
    sigma = _cov(cov, check)
    n = sigma.shape[0]
    d = np.diag(sigma)
    mu_v = _objective_mu(objective, mu, n)
    lo, hi, bounded = _bounds(lower, upper, n)
    c, a, score, lam = _objective_qp(objective, mu_v, risk_aversion, d)
    limit = max_iter if max_iter is not None else 10 * n + 100
    sharpe_box = objective == "max_sharpe" and bounded
    if sharpe_box:
        assert mu_v is not None
        best, _ = _fill(lo, hi, np.argsort(-mu_v, kind="stable"))
        if float(mu_v @ best) <= 0.0:
            raise AllocationError("max_sharpe with bounds: no feasible portfolio has a positive mu'w")
        a = np.ones(n)
    order = np.argsort(-score, kind="stable")

    def solve(x: FloatArray, state: NDArray[np.int8]) -> tuple[int, float]:
        if sharpe_box:
            assert mu_v is not None
            return _max_sharpe_box(sigma, mu_v, lo, hi, x, state, limit)
        return _box_qp(sigma, c, a, lo, hi, x, state, limit)

    if bounded and bool((hi <= lo).all()):  # lower == upper everywhere: the only feasible portfolio
        x, iters, nu = lo.copy(), 0, 0.0
    else:
        x, state = _start_point(w0, a, lo, hi, order, bounded)
        try:
            iters, nu = solve(x, state)
        except AllocationError:
            if w0 is None:
                raise
            # A warm start whose support makes the free block singular: restart cold.
            x, state = _start_point(None, a, lo, hi, order, bounded)
            iters, nu = solve(x, state)
    total = float(x.sum())
    if not total > 0.0:  # pragma: no cover - a'x = 1 with x ≥ 0
        raise AllocationError("mean-variance solution has no positive weight")
    w = x if bounded else x / total  # bounded: Σx = 1 already; dividing could step over a bound
    if info is not None:
        info.update(iterations=iters, n_free=int(np.count_nonzero(w)), multiplier=nu * lam,
                    objective=objective)
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
