"""The production stack on a real Docker Swarm: deploy, status, logs, scale, rollback, cleanup.

scripts/swarm/local-cluster.sh brings up four Docker engines on this machine (a manager and
three workers labelled tier=trading, tier=portfolio and tier=arbitrage, each in its own
network namespace) with a private registry, and builds the base images from Debian packages.
The deploy script then runs exactly as an operator runs it, on the production stack file
rendered with infrastructure/swarm/local-cluster.override.yml (what cannot exist offline)
and a small override of this test's own: dry runs off, so the paper venues really trade, and
worker health probed every 3 s.

The tests run in file order and share the one deployment; `make test` runs them in a second
pytest beside the rest of the suite (scripts/test.sh), `make test-swarm` alone. Needs root
(network namespaces, dockerd); 9–11 minutes when the base images are cached.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import ROOT
from tests.conftest import WebhookReceiver, wait_for
from tooling import stackpatch

CLUSTER = ROOT / "scripts" / "swarm" / "local-cluster.sh"
DEPLOY = ROOT / "scripts" / "deployment" / "deploy-portfolio-swarm.sh"
STACK = ROOT / "infrastructure" / "swarm" / "docker-stack-portfolio-optimized.yml"
OVERRIDE = ROOT / "infrastructure" / "swarm" / "local-cluster.override.yml"
NGINX_CONF = ROOT / "infrastructure" / "nginx" / "nginx-portfolio.conf"
STACK_NAME = "cse-swarm-test"
WORKERS = ("cryptospreadedge-main", "portfolio-rebalancer", "arbitrage-worker", "portfolio-monitor")
PASSPHRASE = "swarm-test-passphrase-0123"
DOCKER = "/usr/bin/docker"  # Debian's client: the engine's version, BuildKit without buildx

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces and dockerd")

POLL_S = 2.0  # between looks at the cluster (each is a few docker calls)
HEALTH_PROBES = {"interval": "3s"}  # merged into the workers' healthcheck


class Cluster:
    def __init__(self, env: dict[str, str], work: Path, receiver: WebhookReceiver):
        self.env = env
        self.work = work
        self.receiver = receiver  # the alert webhook (cse_alert_webhook_url)
        self.gateway = env["CSE_CLUSTER_GATEWAY"]
        # nginx's self-signed certificate (init-secrets, for the gateway's address)
        self.tls = ssl.create_default_context(cafile=str(Path(env["CSE_SECRETS_SOURCE"]) / "tls_cert.pem"))

    def docker(self, *args: str, node: str = "manager", check: bool = True) -> str:
        host = self.env["DOCKER_HOST"] if node == "manager" else \
            self.env["DOCKER_HOST"].replace("manager.sock", f"{node}.sock")
        proc = subprocess.run([DOCKER, "-H", host, *args], capture_output=True, text=True, timeout=300)
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed: {proc.stderr.strip()[-800:]}")
        return proc.stdout

    def deploy_script(self, *args: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(DEPLOY), "staging", *args], env={**self.env, **env},
                              capture_output=True, text=True, timeout=timeout)

    def services(self) -> dict[str, str]:
        out = self.docker("stack", "services", STACK_NAME, "--format", "{{.Name}} {{.Replicas}}")
        return {line.split()[0].removeprefix(f"{STACK_NAME}_"): line.split()[1]
                for line in out.splitlines() if line.strip()}

    def inspect(self, service: str) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(self.docker("service", "inspect", f"{STACK_NAME}_{service}"))
        return data[0]

    def running_tasks(self, service: str) -> list[dict[str, Any]]:
        ids = self.docker("service", "ps", "-q", "--filter", "desired-state=running",
                          f"{STACK_NAME}_{service}").split()
        if not ids:
            return []
        tasks: list[dict[str, Any]] = json.loads(self.docker("inspect", *ids))
        return [t for t in tasks if t["Status"]["State"] == "running"]

    def node_tiers(self) -> dict[str, str]:
        ids = self.docker("node", "ls", "-q").split()
        nodes = json.loads(self.docker("node", "inspect", *ids))
        return {n["ID"]: n["Spec"].get("Labels", {}).get("tier", n["Spec"]["Role"]) for n in nodes}

    def http(self, path: str, method: str = "GET", token: str | None = None,
             body: bytes | None = None) -> tuple[int, str]:
        """A request to nginx over HTTPS, verifying the staging certificate."""
        headers = {"Content-Type": "application/json"} if body else {}
        request = urllib.request.Request(f"https://{self.gateway}{path}", method=method, data=body,
                                         headers=headers)
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10, context=self.tls) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError as exc:
            return 0, str(exc)

    def metrics(self, service: str, port: int) -> list[str]:
        """Each running task's /metrics text, read inside its container on its node."""
        texts = []
        nodes = self.node_tiers()  # a worker node is named after its tier; the manager "manager"
        for task in self.running_tasks(service):
            node = nodes[task["NodeID"]]
            container = task["Status"]["ContainerStatus"]["ContainerID"]
            texts.append(self.docker("exec", container, "python", "-c",
                                     "import urllib.request as u; print(u.urlopen("
                                     f"'http://127.0.0.1:{port}/metrics', timeout=5).read().decode())",
                                     node=node))
        return texts


