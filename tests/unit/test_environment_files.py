"""Every shipped environment file is valid for every worker that reads it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared.settings import load
from tests import ROOT
from workers.cli import WORKERS, _read_env_file, _settings_class

ENV_DIR = ROOT / "config" / "environments"


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
    from workers.rebalancer.settings import RebalanceSettings

    values = _read_env_file(ENV_DIR / "rebalance.env")
    expected = {f"CSE_REBALANCE_{name.upper()}" for name in RebalanceSettings.model_fields}
    assert set(values) == expected


def _known_variables() -> set[str]:
    """Every CSE_* variable some worker's settings read, from the settings classes."""
    from pydantic import BaseModel
    from pydantic_settings import BaseSettings

    names: set[str] = set()

    def walk(cls: type[BaseModel]) -> None:
        prefix = str(cls.model_config.get("env_prefix", "")) if issubclass(cls, BaseSettings) else None
        for name, field in cls.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann)
            elif prefix is not None:
                names.add(f"{prefix}{name}".upper())

    for worker in WORKERS:
        walk(_settings_class(worker))
    return names


# Variables read outside the settings classes: the key file's passphrase (shared.keys), the
# secrets directory (shared.settings) and the image entrypoint's env-file list.
EXTRA_VARIABLES = {"CSE_KEYS_PASSPHRASE", "CSE_KEYS_PASSPHRASE_FILE", "CSE_SECRETS_DIR", "CSE_ENV_FILES"}


@pytest.mark.parametrize("path", sorted(ENV_DIR.glob("*.env")), ids=lambda p: p.name)
def test_environment_file_names_only_known_variables(path: Path) -> None:
    unknown = set(_read_env_file(path)) - _known_variables() - EXTRA_VARIABLES
    assert not unknown, f"{path.name}: no worker reads {sorted(unknown)} (a typo is silently ignored)"


@pytest.mark.parametrize("name", ["production.env", "staging.env", "arbitrage.env", "rebalance.env"])
def test_deployment_file_documents_each_variable(name: str) -> None:
    """Every assignment in a deployment file follows a comment saying what it does."""
    lines = (ENV_DIR / name).read_text().splitlines()
    undocumented = []
    for n, line in enumerate(lines):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        above = n - 1
        while above >= 0 and lines[above].strip() and not lines[above].lstrip().startswith("#"):
            above -= 1  # a group of related variables under one comment
        if above < 0 or not lines[above].lstrip().startswith("#"):
            undocumented.append(line.split("=", 1)[0])
    assert not undocumented, f"{name}: no comment above {undocumented}"


def test_arbitrage_file_documents_every_variable() -> None:
    from workers.arbitrage.settings import ArbitrageParams

    values = _read_env_file(ENV_DIR / "arbitrage.env")
    assert set(values) == {f"CSE_ARB_{name.upper()}" for name in ArbitrageParams.model_fields}


@pytest.mark.parametrize("name", ["production.env", "staging.env"])
def test_swarm_files_wire_the_stack_services(name: str) -> None:
    values = _read_env_file(ENV_DIR / name)
    assert values["CSE_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert values["CSE_REDIS_URL"].startswith("redis://redis:6379/")
    assert values["CSE_INFLUX_URL"] == "http://influxdb:8086"
    assert values["CSE_LOG_FORMAT"] == "json"


def test_staging_never_trades() -> None:
    values = _read_env_file(ENV_DIR / "staging.env")
    assert values["CSE_REBALANCE_DRY_RUN"] == "1" and values["CSE_ARB_DRY_RUN"] == "1"
