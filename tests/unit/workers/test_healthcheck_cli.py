"""`cse <worker> --check` is every container's healthcheck: it must stay light.

On a busy node (a real four-node Swarm on two cores) the check took 10 s and Swarm's 5 s
healthcheck timeout kept every worker "starting": building the parser imported the
allocation tool, hence numpy and scipy, for a probe that only reads settings and GETs /health.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests import ROOT
from tooling.devstack import infra

PROBE = """
import json, sys
from workers.cli import main
rc = main(["{worker}", "--check"])
heavy = sorted(m for m in ("numpy", "scipy", "ccxt", "aiokafka", "redis") if m in sys.modules)
print(json.dumps({{"rc": rc, "heavy": heavy}}))
"""


def test_check_imports_no_heavy_library() -> None:
    port = infra.free_port()  # nothing listens: the probe answers unhealthy, quickly
    for worker in ("main", "rebalancer", "arbitrage", "monitor"):
        env = {"PATH": "/usr/bin:/bin", "CSE_METRICS_PORT": str(port), "CSE_API_PORT": str(port)}
        out = subprocess.run([sys.executable, "-c", PROBE.format(worker=worker)], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert result == {"rc": 1, "heavy": []}, (worker, result, out.stderr[-500:])


def test_check_follows_the_port_settings() -> None:
    """main and the rebalancer: CSE_METRICS_PORT, else CSE_REBALANCE_PROM_PORT; others their default."""
    import http.server
    import threading

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
            self.wfile.write(b'{"status": "ok"}')

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port, closed = server.server_address[1], infra.free_port()
    try:
        cases = [("rebalancer", {"CSE_REBALANCE_PROM_PORT": str(port)}, 0),
                 ("main", {"CSE_REBALANCE_PROM_PORT": str(port)}, 0),
                 ("main", {"CSE_REBALANCE_PROM_PORT": str(port), "CSE_METRICS_PORT": str(closed)}, 1),
                 ("arbitrage", {"CSE_REBALANCE_PROM_PORT": str(port)}, 1),  # 9003, not the rebalancer's
                 ("monitor", {"CSE_METRICS_PORT": str(port)}, 0),
                 ("monitor", {"CSE_METRICS_PORT": "http"}, 2)]
        for worker, env, rc in cases:
            out = subprocess.run([sys.executable, "-m", "workers.cli", worker, "--check"], cwd=ROOT,
                                 env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True,
                                 timeout=60)
            assert out.returncode == rc, (worker, env, out.stdout, out.stderr)
    finally:
        server.shutdown()
        server.server_close()
