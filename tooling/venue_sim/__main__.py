"""``cse venue-sim`` / ``python -m tooling.venue_sim``: run one paper exchange.

Exit codes: 0 after SIGTERM/SIGINT, 2 for bad arguments, an unusable replay file or an
address that cannot be bound, 1 for a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from typing import TYPE_CHECKING

from shared import logs

if TYPE_CHECKING:
    from tooling.venue_sim.server import Venue


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the venue until signalled."""
    from tooling.venue_sim.config import UsageError, parse_args

    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--"]:  # `cse venue-sim -- --port 9101 ...` hands the separator on
        args = args[1:]
    try:
        config = parse_args(args)
    except UsageError as exc:
        print(f"venue-sim: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return int(exc.code or 0)

    logs.configure(config.log_level, config.log_format, worker=config.name, service="venue-sim")
    logs.register_secret(config.api_secret)
    for _key, secret in config.accounts:
        logs.register_secret(secret)

    from tooling.venue_sim.replay import ReplayError
    from tooling.venue_sim.server import Venue

    try:
        venue = Venue(config)
    except (ReplayError, OSError) as exc:
        print(f"venue-sim: error: {exc}", file=sys.stderr)
        return 2
    try:
        import uvloop
    except ImportError:
        return asyncio.run(serve(venue))
    return uvloop.run(serve(venue))


async def serve(venue: Venue) -> int:
    """Listen, run the market clock, stop cleanly on SIGTERM/SIGINT."""
    from aiohttp import web

    log = logs.get_logger("venue-sim")
    config = venue.config
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    runner = web.AppRunner(venue.app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, backlog=1024)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        print(f"venue-sim: error: cannot listen on {config.host}:{config.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 2
    port = runner.addresses[0][1] if runner.addresses else config.port
    clock = asyncio.create_task(venue.run_clock(), name="venue-sim-clock")
    log.info("venue_sim_listening", url=f"http://{config.host}:{port}", port=port,
             symbols=list(venue.specs), seed=config.seed,
             mode="replay" if config.replay else "model", accounts=len(venue.engine.accounts),
             journal=str(config.journal) if config.journal else None)
    try:
        await stopping.wait()
    finally:
        clock.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await clock
        await runner.cleanup()
        if venue.journal is not None:
            venue.journal.close()
    log.info("venue_sim_stopped", fills=venue.engine.fills, requests=venue.requests)
    return 0


if __name__ == "__main__":
    sys.exit(main())
