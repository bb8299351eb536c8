"""Settings: defaults from the deployment guide, one clear line for every bad value."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shared.settings import SettingsError, load
from tests import ROOT
from workers.main.settings import MainSettings
from workers.rebalancer.settings import RebalanceSettings

SEED_DEFAULTS = {
    "CSE_REBALANCE_ENABLED": True,
    "CSE_REBALANCE_INTERVAL": 300,
    "CSE_REBALANCE_METHOD": "rp",
    "CSE_REBALANCE_USE_REAL_COV": True,
    "CSE_REBALANCE_VOL_TARGET_ENABLED": True,
    "CSE_REBALANCE_VOL_TARGET": 0.01,
    "CSE_REBALANCE_DRY_RUN": False,
    "CSE_REBALANCE_MAX_ORDERS": 10,
    "CSE_REBALANCE_FEE_RATE": 0.001,
    "CSE_REBALANCE_SLIPPAGE_BPS": 5,
    "CSE_REBALANCE_MIN_NOTIONAL": 10.0,
    "CSE_REBALANCE_BACKOFF_ENABLED": True,
    "CSE_REBALANCE_BACKOFF_MULT": 2.0,
    "CSE_REBALANCE_BACKOFF_MAX": 3600,
    "CSE_REBALANCE_PROMETHEUS": True,
    "CSE_REBALANCE_PROM_PORT": 9001,
}

BOOLS = ["ENABLED", "USE_REAL_COV", "VOL_TARGET_ENABLED", "DRY_RUN", "BACKOFF_ENABLED", "PROMETHEUS"]
INVALID = {
    **{f"CSE_REBALANCE_{b}": ["maybe", "2", "", "-1"] for b in BOOLS},
    "CSE_REBALANCE_INTERVAL": ["0", "-5", "abc", "100000"],
    "CSE_REBALANCE_METHOD": ["risk parity", "RP2", "", "hrp"],
    "CSE_REBALANCE_VOL_TARGET": ["0", "-0.01", "1.5", "x"],
    "CSE_REBALANCE_MAX_ORDERS": ["0", "-1", "2.5", "many"],
    "CSE_REBALANCE_FEE_RATE": ["-0.001", "0.5", "fee"],
    "CSE_REBALANCE_SLIPPAGE_BPS": ["-1", "5000", "bps"],
    "CSE_REBALANCE_MIN_NOTIONAL": ["-10", "ten"],
    "CSE_REBALANCE_BACKOFF_MULT": ["0.5", "0", "101", "x"],
    "CSE_REBALANCE_BACKOFF_MAX": ["0", "-1", "forever"],
    "CSE_REBALANCE_PROM_PORT": ["65536", "-1", "http"],
}
ALLOWED_HINT = {
    "METHOD": "rp, mv",
    "ENABLED": "1 or 0",
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("CSE_"):
            monkeypatch.delenv(key)


EXTRAS = {"band", "risk_aversion", "mv_objective", "expected_returns", "risk_budgets", "max_weight",
          "lock_ttl"}


def test_every_seed_variable_has_the_seed_default() -> None:
    settings = load(RebalanceSettings)
    seed = {var.removeprefix("CSE_REBALANCE_").lower() for var in SEED_DEFAULTS}
    assert len(seed) == 16 and set(RebalanceSettings.model_fields) == seed | EXTRAS
    for var, expected in SEED_DEFAULTS.items():
        assert getattr(settings, var.removeprefix("CSE_REBALANCE_").lower()) == expected, var


def test_seed_values_from_the_environment_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSE_REBALANCE_METHOD", "mv")
    monkeypatch.setenv("CSE_REBALANCE_DRY_RUN", "1")
    monkeypatch.setenv("CSE_REBALANCE_MAX_ORDERS", "3")
    s = load(RebalanceSettings)
    assert (s.method, s.dry_run, s.max_orders) == ("mv", True, 3)


@pytest.mark.parametrize(("var", "value"), [(v, x) for v, xs in INVALID.items() for x in xs])
def test_every_invalid_value_gives_one_line_naming_variable_value_and_allowed(
        monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as err:
        load(RebalanceSettings)
    message = str(err.value)
    assert "\n" not in message, message
    assert message.startswith(f"invalid setting {var}={value!r}: allowed: "), message
    short = var.removeprefix("CSE_REBALANCE_")
    if short in ALLOWED_HINT:
        assert ALLOWED_HINT[short] in message
    elif short not in BOOLS:
        assert any(sym in message for sym in (">", "<")), message


@pytest.mark.parametrize(("var", "value", "says"), [
    ("CSE_REBALANCE_RISK_BUDGETS", "BTC=2,ETH=x", "'ETH=x' is not ASSET=number"),
    ("CSE_REBALANCE_RISK_BUDGETS", "BTC=0", "'BTC=0': allowed: a positive number"),
    ("CSE_REBALANCE_EXPECTED_RETURNS", "BTC", "'BTC' is not ASSET=number"),
    ("CSE_REBALANCE_EXPECTED_RETURNS", "BTC=nan", "is not ASSET=number"),
    ("CSE_REBALANCE_BAND", "0.7", "allowed: "),
    ("CSE_REBALANCE_MAX_WEIGHT", "0", "allowed: "),
    ("CSE_REBALANCE_MV_OBJECTIVE", "sharpe", "utility, min_variance, max_sharpe"),
])
def test_target_options_name_what_is_wrong(monkeypatch: pytest.MonkeyPatch, var: str, value: str,
                                           says: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as err:
        load(RebalanceSettings)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"invalid setting {var}={value!r}: "), message
    assert says in message, message


def test_asset_maps_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSE_REBALANCE_EXPECTED_RETURNS", " btc=0.3, ETH=-0.1 ,")
    monkeypatch.setenv("CSE_REBALANCE_RISK_BUDGETS", "BTC=2")
    s = load(RebalanceSettings)
    assert s.expected_returns_map == {"BTC": 0.3, "ETH": -0.1}
    assert s.risk_budgets_map == {"BTC": 2.0}


def test_cross_field_rule_names_both_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSE_REBALANCE_INTERVAL", "600")
    monkeypatch.setenv("CSE_REBALANCE_BACKOFF_MAX", "60")
    with pytest.raises(SettingsError) as err:
        load(RebalanceSettings)
    assert "CSE_REBALANCE_BACKOFF_MAX=60" in str(err.value)
    assert "CSE_REBALANCE_INTERVAL=600" in str(err.value)


def test_all_bad_parts_are_reported_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSE_REBALANCE_METHOD", "x")
    monkeypatch.setenv("CSE_KAFKA_PARTITIONS", "0")
    monkeypatch.setenv("CSE_API_PORT", "70000")
    with pytest.raises(SettingsError) as err:
        load(MainSettings)
    lines = str(err.value).splitlines()
    assert [line.split("=")[0] for line in lines] == [
        "invalid setting CSE_KAFKA_PARTITIONS",
        "invalid setting CSE_REBALANCE_METHOD",
        "invalid setting CSE_API_PORT",
    ]


def test_a_secret_value_is_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.settings import StoreSettings

    monkeypatch.setenv("CSE_INFLUX_URL", "ftp://host")
    monkeypatch.setenv("CSE_INFLUX_TOKEN", "tok-very-secret")
    settings_error = None
    try:
        load(StoreSettings)
    except SettingsError as exc:
        settings_error = str(exc)
    assert settings_error is not None and "tok-very-secret" not in settings_error


def test_the_process_stops_with_exit_code_2_and_no_traceback() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSE_")}
    env |= {"CSE_REBALANCE_METHOD": "hrp", "CSE_REBALANCE_MAX_ORDERS": "0"}
    proc = subprocess.run([sys.executable, "-m", "workers.rebalancer"], env=env, text=True,
                          capture_output=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        "portfolio-rebalancer: invalid setting CSE_REBALANCE_METHOD='hrp': allowed: rp, mv",
        "portfolio-rebalancer: invalid setting CSE_REBALANCE_MAX_ORDERS='0': allowed: "
        "an integer >= 1 and <= 1000",
    ]


def test_the_one_list_parser() -> None:
    from shared.settings import split_list, split_pairs

    assert split_list(" a, b ,,c ") == ["a", "b", "c"]
    assert split_list("") == []
    assert split_pairs("x = 1, y=http://h:1/p", "name=value") == [("x", "1"), ("y", "http://h:1/p")]
    for bad in ("x", "=1", "x="):
        with pytest.raises(ValueError, match=f"{bad!r} is not name=value"):
            split_pairs(bad, "name=value")


@pytest.mark.parametrize(("value", "method"), [
    ("rp", "rp"), ("mv", "mv"), ("risk-parity", "rp"), ("mean-variance", "mv"),
    ("Risk_Parity", "rp"), (" MEAN-VARIANCE ", "mv"),
])
def test_the_guides_method_names_are_accepted(monkeypatch: pytest.MonkeyPatch, value: str,
                                               method: str) -> None:
    monkeypatch.setenv("CSE_REBALANCE_METHOD", value)
    assert load(RebalanceSettings).method == method


def test_an_unknown_method_still_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSE_REBALANCE_METHOD", "hrp")
    with pytest.raises(SettingsError, match="CSE_REBALANCE_METHOD='hrp'"):
        load(RebalanceSettings)
