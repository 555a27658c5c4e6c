"""Checks that run before any compute: a run that cannot succeed should fail in its first second.

Without them an unwritable ``output_dir`` surfaced at the first checkpoint (after training), a
``trainer.max_steps=0`` run wrote an untrained adapter, an empty dataset failed inside the sampler and a
``data.max_length`` beyond the LM's context failed at the first long batch.

Example:
    >>> from vpgkit.config import TrainConfig
    >>> cfg = TrainConfig()
    >>> cfg.trainer.max_steps = 0
    >>> check_config(cfg)
    Traceback (most recent call last):
    ...
    ValueError: trainer.max_steps=0: nothing would be trained; give a number of optimiser steps ≥ 1
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ..config import TrainConfig
from ..fileio import mkstemp

__all__ = ["check_config", "check_datasets", "check_max_length", "check_output_dir"]


def check_output_dir(output_dir: str | os.PathLike) -> Path:
    """Create ``output_dir`` if needed and prove a file can be written there; returns it.

    Raises:
        OSError: naming ``output_dir`` and why it cannot be used.
    """
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(
            f"output_dir={path}: exists and is not a directory; choose another output_dir"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = mkstemp(dir=path, prefix=".vpgkit-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise type(err)(
            f"output_dir={path}: cannot write there ({err.strerror or err}); choose a writable output_dir"
        ) from None
    return path


def check_config(cfg: TrainConfig) -> None:
    """Values the schema's types cannot rule out: counts that must be positive, steps that must exist."""
    t, o = cfg.trainer, cfg.optim
    if t.max_steps < 1:
        raise ValueError(
            f"trainer.max_steps={t.max_steps}: nothing would be trained; give a number of optimiser steps ≥ 1"
        )
    positive = {
        "trainer.global_batch_size": t.global_batch_size,
        "trainer.gradient_accumulation_steps": t.gradient_accumulation_steps,
        "data.max_length": cfg.data.max_length,
    }
    for key, value in positive.items():
        if value < 1:
            raise ValueError(f"{key}={value}: must be ≥ 1")
    non_negative = {
        "trainer.log_every": t.log_every,
        "trainer.eval_every": t.eval_every,
        "trainer.save_every": t.save_every,
        "optim.warmup_steps": o.warmup_steps,
        "data.num_workers": cfg.data.num_workers,
        "trainer.fetch_loss_weight": t.fetch_loss_weight,
    }
    for key, value in non_negative.items():
        if value < 0:
            raise ValueError(f"{key}={value}: must be ≥ 0 (0 turns it off)")
    if o.lr <= 0:
        raise ValueError(f"optim.lr={o.lr}: must be > 0")
    from .build import plugin_configs

    plugin_configs(cfg.model)  # unknown plug-ins, presets and config fields, before anything is built


def check_max_length(max_length: int, context: int | None) -> None:
    """``data.max_length`` must fit the LM's context (``max_position_embeddings``; None: unknown)."""
    if context is not None and max_length > context:
        raise ValueError(
            f"data.max_length={max_length} exceeds the LM's context of {context} tokens "
            f"(max_position_embeddings); set data.max_length ≤ {context}"
        )


def check_datasets(parts: Mapping[str, object], where: Mapping[str, str | None] | None = None) -> None:
    """Every source must hold at least one sample; ``where`` names each source's file for the message."""
    for name, dataset in parts.items():
        if len(dataset) == 0:
            origin = (where or {}).get(name)
            raise ValueError(
                f"data source {name!r}: no samples"
                + (f" in {origin}" if origin else "")
                + "; check the file and its format"
            )
