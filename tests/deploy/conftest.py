"""Helpers of the deployment and monitoring checks: paths, and the tools they need."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from tests import ROOT

STACK_FILE = ROOT / "infrastructure" / "swarm" / "docker-stack-portfolio-optimized.yml"
DEPLOY_SCRIPT = ROOT / "scripts" / "deployment" / "deploy-portfolio-swarm.sh"
DOCKERFILE = ROOT / "infrastructure" / "docker" / "services" / "cryptospreadedge" / "Dockerfile"
ENTRYPOINT = DOCKERFILE.parent / "entrypoint.sh"
NGINX_CONF = ROOT / "infrastructure" / "nginx" / "nginx-portfolio.conf"
PROMETHEUS_CONF = ROOT / "infrastructure" / "monitoring" / "prometheus-portfolio.yml"


def require_tool(name: str, hint: str) -> str:
    """The tool's path, looked up on PATH, beside the venv's python (pip-installed binaries such as
    hadolint) and in /usr/sbin (Debian's nginx). scripts/bootstrap.sh installs every tool the tests
    use, so a missing one fails the test rather than skipping it."""
    search = os.pathsep.join([os.environ.get("PATH", ""), str(Path(sys.executable).parent), "/usr/sbin"])
    path = shutil.which(name, path=search)
    if path is None:
        pytest.fail(f"`{name}` is not installed ({hint}): run scripts/bootstrap.sh")
    return path
