"""The stack, the deploy script and nginx agree with infrastructure/monitoring/.

infrastructure/monitoring/ is the source of Prometheus and Grafana content. These checks read
the files as written (no engine, no `docker stack config`): every file the deploy script turns
into a config exists, every monitoring file is a config mounted where its consumer reads it,
one Prometheus URL scheme holds for the stack, nginx, Grafana's data source and the self-scrape,
every scrape target is a stack service listening on the scraped port, Grafana gets the secret
its data source reads, and the memory limits are the ones ProcessMemoryHigh divides by.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.deploy.conftest import DEPLOY_SCRIPT, NGINX_CONF, PROMETHEUS_CONF, ROOT, STACK_FILE

MONITORING = ROOT / "infrastructure" / "monitoring"
GRAFANA = MONITORING / "grafana"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "datasources.yml"
PROVIDER = GRAFANA / "provisioning" / "dashboards" / "dashboards.yml"
PERFORMANCE_RULES = MONITORING / "rules" / "performance.yml"
PROMETHEUS_CONFIG_DIR = "/etc/prometheus"
GRAFANA_PROVISIONING = "/etc/grafana/provisioning"


def monitoring_files() -> list[Path]:
    """Every file of infrastructure/monitoring/ that a running service reads."""
    return [PROMETHEUS_CONF, *sorted(MONITORING.glob("rules/*.yml")),
            *sorted(GRAFANA.glob("provisioning/*/*.yml")), *sorted(GRAFANA.glob("dashboards/*.json"))]


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    return yaml.safe_load(STACK_FILE.read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def config_sources() -> dict[str, Path]:
    """config name -> source file, from the deploy script's config_specs."""
    body = re.search(r"^config_specs\(\) \{\n(.*?)^\}", DEPLOY_SCRIPT.read_text(), re.M | re.S)
    assert body, "config_specs() not found in the deploy script"
    specs = re.findall(r'"(\w+)\|(?:\$\{[A-Z_]+_FILE:-)?\$ROOT/([^"}]+)\}?"', body.group(1))
    assert specs
    return {name: ROOT / rel for name, rel in specs}


def mounts(stack: dict[str, Any], service: str) -> dict[str, str]:
    """config name -> target path in the service."""
    return {c["source"]: c["target"] for c in stack["services"][service].get("configs", [])}


def flags(command: list[str]) -> dict[str, str]:
    return dict(arg[2:].split("=", 1) for arg in command if arg.startswith("--") and "=" in arg)


# ---- files --------------------------------------------------------------------------------
def test_every_file_the_deploy_script_names_exists(config_sources: dict[str, Path]) -> None:
    for name, path in config_sources.items():
        assert path.is_file() and path.stat().st_size > 0, f"config {name}: {path} is missing or empty"
    script = DEPLOY_SCRIPT.read_text()
    for rel in re.findall(r'\|(?:\$\{[A-Z_]+_FILE:-)?\$ROOT/([^"}]+)\}?"', script):
        if rel != "config/api_keys.encrypted":  # made by the operator (cse keys encrypt), never in git
            assert (ROOT / rel).is_file(), rel


def test_the_stack_names_the_same_sources(stack: dict[str, Any], config_sources: dict[str, Path]) -> None:
    """The comment next to each config in the stack names the file the script creates it from."""
    assert set(stack["configs"]) == set(config_sources)
    section = STACK_FILE.read_text().split("\nconfigs:\n", 1)[1]
    commented = dict(re.findall(r"^  (\w+):\s+#\s+(\S+)", section, re.M))
    for name, path in config_sources.items():
        assert commented.get(name) == str(path.relative_to(ROOT)), name
        assert (ROOT / commented[name]).is_file(), commented[name]


def test_no_duplicate_grafana_provisioning_outside_monitoring(config_sources: dict[str, Path]) -> None:
    for path in config_sources.values():
        if "grafana" in path.name or "grafana" in path.parts:
            assert path.is_relative_to(GRAFANA), f"{path}: Grafana content comes from {GRAFANA}"
    assert not (ROOT / "infrastructure" / "swarm" / "grafana").exists()
    for text in (STACK_FILE.read_text(), DEPLOY_SCRIPT.read_text()):
        assert "grafana-dashboards-portfolio.json" not in text
        assert "swarm/grafana" not in text


@pytest.mark.parametrize("path", monitoring_files(), ids=lambda p: str(p.relative_to(MONITORING)))
def test_every_monitoring_file_is_mounted_where_it_is_read(
        stack: dict[str, Any], config_sources: dict[str, Path], path: Path) -> None:
    names = [name for name, source in config_sources.items() if source == path]
    assert len(names) == 1, f"{path.relative_to(ROOT)}: no config (or several) in the deploy script"
    rel = path.relative_to(MONITORING)
    if path == PROMETHEUS_CONF:
        service, target = "prometheus", f"{PROMETHEUS_CONFIG_DIR}/prometheus.yml"
    elif rel.parts[0] == "rules":
        service, target = "prometheus", f"{PROMETHEUS_CONFIG_DIR}/rules/{path.name}"
    elif rel.parts[:2] == ("grafana", "provisioning"):
        service, target = "grafana", f"{GRAFANA_PROVISIONING}/{rel.parts[2]}/{path.name}"
    else:
        dashboards_dir = yaml.safe_load(PROVIDER.read_text())["providers"][0]["options"]["path"]
        service, target = "grafana", f"{dashboards_dir}/{path.name}"
    assert mounts(stack, service).get(names[0]) == target, f"{names[0]} in {service}"


