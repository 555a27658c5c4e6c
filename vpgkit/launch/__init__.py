"""accelerate launch configs for GPUs (``ddp_gpu.yaml``, ``fsdp2_gpu.yaml``), shipped with the package.

They are accelerate's files, not Hydra config groups, so they live outside ``vpgkit.recipes`` (where
``python -m vpgkit.train --help`` would list them as a group to select). Use them as::

    accelerate launch --config_file "$(python -m vpgkit.launch ddp_gpu)" -m vpgkit.train recipe=vpgc ...

Example:
    >>> config_path("ddp_gpu").name
    'ddp_gpu.yaml'
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["CONFIGS", "config_path"]

CONFIGS = ("ddp_gpu", "fsdp2_gpu")


def config_path(name: str) -> Path:
    """The path of the shipped accelerate config ``name`` (one of :data:`CONFIGS`)."""
    if name not in CONFIGS:
        raise ValueError(f"accelerate config {name!r}: expected one of {list(CONFIGS)}")
    return Path(__file__).resolve().parent / f"{name}.yaml"


def main(argv: list[str] | None = None) -> int:
    """``python -m vpgkit.launch NAME``: print the config's path (for ``accelerate launch --config_file``)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in CONFIGS:
        print(f"usage: python -m vpgkit.launch {{{','.join(CONFIGS)}}}", file=sys.stderr)
        return 2
    print(config_path(args[0]))
    return 0
