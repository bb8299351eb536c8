"""The deploy script's logic, against a recording fake `docker` first on PATH.

The script runs from a copy of the repository layout in a temporary directory (it finds its
files relative to itself), with every secret and config source present unless a test
removes one; the fake answers as a Swarm would (tests/deploy/fake_docker.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.conftest import DEPLOY_SCRIPT, ROOT

MONITORING = ROOT / "infrastructure" / "monitoring"
SOURCES = [
    "config/environments/production.env", "config/environments/staging.env",
    "config/environments/arbitrage.env", "config/environments/rebalance.env",
    "infrastructure/nginx/nginx-portfolio.conf", "infrastructure/monitoring/prometheus-portfolio.yml",
    *(str(p.relative_to(ROOT)) for p in sorted(MONITORING.glob("rules/*.yml"))),
    *(str(p.relative_to(ROOT)) for p in sorted(MONITORING.glob("grafana/provisioning/*/*.yml"))),
    *(str(p.relative_to(ROOT)) for p in sorted(MONITORING.glob("grafana/dashboards/*.json"))),
    "infrastructure/logging/filebeat.yml", "infrastructure/logging/apply-ilm.sh",
    "infrastructure/logging/ilm/application.json", "infrastructure/logging/ilm/access.json",
    "infrastructure/logging/ilm/error.json", "infrastructure/logging/ilm/audit.json",
]
SECRETS = ["keys_passphrase", "api_token", "grafana_admin_password", "influxdb_admin_password",
           "influxdb_admin_token", "tls_cert.pem", "tls_key.pem"]


class Run:
    def __init__(self, proc: subprocess.CompletedProcess[str], log: Path):
        self.rc, self.out, self.err = proc.returncode, proc.stdout, proc.stderr
        self.calls: list[dict[str, Any]] = [json.loads(x) for x in log.read_text().splitlines()] \
            if log.exists() else []

    def argv(self) -> list[list[str]]:
        return [c["argv"] for c in self.calls]

    def index(self, *prefix: str) -> int:
        for i, argv in enumerate(self.argv()):
            if argv[:len(prefix)] == list(prefix):
                return i
        raise AssertionError(f"no call {' '.join(prefix)} in {self.argv()}")

    def deploy_index(self) -> int:
        """The `docker stack deploy -c ...` call (not its `--help` probe)."""
        for i, argv in enumerate(self.argv()):
            if argv[:2] == ["stack", "deploy"] and "-c" in argv:
                return i
        raise AssertionError(f"no stack deploy in {self.argv()}")

    def deployed(self) -> bool:
        return any(a[:2] == ["stack", "deploy"] and "-c" in a for a in self.argv())

    def has(self, *prefix: str) -> bool:
        return any(argv[:len(prefix)] == list(prefix) for argv in self.argv())


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Any]:
    root = tmp_path / "repo"
    script = root / "scripts" / "deployment" / DEPLOY_SCRIPT.name
    script.parent.mkdir(parents=True)
    script.write_bytes(DEPLOY_SCRIPT.read_bytes())
    script.chmod(0o755)
    for rel in SOURCES:
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        src = ROOT / rel
        dest.write_bytes(src.read_bytes() if src.exists() else b"placeholder\n")
    (root / "config" / "api_keys.encrypted").write_text('{"format": "cse-api-keys"}\n')
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name in SECRETS:
        (secrets / name).write_text(f"{name}-value\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "docker"
    fake.write_text(f"#!{sys.executable} -IS\n" + (Path(__file__).parent / "fake_docker.py").read_text())
    fake.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "FAKE_DOCKER_LOG": str(tmp_path / "docker.log"),
        "CSE_SECRETS_SOURCE": str(secrets),
        "CSE_IMAGE_TAG": "t1",
        "CSE_REGISTRY": "registry.example:5000",  # the fake swarm has three nodes
        "CONVERGE_TIMEOUT_S": "4",
        "POLL_INTERVAL_S": "0.2",
        "BACKUP_DIR": str(tmp_path / "backups"),
    }
    return {"root": root, "script": script, "env": env, "secrets": secrets, "tmp": tmp_path}


def run(world: dict[str, Any], *args: str, **env: str) -> Run:
    log = Path(world["env"]["FAKE_DOCKER_LOG"])
    log.unlink(missing_ok=True)
    Path(f"{log}.deployed").unlink(missing_ok=True)
    proc = subprocess.run(["bash", str(world["script"]), *args], env={**world["env"], **env},
                          capture_output=True, text=True, timeout=30)
    return Run(proc, log)


def test_help_and_bad_arguments(world: dict[str, Any]) -> None:
    r = run(world, "--help")
    assert r.rc == 0 and "label-nodes" in r.out and "backup" in r.out
    r = run(world, "prod", "deploy")
    assert r.rc == 1 and "unknown environment 'prod'" in r.err and not r.calls
    r = run(world, "production", "deplyo")
    assert r.rc == 1 and "unknown action 'deplyo'" in r.err and not r.calls
    r = run(world, "production")
    assert r.rc == 1 and "missing <action>" in r.err
    r = run(world, "staging", "scale", "redis", "3")
    assert r.rc == 1 and "cannot scale 'redis'" in r.err and not r.calls
    r = run(world, "staging", "scale", "arbitrage-worker", "many")
    assert r.rc == 1 and "whole number" in r.err and not r.calls


def test_deploy_in_order(world: dict[str, Any]) -> None:
    r = run(world, "production", "deploy")
    assert r.rc == 0, r.err
    order = [r.index("info"), r.index("node", "ls"), r.index("node", "inspect"), r.index("build"),
             r.index("run"), r.index("secret", "inspect"), r.index("secret", "create"),
             r.index("config", "create"), r.deploy_index()]
    assert order == sorted(order), r.argv()
    creates = [a for a in r.argv() if a[1:2] == ["create"]]
    names = {a[a.index("create") + 5] for a in creates}  # after two --label pairs
    assert {n.rsplit("_", 1)[0] for n in names} >= {
        "api_keys_encrypted", "arbitrage_env", "rebalance_env", "keys_passphrase", "api_token",
        "grafana_admin_password", "nginx_conf", "prometheus_conf", "prometheus_rules_availability",
        "prometheus_rules_performance", "prometheus_rules_portfolio", "grafana_datasources",
        "grafana_dashboard_provider", "grafana_alerting", "grafana_dashboard_portfolio_rebalance",
        "grafana_dashboard_portfolio_performance", "ilm_audit", "grafana_notification", "tls_cert",
        "tls_key", "alertmanager_conf"}
    assert all(len(n.rsplit("_", 1)[1]) == 12 for n in names)
    deploy = r.calls[r.deploy_index()]
    assert deploy["argv"][-1] == "cryptospreadedge-portfolio"
    assert deploy["argv"][deploy["argv"].index("-c") + 1].endswith("docker-stack-portfolio-optimized.yml")
    env = deploy["env"]
    assert env["CSE_ENV"] == "production" and env["CSE_VENUE_SIM_REPLICAS"] == "0"
    assert env["CSE_IMAGE"] == "registry.example:5000/cryptospreadedge:t1"
    assert r.index("build") < r.index("push", "registry.example:5000/cryptospreadedge:t1") < r.deploy_index()
    assert "--detach=true" in deploy["argv"]
    assert env["NGINX_CONF_VERSION"].startswith("_") and len(env["NGINX_CONF_VERSION"]) == 13
    assert not r.has("service", "rollback")
    assert "converged" in r.out


def test_the_alertmanager_configuration_is_rendered_by_the_deployed_image(world: dict[str, Any]) -> None:
    r = run(world, "production", "deploy", CSE_ALERT_GROUP_WAIT="10s", TMPDIR=str(world["tmp"]))
    assert r.rc == 0, r.err
    render = r.argv()[r.index("run")]
    assert render[-5:] == ["registry.example:5000/cryptospreadedge:t1", "alerts", "config", "--secrets-dir",
                           "/run/cse/secrets"]
    assert ["--network", "none"] == render[2:4]
    assert f"{world['secrets']}:/run/cse/secrets:ro" in render
    # this shell's CSE_ALERT_* variables pass by name: no value on a command line
    assert render[render.index("CSE_ALERT_GROUP_WAIT") - 1] == "-e" and "10s" not in " ".join(render)
    secret = next(a for a in r.argv()
                  if a[:2] == ["secret", "create"] and "com.cryptospreadedge.name=alertmanager_conf" in a)
    assert secret[-2].startswith("alertmanager_conf_")
    assert not list(world["tmp"].glob("alertmanager-conf.*"))  # the rendered file is gone


def test_a_configuration_that_does_not_render_stops_the_deploy(world: dict[str, Any]) -> None:
    r = run(world, "production", "deploy", FAKE_RENDER="fail")
    assert r.rc == 1
    assert "CSE_ALERT_GROUP_WAIT='soon'" in r.err and "nothing deployed" in r.err
    assert not r.has("secret", "create") and not r.deployed()


def test_init_secrets_makes_a_self_signed_certificate_for_staging_only(world: dict[str, Any]) -> None:
    for name in ("tls_cert.pem", "tls_key.pem"):
        (world["secrets"] / name).unlink()
    r = run(world, "production", "init-secrets")
    assert r.rc == 0 and "tls_cert.pem / " in r.err and "README: TLS certificates" in r.err
    assert not (world["secrets"] / "tls_cert.pem").exists()
    r = run(world, "staging", "init-secrets", TLS_SUBJECT_ALT_NAMES="DNS:cse.staging.example,IP:10.1.2.3")
    assert r.rc == 0, r.err
    cert, key = world["secrets"] / "tls_cert.pem", world["secrets"] / "tls_key.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    text = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-text"], capture_output=True,
                          text=True, check=True).stdout
    assert "DNS:cse.staging.example, IP Address:10.1.2.3" in text and "prime256v1" in text
    before = cert.read_bytes()
    r = run(world, "staging", "init-secrets")
    assert r.rc == 0 and "exist, kept" in r.out and cert.read_bytes() == before


def test_rerun_reuses_existing_objects(world: dict[str, Any]) -> None:
    first = run(world, "staging", "deploy")
    created = " ".join(a[a.index("create") + 5] for a in first.argv() if a[1:2] == ["create"])
    again = run(world, "staging", "deploy", FAKE_EXISTING=created)
    assert again.rc == 0, again.err
    assert not again.has("secret", "create") and not again.has("config", "create")
    assert again.calls[again.deploy_index()]["env"]["CSE_VENUE_SIM_REPLICAS"] == "1"


def test_changed_file_gets_a_new_name(world: dict[str, Any]) -> None:
    def nginx_version() -> str:
        r = run(world, "production", "deploy")
        return str(r.calls[r.deploy_index()]["env"]["NGINX_CONF_VERSION"])

    before = nginx_version()
    conf = world["root"] / "infrastructure" / "nginx" / "nginx-portfolio.conf"
    conf.write_text(conf.read_text() + "# changed\n")
    assert nginx_version() != before


def test_missing_label_fails_before_anything(world: dict[str, Any]) -> None:
    r = run(world, "production", "deploy", FAKE_TIERS="trading,portfolio,")
    assert r.rc == 1
    assert "no node labelled tier=arbitrage" in r.err and "label-nodes" in r.err
    assert not r.has("secret", "create") and not r.has("build") and not r.deployed()


def test_missing_secret_fails_before_anything(world: dict[str, Any]) -> None:
    (world["secrets"] / "grafana_admin_password").unlink()
    r = run(world, "production", "deploy")
    assert r.rc == 1
    assert "secret grafana_admin_password" in r.err and "init-secrets" in r.err
    assert not r.has("secret", "create") and not r.deployed()


def test_several_nodes_need_a_registry_before_anything(world: dict[str, Any]) -> None:
    r = run(world, "production", "deploy", CSE_REGISTRY="")
    assert r.rc == 1 and "3 nodes" in r.err and "CSE_REGISTRY" in r.err
    assert not r.has("secret", "create") and not r.has("build") and not r.deployed()
    one = run(world, "production", "deploy", CSE_REGISTRY="", FAKE_TIERS="trading")
    assert "CSE_REGISTRY" not in one.err  # one node: the image built here is where tasks run
    pulled = run(world, "production", "deploy", CSE_REGISTRY="", CSE_IMAGE_SOURCE="pull",
                 CSE_IMAGE_REPO="registry.example:5000/cse")
    assert pulled.rc == 0, pulled.err


def test_an_old_cli_deploys_without_detach(world: dict[str, Any]) -> None:
    r = run(world, "production", "deploy", FAKE_CLI="old")
    assert r.rc == 0, r.err
    assert not any(a.startswith("--detach") for a in r.argv()[r.deploy_index()])


def test_a_rolling_update_in_progress_is_not_convergence(world: dict[str, Any]) -> None:
    """Between update steps the old tasks still count N/N: only the update state says whether
    the update finished (the fake reports every replica running, and `updating`)."""
    r = run(world, "production", "deploy", FAKE_CONVERGE="updating")
    assert r.rc == 1 and "update in progress" in r.out and "rolled back" in r.err


def test_a_rollback_left_by_an_earlier_deploy_is_not_this_deploys_failure(world: dict[str, Any]) -> None:
    r = run(world, "production", "deploy", FAKE_BEFORE="rollback")
    assert r.rc == 0, r.err + r.out
    assert "converged" in r.out and not r.has("service", "rollback")


def test_not_a_manager(world: dict[str, Any]) -> None:
    r = run(world, "production", "deploy", FAKE_SWARM="inactive false")
    assert r.rc == 1 and "swarm mode is not active" in r.err and not r.deployed()
    r = run(world, "production", "deploy", FAKE_SWARM="active false")
    assert r.rc == 1 and "manager" in r.err


def test_failed_convergence_rolls_back_what_the_deploy_changed(world: dict[str, Any]) -> None:
    r = run(world, "production", "deploy", FAKE_CONVERGE="never",
            FAKE_CHANGED="arbitrage-worker,portfolio-monitor")
    assert r.rc == 1 and "rolled back" in r.err
    rollbacks = [a[-1] for a in r.argv() if a[:2] == ["service", "rollback"]]
    assert sorted(rollbacks) == ["cryptospreadedge-portfolio_arbitrage-worker",
                                 "cryptospreadedge-portfolio_portfolio-monitor"]
    assert r.deploy_index() < r.index("service", "rollback")


def test_what_swarm_rolled_back_is_not_rolled_back_again(world: dict[str, Any]) -> None:
    """After Swarm's own rollback the service's previous spec is the failed one: a second
    rollback would bring the failed update back."""
    r = run(world, "production", "deploy", FAKE_CONVERGE="rollback")
    assert r.rc == 1 and "rolled back" in r.err
    assert not r.has("service", "rollback")
    assert "Swarm rolled it back (rollback_completed)" in r.out


def test_scale_rollback_logs_status(world: dict[str, Any]) -> None:
    r = run(world, "production", "scale", "arbitrage-worker", "5")
    assert r.rc == 0 and r.argv() == [["service", "scale", "cryptospreadedge-portfolio_arbitrage-worker=5"]]
    r = run(world, "production", "rollback", "cryptospreadedge-main")
    assert r.argv() == [["service", "rollback", "cryptospreadedge-portfolio_cryptospreadedge-main"]]
    r = run(world, "production", "rollback", "nope")
    assert r.rc == 1 and "unknown service 'nope'" in r.err and not r.calls
    r = run(world, "production", "logs", "portfolio-rebalancer")
    assert r.argv() == [["service", "logs", "--timestamps", "--tail", "200",
                         "cryptospreadedge-portfolio_portfolio-rebalancer"]]
    r = run(world, "production", "logs")
    assert sum(a[:2] == ["service", "logs"] for a in r.argv()) == 6
    r = run(world, "production", "status")
    assert r.has("stack", "services", "cryptospreadedge-portfolio") and r.has("stack", "ps")


def test_cleanup_is_idempotent(world: dict[str, Any]) -> None:
    for _ in range(2):
        r = run(world, "production", "cleanup")
        assert r.rc == 0, r.err
        assert r.index("stack", "rm") < r.index("secret", "ls") < r.index("config", "ls")


def test_label_nodes(world: dict[str, Any]) -> None:
    r = run(world, "production", "label-nodes", "n1=trading", "n2=arbitrage")
    assert r.rc == 0
    assert r.argv() == [["node", "update", "--label-add", "tier=trading", "n1"],
                        ["node", "update", "--label-add", "tier=arbitrage", "n2"]]
    r = run(world, "production", "label-nodes", "n1=trading", "n2=gpu")
    assert r.rc == 1 and "unknown tier 'gpu'" in r.err and not r.calls


def test_backup_archives_and_rotates(world: dict[str, Any]) -> None:
    dest = world["tmp"] / "backups" / "production"
    dest.mkdir(parents=True)
    old, recent = dest / "redis_20000101-000000.tar.gz", dest / "redis_recent.tar.gz"
    old.write_text("old")
    recent.write_text("new")
    os.utime(old, (0, 0))
    r = run(world, "production", "backup", FAKE_CONTAINERS="1")
    assert r.rc == 0, r.err
    assert r.index("exec", "c0ffee", "redis-cli", "SAVE") < r.index("run")
    volumes = [a[a.index("-v") + 1].split(":")[0] for a in r.argv() if a[:1] == ["run"]]
    assert volumes == [f"cryptospreadedge-portfolio_{v}" for v in ("redis_data", "influxdb_config",
                                                                    "grafana_data", "alertmanager_data")]
    runs = [a for a in r.argv() if a[:1] == ["run"]]
    # Redis keeps appending to its AOF while it is archived: only tar's "file changed" (1) passes
    assert runs[0][-5:-1] == ["sh", "-c", 'tar czf "$1" -C /data . || [ $? -eq 1 ]', "sh"]
    assert all(run[-6:] == ["tar", "czf", run[-4], "-C", "/data", "."] for run in runs[1:])
    assert r.has("cp", "c0ffee:/tmp/cse-backup")
    archives = sorted(p.name.split("_")[0] for p in dest.glob("*.tar.gz"))
    assert archives == ["config", "influxdb", "redis"]  # volume archives come from `docker run`
    assert not old.exists() and recent.exists(), "30-day rotation"
    assert not [p for p in dest.iterdir() if p.is_dir()], "the copied InfluxDB directory is removed"


def test_backup_parts(world: dict[str, Any]) -> None:
    r = run(world, "production", "backup", FAKE_CONTAINERS="1", BACKUP_PARTS="redis files")
    assert r.rc == 0, r.err
    dest = world["tmp"] / "backups" / "production"
    assert sorted(p.name.split("_")[0] for p in dest.glob("*.tar.gz")) == ["config"]  # redis: via run
    volumes = [a[a.index("-v") + 1].split(":")[0] for a in r.argv() if a[:1] == ["run"]]
    assert volumes == ["cryptospreadedge-portfolio_redis_data"] and not r.has("cp")  # no influxdb, no volumes
    bad = run(world, "production", "backup", BACKUP_PARTS="redis grafana")
    assert bad.rc == 1 and "unknown backup part 'grafana'" in bad.err and not bad.calls


def test_backup_needs_the_local_container(world: dict[str, Any]) -> None:
    r = run(world, "production", "backup")
    assert r.rc == 1 and "no running redis container on this node" in r.err


def test_init_secrets_generates_only_missing(world: dict[str, Any]) -> None:
    (world["secrets"] / "api_token").unlink()
    keep = (world["secrets"] / "grafana_admin_password").read_text()
    r = run(world, "production", "init-secrets")
    assert r.rc == 0, r.err
    token = world["secrets"] / "api_token"
    assert len(token.read_text().strip()) == 64 and (token.stat().st_mode & 0o777) == 0o600
    assert (world["secrets"] / "grafana_admin_password").read_text() == keep
    assert not r.calls
