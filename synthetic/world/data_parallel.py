"""Data parallelism for the world build's training stages: N processes on one machine, one thread each.

At the tiny world's widths (128-wide matrices) two threads inside one matrix product gain little, so
two processes that each run half of the batch on one thread beat one process on two threads (the LM
stage: 0.50 s against 0.67 s per step on this 2-core machine,
``benchmarks/results/world_build_speed_processes.json``). Each process holds the same
model (the same seed, so the same initial weights), computes the loss on its share of the batch, and
after ``backward`` the gradients (and the loss, for the log) are averaged over processes with one gloo
all-reduce; every process then takes the same optimiser step, so the weights stay identical.

The loss is the mean of the processes' losses, not the loss of the whole batch computed at once: a
build with N processes makes other bits than a one-process build, and the same bits again when rerun
with the same N on the same machine (gloo's sum over 2 processes is fixed in order).

Example (a stage function, defined in an importable module, takes a :class:`Shard` and ``log`` and
returns ``(module, result)``):
    >>> import torch
    >>> def fit(shard, log, target):
    ...     torch.manual_seed(0)
    ...     w = torch.nn.Linear(1, 1, bias=False)
    ...     for _ in range(3):
    ...         first, count = shard.rows(4)
    ...         x = torch.arange(first, first + count, dtype=torch.float32)[:, None]
    ...         loss = (w(x) - target * x).square().mean()
    ...         loss.backward()
    ...         shard.reduce(list(w.parameters()), loss)
    ...         with torch.no_grad():
    ...             w.weight -= 0.01 * w.weight.grad
    ...         w.weight.grad = None
    ...     return w, {"weight": w.weight.item()}
    >>> state, result = run_data_parallel(fit, 2, target=2.0)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["ONE_PROCESS", "Shard", "run_data_parallel"]


@dataclass(frozen=True)
class Shard:
    """This process's place among ``world`` data-parallel processes (``world`` = 1: no parallelism)."""

    rank: int = 0
    world: int = 1

    def rows(self, batch_size: int) -> tuple[int, int]:
        """(offset, count) of this process's rows of a global batch of ``batch_size`` rows.

        Example:
            >>> Shard(1, 2).rows(64)
            (32, 32)
        """
        if batch_size % self.world:
            raise ValueError(
                f"Shard.rows: batch size {batch_size} does not split over {self.world} processes"
            )
        count = batch_size // self.world
        return self.rank * count, count

    def reduce(self, params: list[nn.Parameter], loss: torch.Tensor) -> float:
        """Average the gradients of ``params`` and the scalar ``loss`` over the processes (in place for the
        gradients); returns the averaged loss. One all-reduce per call; a no-op for one process.

        Args:
            params: the trained weights (a weight without a gradient counts as a zero gradient).
            loss: the scalar loss this process computed.
        """
        if self.world == 1:
            return float(loss.detach())
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads] + [loss.detach().reshape(1).to(grads[0].dtype)])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p, g in zip(params, grads, strict=True):
            n = g.numel()
            p.grad = flat[offset : offset + n].view_as(p)  # views of the fresh reduced buffer: no copy
            offset += n
        return float(flat[-1])


ONE_PROCESS = Shard()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(
    rank: int,
    world: int,
    port: int,
    out: str,
    messages,
    fn: Callable[..., tuple[nn.Module, dict]],
    kwargs: dict,
) -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        # process 0's log lines go to the caller's log; the others stay silent
        module, result = fn(Shard(rank, world), log=messages.put if rank == 0 else _silent, **kwargs)
        if rank == 0:
            from safetensors.torch import save_file

            state = {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}
            save_file(state, str(Path(out) / "state.safetensors"))
            (Path(out) / "result.json").write_text(json.dumps(result), encoding="utf-8")
    finally:
        dist.destroy_process_group()


def _silent(_: str) -> None:
    pass


def run_data_parallel(
    fn: Callable[..., tuple[nn.Module, dict[str, Any]]],
    processes: int,
    log: Callable[[str], None] = print,
    **kwargs: Any,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Run ``fn(shard, log=..., **kwargs)`` in ``processes`` spawned processes (one torch thread each,
    joined by a gloo group on 127.0.0.1) and return process 0's ``(module.state_dict(), result)``.

    ``fn`` must be importable by name (spawned processes import it) and ``kwargs`` picklable; ``result``
    must be JSON-serialisable. Process 0's ``log`` lines are passed to ``log`` here. An error in any
    process is raised here (``torch.multiprocessing.ProcessRaisedException``).
    """
    import torch.multiprocessing as mp
    from safetensors.torch import load_file

    if processes < 2:
        raise ValueError(f"run_data_parallel: expected 2 or more processes, got {processes}")
    messages = mp.get_context("spawn").SimpleQueue()
    with tempfile.TemporaryDirectory(prefix="world-data-parallel-") as out:
        args = (processes, _free_port(), out, messages, fn, kwargs)
        context = mp.spawn(_worker, args=args, nprocs=processes, join=False)
        while True:
            done = context.join(timeout=0.2)
            while not messages.empty():
                log(messages.get())
            if done:
                break
        state = load_file(str(Path(out) / "state.safetensors"))
        result = json.loads((Path(out) / "result.json").read_text(encoding="utf-8"))
    return state, result
