"""``cse bench allocate``: our allocation solvers against Riskfolio-Lib, skfolio and PyPortfolioOpt.

Every solver gets the same matrices: for each N a 4-factor covariance with crypto-like volatilities
("F", :func:`~shared.allocation.factor_covariance`) and the sample covariance of T=365 Student-t returns
drawn from it ("S", singular when N ≥ T), with fixed seeds. Times are medians after an untimed warm-up;
slow calls get fewer repeats (7, or 5 above 0.5 s, 3 above 3 s, 1 above 15 s). Library times cover the
whole call (model build plus solve) with Σ and μ passed in; ours is the public call with its default
validation (the ``O(N³)`` PSD check included) and, separately, the solve alone (``check=False``).

Accuracy: risk parity reports ``max |RC_i − b_i|``. Mean-variance reports a certified relative objective
gap (a Wolfe-dual lower bound from the solution itself), the gap to cvxpy+Clarabel at 1e-12 when cvxpy
is installed, and the constraint violation ``max(|Σw − 1|, −min w)``.
"""

from __future__ import annotations

import math
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from shared import allocation
from shared.allocation import mean_variance, risk_parity
from tooling.bench.data import factor_covariance, sample_returns

SIZES = (10, 50, 200, 1000)
QUICK_SIZES = (10, 50, 200)
T = 365
SEED = 7
LAMBDA = 5.0  # utility: max μ'w − (λ/2) w'Σw
RP_TARGET = 300.0
MV_TARGET = 20.0
OBJECTIVES = ("min_variance", "max_sharpe", "utility")
LIBRARIES = ("riskfolio", "skfolio", "pypfopt")
PIP_NAMES = {"riskfolio": "riskfolio-lib", "skfolio": "skfolio", "pypfopt": "PyPortfolioOpt",
             "cvxpy": "cvxpy"}

Out = Callable[[str], None]


# --------------------------------------------------------------------------------------------------
# Data and accuracy
# --------------------------------------------------------------------------------------------------


