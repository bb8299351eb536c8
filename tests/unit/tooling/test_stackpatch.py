"""The merge patch that renders the local-cluster stack, and what the local override may change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import ROOT
from tooling import stackpatch

STACK = ROOT / "infrastructure" / "swarm" / "docker-stack-portfolio-optimized.yml"
OVERRIDE = ROOT / "infrastructure" / "swarm" / "local-cluster.override.yml"


def test_merge_patch_follows_rfc_7386() -> None:
    target = {"a": {"b": 1, "c": [1, 2], "d": {"e": 1}}, "f": "x"}
    patch = {"a": {"b": None, "c": [3], "d": {"g": 2}}, "h": {"i": None}}
    assert stackpatch.merge_patch(target, patch) == {"a": {"c": [3], "d": {"e": 1, "g": 2}}, "f": "x",
                                                     "h": {}}
    assert target == {"a": {"b": 1, "c": [1, 2], "d": {"e": 1}}, "f": "x"}, "the target is not modified"
    assert stackpatch.merge_patch([1], {"k": 1}) == {"k": 1}
    assert stackpatch.merge_patch({"k": 1}, "scalar") == "scalar"


def test_unknown_services_and_bad_files_are_refused(tmp_path: Path) -> None:
    typo = tmp_path / "typo.yml"
    typo.write_text("services:\n  arbitrage-wroker: {deploy: {replicas: 1}}\n")
    with pytest.raises(ValueError, match="arbitrage-wroker"):
        stackpatch.render(STACK, typo)
    listed = tmp_path / "list.yml"
    listed.write_text("- 1\n")
    assert stackpatch.main([str(STACK), str(listed), str(tmp_path / "out.yml")]) == 2
    assert stackpatch.main([str(STACK)]) == 2


def test_env_files_become_absolute(tmp_path: Path) -> None:
    out = tmp_path / "stack.yml"
    assert stackpatch.main([str(STACK), str(OVERRIDE), str(out)]) == 0
    rendered = yaml.safe_load(out.read_text())
    env_file = rendered["services"]["arbitrage-worker"]["env_file"]
    assert env_file == [str(ROOT / "config" / "environments" / "${CSE_ENV:-production}.env")]
    assert not [k for k in rendered if str(k).startswith("x-")]


def _deploy(service: dict[str, Any]) -> dict[str, Any]:
    return dict(service.get("deploy") or {})


def test_the_local_override_keeps_production_placement_and_policies() -> None:
    production = yaml.safe_load(STACK.read_text())
    local = stackpatch.render(STACK, OVERRIDE)
    absent = {"grafana", "elasticsearch", "kibana", "filebeat", "log-setup", "kafka-exporter"}
    assert set(local["services"]) == set(production["services"])
    for name, prod in production["services"].items():
        here = local["services"][name]
        prod_deploy, here_deploy = _deploy(prod), _deploy(here)
        assert here_deploy["endpoint_mode"] == "dnsrr", name
        assert here.get("secrets") == prod.get("secrets") and here.get("configs") == prod.get("configs"), name
        if name in absent:
            assert here_deploy["replicas"] == 0, name
            continue
        for key in ("placement", "update_config", "rollback_config", "restart_policy", "mode", "replicas"):
            assert here_deploy.get(key) == prod_deploy.get(key), (name, key)
        if prod["image"].startswith("${CSE_IMAGE"):  # the workers and the venue-sims: untouched
            for key in ("image", "command", "environment", "healthcheck", "env_file"):
                if key != "env_file":
                    assert here.get(key) == prod.get(key), (name, key)
    assert "encrypted" not in (local["networks"]["backend"].get("driver_opts") or {})
    assert production["networks"]["backend"]["driver_opts"]["encrypted"] == "true"
