"""Writing a benchmark's results file: whole or not at all (a crash mid-write keeps the previous file)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any


def write_results(path: Path, data: Any, indent: int = 2) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file in the same folder and ``os.replace``.

    Keys keep their order (the README blocks list runs in the order they were recorded)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=indent) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def git_commit(checkout: Path) -> str | None:
    """The short commit of ``checkout``'s HEAD (which code a result came from), or None outside git."""
    try:
        return subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
