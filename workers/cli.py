"""``cse``: one command line for every process of CryptoSpreadEdge.

Each Swarm service runs one subcommand of the same image::

    cse main          cryptospreadedge-main (API, ingest, integrated rebalancer)
    cse rebalancer    portfolio-rebalancer
    cse arbitrage     arbitrage-worker
    cse monitor       portfolio-monitor
    cse venue-sim     a paper exchange (development and staging)

and on a development machine::

    cse dev up        the embedded stack: broker, Redis, store and every worker
    cse dev status    one snapshot of the running embedded stack
    cse config check  validate the CSE_* environment of a worker
    cse alerts config the Alertmanager configuration from CSE_ALERT_* settings and secrets
    cse scenario run  play a scripted arbitrage scenario on real processes and check it
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import urllib.request
from pathlib import Path

from shared import names

WORKERS = {
    "main": (names.MAIN, "workers.main", "MainSettings"),
    "rebalancer": (names.REBALANCER, "workers.rebalancer", "RebalancerSettings"),
    "arbitrage": (names.ARBITRAGE, "workers.arbitrage", "ArbitrageSettings"),
    "monitor": (names.MONITOR, "workers.monitor", "MonitorSettings"),
}
DEFAULT_RUN_DIR = Path(os.environ.get("CSE_RUN_DIR", ".run/dev"))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cse",
        description="CryptoSpreadEdge: one crypto portfolio across many exchanges.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit codes: 0 ok, 1 crash or unhealthy, 2 bad configuration or fatal error.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_services, _add_dev, _add_portfolio, _add_bench, _add_keys, _add_scenario, _add_config,
                _add_alerts):
        add(sub)
    return p


def _add_services(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The production services (one command each) and venue-sim."""
    for cmd, (service, _module, _cls) in WORKERS.items():
        w = sub.add_parser(cmd, help=f"run the {service} service")
        w.add_argument("--check", action="store_true",
                       help="probe a running instance's /health on its metrics port; exit 0/1")
        w.set_defaults(func=_run_worker, worker=cmd)

    vs = sub.add_parser("venue-sim", add_help=False,
                        help="a paper exchange speaking the Binance spot REST dialect "
                             "(`cse venue-sim --help`)")
    vs.set_defaults(func=lambda _args: 2)  # dispatched in main() before argparse


