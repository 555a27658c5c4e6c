"""Run `python -m vpgkit.train` (or torchrun) in a subprocess, as a user would, and fail with its stderr tail."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_train(*overrides: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600):
    """The finished process (stdout/stderr as text); asserts it exited 0."""
    proc = subprocess.run(
        [sys.executable, "-m", "vpgkit.train", *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def torchrun(nproc: int, port: int) -> list[str]:
    """The ``python -m torch.distributed.run`` prefix for ``nproc`` local CPU processes on ``port``."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_port",
        str(port),
    ]
