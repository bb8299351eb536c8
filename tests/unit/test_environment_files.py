"""Every shipped environment file is valid for every worker that reads it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared.settings import load
from workers.cli import WORKERS, _read_env_file, _settings_class

ENV_DIR = Path(__file__).parents[2] / "config" / "environments"


@pytest.mark.parametrize("path", sorted(ENV_DIR.glob("*.env")), ids=lambda p: p.name)
@pytest.mark.parametrize("worker", sorted(WORKERS))
def test_environment_file_loads(monkeypatch: pytest.MonkeyPatch, path: Path, worker: str) -> None:
    for key in list(os.environ):
        if key.startswith("CSE_"):
            monkeypatch.delenv(key)
    values = _read_env_file(path)
    assert values, f"{path.name} sets nothing"
    assert all(k.startswith("CSE_") for k in values), f"{path.name}: only CSE_* variables"
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    load(_settings_class(worker))


def test_rebalance_file_documents_every_variable() -> None:
    from shared.settings import RebalanceSettings

    values = _read_env_file(ENV_DIR / "rebalance.env")
    expected = {f"CSE_REBALANCE_{name.upper()}" for name in RebalanceSettings.model_fields}
    assert set(values) == expected
