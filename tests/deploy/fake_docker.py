"""A recording stand-in for the `docker` client, for testing the deploy script's logic.

Installed as an executable named ``docker`` first on PATH. Every call appends one JSON line
``{"argv": [...], "env": {...}}`` to ``$FAKE_DOCKER_LOG`` (env: the CSE_* and *_VERSION
variables, which the stack file reads) and answers from a small scenario:

    FAKE_SWARM        output of `docker info --format ...`       (default "active true")
    FAKE_TIERS        comma-separated tier label of each node   (default "trading,portfolio,arbitrage")
    FAKE_EXISTING     space-separated secret/config names that already exist
    FAKE_CONVERGE     "ok" | "never" | "rollback" (Swarm reports rollback_completed) |
                      "updating" (replicas N/N but the rolling update still in progress)
    FAKE_BEFORE       "rollback": before `stack deploy`, a rollback from an earlier deploy shows
    FAKE_CLI          "old": `stack deploy --help` lists no --detach (CLI before 25)
    FAKE_CHANGED      services whose spec the deploy changes, comma-separated (default "all")
    FAKE_CONTAINERS   "1": `docker ps -q` finds a container (backup); `docker cp` makes a directory
    FAKE_RENDER       "fail": `docker run ... alerts config` exits 2 as on bad CSE_ALERT_* settings;
                      otherwise it prints a configuration naming the CSE_ALERT_* variables passed
"""

from __future__ import annotations

import json
import os
import sys

SERVICES = {  # name: (mode, desired replicas)
    "cryptospreadedge-main": ("replicated", 2),
    "portfolio-rebalancer": ("replicated", 1),
    "arbitrage-worker": ("replicated", 3),
    "portfolio-monitor": ("replicated", 1),
    "filebeat": ("global", 1),
    "log-setup": ("replicated job", 1),
}


def main(argv: list[str]) -> int:
    env = {k: v for k, v in os.environ.items() if k.startswith("CSE_") or k.endswith("_VERSION")}
    with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
        log.write(json.dumps({"argv": argv, "env": env}) + "\n")
    stack = os.environ.get("STACK_NAME", "cryptospreadedge-portfolio")
    converge = os.environ.get("FAKE_CONVERGE", "ok")
    cmd = argv[:2]
    if argv[:1] == ["info"]:
        print(os.environ.get("FAKE_SWARM", "active true"))
    elif cmd == ["node", "ls"]:
        tiers = os.environ.get("FAKE_TIERS", "trading,portfolio,arbitrage").split(",")
        for i, _ in enumerate(tiers):
            print(f"node{i}")
    elif cmd == ["node", "inspect"]:
        tiers = os.environ.get("FAKE_TIERS", "trading,portfolio,arbitrage").split(",")
        for tier in tiers:
            print(tier)
    elif argv[:1] in (["secret"], ["config"]) and argv[1] == "inspect":
        return 0 if argv[2] in os.environ.get("FAKE_EXISTING", "").split() else 1
    elif cmd == ["stack", "services"]:
        fmt = argv[argv.index("--format") + 1] if "--format" in argv else ""
        for name, (mode, desired) in SERVICES.items():
            running = desired if converge == "ok" or mode.endswith("job") else 0
            if "{{.Mode}}" in fmt:
                print(f"{stack}_{name} {mode} {running}/{desired}")
            else:
                print(f"{stack}_{name}")
    elif argv[:3] == ["stack", "deploy", "--help"]:
        print("Usage:  docker stack deploy [OPTIONS] STACK")
        if os.environ.get("FAKE_CLI") != "old":
            print("  -d, --detach   Exit immediately instead of waiting for the stack services to converge")
    elif cmd == ["service", "inspect"] and "json .Spec" in argv[argv.index("--format") + 1]:
        deployed = os.path.exists(os.environ["FAKE_DOCKER_LOG"] + ".deployed")
        changed = os.environ.get("FAKE_CHANGED", "all")
        for name in argv[argv.index("--format") + 2:]:
            new = deployed and (changed == "all" or name.split("_", 1)[1] in changed.split(","))
            print(f'{name} {{"image": "{"new" if new else "old"}"}}')
    elif cmd == ["service", "inspect"]:
        deployed = os.path.exists(os.environ["FAKE_DOCKER_LOG"] + ".deployed")
        for name in argv[argv.index("--format") + 2:]:
            if not deployed:
                state = "rollback_completed 2026-01-01" if os.environ.get("FAKE_BEFORE") == "rollback" \
                    else "completed 2026-01-01"
            elif converge == "rollback":
                state = "rollback_completed 2026-01-02"
            elif converge == "updating":
                state = "updating 2026-01-02"
            else:
                state = "completed 2026-01-02"
            if os.environ.get("FAKE_BEFORE") == "rollback" and deployed and converge == "ok":
                state = "rollback_completed 2026-01-01"  # this deploy left the service alone
            print(f"{name} {state}")
    elif cmd == ["stack", "deploy"]:
        open(os.environ["FAKE_DOCKER_LOG"] + ".deployed", "w").close()
    elif cmd == ["service", "ls"]:
        pass  # nothing left after `stack rm`
    elif argv[:1] == ["cp"]:  # container:/path -> a directory with one file
        os.makedirs(argv[2], exist_ok=True)
        with open(os.path.join(argv[2], "backup.manifest"), "w") as out:
            out.write("fake\n")
    elif argv[:1] == ["run"] and argv[-4:-2] == ["alerts", "config"]:
        if os.environ.get("FAKE_RENDER") == "fail":
            print("cse alerts config: invalid setting CSE_ALERT_GROUP_WAIT='soon'", file=sys.stderr)
            return 2
        passed = [argv[i + 1] for i, a in enumerate(argv)
                  if a == "-e" and argv[i + 1].startswith("CSE_ALERT_")]
        print("# rendered by the fake\nreceivers: []")
        for name in passed:
            print(f"# {name}={os.environ.get(name, '')}")
    elif argv[:1] == ["ps"]:
        if os.environ.get("FAKE_CONTAINERS") == "1":
            print("c0ffee")
    elif cmd == ["service", "rollback"] and converge != "ok" and argv[-1].endswith("log-setup"):
        print("service has no previous spec", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