def metric_sum(texts: list[str], name: str, **labels: str) -> float:
    total = 0.0
    for text in texts:
        for line in text.splitlines():
            if not line.startswith(name) or line[len(name)] not in "{ ":
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def converged(cluster: Cluster, expected: dict[str, int]) -> bool:
    seen = cluster.services()
    return all(seen.get(name) == f"{n}/{n}" for name, n in expected.items())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    work = tmp_path_factory.mktemp("swarm")
    up = subprocess.run([str(CLUSTER), "up"], capture_output=True, text=True, timeout=600)
    assert up.returncode == 0, up.stderr[-2000:]
    env_lines = subprocess.run([str(CLUSTER), "env"], capture_output=True, text=True,
                               check=True).stdout.splitlines()
    cluster_env = dict(line.removeprefix("export ").split("=", 1) for line in env_lines)
    cluster = None
    try:
        images = subprocess.run([str(CLUSTER), "images"], capture_output=True, text=True, timeout=900)
        assert images.returncode == 0, images.stderr[-2000:]
        with WebhookReceiver(cluster_env["CSE_CLUSTER_HOST_IP"]) as receiver:
            cluster = Cluster(prepare(work, cluster_env, receiver.url), work, receiver)
            yield cluster
    finally:
        if cluster is not None:
            cluster.deploy_script("cleanup", timeout=300, CONVERGE_TIMEOUT_S="120", POLL_INTERVAL_S="2")
        started = time.monotonic()
        subprocess.run([str(CLUSTER), "down"], capture_output=True, timeout=300)
        print(f"cluster down in {time.monotonic() - started:.0f}s")


