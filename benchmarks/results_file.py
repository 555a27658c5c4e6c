"""Writing a benchmark's results file: whole or not at all (a crash mid-write keeps the previous file)."""

from __future__ import annotations

import json
import os
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
