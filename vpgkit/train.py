"""``python -m vpgkit.train recipe=...``: the training entry point; its code is :mod:`vpgkit.cli.train`."""

from __future__ import annotations

import sys

from .cli.train import _evaluate, main, run, summary_lines

__all__ = ["_evaluate", "main", "run", "summary_lines"]

if __name__ == "__main__":
    sys.exit(main())
