"""The run's log file (``output_dir/train.log``) and stopping cleanly on SIGTERM.

The console shows a progress bar; the log file keeps what a finished or preempted run needs to be
understood afterwards: the start, every ``trainer.log_every``-th step (loss, lr, samples/s), eval
losses, checkpoints, skips, a stop by signal and the summary. Hydra's own ``train.log`` stayed empty
because vpgkit printed instead of logging; the recipe turns Hydra's file log off and vpgkit writes it.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> log = run_logger(d)
    >>> log.info("hello")
    >>> close_run_logger(log)
    >>> (d / "train.log").read_text().strip().endswith("hello")
    True
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType

__all__ = ["LOG_NAME", "SignalStop", "TrainingStopped", "close_run_logger", "run_logger"]

LOG_NAME = "train.log"
_LOGGER = "vpgkit.train"


def run_logger(output_dir: str | Path, enabled: bool = True) -> logging.Logger:
    """The ``vpgkit.train`` logger, appending to ``output_dir/train.log`` (no file when not ``enabled``,
    e.g. on processes other than the main one). It does not propagate: the console has its own output."""
    logger = logging.getLogger(_LOGGER)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    target = (Path(output_dir) / LOG_NAME).resolve()
    close_run_logger(logger)  # one run at a time per process (tests run several)
    if enabled:
        handler = logging.FileHandler(target, mode="a", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
    else:
        logger.addHandler(logging.NullHandler())
    return logger


def close_run_logger(logger: logging.Logger | None = None) -> None:
    """Flush and detach the run logger's handlers."""
    logger = logger or logging.getLogger(_LOGGER)
    for handler in list(logger.handlers):
        handler.close()
        logger.removeHandler(handler)


class TrainingStopped(Exception):
    """Training stopped early on a signal after writing a checkpoint; ``resume=auto`` continues it."""

    def __init__(self, signal_name: str, step: int, checkpoint: Path | None):
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint
        super().__init__(
            f"stopped by {signal_name} after step {step}; checkpoint {checkpoint}; "
            "run again with resume=auto to continue"
        )


class SignalStop:
    """While active, SIGTERM only sets :attr:`requested`; the loop finishes its step, saves and stops.

    Preemption on shared clusters sends SIGTERM and waits a grace period before SIGKILL: enough for one
    step and a checkpoint, while the default action would lose everything since the last save. Handlers
    can only be installed from the main thread; elsewhere this does nothing.

    Example:
        >>> import os
        >>> with SignalStop() as stop:
        ...     os.kill(os.getpid(), signal.SIGTERM)  # recorded, the process keeps running
        >>> stop.requested
        'SIGTERM'
    """

    signals = (signal.SIGTERM,)

    def __init__(self):
        self.requested: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> SignalStop:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def ignore_stop_signals(_worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: workers leave SIGTERM to the main process, which shuts them down
    after its checkpoint (a group-wide SIGTERM would otherwise kill them mid-step)."""
    for sig in SignalStop.signals:
        signal.signal(sig, signal.SIG_IGN)