def _add_dev(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``cse dev up|status``: the embedded stack."""
    dev = sub.add_parser("dev", help="the embedded stack on this machine")
    dev_sub = dev.add_subparsers(dest="dev_command", required=True, metavar="ACTION")
    up = dev_sub.add_parser("up", help="start broker, Redis, store and every worker; Ctrl-C stops")
    up.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR,
                    help="logs, data and status files (default: %(default)s)")
    up.add_argument("--api-port", type=int, default=None, help="main API (default 8000; 0 = free)")
    up.add_argument("--main-metrics-port", type=int, default=None,
                    help="main service metrics (default 9001; 0 = free)")
    up.add_argument("--monitor-metrics-port", type=int, default=None,
                    help="portfolio monitor metrics (default 9002; 0 = free)")
    up.add_argument("--arbitrage-replicas", type=int, default=3, help="default: %(default)s")
    up.add_argument("--main-replicas", type=int, default=1,
                    help="main service replicas; they share ingest (default: %(default)s)")
    up.add_argument("--venues", type=int, default=3,
                    help="venue-sim paper exchanges sim-a, sim-b, ... (default: %(default)s)")
    up.add_argument("--venue-seed", type=int, default=7,
                    help="seed of the venues' common price model (default: %(default)s)")
    up.add_argument("--env-file", action="append", type=Path, default=[],
                    help="CSE_* variables for every worker (repeatable)")
    up.set_defaults(func=_dev_up)
    st = dev_sub.add_parser("status", help="print the running stack's status once")
    st.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR)
    st.add_argument("--json", action="store_true", help="print the snapshot as JSON")
    st.set_defaults(func=_dev_status)


def _add_portfolio(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``cse allocate`` and ``cse rebalance --once``."""
    p = sub.add_parser("allocate", help="weights and risk contributions for a covariance file")
    p.add_argument("--method", choices=["rp", "mv"], required=True,
                   help="rp: equal risk contribution (risk parity); mv: mean-variance")
    p.add_argument("--cov", type=Path, required=True, help="covariance matrix, .npy or .csv")
    p.add_argument("--mu", type=Path, help="expected returns (mv), .npy or .csv")
    p.add_argument("--objective", choices=["min_variance", "max_sharpe", "utility"],
                   default="utility", help="mv objective (default: %(default)s; min_variance needs no mu)")
    p.add_argument("--risk-aversion", type=float, default=1.0,
                   help="lambda in mu'w - lambda/2 w'Sigma w (default: %(default)s)")
    p.add_argument("--budgets", type=Path, help="risk budgets (rp), .npy or .csv")
    p.add_argument("--json", action="store_true", help="print one JSON object last")
    p.set_defaults(func=_allocate)

    reb = sub.add_parser("rebalance", help="run one rebalance cycle now and print the plan")
    reb.add_argument("--once", action="store_true", required=True, help="one cycle, then exit")
    reb.add_argument("--dry-run", action="store_true", help="plan only: touch no exchange")
    reb.set_defaults(func=_rebalance_once)


def _add_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``cse bench NAME``: benchmarks that print their figures."""
    bench = sub.add_parser("bench", help="benchmarks that print their figures (a JSON line last)")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True, metavar="NAME")
    arb = bench_sub.add_parser("arbitrage", help="detection alone, through the broker, 1 vs 2 workers")
    arb.add_argument("--quick", action="store_true", help="smaller runs (a smoke test, not figures)")
    arb.set_defaults(func=_bench_arbitrage)
    stack = bench_sub.add_parser("scenario", help="the embedded stack trading its paper venues for N "
                                                   "minutes: executions by outcome, the one-leg ratio")
    stack.add_argument("--minutes", type=float, default=10.0, help="default: %(default)s")
    stack.add_argument("--keep", type=Path, default=None, help="keep the stack's logs and data here")
    stack.set_defaults(func=_bench_scenario)
    ingest = bench_sub.add_parser("ingest", help="one ingest replica over websocket streams: books/s, "
                                  "venue event -> broker and -> opportunity latency, REST weight "
                                  "streaming vs polling")
    ingest.add_argument("--quick", action="store_true", help="two loads and shorter windows")
    ingest.set_defaults(func=_bench_ingest)
    alloc = bench_sub.add_parser("allocate", help="risk parity and mean-variance vs Riskfolio-Lib, skfolio, "
                                                   "PyPortfolioOpt")
    alloc.add_argument("--quick", action="store_true", help="N up to 200, at most 3 repeats (a smoke test)")
    alloc.add_argument("--sizes", default=None, help="comma-separated N (default 10,50,200,1000)")
    alloc.add_argument("--no-libraries", action="store_true",
                       help="ours only, even if the libraries are installed")
    alloc.set_defaults(func=_bench_allocate)


def _add_keys(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``cse keys encrypt|decrypt|list``."""
    keys = sub.add_parser("keys", help="manage the encrypted exchange API key file",
                          description="The passphrase comes from CSE_KEYS_PASSPHRASE or the file "
                                      "named by CSE_KEYS_PASSPHRASE_FILE, never from the command line.")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    enc = keys_sub.add_parser("encrypt", help="encrypt a plaintext JSON key file")
    enc.add_argument("plaintext", type=Path,
                     help='JSON: {"<venue>": {"apiKey": "...", "secret": "..."}}')
    enc.add_argument("--out", type=Path, default=Path("config/api_keys.encrypted"))
    enc.add_argument("--force", action="store_true", help="overwrite an existing file")
    enc.set_defaults(func=_keys_encrypt)
    dec = keys_sub.add_parser("decrypt", help="write the decrypted JSON to a file (mode 0600)")
    dec.add_argument("--file", type=Path, default=Path("config/api_keys.encrypted"))
    dec.add_argument("--out", type=Path, required=True)
    dec.set_defaults(func=_keys_decrypt)
    lst = keys_sub.add_parser("list", help="venues and credential fields, values masked")
    lst.add_argument("--file", type=Path, default=Path("config/api_keys.encrypted"))
    lst.set_defaults(func=_keys_list)


def _add_scenario(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``cse scenario run FILE``."""
    scn = sub.add_parser("scenario", help="scripted arbitrage scenarios (tooling/scenario)")
    scn_sub = scn.add_subparsers(dest="scenario_command", required=True, metavar="ACTION")
    srun = scn_sub.add_parser(
        "run", help="play a scenario file on real processes; PASS/FAIL per check, a JSON line last",
        description="Starts the broker, Redis, victoria-metrics, one venue-sim per venue, ingest and "
                    "the arbitrage replicas on free ports, plays the file's books and checks the "
                    "outcome. Exit codes: 0 all passed, 1 a check failed, 2 a bad file or a failure "
                    "to start.")
    srun.add_argument("file", type=Path, help="the scenario (TOML; format in tooling/scenario/spec.py)")
    srun.add_argument("--replicas", type=int, default=None,
                      help="arbitrage replicas (default: the file's `replicas`, else 3)")
    srun.add_argument("--keep", type=Path, default=None, metavar="DIR",
                      help="keep logs, replay files, journals and summary.json in DIR (new or empty)")
    srun.set_defaults(func=_scenario_run)


def _add_config(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``cse config check WORKER``."""
    cfg = sub.add_parser("config", help="configuration tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    chk = cfg_sub.add_parser("check", help="validate the environment for a worker and print it")
    chk.add_argument("worker", choices=sorted(WORKERS))
    chk.set_defaults(func=_config_check)


def _add_alerts(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``cse alerts config``."""
    alerts = sub.add_parser("alerts", help="alert delivery (Alertmanager)")
    alerts_sub = alerts.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    cfg = alerts_sub.add_parser(
        "config", help="print the Alertmanager configuration rendered from CSE_ALERT_* settings",
        description="Routing by severity, inhibition and grouping of tooling/alerting.py, with the "
                    "channels configured by CSE_ALERT_* variables and by secret files named after "
                    "them (cse_alert_webhook_url, cse_alert_slack_url, cse_alert_smtp_password).")
    cfg.add_argument("--secrets-dir", type=Path, default=None,
                     help="read secret files from here (default: CSE_SECRETS_DIR, else /run/secrets if any)")
    cfg.add_argument("--output", "-o", type=Path, default=None,
                     help="write the file here (mode 0600) instead of stdout")
    cfg.set_defaults(func=_alerts_config)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["venue-sim"]:  # its own parser owns every option, --help included
        from tooling.venue_sim.__main__ import main as venue_sim_main

        return int(venue_sim_main(argv[1:]))
    args = _parser().parse_args(argv)
    return int(args.func(args))


def _settings_class(worker: str) -> type:
    _service, module, cls = WORKERS[worker]
    return getattr(importlib.import_module(f"{module}.settings"), cls)  # type: ignore[no-any-return]


def _run_worker(args: argparse.Namespace) -> int:
    service, module, _cls = WORKERS[args.worker]
    settings_cls = _settings_class(args.worker)
    if args.check:
        return _check(service, settings_cls)
    from shared.lifecycle import run_worker

    run = importlib.import_module(f"{module}.worker").run
    return run_worker(service, settings_cls, run)


def _check(service: str, settings_cls: type) -> int:
    from pydantic import ValidationError

    try:
        port = settings_cls.probe_port()  # type: ignore[attr-defined]
    except ValidationError as exc:
        print(f"{service}: bad settings: {exc.errors()[0].get('msg')}", file=sys.stderr)
        return 2
    url = f"http://127.0.0.1:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            print(resp.read().decode())
            return 0 if resp.status == 200 else 1
    except OSError as exc:
        print(f"{service}: unhealthy ({url}: {exc})", file=sys.stderr)
        return 1


def _write_private(path: Path, text: str, prog: str) -> bool:
    """Write a file that holds secrets: mode 0600, also when it existed with a wider one. An
    unwritable path is one line on stderr (False)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)
    except OSError as exc:
        print(f"{prog}: cannot write {path}: {exc.strerror}", file=sys.stderr)
        return False
    return True


def _alerts_config(args: argparse.Namespace) -> int:
    from shared import settings
    from tooling import alerting

    overrides = {}
    if args.secrets_dir is not None:
        if not args.secrets_dir.is_dir():
            print(f"cse alerts config: --secrets-dir {args.secrets_dir} is not a directory", file=sys.stderr)
            return 2
        overrides["_secrets_dir"] = str(args.secrets_dir)
    s = settings.load_or_report(alerting.AlertSettings, "cse alerts config", **overrides)
    if s is None:
        return 2
    for note in alerting.notes(s):
        print(f"cse alerts config: {note}", file=sys.stderr)
    text = alerting.render(s)
    if args.output is None:
        sys.stdout.write(text)
    else:
        if not _write_private(args.output, text, "cse alerts config"):
            return 2
    return 0


def _read_env_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{path}:{n}: expected KEY=VALUE, got {raw!r}")
        env[key.strip()] = value.split(" #", 1)[0].strip().strip("\"'")
    return env


def _dev_up(args: argparse.Namespace) -> int:
    import asyncio

    from shared import logs
    from tooling.devstack.supervisor import StackConfig, Supervisor, read_status

    running, why = read_status(args.run_dir.resolve())
    if running is not None and why == "ok":
        print(f"cse dev up: a stack is already running in {args.run_dir} (supervisor pid "
              f"{running['supervisor_pid']}); stop it or pass another --run-dir", file=sys.stderr)
        return 2

    logs.configure("warning", "console", stream=sys.stderr)

    env: dict[str, str] = {}
    for path in args.env_file:
        try:
            env.update(_read_env_file(path))
        except (OSError, ValueError) as exc:
            print(f"cse dev up: {exc}", file=sys.stderr)
            return 2
    explicit = {name for name, value in (("api-port", args.api_port),
                                          ("main-metrics-port", args.main_metrics_port),
                                          ("monitor-metrics-port", args.monitor_metrics_port))
                if value}
    for flag, value, low in (("--arbitrage-replicas", args.arbitrage_replicas, 0),
                             ("--main-replicas", args.main_replicas, 1),
                             ("--venues", args.venues, 0)):
        if value < low:
            print(f"cse dev up: {flag} must be >= {low}, got {value}", file=sys.stderr)
            return 2
    config = StackConfig(
        run_dir=args.run_dir.resolve(),
        api_port=8000 if args.api_port is None else args.api_port,
        main_metrics_port=9001 if args.main_metrics_port is None else args.main_metrics_port,
        monitor_metrics_port=9002 if args.monitor_metrics_port is None else args.monitor_metrics_port,
        explicit_ports=explicit,
        arbitrage_replicas=args.arbitrage_replicas,
        main_replicas=args.main_replicas,
        venues=args.venues,
        venue_seed=args.venue_seed,
        env=env,
    )
    return asyncio.run(Supervisor(config).run())


def _dev_status(args: argparse.Namespace) -> int:
    from tooling.devstack.supervisor import read_status, render_table

    snap, why = read_status(args.run_dir.resolve())
    if args.json:
        print(json.dumps({"status": why, **(snap or {})}, indent=2))
    elif snap is not None and why == "ok":
        print(render_table(snap))
    else:
        print(f"cse dev status: {why}", file=sys.stderr)
    return 0 if snap is not None and why == "ok" and snap.get("healthy") else 1


def _keys_encrypt(args: argparse.Namespace) -> int:
    from shared import keys

    try:
        if args.out.exists() and not args.force:
            raise keys.KeyFileError(f"{args.out} exists; pass --force to replace it")
        try:
            plain = json.loads(args.plaintext.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise keys.KeyFileError(f"cannot read {args.plaintext}: {exc}") from None
        document = keys.encrypt(keys.validate_plaintext(plain), keys.passphrase_from_env())
    except keys.KeyFileError as exc:
        print(f"cse keys encrypt: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(document)
    print(f"wrote {args.out} ({len(plain)} venues); delete {args.plaintext} now")
    return 0


def _allocate(args: argparse.Namespace) -> int:
    from workers.rebalancer.allocate_cli import main as allocate_main

    return allocate_main(args)


def _rebalance_once(args: argparse.Namespace) -> int:
    import asyncio

    from workers.rebalancer.rebalance_cli import rebalance_once

    return asyncio.run(rebalance_once(args.dry_run))


def _bench_scenario(args: argparse.Namespace) -> int:
    from shared import logs
    from tooling.bench.stack import bench_stack

    if not 0 < args.minutes <= 24 * 60:
        print(f"cse bench scenario: --minutes must be in (0, 1440], got {args.minutes}", file=sys.stderr)
        return 2
    logs.configure("warning", "console", stream=sys.stderr)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    print(f"starting the embedded stack (3 venues, 3 arbitrage replicas) for {args.minutes:g} min ...",
          flush=True)
    result = bench_stack(args.minutes, say=lambda line: print(f"    {line}", flush=True), keep=args.keep)
    outcomes = ", ".join(f"{k} {v}" for k, v in result["outcomes"].items())
    print(f"executions {result['executions']}: {outcomes}")
    print(f"one-leg ratio {result['one_leg_ratio']:.2%} ({result['one_leg']} of {result['executions']}); "
          f"orders {result['orders']}, refused {result['refused_orders']}, hedges {result['hedges']}; "
          f"venues conserved: {result['venues_conserved']}")
    print(json.dumps(result))
    return 0


def _bench_ingest(args: argparse.Namespace) -> int:
    from shared import logs
    from tooling.bench.ingest import bench_ingest

    logs.configure("warning", "console", stream=sys.stderr)
    result = bench_ingest(quick=args.quick, say=lambda line: print(line, flush=True))
    print(f"knee: {result['knee_pairs']} pairs, {result['sustained_updates_per_s']} books/s sustained; "
          f"100 pairs: event->bus p50 {result['event_to_bus_p50_ms']} ms, p99 "
          f"{result['event_to_bus_p99_ms']} ms; event->opportunity p99 "
          f"{result['event_to_opportunity_p99_ms']} ms")
    print(json.dumps(result))
    return 0


def _bench_arbitrage(args: argparse.Namespace) -> int:
    from shared import logs
    from tooling.bench.arbitrage import bench_detection
    from tooling.bench.broker import bench_broker

    logs.configure("warning", "console", stream=sys.stderr)
    quick = args.quick
    print("1/3 detection alone: 5 venues x 20 symbols, 20 levels ...", flush=True)
    detect = bench_detection(updates=20_000 if quick else 200_000)
    print(f"    {detect['detect_updates_per_s']:,.0f} book updates/s "
          f"({detect['opportunities']} opportunities), triangular "
          f"{detect['triangular_scans_per_s']:,.0f} scans/s over {detect['triangular_markets']} markets",
          flush=True)
    print("2/3 through the broker: bare consumer vs worker, latency at 5,000 updates/s ...", flush=True)
    print("3/3 one vs two worker processes on 6 partitions ...", flush=True)
    broker = bench_broker(messages=10_000 if quick else 200_000, seconds=2 if quick else 6,
                          scale_messages=10_000 if quick else 60_000)
    print(f"    bare {broker['bare_consume_per_s']:,.0f}/s, worker {broker['worker_consume_per_s']:,.0f}/s "
          f"({broker['worker_vs_bare']:.0%} of bare)")
    print(f"    latency from the book's stamp, over the books that open an opportunity: bare "
          f"receipt p50 {broker['bare_p50_ms']:.1f} ms p99 {broker['bare_p99_ms']:.1f} ms; worker "
          f"receipt p50 {broker['received_p50_ms']:.1f} ms p99 {broker['received_p99_ms']:.1f} ms, "
          f"decided p50 {broker['decided_p50_ms']:.1f} ms p99 {broker['decided_p99_ms']:.1f} ms, "
          f"acknowledged p50 {broker['p50_ms']:.1f} ms p99 {broker['p99_ms']:.1f} ms")
    print(f"    the worker's own time, receipt to decision: p50 {broker['worker_own_p50_ms']:.2f} ms "
          f"p99 {broker['worker_own_p99_ms']:.2f} ms; the publish's round trip to the broker p50 "
          f"{broker['ack_hop_p50_ms']:.1f} ms p99 {broker['ack_hop_p99_ms']:.1f} ms")
    print(f"    1 process {broker['worker_1proc_per_s']:,.0f}/s, 2 processes "
          f"{broker['worker_2proc_per_s']:,.0f}/s: x{broker['scale_1_to_2']:.2f}")
    keys = ("detect_updates_per_s", "opportunities", "triangular_markets", "triangular_scans_per_s")
    print(json.dumps({"bench": "arbitrage", "quick": quick, **{k: detect[k] for k in keys},
                      **broker}))
    return 0


def _bench_allocate(args: argparse.Namespace) -> int:
    from shared.settings import split_list
    from tooling.bench import allocate as bench

    try:
        sizes = tuple(int(v) for v in split_list(args.sizes)) if args.sizes else (
            bench.QUICK_SIZES if args.quick else bench.SIZES)
        if not sizes or min(sizes) < 2:
            raise ValueError
    except ValueError:
        print(f"cse bench allocate: --sizes must be integers >= 2, got {args.sizes!r}", file=sys.stderr)
        return 2
    summary = bench.run(sizes, quick=args.quick, libraries=not args.no_libraries)
    print(json.dumps(summary))
    return 0


def _scenario_run(args: argparse.Namespace) -> int:
    from shared import logs
    from tooling.scenario.runner import run_file

    logs.configure("warning", "console", stream=sys.stderr)
    code, _summary = run_file(args.file, replicas=args.replicas, keep=args.keep)
    return code


def _read_key_file(path: Path, action: str) -> dict[str, dict[str, str]] | None:
    """Decrypt ``path``; None (after one line on stderr) if it cannot be read or decrypted."""
    from shared import keys

    try:
        return keys.decrypt(path.read_text(), keys.passphrase_from_env(), str(path))
    except OSError as exc:
        print(f"cse keys {action}: cannot read {path}: {exc.strerror}", file=sys.stderr)
    except keys.KeyFileError as exc:
        print(f"cse keys {action}: {exc}", file=sys.stderr)
    return None


def _keys_decrypt(args: argparse.Namespace) -> int:
    plain = _read_key_file(args.file, "decrypt")
    if plain is None:
        return 2
    if not _write_private(args.out, json.dumps(plain, indent=2), "cse keys decrypt"):
        return 2
    print(f"wrote {args.out} (mode 0600)")
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    from shared import keys

    plain = _read_key_file(args.file, "list")
    if plain is None:
        return 2
    for venue, creds in sorted(plain.items()):
        fields = ", ".join(sorted(creds))
        print(f"{venue}: apiKey {keys.mask(creds['apiKey'])} ({fields})")
    return 0


def _config_check(args: argparse.Namespace) -> int:
    from shared.settings import load_or_report

    settings = load_or_report(_settings_class(args.worker), WORKERS[args.worker][0])
    if settings is None:
        return 2
    print(settings.model_dump_json(indent=2))  # SecretStr fields print as '**********'
    return 0


if __name__ == "__main__":
    sys.exit(main())
