"""`cse allocate`: files in, weights and risk contributions out, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests import ROOT
from tooling.bench.data import factor_covariance


def cse(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workers.cli", "allocate", *args], cwd=ROOT,
                          text=True, capture_output=True, timeout=60)


def test_risk_parity_from_csv_with_names_and_json(tmp_path: Path) -> None:
    cov = factor_covariance(4, seed=3)
    path = tmp_path / "cov.csv"
    path.write_text("BTC,ETH,SOL,XRP\n" + "\n".join(",".join(repr(float(x)) for x in row) for row in cov))
    out = cse("--method", "rp", "--cov", str(path), "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["assets"] == ["BTC", "ETH", "SOL", "XRP"]
    assert sum(result["weights"]) == pytest.approx(1.0, abs=1e-12)
    assert result["risk_contributions"] == pytest.approx([0.25] * 4, abs=1e-10)


def test_mean_variance_with_budgets_and_mu_from_npy(tmp_path: Path) -> None:
    cov = factor_covariance(6, seed=4)
    np.save(tmp_path / "cov.npy", cov)
    np.save(tmp_path / "b.npy", np.array([0.5, 0.1, 0.1, 0.1, 0.1, 0.1]))
    out = cse("--method", "rp", "--cov", str(tmp_path / "cov.npy"), "--budgets", str(tmp_path / "b.npy"),
              "--json")
    rc = json.loads(out.stdout.splitlines()[-1])["risk_contributions"]
    assert rc == pytest.approx([0.5, 0.1, 0.1, 0.1, 0.1, 0.1], abs=1e-10)
    np.save(tmp_path / "mu.npy", np.linspace(-0.001, 0.002, 6))
    mv = cse("--method", "mv", "--cov", str(tmp_path / "cov.npy"), "--mu", str(tmp_path / "mu.npy"),
             "--objective", "max_sharpe")
    assert mv.returncode == 0 and "WEIGHT" in mv.stdout and "asset5" in mv.stdout


@pytest.mark.parametrize(("content", "message"), [
    ("1,2\n3,4\n", "not symmetric"),
    ("1,2,3\n2,1,3\n", "not square"),
    ("1,nan\nnan,1\n", "contains NaN"),
    ("1,2\n2,1\n", "not positive semi-definite"),
])
def test_bad_covariances_name_the_problem(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "cov.csv"
    path.write_text(content)
    out = cse("--method", "rp", "--cov", str(path))
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_size_mismatch_and_missing_file(tmp_path: Path) -> None:
    np.save(tmp_path / "cov.npy", factor_covariance(3, seed=1))
    np.save(tmp_path / "mu.npy", np.zeros(4))
    out = cse("--method", "mv", "--cov", str(tmp_path / "cov.npy"), "--mu", str(tmp_path / "mu.npy"))
    assert out.returncode == 2 and "size mismatch" in out.stderr
    missing = cse("--method", "rp", "--cov", str(tmp_path / "nope.npy"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
