"""Log retention (ILM) matches the operations guide; every stack secret/config has a source."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.deploy.conftest import DEPLOY_SCRIPT, ROOT, STACK_FILE

LOGGING = ROOT / "infrastructure" / "logging"
RETENTION_DAYS = {"application": 30, "access": 90, "error": 180, "audit": 365}


@pytest.mark.parametrize("log_class", sorted(RETENTION_DAYS))
def test_ilm_policy_deletes_at_the_guide_retention(log_class: str) -> None:
    policy = json.loads((LOGGING / "ilm" / f"{log_class}.json").read_text())["policy"]
    delete = policy["phases"]["delete"]
    assert delete["min_age"] == f"{RETENTION_DAYS[log_class]}d"
    assert "delete" in delete["actions"]


def test_shipper_indices_match_the_templates() -> None:
    filebeat = yaml.safe_load((LOGGING / "filebeat.yml").read_text())
    output = filebeat["output.elasticsearch"]
    indices = {output["index"], *(i["index"] for i in output["indices"])}
    assert {i.split("-%{")[0] for i in indices} == {f"cse-{c}" for c in RETENTION_DAYS}
    assert filebeat["setup.ilm.enabled"] is False  # ours, applied by apply-ilm.sh
    setup = (LOGGING / "apply-ilm.sh").read_text()
    assert "for class in application access error audit" in setup
    assert '"index.lifecycle.name\\": \\"cse-$class' in setup
    assert '"index_patterns\\": [\\"cse-$class-*' in setup


def test_every_stack_object_has_a_source_in_the_deploy_script() -> None:
    stack = yaml.safe_load(STACK_FILE.read_text())
    script = DEPLOY_SCRIPT.read_text()
    declared = {f"{kind[:-1]} {name}" for kind in ("secrets", "configs") for name in stack[kind]}
    # sources are repository files, secret files, an operator's *_FILE, or rendered during deploy
    sources = set(re.findall(r'"(\w+)\|\$(?:ROOT|SECRETS_SOURCE|\{[A-Z_]+_FILE|ALERTMANAGER_CONF")', script))
    generated = re.search(r"GENERATED_SECRETS=\(([^)]*)\)", script)
    assert generated
    sources |= set(generated.group(1).split())
    assert {d.split()[1] for d in declared} == sources
    for kind in ("secrets", "configs"):
        for name, spec in stack[kind].items():
            version = name.upper() + "_VERSION"
            assert spec == {"external": True, "name": f"{name}${{{version}:-}}"}, name