def test_rule_files_glob_covers_the_mounted_rules(stack: dict[str, Any]) -> None:
    patterns = [posixpath.join(PROMETHEUS_CONFIG_DIR, p)
                for p in yaml.safe_load(PROMETHEUS_CONF.read_text())["rule_files"]]
    targets = [t for t in mounts(stack, "prometheus").values()
               if t.startswith(f"{PROMETHEUS_CONFIG_DIR}/rules/")]
    assert sorted(Path(t).name for t in targets) == sorted(p.name for p in MONITORING.glob("rules/*.yml"))
    for target in targets:
        assert any(fnmatch.fnmatch(target, p) for p in patterns), target


# ---- the Prometheus URL scheme -------------------------------------------------------------
@pytest.fixture(scope="module")
def route_prefix(stack: dict[str, Any]) -> str:
    """Where Prometheus serves inside the stack ('/' or '/prometheus/'), always with a '/' at the end."""
    opts = flags(stack["services"]["prometheus"]["command"])
    external = urlsplit(opts["web.external-url"]).path
    prefix = opts.get("web.route-prefix", external)  # Prometheus' default: the external URL's path
    return prefix.rstrip("/") + "/"


def test_external_url_is_nginx_location(stack: dict[str, Any]) -> None:
    opts = flags(stack["services"]["prometheus"]["command"])
    external = urlsplit(opts["web.external-url"]).path.rstrip("/") + "/"
    assert f"location {external} " in NGINX_CONF.read_text()


def test_nginx_forwards_to_the_route_prefix(route_prefix: str) -> None:
    block = NGINX_CONF.read_text().split("location /prometheus/ {", 1)[1].split("location ", 1)[0]
    proxy_pass = re.search(r"^\s*proxy_pass\s+([^;\s]+);", block, re.M)
    assert proxy_pass
    uri = urlsplit(proxy_pass.group(1)).path
    # With a URI in proxy_pass nginx replaces the location prefix by it; without, it forwards as is.
    forwarded = uri or "/prometheus/"
    assert forwarded == route_prefix, f"nginx sends {forwarded}..., Prometheus serves {route_prefix}..."


def test_grafana_datasource_url_is_the_route_prefix(route_prefix: str) -> None:
    sources = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    url = urlsplit(next(ds["url"] for ds in sources if ds["type"] == "prometheus"))
    assert (url.hostname, url.port) == ("prometheus", 9090)
    assert url.path.rstrip("/") + "/" == route_prefix


def test_self_scrape_and_healthcheck_use_the_route_prefix(stack: dict[str, Any], route_prefix: str) -> None:
    job = next(j for j in yaml.safe_load(PROMETHEUS_CONF.read_text())["scrape_configs"]
               if j["job_name"] == "prometheus")
    assert job.get("metrics_path", "/metrics") == f"{route_prefix}metrics"
    assert job["static_configs"][0]["targets"] == ["localhost:9090"]
    health = " ".join(stack["services"]["prometheus"]["healthcheck"]["test"])
    assert f"http://127.0.0.1:9090{route_prefix}-/healthy" in health


# ---- scrape targets ------------------------------------------------------------------------
def listen_port(svc: dict[str, Any]) -> int | None:
    """The port a service declares: CSE_METRICS_PORT, *_LISTEN/BIND_ADDRESS or --web.listen-address."""
    env = svc.get("environment") or {}
    for key, value in env.items():
        if key == "CSE_METRICS_PORT":
            return int(value)
        if key.endswith(("LISTEN_ADDRESS", "BIND_ADDRESS")):
            return int(str(value).rsplit(":", 1)[1])
    address = flags(svc.get("command") or []).get("web.listen-address")
    return int(address.rsplit(":", 1)[1]) if address else None


