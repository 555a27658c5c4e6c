"""``python -m vpgkit.lmms_tasks PATH ... --out DIR``: lmms-eval task files for DEMON-format folders; its code
is :mod:`vpgkit.cli.lmms_tasks`."""

from __future__ import annotations

from .cli.lmms_tasks import build_parser, cli, main

__all__ = ["build_parser", "cli", "main"]

if __name__ == "__main__":
    cli()
