"""Generated blocks in README.md and docs/: the text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``.

The benchmark scripts write them from their results files (``--readme`` / ``--docs``);
``tests/test_results_tables.py`` reads them back and checks they are exactly what the scripts render.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def read_block(page: Path, name: str) -> str:
    """The text of block ``name`` of ``page`` (without its marker lines)."""
    start, end = _markers(name)
    content = page.read_text()
    if start not in content or end not in content:
        raise ValueError(f"{page}: no {start} … {end} block")
    return content.split(start, 1)[1].split(end, 1)[0].removeprefix("\n").removesuffix("\n")


def write_block(page: Path, name: str, text: str) -> None:
    """Replace the text of block ``name`` of ``page`` by ``text``."""
    read_block(page, name)  # the block must exist
    start, end = _markers(name)
    head, rest = page.read_text().split(start, 1)
    page.write_text(f"{head}{start}\n{text}\n{end}{rest.split(end, 1)[1]}")
