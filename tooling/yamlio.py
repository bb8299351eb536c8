"""Read the monitoring YAML files, and write the block-style YAML the generated files use.

``load`` is PyYAML's ``safe_load`` (PyYAML is in the test extra, so it is imported there, not
at the top: ``dump`` runs in the image too). ``dump`` writes mappings, lists
and scalars with strings JSON-quoted (a JSON string is a valid YAML double-quoted scalar) and no
line folding, so a generated file reads like the hand-written ones.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def load(path: Path) -> Any:
    import yaml

    return yaml.safe_load(Path(path).read_text())


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)


def dump(value: Any, indent: int = 0) -> str:
    """Block-style YAML for dicts, lists and scalars (keys must be plain identifiers)."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                lines.append(f"{pad}{key}:")
                lines.append(dump(item, indent + 2))
            else:
                empty = "{}" if isinstance(item, dict) else "[]"
                lines.append(f"{pad}{key}: {empty if isinstance(item, dict | list) else _scalar(item)}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict | list) and item:
                inner = dump(item, indent + 2).splitlines()
                lines.append(f"{pad}- {inner[0].lstrip()}")
                lines.extend(inner[1:])
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    else:
        lines.append(pad + _scalar(value))
    return "\n".join(lines)
