"""Every scenario under tests/scenarios/ played on real processes (``cse scenario run``) must pass.

Each file is one test: the runner starts the broker, Redis, victoria-metrics, a venue-sim per
venue, ingest and the arbitrage replicas on free ports, plays the books and checks the file's
expectations plus the invariants every run must keep (tooling/scenario/measure.py). On a
failure the test prints the runner's PASS/FAIL lines and summary.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from tooling.scenario.runner import run_file

pytestmark = pytest.mark.slow
SCENARIOS = sorted((Path(__file__).parents[1] / "scenarios").glob("*.toml"))


@pytest.mark.timeout(180)
@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario_passes(path: Path, tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    code, summary = run_file(path, keep=tmp_path / "run", out=out, err=err)
    report = f"{out.getvalue()}{err.getvalue()}logs: {tmp_path / 'run' / 'logs'}"
    assert code == 0, report
    assert summary is not None and summary["passed"], report
