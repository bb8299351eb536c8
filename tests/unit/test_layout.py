"""The layout's rule: imports flow one way. ``shared`` imports neither ``workers`` nor
``tooling``; a service never imports ``tooling`` (only the ``cse`` dispatcher loads a tool,
when its command runs)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests import ROOT


def imported(path: Path) -> set[str]:
    """Top-level package of every module ``path`` imports (anywhere in the file)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(("package", "forbidden", "allowed"), [
    ("shared", {"workers", "tooling", "tests"}, set()),
    ("workers", {"tooling", "tests"}, {"workers/cli.py"}),
    ("tooling", {"tests"}, set()),
])
def test_imports_flow_one_way(package: str, forbidden: set[str], allowed: set[str]) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    wrong = {str(f.relative_to(ROOT)): sorted(imported(f) & forbidden) for f in files
             if str(f.relative_to(ROOT)) not in allowed and imported(f) & forbidden}
    assert wrong == {}


def test_the_rule_is_seen_when_broken(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from tooling.bench import data\n    import workers.cli\n")
    assert imported(module) >= {"tooling", "workers"}