def prepare(work: Path, cluster_env: dict[str, str], webhook_url: str) -> dict[str, str]:
    """Secrets, the encrypted keys file, the rendered stack and the environment the script runs in."""
    secrets = work / "secrets"
    secrets.mkdir(mode=0o700)
    (secrets / "keys_passphrase").write_text(PASSPHRASE)
    (secrets / "cse_alert_webhook_url").write_text(webhook_url)
    plain = work / "keys.json"
    plain.write_text(json.dumps({"sim-a": {"apiKey": "venue-sim-dev-key", "secret": "venue-sim-dev-secret"}}))
    keys = work / "api_keys.encrypted"
    subprocess.run([str(ROOT / ".venv" / "bin" / "cse"), "keys", "encrypt", str(plain), "--out", str(keys)],
                   env={**os.environ, "CSE_KEYS_PASSPHRASE": PASSPHRASE}, check=True, capture_output=True)
    plain.unlink()
    # Staging-like, but the paper venues really trade; and the workers' health is probed every
    # 3 s (production: 15 s), so that a started task counts as healthy within seconds. The start
    # period (60 s: a worker starting on a busy node must not be killed for it), the retries and
    # the update and rollback policies Swarm applies on that health stay production's.
    trading = work / "trading.override.yml"
    trading.write_text(json.dumps({"services": {
        name: {"healthcheck": HEALTH_PROBES,
               **({"environment": {"CSE_ARB_DRY_RUN": "0", "CSE_REBALANCE_DRY_RUN": "0"}}
                  if name != "portfolio-monitor" else {})}
        for name in WORKERS}}))
    stack = work / "stack.yml"
    assert stackpatch.main([str(STACK), str(OVERRIDE), str(trading), str(stack)]) == 0
    bin_dir = work / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").symlink_to(DOCKER)
    env = {**os.environ, **cluster_env,
           "PATH": f"{bin_dir}:{os.environ['PATH']}", "STACK_NAME": STACK_NAME, "STACK_FILE": str(stack),
           "API_KEYS_FILE": str(keys), "CSE_SECRETS_SOURCE": str(secrets),
           "CSE_BUILD_CA_FILE": "/etc/ssl/certs/ca-certificates.crt",
           "CONVERGE_TIMEOUT_S": "300", "POLL_INTERVAL_S": "3", "BACKUP_DIR": str(work / "backups"),
           # the volume archives run in the infrastructure image (no alpine offline); victoria-metrics
           # stands in for InfluxDB, which `influx backup` needs
           "BACKUP_IMAGE": cluster_env["CSE_INFRA_IMAGE"], "BACKUP_PARTS": "redis volumes files",
           "TLS_SUBJECT_ALT_NAMES": f"IP:{cluster_env['CSE_CLUSTER_GATEWAY']}",
           "CSE_ALERT_GROUP_WAIT": "1s"}
    init = subprocess.run(["bash", str(DEPLOY), "staging", "init-secrets"], env=env, capture_output=True,
                          text=True)
    assert init.returncode == 0, init.stderr
    return env


