"""The machine's matmul rate, measured in the run that reports against it (never a remembered figure)."""

from __future__ import annotations

import time

import torch


def gemm_gflops(dtype: torch.dtype, size: int = 2048, repeat: int = 5) -> dict[str, float]:
    """GFLOP/s of a size² matmul at the current torch thread count, per wall second and per process-CPU second.

    Measured quiet on this machine (2 cores, AVX-512 bf16, no AMX): bf16 ~190 at 1 thread, ~410 at 2;
    fp32 ~95 / ~155 — which is why scripts measure it themselves in the same run."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(repeat):
        a @ b
    flops = repeat * 2 * size**3 / 1e9
    return {
        "wall": flops / (time.perf_counter() - wall),
        "per_cpu_second": flops / (time.process_time() - cpu),
    }
