"""One way to run a worker process.

``run_worker(name, load_settings, body)`` is what every ``workers/<name>/__main__.py``
calls:

1. build the settings — a bad value prints one line per bad variable and exits 2;
2. configure logging; install uvloop when available;
3. start the metrics/health server, install SIGTERM/SIGINT handlers;
4. run ``body(ctx)``; the body opens its clients on ``ctx.stack`` (an
   ``AsyncExitStack``) and returns when ``ctx.stopping`` is set;
5. on a signal: wait up to the drain timeout for the body to finish (it commits what
   it handled), cancel it if it does not, close resources in reverse order.

Exit codes: 0 clean stop, 2 known fatal (bad configuration, refused credentials,
fencing), 1 crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from shared import logs, metrics
from shared.errors import FatalError
from shared.health import Health, MetricsServer
from shared.settings import CommonSettings, ObservabilitySettings, load_or_report

C = TypeVar("C", bound=CommonSettings)

EXIT_OK = 0
EXIT_CRASH = 1
EXIT_FATAL = 2


@dataclass
class WorkerContext:
    name: str
    obs: ObservabilitySettings
    stopping: asyncio.Event
    health: Health
    stack: contextlib.AsyncExitStack
    metrics_port: int
    log: Any = field(default=None)

    def background(self, coro: Awaitable[None], name: str) -> asyncio.Task[None]:
        """Run ``coro`` beside the body; it is cancelled (and awaited) when the worker closes."""
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        task.set_name(name)

        async def cancel() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        self.stack.push_async_callback(cancel)
        return task

    async def sleep(self, seconds: float) -> bool:
        """Sleep unless asked to stop; True if stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)
        return self.stopping.is_set()


#: A worker's body: an ``async def`` (``serve`` runs it as a task, which takes a coroutine).
Body = Callable[[WorkerContext], Coroutine[Any, Any, None]]


async def serve(name: str, obs: ObservabilitySettings, metrics_port: int, body: Body,
                *, install_signals: bool = True, serve_metrics: bool = True) -> int:
    """Run ``body`` with the metrics server and the shutdown path; returns the exit code."""
    log = logs.get_logger(name)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    if install_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _on_signal, stopping, log, sig)
    health = Health(name, obs.heartbeat_timeout_s)
    metrics.WORKER_INFO.labels(name).set(1)
    code = EXIT_OK
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(
            MetricsServer(health, obs.metrics_host, metrics_port, serve_metrics)
        )
        _record_port(server.port, log)
        ctx = WorkerContext(name, obs, stopping, health, stack, server.port, log)
        ticker = asyncio.create_task(_heartbeat(health, stopping))
        log.info("worker_starting", metrics_port=server.port)
        task = asyncio.create_task(body(ctx), name=f"{name}-body")
        try:
            done, _ = await asyncio.wait(
                {task, asyncio.create_task(stopping.wait())}, return_when=asyncio.FIRST_COMPLETED
            )
            if task not in done:
                health.state = "draining"
                log.info("worker_draining", timeout_s=obs.drain_timeout_s)
                try:
                    await asyncio.wait_for(asyncio.shield(task), obs.drain_timeout_s)
                except TimeoutError:
                    log.error("drain_timeout", timeout_s=obs.drain_timeout_s)
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            task.result() if not task.cancelled() else None
        except FatalError as exc:
            log.error("worker_fatal", error=str(exc))
            code = EXIT_FATAL
        except Exception:
            log.exception("worker_crashed")
            code = EXIT_CRASH
        finally:
            health.state = "stopped"
            ticker.cancel()
            metrics.WORKER_INFO.labels(name).set(0)
    log.info("worker_stopped", exit_code=code)
    return code


def _record_port(port: int, log: Any) -> None:
    """Write the bound health port where ``CSE_HEALTH_PORT_FILE`` says (the container's
    entrypoint sets it): the healthcheck then probes it without loading any settings."""
    path = os.environ.get("CSE_HEALTH_PORT_FILE")
    if not path:
        return
    try:
        tmp = f"{path}.{os.getpid()}"
        with open(tmp, "w") as out:
            out.write(f"{port}\n")
        os.replace(tmp, path)
    except OSError as exc:  # the healthcheck falls back to `cse <worker> --check`
        log.warning("health_port_not_recorded", path=path, error=str(exc))


def _on_signal(stopping: asyncio.Event, log: Any, sig: signal.Signals) -> None:
    if not stopping.is_set():
        log.info("signal_received", signal=sig.name)
    stopping.set()


async def _heartbeat(health: Health, stopping: asyncio.Event) -> None:
    # Beats while the event loop turns: a blocked loop stops beating and /health fails.
    while not stopping.is_set():
        health.beat()
        await asyncio.sleep(1.0)


def run_worker(name: str, settings_cls: type[C],
               run: Callable[[WorkerContext, C], Coroutine[Any, Any, None]]) -> int:
    """Process entry point: settings, logging, event loop, exit code."""
    settings = load_or_report(settings_cls, name)
    if settings is None:
        return EXIT_FATAL
    logs.configure(settings.obs.log_level, settings.obs.log_format, worker=name)
    _register_secrets(settings)
    main = serve(name, settings.obs, settings.metrics_port, lambda ctx: run(ctx, settings),
                 serve_metrics=settings.metrics_enabled)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def _register_secrets(settings: Any) -> None:
    """Tell the log redactor about every SecretStr in the settings tree."""
    from pydantic import BaseModel, SecretStr

    if isinstance(settings, BaseModel):
        for name in type(settings).model_fields:
            value = getattr(settings, name)
            if isinstance(value, SecretStr):
                logs.register_secret(value)
                # a URL secret (redis://:pw@host) also hides its password part
                raw = value.get_secret_value()
                if "@" in raw and ":" in raw.split("@", 1)[0]:
                    logs.register_secret(raw.split("@", 1)[0].rsplit(":", 1)[-1])
            else:
                _register_secrets(value)
