"""The one optimisation core: AdamW with linear warmup + cosine decay, gradient clipping, the step.

``python -m vpgkit.train``'s loop (:mod:`vpgkit.training.loop`) and any plain training loop
(:func:`optimise`, e.g. the tiny world's backbone builds) use the same pieces, so a schedule or a
clipping rule exists once.

Example:
    >>> import torch
    >>> w = torch.nn.Parameter(torch.tensor([3.0]))
    >>> losses = optimise([w], 40, lambda step: ((w - 1.0).square().sum(), ""), warmup_steps=2, lr=0.3)
    >>> len(losses), losses[0], losses[-1] < 0.1
    (40, 4.0, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> Callable[[int], float]:
    """LR multiplier: linear warmup over ``warmup_steps``, then cosine decay to ``min_ratio`` at ``total_steps``.

    Example:
        >>> f = warmup_cosine(2, 10)
        >>> [round(f(s), 3) for s in (0, 1, 2, 6, 10)]
        [0.5, 1.0, 1.0, 0.5, 0.0]
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def adamw_warmup_cosine(
    params: Iterable[torch.nn.Parameter],
    total_steps: int,
    warmup_steps: int,
    min_ratio: float = 0.0,
    schedule: Callable[[int], float] | None = None,
    **adamw,
) -> tuple[torch.optim.AdamW, LambdaLR]:
    """(AdamW(params, **adamw), its LambdaLR): :func:`warmup_cosine` unless another ``schedule`` is given."""
    optimizer = torch.optim.AdamW(params, **adamw)
    return optimizer, LambdaLR(optimizer, schedule or warmup_cosine(warmup_steps, total_steps, min_ratio))


def optimizer_step(
    optimizer: torch.optim.Optimizer,
    scheduler: LambdaLR,
    params: list[torch.nn.Parameter],
    max_grad_norm: float | None,
    clip: Callable[[list[torch.nn.Parameter], float], object] = torch.nn.utils.clip_grad_norm_,
) -> float:
    """Clip (when ``max_grad_norm``), step the optimiser and the schedule, clear the gradients.

    Args:
        clip: the clipping function (``accelerator.clip_grad_norm_`` under accelerate).

    Returns:
        The learning rate this step used.
    """
    if max_grad_norm:
        clip(params, max_grad_norm)
    lr = scheduler.get_last_lr()[0]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return lr


def optimise(
    params: list[torch.nn.Parameter],
    steps: int,
    step_loss: Callable[[int], tuple[torch.Tensor, str]],
    *,
    warmup_steps: int,
    max_grad_norm: float | None = 1.0,
    min_ratio: float = 0.0,
    schedule: Callable[[int], float] | None = None,
    on_step: Callable[[int, list[float], str], None] | None = None,
    reduce: Callable[[list[torch.nn.Parameter], torch.Tensor], float] | None = None,
    **adamw,
) -> list[float]:
    """A plain single-process loop: ``steps`` AdamW steps on ``step_loss(step) -> (loss, note)``.

    Args:
        params: the weights to train.
        steps: optimiser steps (also the schedule's length).
        step_loss: the loss of step ``step`` (a scalar with a graph) and a note for the log.
        warmup_steps, min_ratio, schedule: the LR schedule (see :func:`adamw_warmup_cosine`).
        max_grad_norm: clip the global gradient norm (None: no clipping).
        on_step: called after each step with (step, losses so far, note), e.g. to log.
        reduce: called after ``backward`` with (params, loss), e.g. to average the gradients over
            data-parallel processes; returns the loss to record (None: ``loss.item()``).
        **adamw: AdamW arguments (``lr``, ``weight_decay``, ``betas`` …).

    Returns:
        The per-step losses.
    """
    optimizer, scheduler = adamw_warmup_cosine(params, steps, warmup_steps, min_ratio, schedule, **adamw)
    optimizer.zero_grad(set_to_none=True)
    losses: list[float] = []
    for step in range(steps):
        loss, note = step_loss(step)
        loss.backward()
        recorded = loss.item() if reduce is None else reduce(params, loss)
        optimizer_step(optimizer, scheduler, params, max_grad_norm)
        losses.append(recorded)
        if on_step is not None:
            on_step(step, losses, note)
    return losses
