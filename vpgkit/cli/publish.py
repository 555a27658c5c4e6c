"""``python -m vpgkit.publish RUN_DIR [REPO_ID] [--local-dir DIR] [--dry-run]``: publish a training run.

Writes the model card from the run (metrics included when it evaluated), then uploads to ``REPO_ID``
and/or writes ``--local-dir``. A thin entry point; the work is in :mod:`vpgkit.checkpoints.publish`.
"""

from __future__ import annotations

import sys

from ..checkpoints.publish import main, publish_folder, push_to_hub, run_card

__all__ = ["main", "publish_folder", "push_to_hub", "run_card"]

if __name__ == "__main__":
    sys.exit(main())
