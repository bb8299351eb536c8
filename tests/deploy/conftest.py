"""Helpers of the deployment checks: paths, and the tools they need (skip when absent)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
STACK_FILE = ROOT / "infrastructure" / "swarm" / "docker-stack-portfolio-optimized.yml"
DEPLOY_SCRIPT = ROOT / "scripts" / "deployment" / "deploy-portfolio-swarm.sh"
DOCKERFILE = ROOT / "infrastructure" / "docker" / "services" / "cryptospreadedge" / "Dockerfile"
ENTRYPOINT = DOCKERFILE.parent / "entrypoint.sh"
NGINX_CONF = ROOT / "infrastructure" / "nginx" / "nginx-portfolio.conf"
PROMETHEUS_CONF = ROOT / "infrastructure" / "monitoring" / "prometheus-portfolio.yml"


def require_tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"`{name}` is not installed ({hint}; scripts/bootstrap.sh installs it)")
    return path
