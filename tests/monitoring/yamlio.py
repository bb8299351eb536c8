"""Read and write the monitoring YAML files without a hard dependency on PyYAML.

The project's virtualenv does not ship PyYAML, so ``load`` uses it when importable and
otherwise asks a system Python that has it (Debian's python3-yaml) to convert the file to
JSON. ``dump`` writes the block-style YAML subset the generated files use: mappings, lists
and scalars, strings JSON-quoted (a JSON string is a valid YAML double-quoted scalar).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

_CONVERT = "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"


def _system_pythons() -> list[str]:
    found = []
    for candidate in ("/usr/bin/python3", shutil.which("python3")):
        if candidate and Path(candidate).exists() and candidate not in found:
            found.append(candidate)
    return found


def yaml_available() -> bool:
    try:
        import yaml  # noqa: F401
    except ImportError:
        return any(
            subprocess.run([py, "-c", "import yaml"], capture_output=True).returncode == 0
            for py in _system_pythons()
        )
    return True


def loads(text: str) -> Any:
    try:
        import yaml
    except ImportError:
        for py in _system_pythons():
            done = subprocess.run([py, "-c", _CONVERT], input=text, capture_output=True, text=True)
            if done.returncode == 0:
                return json.loads(done.stdout)
            if "No module named 'yaml'" not in done.stderr:
                raise ValueError(f"invalid YAML: {done.stderr.strip()[-500:]}") from None
        raise RuntimeError("no YAML parser: install PyYAML in the venv or Debian's python3-yaml") from None
    return yaml.safe_load(text)


def load(path: Path) -> Any:
    return loads(Path(path).read_text())


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
