"""The command-line entry points, in one place.

=================================  ===============================================
``python -m vpgkit.train``         :mod:`vpgkit.cli.train` (Hydra recipes)
``python -m vpgkit.evaluate``      :mod:`vpgkit.cli.evaluate` (DEMON-format evaluation)
``python -m vpgkit.publish``       :mod:`vpgkit.cli.publish` (model card, hub / local folder)
``python -m vpgkit.lmms_tasks``    :mod:`vpgkit.cli.lmms_tasks` (lmms-eval task files for DEMON folders)
``python -m vpgkit.launch NAME``   :mod:`vpgkit.launch` (accelerate configs)
=================================  ===============================================

``vpgkit.train``, ``vpgkit.evaluate``, ``vpgkit.publish`` and ``vpgkit.lmms_tasks`` stay importable and
runnable with ``-m``; they re-export these modules. ``python -m vpgkit.cli.train`` etc. work too.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


def exit_on_input_error(main: Callable[[], object]) -> None:
    """Run ``main()``; a missing file or a bad value ends the process with one ``error:`` line (exit 1)
    instead of a traceback — the message already names the input and what was expected."""
    try:
        main()
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"error: {error}")
