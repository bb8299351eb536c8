"""Apply an override to a Swarm stack file the way RFC 7386 (JSON Merge Patch) defines it.

``docker stack deploy -c a.yml -c b.yml`` can add and replace keys but never remove one, and
some differences of a test cluster are removals (an overlay's ``encrypted`` option is on by
its mere presence, whatever its value). A merge patch says both: a mapping merges into the
mapping at the same place, ``null`` deletes the key, anything else replaces it.

    python -m tooling.stackpatch STACK OVERRIDE [OVERRIDE...] OUTPUT

The output is the stack file with anchors and ``<<`` merge keys expanded, the patch applied,
relative ``env_file`` paths made absolute (they are relative to the stack file, and the
output may live elsewhere) and ``${VAR}`` references left for ``docker stack deploy``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: the result of applying ``patch`` to ``target`` (neither is modified)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def absolute_env_files(stack: dict[str, Any], base: Path) -> None:
    for service in (stack.get("services") or {}).values():
        files = service.get("env_file")
        if isinstance(files, str):
            files = [files]
        if files:
            service["env_file"] = [f if f.startswith(("/", "$")) else os.path.normpath(base / f)
                                   for f in files]


def render(stack_path: Path, *override_paths: Path) -> dict[str, Any]:
    """The stack with each override applied in turn."""
    rendered = yaml.safe_load(stack_path.read_text())
    if not isinstance(rendered, dict):
        raise ValueError(f"{stack_path}: not a YAML mapping")
    for path in override_paths:
        override = yaml.safe_load(path.read_text()) or {}
        if not isinstance(override, dict):
            raise ValueError(f"{path}: not a YAML mapping")
        # x-* keys are the override's own anchors: they do not reach the stack
        patch = {k: v for k, v in override.items() if not str(k).startswith("x-")}
        unknown = sorted(set(patch.get("services") or {}) - set(rendered.get("services") or {}))
        if unknown:
            raise ValueError(f"{path} names services the stack does not have: {', '.join(unknown)}")
        rendered = merge_patch(rendered, patch)
    rendered = {k: v for k, v in rendered.items() if not str(k).startswith("x-")}
    absolute_env_files(rendered, stack_path.resolve().parent)
    return rendered


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3:
        print("usage: python -m tooling.stackpatch STACK OVERRIDE [OVERRIDE...] OUTPUT", file=sys.stderr)
        return 2
    stack, *overrides, output = (Path(a) for a in args)
    try:
        rendered = render(stack, *overrides)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        print(f"stackpatch: {exc}", file=sys.stderr)
        return 2
    header = (f"# Rendered from {stack} with {', '.join(map(str, overrides))} "
              "(tooling/stackpatch.py); do not edit.\n")
    output.write_text(header + yaml.safe_dump(rendered, sort_keys=False, width=1000))
    return 0


if __name__ == "__main__":
    sys.exit(main())
