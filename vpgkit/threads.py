"""CPU thread policy for the command lines: fast on a busy machine, unchanged on a quiet one.

PyTorch starts one OpenMP thread per physical core and lets idle threads spin (busy-wait) between parallel
regions. When another job occupies a core, every parallel region waits for a thread that is not running
and the spinning threads steal the time the others need: steps can take 100× longer. The policy:

* **passive waiting** — ``OMP_WAIT_POLICY=PASSIVE`` (idle threads sleep) unless the user set it. OpenMP
  reads it once when the runtime loads, so :func:`prefer_passive_waiting` runs when :mod:`vpgkit` is
  imported, before torch (it has no effect if torch was imported first). Results do not depend on it.
* **threads from the cores actually free** — :func:`apply_thread_policy` counts the cores this process
  may use (CPU affinity and the cgroup quota) and the share of them other processes keep busy (sampled
  from ``/proc/stat`` over ``sample_seconds``), and uses ``min(torch's default, free cores)`` threads
  (at least 1). On a quiet machine this is torch's default, so results are those of the default; an
  explicit ``OMP_NUM_THREADS`` or ``VPGKIT_NUM_THREADS`` is always obeyed.
* ``VPGKIT_THREAD_POLICY=off`` leaves OpenMP and torch at their defaults (for comparisons).
* **no slow exit** — :func:`freeze_heap_at_exit` moves every live object to the collector's permanent
  generation at exit, so the interpreter's final collection does not walk a large heap.

Example:
    >>> choose_threads(default=2, usable_cores=2.0, busy_cores=0.05)   # quiet: torch's default
    2
    >>> choose_threads(default=2, usable_cores=2.0, busy_cores=1.0)    # one competing busy process
    1
    >>> choose_threads(default=2, usable_cores=2.0, busy_cores=0.0, explicit=4)
    4
"""

from __future__ import annotations

import atexit
import gc
import logging
import math
import os
import time
from pathlib import Path

__all__ = [
    "apply_thread_policy",
    "busy_cores",
    "choose_threads",
    "freeze_heap_at_exit",
    "prefer_passive_waiting",
    "usable_cores",
]

logger = logging.getLogger(__name__)

ENV_THREADS = "VPGKIT_NUM_THREADS"
ENV_POLICY = "VPGKIT_THREAD_POLICY"  # "off": leave OpenMP and torch at their defaults
# A core counts as taken when other processes keep it at least this busy (0.5: one spinning process
# on one of two cores is 1.0; a quiet machine is ~0.0–0.1).
BUSY_THRESHOLD = 0.5


def prefer_passive_waiting() -> None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user set a wait policy (call before importing torch)."""
    if _policy_off():
        return
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def _policy_off() -> bool:
    return os.environ.get(ENV_POLICY, "").strip().lower() in ("off", "0", "false", "no")


def usable_cores() -> float:
    """Cores this process may run on: its CPU affinity, capped by a cgroup v2/v1 CPU quota if any."""
    try:
        cores = float(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        cores = float(os.cpu_count() or 1)
    quota = _cgroup_quota()
    return min(cores, quota) if quota else cores


def _cgroup_quota() -> float | None:
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if text[0] != "max":
            return int(text[0]) / int(text[1])
    except (OSError, IndexError, ValueError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            return quota / period
    except (OSError, ValueError):
        pass
    return None


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from ``/proc/stat``."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _own_ticks() -> int:
    """utime + stime of this process in jiffies."""
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def busy_cores(sample_seconds: float = 0.2) -> float:
    """Cores other processes kept busy over the next ``sample_seconds`` (0.0 if /proc is unavailable)."""
    try:
        busy0, total0 = _cpu_ticks()
        own0 = _own_ticks()
        time.sleep(sample_seconds)
        busy1, total1 = _cpu_ticks()
        own1 = _own_ticks()
    except (OSError, ValueError, IndexError):
        return 0.0
    total = total1 - total0
    if total <= 0:
        return 0.0
    ncpu = os.cpu_count() or 1
    return max(0.0, (busy1 - busy0 - (own1 - own0)) / total * ncpu)


def choose_threads(default: int, usable_cores: float, busy_cores: float, explicit: int | None = None) -> int:
    """The thread count: ``explicit`` if given, else ``min(default, free cores)``, at least 1.

    Args:
        default: torch's default (one per physical core).
        usable_cores: cores this process may use (:func:`usable_cores`).
        busy_cores: cores other processes keep busy (:func:`busy_cores`).
        explicit: a thread count the user asked for.
    """
    if explicit is not None:
        return max(1, explicit)
    taken = math.floor(busy_cores + (1 - BUSY_THRESHOLD))  # round half up: 0.5 busy = one core taken
    free = math.floor(usable_cores) - taken
    return max(1, min(default, free))


def _explicit_threads() -> int | None:
    for name in (ENV_THREADS, "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value:
            try:
                return int(value.split(",")[0])
            except ValueError:
                raise ValueError(f"{name}={value!r}: expected a positive integer") from None
    return None


def apply_thread_policy(sample_seconds: float = 0.2) -> int:
    """Set torch's intra-op threads by :func:`choose_threads` and freeze the heap at exit; returns the count.

    Call once at the start of a command line. Logs the decision at INFO level.
    """
    import torch

    if _policy_off():
        return torch.get_num_threads()
    explicit = _explicit_threads()
    default = torch.get_num_threads()
    busy = busy_cores(sample_seconds) if explicit is None else 0.0
    threads = choose_threads(default, usable_cores(), busy, explicit)
    if threads != default:
        torch.set_num_threads(threads)
    logger.info(
        "threads: %d (torch default %d, usable cores %.1f, busy cores %.1f, wait policy %s)",
        threads, default, usable_cores(), busy, os.environ.get("OMP_WAIT_POLICY", "default"),
    )  # fmt: skip
    freeze_heap_at_exit()
    return threads


_FROZEN = False


def freeze_heap_at_exit() -> None:
    """At interpreter exit, move all live objects out of the collector's reach (``gc.freeze``)."""
    global _FROZEN
    if not _FROZEN:
        atexit.register(gc.freeze)
        _FROZEN = True