def matrices(n: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``{"F": (Σ, μ, returns), "S": (...)}`` for ``n`` assets; ``returns`` (T+1 rows) feed the libraries."""
    cov = factor_covariance(n, SEED + n)
    returns = sample_returns(cov, T + 1, SEED + 1000 + n)
    mu = np.random.default_rng(SEED + 2000 + n).normal(0.5, 0.6, n) / 365
    r = returns[:T] - returns[:T].mean(axis=0)
    sample = (r.T @ r) / T
    return {"F": (cov, mu, returns[:T]), "S": (0.5 * (sample + sample.T), mu, returns[:T])}


def rp_error(w: np.ndarray, cov: np.ndarray) -> float:
    """``max_i |RC_i − 1/N|`` of a weight vector (inf if it is not a valid portfolio)."""
    w = np.asarray(w, dtype=float)
    if not np.isfinite(w).all():
        return math.inf
    rc = w * (cov @ w)
    return float(np.abs(rc / rc.sum() - 1.0 / w.size).max())


def objective_value(cov: np.ndarray, mu: np.ndarray, objective: str, w: np.ndarray) -> float:
    """Variance, Sharpe ratio or utility of ``w`` (the quantity the problem optimises)."""
    var = float(w @ cov @ w)
    if objective == "min_variance":
        return var
    if objective == "max_sharpe":
        return float(mu @ w) / math.sqrt(var)
    return float(mu @ w) - 0.5 * LAMBDA * var


def shortfall(objective: str, ours: float, ref: float) -> float:
    """Relative amount by which ``ours`` is worse than ``ref`` (negative when better)."""
    worse = ours - ref if objective == "min_variance" else ref - ours
    return worse / max(abs(ref), 1e-300)


def certified_gap(cov: np.ndarray, mu: np.ndarray, objective: str, w: np.ndarray) -> float:
    """Upper bound on the relative objective shortfall of ``w`` from a Wolfe-dual point built from ``w``.

    The QP is ``min ½x'Qx − c'x s.t. a'x = 1, x ≥ 0`` (max-Sharpe in ``y = w/μ'w``). With ``g = Qx − c``
    and the largest ``ν`` keeping ``g − νa ≥ 0``, ``P(x) + ν(1 − a'x) − (g − νa)'x`` is a lower bound.
    """
    n = w.size
    if objective == "max_sharpe":
        ret = float(mu @ w)
        if not ret > 0.0:
            return math.inf
        x, c, a = w / ret, np.zeros(n), mu
    elif objective == "utility":
        x, c, a = w, mu / LAMBDA, np.ones(n)
    else:
        x, c, a = w, np.zeros(n), np.ones(n)
    qx = cov @ x
    g = qx - c
    pos, neg = a > 0, a < 0
    nu = float(np.min(g[pos] / a[pos]))
    if neg.any() and nu < float(np.max(g[neg] / a[neg])):
        return math.inf
    primal = 0.5 * float(x @ qx) - float(c @ x)
    lower = primal + nu * (1.0 - float(a @ x)) - float((g - nu * a) @ x)
    gap = max(primal - lower, 0.0)
    if objective == "min_variance":
        return gap / primal
    if objective == "utility":
        return LAMBDA * gap / max(abs(LAMBDA * primal), 1e-300)
    return 1.0 - math.sqrt(max(lower, 0.0) / primal)  # Sharpe = 1/sqrt(2P) in y


def violation(w: np.ndarray) -> float:
    return max(abs(float(w.sum()) - 1.0), max(-float(w.min()), 0.0))


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------


def _repeats(first_s: float, quick: bool) -> int:
    n = 7 if first_s < 0.5 else 5 if first_s < 3 else 3 if first_s < 15 else 1
    return min(n, 3) if quick else n


def timed(fn: Callable[[], Any], *, warm_up: bool, quick: bool) -> tuple[float, int, Any]:
    """``(median seconds, repeats, last result)``; an exception propagates."""
    if warm_up:
        fn()
    t0 = time.perf_counter()
    out = fn()
    times = [time.perf_counter() - t0]
    for _ in range(_repeats(times[0], quick) - 1):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(times), out


# --------------------------------------------------------------------------------------------------
# Libraries (each call: build the model from Σ and μ, solve, return the weights)
# --------------------------------------------------------------------------------------------------


def available() -> dict[str, bool]:
    import importlib.util

    return {m: importlib.util.find_spec(m) is not None for m in (*LIBRARIES, "cvxpy")}  # key = module


def _riskfolio(cov: np.ndarray, mu: np.ndarray, returns: np.ndarray, problem: str) -> np.ndarray:
    import pandas as pd
    import riskfolio as rf

    cols = [f"a{i}" for i in range(cov.shape[0])]
    port = rf.Portfolio(returns=pd.DataFrame(returns, columns=cols))
    port.mu = pd.DataFrame(mu[None, :], columns=cols)
    port.cov = pd.DataFrame(cov, index=cols, columns=cols)
    if problem == "risk_parity":
        w = port.rp_optimization(model="Classic", rm="MV", rf=0, b=None, hist=False)
    else:
        obj = {"min_variance": "MinRisk", "max_sharpe": "Sharpe", "utility": "Utility"}[problem]
        # riskfolio's MV risk term is the variance: l = λ/2 gives μ'w − (λ/2) w'Σw.
        w = port.optimization(model="Classic", rm="MV", obj=obj, rf=0, l=LAMBDA / 2, hist=False)
    if w is None:
        raise RuntimeError("riskfolio returned no solution")
    return np.asarray(w, dtype=float).ravel()


_SK_PRIOR: Any = None


def _skfolio(cov: np.ndarray, mu: np.ndarray, returns: np.ndarray, problem: str) -> np.ndarray:
    global _SK_PRIOR
    from skfolio import RiskMeasure
    from skfolio.optimization import MeanRisk, ObjectiveFunction, RiskBudgeting
    from skfolio.prior import BasePrior, ReturnDistribution

    if _SK_PRIOR is None:

        class FixedPrior(BasePrior):  # type: ignore[misc]
            """Hands skfolio our Σ and μ unchanged (no nearest-PD projection)."""

            def __init__(self, mu: Any = None, covariance: Any = None) -> None:
                self.mu = mu
                self.covariance = covariance

            def fit(self, X: Any, y: Any = None, **_: Any) -> FixedPrior:
                self.return_distribution_ = ReturnDistribution(
                    mu=self.mu, covariance=self.covariance, returns=np.asarray(X))
                return self

        _SK_PRIOR = FixedPrior
    prior = _SK_PRIOR(mu=mu, covariance=cov)
    if problem == "risk_parity":
        model = RiskBudgeting(risk_measure=RiskMeasure.VARIANCE, prior_estimator=prior)
    else:
        fn = {"min_variance": ObjectiveFunction.MINIMIZE_RISK, "max_sharpe": ObjectiveFunction.MAXIMIZE_RATIO,
              "utility": ObjectiveFunction.MAXIMIZE_UTILITY}[problem]
        # skfolio's utility is μ'w − risk_aversion · w'Σw.
        model = MeanRisk(risk_measure=RiskMeasure.VARIANCE, objective_function=fn,
                         risk_aversion=LAMBDA / 2, prior_estimator=prior)
    model.fit(returns)
    return np.asarray(model.weights_, dtype=float)


def _pypfopt(cov: np.ndarray, mu: np.ndarray, _returns: np.ndarray, problem: str) -> np.ndarray:
    from pypfopt import EfficientFrontier

    ef = EfficientFrontier(mu, cov, weight_bounds=(0, 1))
    if problem == "min_variance":
        ef.min_volatility()
    elif problem == "max_sharpe":
        ef.max_sharpe(risk_free_rate=0.0)
    elif problem == "utility":
        ef.max_quadratic_utility(risk_aversion=LAMBDA)  # μ'w − (δ/2) w'Σw
    else:
        raise NotImplementedError("PyPortfolioOpt has no risk parity (ERC) method")
    return np.asarray(ef.weights, dtype=float)


LIB_CALLS = {"riskfolio": _riskfolio, "skfolio": _skfolio, "pypfopt": _pypfopt}


def clarabel_reference(cov: np.ndarray, mu: np.ndarray, objective: str) -> np.ndarray:
    """The optimum from cvxpy + Clarabel with every tolerance at 1e-12."""
    import cvxpy as cp

    n = cov.shape[0]
    x = cp.Variable(n)
    psd = cp.psd_wrap(cov)
    if objective == "max_sharpe":
        prob = cp.Problem(cp.Minimize(cp.quad_form(x, psd)), [mu @ x == 1, x >= 0])
    elif objective == "utility":
        prob = cp.Problem(cp.Maximize(mu @ x - 0.5 * LAMBDA * cp.quad_form(x, psd)), [cp.sum(x) == 1, x >= 0])
    else:
        prob = cp.Problem(cp.Minimize(cp.quad_form(x, psd)), [cp.sum(x) == 1, x >= 0])
    tol = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12, "tol_ktratio": 1e-10,
           "max_iter": 500}
    prob.solve(solver=cp.CLARABEL, **tol)
    w = np.clip(np.asarray(x.value, dtype=float), 0.0, None)
    return w / w.sum()


# --------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------


def _fmt_ms(s: float) -> str:
    ms = s * 1e3
    return f"{ms:,.3f}" if ms < 1 else f"{ms:,.2f}" if ms < 100 else f"{ms:,.0f}"


def _lib_cell(res: dict[str, Any], metric: str) -> str:
    if "fail" in res:
        return f"FAIL ({res['fail']})"
    return f"{_fmt_ms(res['s'])} ms ({res['n']}) {metric} {res[metric]:.0e} x{res['speedup']:,.0f}"


def warm_start(n: int, quick: bool) -> dict[str, Any]:
    """Cold vs warm re-solve after one more day of returns (sample Σ over a rolling T-day window)."""
    cov = factor_covariance(n, SEED + n)
    r = sample_returns(cov, T + 1, SEED + 3000 + n)
    mu = np.random.default_rng(SEED + 2000 + n).normal(0.5, 0.6, n) / 365

    def sample(window: np.ndarray) -> np.ndarray:
        x = window - window.mean(axis=0)
        s = x.T @ x / T
        return 0.5 * (s + s.T)

    today, tomorrow = sample(r[:T]), sample(r[1:])
    out: dict[str, Any] = {"n": n}
    prev = risk_parity(today)
    for name, kw in (("cold", {}), ("warm", {"w0": prev})):
        info: dict[str, Any] = {}
        s, _, _ = timed(lambda kw=kw, info=info: risk_parity(tomorrow, info=info, **kw), warm_up=True,
                        quick=quick)
        out[f"rp_{name}_ms"] = s * 1e3
        out[f"rp_{name}_iterations"] = info["iterations"]
    for objective in OBJECTIVES:
        prev = mean_variance(today, mu, objective=objective, risk_aversion=LAMBDA)  # type: ignore[arg-type]
        for name, kw in (("cold", {}), ("warm", {"w0": prev})):
            info = {}
            s, _, _ = timed(lambda kw=kw, info=info, o=objective: mean_variance(
                tomorrow, mu, objective=o, risk_aversion=LAMBDA, info=info, **kw),  # type: ignore[arg-type]
                warm_up=True, quick=quick)
            out[f"mv_{objective}_{name}_ms"] = s * 1e3
            out[f"mv_{objective}_{name}_iterations"] = info["iterations"]
    return out


def run(sizes: tuple[int, ...] = SIZES, *, quick: bool = False, libraries: bool = True,
        out: Out = print) -> dict[str, Any]:
    """Run the benchmark, printing as it goes; returns the JSON summary (also the last printed line).

    BLAS runs on one thread (threadpoolctl, installed with the libraries) for ours and theirs alike: idle
    OpenBLAS threads spin on the second core and halve the memory-bound solves on a 2-core host.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        out("threadpoolctl not installed: BLAS keeps its default threads (set OPENBLAS_NUM_THREADS=1)")
        return _run(sizes, quick, libraries, out, "default")
    with threadpool_limits(1):
        return _run(sizes, quick, libraries, out, "1")


def _run(sizes: tuple[int, ...], quick: bool, libraries: bool, out: Out, blas: str) -> dict[str, Any]:
    have = available() if libraries else dict.fromkeys((*LIBRARIES, "cvxpy"), False)
    libs = [lib for lib in LIBRARIES if have[lib]]
    kernel = "compiled C (shared/_alloc.c)" if allocation.COMPILED else "numpy (compiled kernel not built)"
    out(f"allocation kernels: {kernel}")
    if not libraries:
        out("libraries: skipped (--no-libraries); ours only")
    else:
        for lib in (*LIBRARIES, "cvxpy"):
            if not have[lib]:
                out(f"{PIP_NAMES[lib]} not installed: skipped "
                    "(install the benchmark libraries: make bench-deps)")
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for n in sizes:
        for kind, (cov, mu, returns) in matrices(n).items():
            head = f"N={n} {kind}"
            # Risk parity.
            s, reps, w = timed(lambda cov=cov: risk_parity(cov), warm_up=True, quick=quick)
            solve_s, _, _ = timed(lambda cov=cov: risk_parity(cov, check=False), warm_up=True, quick=quick)
            row: dict[str, Any] = {"n": n, "kind": kind, "problem": "risk_parity", "ours_ms": s * 1e3,
                                   "ours_solve_ms": solve_s * 1e3, "ours_repeats": reps,
                                   "error": rp_error(w, cov), "libraries": {}}
            _libraries(row, libs, seen, lambda lib, cov=cov, mu=mu, r=returns: LIB_CALLS[lib](
                cov, mu, r, "risk_parity"), lambda w, cov=cov: {"error": rp_error(w, cov)}, s, quick)
            rows.append(row)
            cells = " | ".join(f"{lib} {_lib_cell(res, 'error')}" for lib, res in row["libraries"].items())
            out(f"{head} risk_parity: ours {_fmt_ms(s)} ms (solve {_fmt_ms(solve_s)}) err "
                f"{row['error']:.0e}" + (f" | {cells}" if cells else ""))
            # Mean-variance.
            for objective in OBJECTIVES:
                s, reps, w = timed(lambda cov=cov, mu=mu, o=objective: mean_variance(
                    cov, mu, objective=o, risk_aversion=LAMBDA),  # type: ignore[arg-type]
                    warm_up=True, quick=quick)
                solve_s, _, _ = timed(lambda cov=cov, mu=mu, o=objective: mean_variance(
                    cov, mu, objective=o, risk_aversion=LAMBDA, check=False),  # type: ignore[arg-type]
                    warm_up=True, quick=quick)
                ref = None
                if have["cvxpy"]:
                    try:
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            ref = objective_value(cov, mu, objective, clarabel_reference(cov, mu, objective))
                    except Exception:  # a reference failure must not stop the run
                        ref = None
                ours_obj = objective_value(cov, mu, objective, w)
                row = {"n": n, "kind": kind, "problem": objective, "ours_ms": s * 1e3,
                       "ours_solve_ms": solve_s * 1e3, "ours_repeats": reps, "objective": ours_obj,
                       "gap": certified_gap(cov, mu, objective, w),
                       "gap_vs_clarabel": None if ref is None else shortfall(objective, ours_obj, ref),
                       "violation": violation(w), "libraries": {}}
                best = ours_obj if ref is None else (min(ours_obj, ref) if objective == "min_variance"
                                                     else max(ours_obj, ref))

                def accuracy(wl: np.ndarray, cov: np.ndarray = cov, mu: np.ndarray = mu, o: str = objective,
                             best: float = best) -> dict[str, float]:
                    return {"gap": shortfall(o, objective_value(cov, mu, o, wl), best),
                            "violation": violation(wl)}

                _libraries(row, libs, seen, lambda lib, cov=cov, mu=mu, r=returns, o=objective:
                           LIB_CALLS[lib](cov, mu, r, o), accuracy, s, quick)
                rows.append(row)
                cells = " | ".join(f"{lib} {_lib_cell(res, 'gap')}" for lib, res in row["libraries"].items())
                ref_gap = row["gap_vs_clarabel"]
                ref_txt = "" if ref_gap is None else f" vs Clarabel {ref_gap:.0e}"
                out(f"{head} {objective}: ours {_fmt_ms(s)} ms (solve {_fmt_ms(solve_s)}) gap "
                    f"{row['gap']:.0e}{ref_txt} viol {row['violation']:.0e}"
                    + (f" | {cells}" if cells else ""))
    warm = [warm_start(n, quick) for n in sizes]
    for ws in warm:
        mv_txt = ", ".join(f"{o} {ws[f'mv_{o}_cold_ms']:.3g}/{ws[f'mv_{o}_warm_ms']:.3g} ms "
                           f"({ws[f'mv_{o}_cold_iterations']}/{ws[f'mv_{o}_warm_iterations']} it)"
                           for o in OBJECTIVES)
        out(f"warm start N={ws['n']} (one more day of returns), cold/warm: risk parity "
            f"{ws['rp_cold_ms']:.3g}/{ws['rp_warm_ms']:.3g} ms ({ws['rp_cold_iterations']}/"
            f"{ws['rp_warm_iterations']} it); {mv_txt}")
    summary = summarise(rows, warm, kernel, quick, libs)
    summary["blas_threads"] = blas
    return summary


def _libraries(row: dict[str, Any], libs: list[str], seen: set[tuple[str, str]],
               call: Callable[[str], np.ndarray], accuracy: Callable[[np.ndarray], dict[str, float]],
               ours_s: float, quick: bool) -> None:
    problem = row["problem"]
    for lib in libs:
        if lib == "pypfopt" and problem == "risk_parity":
            continue  # no ERC method in PyPortfolioOpt
        # Warm up once per library and problem (imports, caches), and at every N below 1000.
        warm_up = (lib, problem) not in seen or row["n"] < 1000
        seen.add((lib, problem))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                s, reps, w = timed(lambda lib=lib: call(lib), warm_up=warm_up, quick=quick)
            w = np.asarray(w, dtype=float)
            if w.shape != (row["n"],) or not np.isfinite(w).all():
                raise RuntimeError("no valid weights")
        except Exception as exc:  # a library failure is a result (FAIL), not a crash
            row["libraries"][lib] = {"fail": f"{type(exc).__name__}: {str(exc)[:80]}"}
            continue
        row["libraries"][lib] = {"s": s, "ms": s * 1e3, "n": reps, "speedup": s / ours_s, **accuracy(w)}


def summarise(rows: list[dict[str, Any]], warm: list[dict[str, Any]], kernel: str, quick: bool,
              libs: list[str]) -> dict[str, Any]:
    """The JSON summary: min speedups vs the fastest library, worst errors, warm start, the table."""
    def fastest(row: dict[str, Any]) -> float | None:
        ok = [r["speedup"] for r in row["libraries"].values() if "speedup" in r]
        return min(ok) if ok else None

    rp_rows = [r for r in rows if r["problem"] == "risk_parity"]
    mv_rows = [r for r in rows if r["problem"] != "risk_parity"]
    by_n: dict[str, dict[str, float | None]] = {"rp": {}, "mv": {}}
    for key, group in (("rp", rp_rows), ("mv", mv_rows)):
        for n in sorted({r["n"] for r in group}):
            sp = [fastest(r) for r in group if r["n"] == n]
            vals = [v for v in sp if v is not None]
            by_n[key][str(n)] = min(vals) if vals else None
    rp_sp = [v for v in by_n["rp"].values() if v is not None]
    mv_sp = [v for v in by_n["mv"].values() if v is not None]
    gaps = [max(r["gap"], r["gap_vs_clarabel"] or -math.inf) for r in mv_rows]
    table = []
    for r in rows:
        t = {k: v for k, v in r.items() if k != "libraries"}
        t["libraries"] = {lib: {k: v for k, v in res.items() if k != "s"}
                          for lib, res in r["libraries"].items()}
        t["speedup_vs_fastest_library"] = fastest(r)
        table.append(t)
    rp_min = min(rp_sp) if rp_sp else None
    mv_min = min(mv_sp) if mv_sp else None
    return {
        "bench": "allocate",
        "quick": quick,
        "kernel": kernel,
        "libraries": libs,
        "rp_min_speedup_vs_fastest_library": rp_min,
        "mv_min_speedup_vs_fastest_library": mv_min,
        "rp_min_speedup_by_n": by_n["rp"],
        "mv_min_speedup_by_n": by_n["mv"],
        "rp_target_met": None if rp_min is None else rp_min >= RP_TARGET,
        "mv_target_met": None if mv_min is None else mv_min >= MV_TARGET,
        "rp_max_error": max(r["error"] for r in rp_rows),
        "mv_max_gap": max(gaps),
        "mv_max_violation": max(r["violation"] for r in mv_rows),
        "warm_start": warm,
        "table": table,
    }