@pytest.mark.timeout(900)
def test_deploy_converges_with_every_worker_placed_by_tier(cluster: Cluster) -> None:
    started = time.monotonic()
    r = cluster.deploy_script("deploy")
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert "converged" in r.stdout
    print(f"deploy (build, push, converge): {time.monotonic() - started:.0f}s")
    services = cluster.services()
    for name, n in (("cryptospreadedge-main", 2), ("portfolio-rebalancer", 1), ("arbitrage-worker", 3),
                    ("portfolio-monitor", 1), ("venue-sim-a", 1), ("redis", 1), ("kafka", 1),
                    ("influxdb", 1), ("prometheus", 1), ("alertmanager", 1), ("nginx", 1),
                    ("node-exporter", 4)):
        assert services[name] == f"{n}/{n}", (name, services)
    tiers = cluster.node_tiers()
    for service, tier in (("cryptospreadedge-main", "trading"), ("portfolio-rebalancer", "portfolio"),
                          ("arbitrage-worker", "arbitrage"), ("portfolio-monitor", "manager"),
                          ("redis", "manager"), ("nginx", "manager")):
        placed = {tiers[t["NodeID"]] for t in cluster.running_tasks(service)}
        assert placed == {tier}, (service, placed)
    for sim in ("venue-sim-a", "venue-sim-b", "venue-sim-c"):
        placed = {tiers[t["NodeID"]] for t in cluster.running_tasks(sim)}
        assert placed and placed <= {"trading", "portfolio", "arbitrage"}, (sim, placed)  # role worker
    image = cluster.inspect("arbitrage-worker")["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
    assert image.startswith(cluster.env["CSE_REGISTRY"] + "/cryptospreadedge:"), image
    # the healthcheck probes the port the worker recorded with a bare socket (silent when
    # healthy), not the fallback `cse arbitrage --check` (which prints /health's body)
    task = cluster.running_tasks("arbitrage-worker")[0]
    node, container = tiers[task["NodeID"]], task["Status"]["ContainerStatus"]["ContainerID"]
    assert cluster.docker("exec", container, "cat", "/tmp/cse-worker.port", node=node).strip() == "9003"
    health = json.loads(cluster.docker("inspect", container, node=node))[0]["State"]["Health"]
    assert health["Status"] == "healthy" and health["Log"][-1]["Output"] == "", health["Log"][-3:]


@pytest.mark.timeout(300)
def test_the_stack_trades_on_the_paper_venues(cluster: Cluster) -> None:
    """Through nginx: the API answers, the rebalancer leader is elected and its plan executes
    orders on the venue-sims; the three arbitrage replicas share the opportunity stream."""
    code, body = cluster.http("/api/")
    assert code == 200 and "/api/rebalance" in body
    assert cluster.http("/")[0] == 200  # redirected to the status page
    token = (Path(cluster.env["CSE_SECRETS_SOURCE"]) / "api_token").read_text().strip()
    code, body = cluster.http("/api/rebalance", method="POST", token=token)
    assert code in (200, 202), body

    def executed() -> dict[str, Any] | None:
        code, body = cluster.http("/api/status")
        if code != 200:
            return None
        status = json.loads(body)
        last = (status.get("rebalance") or {}).get("last") or {}
        return status if status["rebalance"].get("leader") and last.get("status") == "executed" else None

    status = wait_for(executed, 180, "an executed rebalance plan with a leader", interval_s=POLL_S)
    assert status["portfolio"]["total_value"] > 0
    assert set(status["portfolio"]["value_by_exchange"]) == {"sim-a", "sim-b", "sim-c"}
    code, body = cluster.http("/api/executions?source=rebalancer")
    assert code == 200, body
    fills = [e for e in json.loads(body)["items"] if e["status"] in ("filled", "partially_filled")]
    assert fills and {e["venue"] for e in fills} <= {"sim-a", "sim-b", "sim-c"}, body[:500]

    def partitions() -> float:
        return metric_sum(cluster.metrics("arbitrage-worker", 9003), "cse_bus_partitions_assigned",
                          group="arbitrage-executor")

    assert wait_for(lambda: partitions() == 6, 60, "the 6 opportunity partitions shared by the replicas",
                    interval_s=POLL_S)


@pytest.mark.timeout(120)
def test_tls_and_alerts_from_the_deployed_alertmanager_reach_the_webhook(cluster: Cluster) -> None:
    """Plain HTTP redirects to HTTPS; HTTPS sends HSTS; Prometheus found the Alertmanager, and
    an alert posted to it through nginx reaches the webhook configured as a secret file, routed
    by its severity."""
    conn = http.client.HTTPConnection(cluster.gateway, 80, timeout=10)
    try:
        conn.request("GET", "/api/status")
        resp = conn.getresponse()
        assert resp.status == 301 and resp.headers["Location"] == f"https://{cluster.gateway}/api/status"
    finally:
        conn.close()
    with urllib.request.urlopen(f"https://{cluster.gateway}/api/status", timeout=10,
                                context=cluster.tls) as ok:
        assert ok.headers["Strict-Transport-Security"] == "max-age=63072000"

    def alertmanagers() -> list[str]:
        code, body = cluster.http("/prometheus/api/v1/alertmanagers")
        return [a["url"] for a in json.loads(body)["data"]["activeAlertmanagers"]] if code == 200 else []

    urls = wait_for(alertmanagers, 60, "Prometheus discovering the Alertmanager", interval_s=POLL_S)
    assert all(u.endswith(":9093/api/v2/alerts") for u in urls), urls
    alert = [{"labels": {"alertname": "SwarmTestPage", "severity": "critical", "service": "swarm-test"},
              "annotations": {"summary": "posted by the swarm test"}}]
    code, body = cluster.http("/alertmanager/api/v2/alerts", method="POST", body=json.dumps(alert).encode())
    assert code == 200, body
    got = wait_for(lambda: [a for a in cluster.receiver.alerts("critical")
                            if a["labels"]["alertname"] == "SwarmTestPage"], 60, "the page at the webhook",
                   interval_s=POLL_S)
    assert got[0]["annotations"]["summary"] == "posted by the swarm test"


@pytest.mark.timeout(120)
def test_status_and_logs_print_the_engines_output(cluster: Cluster) -> None:
    r = cluster.deploy_script("status")
    assert r.returncode == 0, r.stderr
    assert f"{STACK_NAME}_arbitrage-worker" in r.stdout and "3/3" in r.stdout
    assert "Running" in r.stdout
    r = cluster.deploy_script("logs", "portfolio-rebalancer", LOG_TAIL="400")
    assert r.returncode == 0, r.stderr
    lines = [line.split("|", 1)[1].strip() for line in r.stdout.splitlines() if "|" in line]
    events = [json.loads(line).get("event") for line in lines if line.startswith("{")]
    assert "worker_starting" in events or "leader_acquired" in events, events[-20:]


@pytest.mark.timeout(300)
def test_scale_arbitrage_to_five_and_back(cluster: Cluster) -> None:
    started = time.monotonic()
    r = cluster.deploy_script("scale", "arbitrage-worker", "5")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: converged(cluster, {"arbitrage-worker": 5}), 180, "5/5 arbitrage workers",
             interval_s=POLL_S)

    def members_with_partitions() -> int:
        try:
            texts = cluster.metrics("arbitrage-worker", 9003)
        except AssertionError:  # a task Swarm calls running whose worker is not listening yet
            return 0
        per_member = [metric_sum([t], "cse_bus_partitions_assigned", group="arbitrage-executor")
                      for t in texts]
        return sum(1 for n in per_member if n > 0) if sum(per_member) == 6 else 0

    print(f"5/5 after {time.monotonic() - started:.0f}s")
    assert wait_for(lambda: members_with_partitions() >= 5, 120, "the group rebalanced over 5 members",
                    interval_s=POLL_S)
    print(f"rebalanced over 5 after {time.monotonic() - started:.0f}s")
    cluster.docker("service", "scale", "--detach", f"{STACK_NAME}_arbitrage-worker=3")
    wait_for(lambda: converged(cluster, {"arbitrage-worker": 3}), 120, "back to 3/3", interval_s=POLL_S)


