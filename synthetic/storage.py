"""Crash-safe files: atomic JSON/JSONL writes and resumable directories of parts.

Every file is written to a temporary file in the destination directory and moved into place with
``os.replace``, which is atomic on POSIX and Windows: a process killed mid-write leaves either the old
file or the new one, never a torn one.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> atomic_write_json(d / "x.json", {"a": 1})
    >>> read_json(d / "x.json", what="example")
    {'a': 1}
    >>> store = PartStore(d / "parts")
    >>> _ = store.write([{"id": "s1", "v": 1}])
    >>> sorted(store.load())
    ['s1']
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path
from typing import Any

from vpgkit.fileio import mkstemp


class InputError(ValueError):
    """Raised for a malformed input file; the message names the file (and line) and what was expected."""


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temp file in the same directory, then ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Binary twin of :func:`atomic_write_text` (used for PNG plots)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    """Serialise ``obj`` as UTF-8 JSON and write it atomically."""
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=indent) + "\n")


def atomic_write_jsonl(path: str | Path, records: Iterable[Any]) -> None:
    """Write one JSON value per line, atomically."""
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def read_json(path: str | Path, what: str) -> Any:
    """Read a JSON file; ``what`` describes it in the error message (e.g. ``"prompt file"``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} {path} does not exist (expected a JSON file)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{what} {path} is not valid JSON: {e}") from e


def read_jsonl(path: str | Path, what: str) -> list[dict[str, Any]]:
    """Read a JSONL file of objects; blank lines are skipped, anything else must be a JSON object.

    A ``.json`` file holding a list of objects is accepted too, since both shapes are common for seeds.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} {path} does not exist (expected a JSONL file, one JSON object per line)")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        data = read_json(path, what)
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise InputError(f"{what} {path}: expected a JSON list of objects")
        return data
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{what} {path}:{lineno} is not valid JSON: {e}") from e
        if not isinstance(rec, dict):
            raise InputError(f"{what} {path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
        out.append(rec)
    return out


class PartStore:
    """A directory of atomically written ``part-*.jsonl`` files that together hold one stage's results.

    Each finished batch becomes one new part, so progress survives a kill at any point and resuming
    means "skip every id already present". Temporary files left by a killed writer are ignored.
    """

    def __init__(self, directory: str | Path, key: str = "id") -> None:
        self.directory = Path(directory)
        self.key = key

    def load(self) -> dict[str, dict[str, Any]]:
        """All records keyed by ``key``; a later part overrides an earlier one for the same id."""
        records: dict[str, dict[str, Any]] = {}
        if not self.directory.is_dir():
            return records
        for part in sorted(self.directory.glob("part-*.jsonl")):
            for rec in read_jsonl(part, what="progress part"):
                records[str(rec[self.key])] = rec
        return records

    def write(self, records: list[dict[str, Any]]) -> Path | None:
        """Persist one batch as a new part file; returns its path (None for an empty batch)."""
        if not records:
            return None
        self.directory.mkdir(parents=True, exist_ok=True)
        n = len(list(self.directory.glob("part-*.jsonl")))
        # The random suffix keeps names unique even if two writers race; sort order stays by counter.
        path = self.directory / f"part-{n:06d}-{uuid.uuid4().hex[:8]}.jsonl"
        atomic_write_jsonl(path, records)
        return path
