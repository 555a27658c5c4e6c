"""``python -m vpgkit.evaluate --run OUTPUT_DIR --demon PATH``: DEMON-format evaluation of a run; its code is
:mod:`vpgkit.cli.evaluate`."""

from __future__ import annotations

from .cli.evaluate import build_parser, cli, load_run, main

__all__ = ["build_parser", "cli", "load_run", "main"]

if __name__ == "__main__":
    cli()
