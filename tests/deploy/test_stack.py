"""`docker stack config` accepts the stack, and the resolved services are what the issue asks."""

from __future__ import annotations

import os
import re
import subprocess
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import ROOT, STACK_FILE, require_tool
from workers.cli import _read_env_file

WORKERS = {  # service: (replicas, constraint, cpu reservation, cpu limit, mem reservation, mem limit)
    "cryptospreadedge-main": (2, "node.labels.tier == trading", 1.5, 3.0, 3 << 30, 8 << 30),
    "portfolio-rebalancer": (1, "node.labels.tier == portfolio", 0.5, 1.5, 1 << 30, 3 << 30),
    "arbitrage-worker": (3, "node.labels.tier == arbitrage", 0.5, 2.0, 1 << 30, 4 << 30),
    # 2 GiB: what ProcessMemoryHigh assumes (test_monitoring_wiring.py checks every worker)
    "portfolio-monitor": (1, "node.role == manager", 0.25, 1.0, 512 << 20, 2 << 30),
}
SINGLETONS_ON_MANAGER = ["portfolio-monitor", "redis", "influxdb", "kafka", "prometheus", "grafana",
                         "elasticsearch", "kibana"]
PINNED = re.compile(r"^[\w./-]+:(v?\d+\.\d+\.\d+)(-[\w.]+)?$")
VERSIONS = {"API_KEYS_ENCRYPTED_VERSION": "_0123456789ab", "NGINX_CONF_VERSION": "_ba9876543210"}


