"""`cse bench allocate --quick --no-libraries`: the JSON summary and our accuracy (seconds, no libraries)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shared.allocation import mean_variance
from tooling.bench import allocate as bench
from tooling.bench.data import factor_covariance
from workers.cli import main

KEYS = {
    "rp_min_speedup_vs_fastest_library", "mv_min_speedup_vs_fastest_library", "rp_max_error", "mv_max_gap",
    "mv_max_violation", "warm_start", "table", "kernel", "rp_min_speedup_by_n", "mv_min_speedup_by_n",
}


def test_cli_prints_one_json_object_last(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "allocate", "--quick", "--no-libraries", "--sizes", "10,40"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert KEYS <= summary.keys()
    assert summary["kernel"].startswith("compiled C")
    assert summary["libraries"] == [] and summary["rp_min_speedup_vs_fastest_library"] is None
    assert summary["rp_max_error"] <= 1e-10
    assert summary["mv_max_gap"] <= 1e-10
    assert summary["mv_max_violation"] <= 1e-14
    # 2 sizes x 2 matrix kinds x (risk parity + 3 mean-variance objectives)
    assert len(summary["table"]) == 16
    assert {(r["n"], r["kind"]) for r in summary["table"]} == {(10, "F"), (10, "S"), (40, "F"), (40, "S")}
    for row in summary["table"]:
        assert row["ours_ms"] > 0 and row["ours_solve_ms"] > 0
    assert [w["n"] for w in summary["warm_start"]] == [10, 40]
    for ws in summary["warm_start"]:
        for objective in bench.OBJECTIVES:
            assert ws[f"mv_{objective}_warm_iterations"] <= ws[f"mv_{objective}_cold_iterations"]
    assert any(line.startswith("N=40 S max_sharpe: ours") for line in lines)


def test_cli_rejects_bad_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "allocate", "--sizes", "10,x"]) == 2
    assert "--sizes must be integers" in capsys.readouterr().err


def test_missing_library_is_one_line_and_ours_still_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "available", lambda: dict.fromkeys((*bench.LIBRARIES, "cvxpy"), False))
    lines: list[str] = []
    summary = bench.run((10,), quick=True, libraries=True, out=lines.append)
    missing = [line for line in lines if "not installed" in line and "make bench-deps" in line]
    assert len(missing) == 4  # riskfolio-lib, skfolio, PyPortfolioOpt, cvxpy
    assert summary["rp_max_error"] <= 1e-10 and len(summary["table"]) == 8


def test_accuracy_measures_can_fail() -> None:
    """The checks behind rp_max_error and mv_max_gap flag a wrong answer."""
    cov = factor_covariance(30, 2)
    mu = np.random.default_rng(1).normal(0.5, 0.6, 30) / 365
    assert bench.rp_error(np.full(30, 1 / 30), cov) > 1e-3
    for objective in bench.OBJECTIVES:
        w = mean_variance(cov, mu, objective=objective, risk_aversion=bench.LAMBDA)  # type: ignore[arg-type]
        assert bench.certified_gap(cov, mu, objective, w) <= 1e-12
        worse = 0.98 * w + 0.02 / 30
        assert bench.certified_gap(cov, mu, objective, worse) > 1e-7, objective
        assert bench.shortfall(objective, bench.objective_value(cov, mu, objective, worse),
                               bench.objective_value(cov, mu, objective, w)) > 0
    assert bench.violation(np.array([0.6, 0.5, -0.1])) == pytest.approx(0.1)