@pytest.mark.timeout(400)
def test_an_nginx_config_change_rolls_nginx(cluster: Cluster) -> None:
    changed = cluster.work / "nginx.conf"
    changed.write_text(NGINX_CONF.read_text() + "\n# changed by the swarm test\n")
    before = cluster.inspect("nginx")["Spec"]["TaskTemplate"]["ContainerSpec"]["Configs"]
    r = cluster.deploy_script("deploy", NGINX_CONF_FILE=str(changed), CSE_IMAGE_SOURCE="pull")
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    spec = cluster.inspect("nginx")
    after = spec["Spec"]["TaskTemplate"]["ContainerSpec"]["Configs"]
    assert [c["ConfigName"] for c in after] != [c["ConfigName"] for c in before]
    assert spec["UpdateStatus"]["State"] == "completed"
    assert cluster.http("/api/status")[0] == 200


BROKEN = """FROM {image}
USER root
# the worker runs; its healthcheck always fails
RUN sed -i '2i [ "${{1:-}}" = "--healthcheck" ] \\&\\& exit 1' /usr/local/bin/cse-entrypoint
USER 10001:10001
"""


@pytest.mark.timeout(600)
def test_a_broken_image_rolls_back_by_itself_and_deploy_fails(cluster: Cluster) -> None:
    good = cluster.inspect("portfolio-monitor")["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
    broken = f"{cluster.env['CSE_REGISTRY']}/cryptospreadedge:broken"
    build = cluster.work / "broken"
    build.mkdir()
    (build / "Dockerfile").write_text(BROKEN.format(image=good.split("@")[0]))
    cluster.docker("build", "-q", "-t", broken, str(build))
    cluster.docker("push", broken)
    started = time.monotonic()
    r = cluster.deploy_script("deploy", CSE_IMAGE_SOURCE="pull", CSE_IMAGE_TAG="broken")
    assert r.returncode == 1, (r.stdout[-2000:], r.stderr[-2000:])
    assert "rolled back" in r.stderr
    print(f"broken deploy detected in {time.monotonic() - started:.0f}s")

    def all_back() -> bool:
        for name in WORKERS:
            spec = cluster.inspect(name)
            image = spec["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
            if "broken" in image or spec.get("UpdateStatus", {}).get("State") == "rollback_started":
                return False
        return converged(cluster, {"cryptospreadedge-main": 2, "arbitrage-worker": 3,
                                   "portfolio-rebalancer": 1, "portfolio-monitor": 1})

    wait_for(all_back, 300, "every worker back on the good image, all replicas running", interval_s=POLL_S)
    states = {name: cluster.inspect(name).get("UpdateStatus", {}).get("State") for name in WORKERS}
    assert "rollback_completed" in states.values(), states
    print(f"all rolled back after {time.monotonic() - started:.0f}s")


@pytest.mark.timeout(300)
def test_rollback_of_one_service(cluster: Cluster) -> None:
    started = time.monotonic()
    before = cluster.inspect("portfolio-monitor")["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
    # short monitor windows and no delays for this one update (the stack's: 60 s and 30 s of
    # monitoring); the rollback restores the stack's own
    cluster.docker("service", "update", "--detach", "--env-add", "CSE_SWARM_TEST=1",
                   "--update-monitor", "2s", "--update-delay", "0s", "--rollback-monitor", "2s",
                   "--rollback-delay", "0s", f"{STACK_NAME}_portfolio-monitor")
    wait_for(lambda: cluster.inspect("portfolio-monitor").get("UpdateStatus", {}).get("State") == "completed",
             180, "the monitor's update", interval_s=POLL_S)
    print(f"update completed after {time.monotonic() - started:.0f}s")
    r = cluster.deploy_script("rollback", "portfolio-monitor")
    assert r.returncode == 0, r.stderr
    print(f"rolled back after {time.monotonic() - started:.0f}s")
    spec = cluster.inspect("portfolio-monitor")["Spec"]
    assert "CSE_SWARM_TEST=1" not in spec["TaskTemplate"]["ContainerSpec"].get("Env", [])
    assert spec["TaskTemplate"]["ContainerSpec"]["Image"] == before
    assert spec["UpdateConfig"]["Monitor"] == 60 * 10**9  # the stack's own policies are back
    assert spec["RollbackConfig"]["Monitor"] == 30 * 10**9


@pytest.mark.timeout(180)
def test_backup_produces_archives(cluster: Cluster) -> None:
    r = cluster.deploy_script("backup", timeout=170)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    dest = Path(cluster.env["BACKUP_DIR"]) / "staging"
    archives = {p.name.split("_")[0]: p for p in dest.glob("*.tar.gz")}
    assert set(archives) == {"redis", "influxdb-config", "grafana", "alertmanager", "config"}, archives
    with tarfile.open(archives["redis"]) as tar:
        names = tar.getnames()
    assert "./dump.rdb" in names, names  # SAVE ran before the archive
    for name in ("influxdb-config", "grafana", "alertmanager"):  # volumes the stack declared
        with tarfile.open(archives[name]) as tar:
            assert "." in tar.getnames(), name


@pytest.mark.timeout(300)
def test_cleanup_keeps_only_the_volumes(cluster: Cluster) -> None:
    r = cluster.deploy_script("cleanup")
    assert r.returncode == 0, r.stderr
    label = f"label=com.cryptospreadedge.stack={STACK_NAME}"
    assert not cluster.docker("service", "ls", "-q", "--filter",
                              f"label=com.docker.stack.namespace={STACK_NAME}").split()
    assert not cluster.docker("secret", "ls", "-q", "--filter", label).split()
    assert not cluster.docker("config", "ls", "-q", "--filter", label).split()
    volumes = cluster.docker("volume", "ls", "-q").split()
    assert f"{STACK_NAME}_redis_data" in volumes and f"{STACK_NAME}_prometheus_data" in volumes