def scrape_targets() -> list[tuple[str, str, int]]:
    """(job, service, port) of every DNS-discovered scrape job."""
    out = []
    for job in yaml.safe_load(PROMETHEUS_CONF.read_text())["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            for name in sd["names"]:
                assert name.startswith("tasks."), name
                out.append((job["job_name"], name.removeprefix("tasks."), sd["port"]))
    return out


def test_every_expected_job_is_scraped() -> None:
    assert {s for _, s, _ in scrape_targets()} >= {
        "cryptospreadedge-main", "portfolio-rebalancer", "arbitrage-worker", "portfolio-monitor",
        "redis-exporter", "kafka-exporter", "node-exporter", "influxdb"}


@pytest.mark.parametrize(("job", "service", "port"), scrape_targets(), ids=lambda x: str(x))
def test_scrape_target_is_a_stack_service_on_that_port(
        stack: dict[str, Any], job: str, service: str, port: int) -> None:
    services = stack["services"]
    assert service in services, f"job {job}: no service {service} in the stack"
    svc = services[service]
    assert set(svc["networks"]) & set(services["prometheus"]["networks"]), \
        f"{service} shares no network with prometheus"
    assert listen_port(svc) == port, f"job {job} scrapes :{port}; {service} listens on {listen_port(svc)}"


# ---- Grafana's secret and the memory limits -------------------------------------------------
def test_grafana_has_the_secret_its_datasource_reads(stack: dict[str, Any]) -> None:
    paths = re.findall(r"\$__file\{(/run/secrets/[^}]+)\}", DATASOURCES.read_text())
    assert paths == ["/run/secrets/influxdb_admin_token"]
    grafana = stack["services"]["grafana"]["secrets"]
    targets = {}
    for s in grafana:
        source, target = (s, s) if isinstance(s, str) else (s["source"], s.get("target", s["source"]))
        targets[target if target.startswith("/") else f"/run/secrets/{target}"] = source
    # the same secret InfluxDB was set up with
    influx_env = stack["services"]["influxdb"]["environment"]
    assert influx_env["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN_FILE"] == paths[0]
    assert targets.get(paths[0]) == "influxdb_admin_token"
    assert "influxdb_admin_token" in stack["secrets"]


def memory_bytes(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([KMG]?)", str(value)).groups()  # type: ignore[union-attr]
    return int(number) << {"": 0, "K": 10, "M": 20, "G": 30}[unit]


def test_memory_limits_are_the_ones_processmemoryhigh_assumes(stack: dict[str, Any]) -> None:
    groups = yaml.safe_load(PERFORMANCE_RULES.read_text())["groups"]
    rule = next(r for g in groups for r in g["rules"] if r.get("alert") == "ProcessMemoryHigh")
    pattern = r'process_resident_memory_bytes\{job="([\w-]+)"\}\s*/\s*\((\d+) \* 1024 \* 1024 \* 1024\)'
    assumed = {job: int(gib) << 30 for job, gib in re.findall(pattern, rule["expr"])}
    assert set(assumed) == {"cryptospreadedge-main", "portfolio-rebalancer", "arbitrage-worker",
                            "portfolio-monitor"}
    jobs = {job: service for job, service, _ in scrape_targets()}
    for job, limit in assumed.items():
        deploy = stack["services"][jobs[job]]["deploy"]
        assert memory_bytes(deploy["resources"]["limits"]["memory"]) == limit, job


# ---- alert delivery --------------------------------------------------------------------------
NOTIFICATION = GRAFANA / "provisioning" / "alerting" / "notification.yml"


def test_prometheus_and_grafana_send_alerts_to_the_stacks_alertmanager(stack: dict[str, Any]) -> None:
    am = stack["services"]["alertmanager"]
    opts = flags(am["command"])
    port = int(opts["web.listen-address"].rsplit(":", 1)[1])
    # Prometheus: every Alertmanager task, on its port, at its route prefix
    (target,) = yaml.safe_load(PROMETHEUS_CONF.read_text())["alerting"]["alertmanagers"]
    (sd,) = target["dns_sd_configs"]
    assert sd["names"] == ["tasks.alertmanager"] and sd["port"] == port
    assert target.get("path_prefix", "/") == opts["web.route-prefix"] == "/"
    # Grafana: its only contact point is that Alertmanager, and the policy sends everything there
    provisioning = yaml.safe_load(NOTIFICATION.read_text())
    (contact,) = provisioning["contactPoints"]
    (receiver,) = contact["receivers"]
    assert receiver["type"] == "prometheus-alertmanager"
    url = urlsplit(receiver["settings"]["url"])
    assert (url.hostname, url.port, url.path or "/") == ("alertmanager", port, "/")
    (policy,) = provisioning["policies"]
    assert policy["receiver"] == contact["name"] and "routes" not in policy
    assert set(stack["services"]["grafana"]["networks"]) & set(am["networks"])
    # the configuration is the rendered secret, read where the command says
    assert opts["config.file"] == "/run/secrets/alertmanager_conf" and am["secrets"] == ["alertmanager_conf"]
    # nginx's /alertmanager/ strips the prefix: Alertmanager serves at its root, external URL /alertmanager/
    # Alertmanager refuses an external URL without a scheme (Prometheus takes a path)
    assert opts["web.external-url"].startswith("${CSE_PUBLIC_URL:-https://localhost}/")
    external = urlsplit(opts["web.external-url"].replace("${CSE_PUBLIC_URL:-https://localhost}", "https://localhost"))
    assert external.scheme == "https" and external.path == "/alertmanager/"
    assert re.search(r"location /alertmanager/ \{[^}]*\}\s*[^}]*proxy_pass http://alertmanager/;",
                     NGINX_CONF.read_text())
