"""``python -m vpgkit.publish RUN_DIR [REPO_ID] [--local-dir DIR] [--dry-run]``; its code is
:mod:`vpgkit.cli.publish`."""

from __future__ import annotations

import sys

from .cli.publish import main, publish_folder, push_to_hub, run_card

__all__ = ["main", "publish_folder", "push_to_hub", "run_card"]

if __name__ == "__main__":
    sys.exit(main())