def stack_config(env: str) -> dict[str, Any]:
    docker = require_tool("docker", "the docker client; no engine needed")
    run_env = {**os.environ, "CSE_ENV": env, "CSE_IMAGE": "cryptospreadedge:test", **VERSIONS}
    if env == "staging":
        run_env["CSE_VENUE_SIM_REPLICAS"] = "1"
    proc = subprocess.run([docker, "stack", "config", "-c", str(STACK_FILE)], env=run_env,
                          capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def production() -> dict[str, Any]:
    return stack_config("production")


def memory(value: str | int) -> int:
    return int(value)  # `docker stack config` prints memory in bytes


def test_staging_resolves_too() -> None:
    config = stack_config("staging")
    services = config["services"]
    assert services["venue-sim-a"]["deploy"]["replicas"] == 1
    assert services["cryptospreadedge-main"]["environment"]["CSE_ARB_DRY_RUN"] == "1"


@pytest.mark.parametrize("name", sorted(WORKERS))
def test_worker_replicas_placement_resources(production: dict[str, Any], name: str) -> None:
    replicas, constraint, cpu_res, cpu_lim, mem_res, mem_lim = WORKERS[name]
    deploy = production["services"][name]["deploy"]
    assert deploy["replicas"] == replicas
    assert deploy["placement"]["constraints"] == [constraint]
    res = deploy["resources"]
    assert float(res["reservations"]["cpus"]) == cpu_res and float(res["limits"]["cpus"]) == cpu_lim
    assert memory(res["reservations"]["memory"]) == mem_res
    assert memory(res["limits"]["memory"]) == mem_lim


@pytest.mark.parametrize("name", SINGLETONS_ON_MANAGER)
def test_singletons_on_a_manager(production: dict[str, Any], name: str) -> None:
    deploy = production["services"][name]["deploy"]
    assert deploy["replicas"] == 1
    assert deploy["placement"]["constraints"] == ["node.role == manager"]


def test_every_service_is_pinned_healthchecked_and_rolls_back(production: dict[str, Any]) -> None:
    for name, svc in production["services"].items():
        deploy = svc["deploy"]
        assert deploy.get("placement", {}).get("constraints"), f"{name}: no placement constraint"
        assert deploy.get("resources", {}).get("limits"), f"{name}: no resource limits"
        assert deploy.get("restart_policy"), f"{name}: no restart policy"
        assert svc.get("logging", {}).get("driver") == "json-file", name
        image = svc["image"]
        assert image == "cryptospreadedge:test" or PINNED.match(image), f"{name}: unpinned {image}"
        if deploy.get("mode") == "replicated-job":  # a one-shot job: its exit code is its health
            assert deploy["restart_policy"]["condition"] == "on-failure"
            continue
        health = svc.get("healthcheck", {})
        assert health.get("test") and not health.get("disable"), f"{name}: no healthcheck"
        assert deploy["update_config"]["failure_action"] == "rollback", name
        assert deploy["update_config"]["parallelism"] >= 1, name
        assert deploy["rollback_config"]["parallelism"] >= 1, name


def seconds(duration: str) -> float:
    total = 0.0
    for number, unit in re.findall(r"([\d.]+)(h|ms|m|s)", duration):
        total += float(number) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
    return total


@pytest.mark.parametrize("name", sorted(WORKERS))
def test_workers_drain_before_swarm_kills(production: dict[str, Any], name: str) -> None:
    svc = production["services"][name]
    drain = float(svc["environment"]["CSE_DRAIN_TIMEOUT_S"])
    assert seconds(svc["stop_grace_period"]) > drain + 10
    assert svc["environment"]["CSE_LOG_FORMAT"] == "json"
    assert svc["command"][0] == {"cryptospreadedge-main": "main", "portfolio-rebalancer": "rebalancer",
                                 "arbitrage-worker": "arbitrage", "portfolio-monitor": "monitor"}[name]


def secret_sources(svc: dict[str, Any]) -> set[str]:
    return {s if isinstance(s, str) else s["source"] for s in svc.get("secrets", [])}


def test_secrets_and_their_consumers(production: dict[str, Any]) -> None:
    services = production["services"]
    assert {"api_keys_encrypted", "keys_passphrase", "rebalance_env", "api_token",
            "influxdb_admin_token"} <= secret_sources(services["cryptospreadedge-main"])
    assert {"api_keys_encrypted", "keys_passphrase", "rebalance_env"} <= secret_sources(
        services["portfolio-rebalancer"])
    assert {"api_keys_encrypted", "keys_passphrase", "arbitrage_env"} <= secret_sources(
        services["arbitrage-worker"])
    assert "grafana_admin_password" in secret_sources(services["grafana"])
    env = services["grafana"]["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    assert services["arbitrage-worker"]["environment"]["CSE_ENV_FILES"] == "/run/secrets/arbitrage_env"
    assert services["portfolio-rebalancer"]["environment"]["CSE_KEYS_PASSPHRASE_FILE"] == \
        "/run/secrets/keys_passphrase"
    secrets = production["secrets"]
    assert all(s["external"] for s in secrets.values())
    # the deploy script's content-hash suffix makes a changed file a new secret
    assert secrets["api_keys_encrypted"]["name"] == "api_keys_encrypted_0123456789ab"
    assert production["configs"]["nginx_conf"]["name"] == "nginx_conf_ba9876543210"
    assert {"nginx_conf", "prometheus_conf", "grafana_datasources", "grafana_dashboard_provider",
            "grafana_alerting"} <= set(production["configs"])


def test_no_default_credentials_in_the_stack() -> None:
    text = STACK_FILE.read_text()
    for needle in ("admin123", "PASSWORD:", "changeme", "ADMIN_TOKEN:"):
        assert needle not in text, needle


def test_networks_and_published_ports(production: dict[str, Any]) -> None:
    services = production["services"]
    assert production["networks"]["backend"]["driver"] == "overlay"
    assert production["networks"]["frontend"]["driver"] == "overlay"
    assert services["nginx"]["networks"] == {"frontend": None}
    for name in ("redis", "influxdb", "kafka", "elasticsearch", "arbitrage-worker",
                 "portfolio-rebalancer"):
        assert set(services[name]["networks"]) == {"backend"}, name
    published = {name: svc["ports"] for name, svc in services.items() if svc.get("ports")}
    assert list(published) == ["nginx"], "only nginx publishes a port (metrics, Prometheus stay inside)"
    assert [(p["published"], p["mode"]) for p in published["nginx"]] == [(80, "host"), (443, "host")]
    assert {s["source"] for s in services["nginx"]["secrets"]} == {"tls_cert", "tls_key"}


def test_host_mode_ports_update_stop_first(production: dict[str, Any]) -> None:
    """A new task cannot bind a host-mode port its old task still holds on that node: with
    start-first, an nginx update (every changed nginx_conf) would wait Pending for ever."""
    for name, svc in production["services"].items():
        if any(p.get("mode") == "host" for p in svc.get("ports", [])):
            assert svc["deploy"]["update_config"]["order"] == "stop-first", name
            assert svc["deploy"]["rollback_config"]["order"] == "stop-first", name


def test_stateful_services_have_volumes(production: dict[str, Any]) -> None:
    services = production["services"]
    for name, path in (("redis", "/data"), ("influxdb", "/var/lib/influxdb2"),
                       ("kafka", "/var/lib/kafka/data"), ("prometheus", "/prometheus"),
                       ("grafana", "/var/lib/grafana"),
                       ("elasticsearch", "/usr/share/elasticsearch/data")):
        targets = {v["target"]: v for v in services[name]["volumes"]}
        assert targets[path]["type"] == "volume", name
        assert services[name]["deploy"]["update_config"]["order"] == "stop-first", name


def test_kafka_runs_kraft(production: dict[str, Any]) -> None:
    env = production["services"]["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "ZOOKEEPER" not in " ".join(env)


def test_env_files_reach_the_workers(production: dict[str, Any]) -> None:
    expected = _read_env_file(ROOT / "config" / "environments" / "production.env")
    env = production["services"]["cryptospreadedge-main"]["environment"]
    assert {k: env[k] for k in expected} == expected


def test_the_deployment_guides_stack_path_resolves() -> None:
    """The guide deploys `-c infrastructure/docker/swarm/docker-stack-portfolio-optimized.yml`."""
    guide = ROOT / "infrastructure/docker/swarm/docker-stack-portfolio-optimized.yml"
    assert guide.resolve() == (ROOT / "infrastructure/swarm/docker-stack-portfolio-optimized.yml").resolve()
