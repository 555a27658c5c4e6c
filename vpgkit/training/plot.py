"""The run's loss curve (matplotlib) and the smoothed losses the summary quotes.

Per-step losses of small batches are noisy: the curve draws them as faint points under a trailing
moving average, eval losses as markers, and the learning rate on a second y axis. The summary's
"loss A → B" quotes the same average at the start and the end, never a single noisy step.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..fileio import mkstemp

__all__ = ["loss_curve_figure", "moving_average", "save_loss_curve", "smoothing_window"]


def smoothing_window(steps: int) -> int:
    """Steps averaged for the smoothed curve: a tenth of the run, between 1 and 100.

    Example:
        >>> smoothing_window(6), smoothing_window(300), smoothing_window(18000)
        (1, 30, 100)
    """
    return max(1, min(100, steps // 10))


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean over ``window`` values (fewer at the start).

    Example:
        >>> moving_average([4.0, 2.0, 3.0, 1.0], 2)
        [4.0, 3.0, 2.5, 2.0]
    """
    if window < 1:
        raise ValueError(f"moving_average: window must be ≥ 1, got {window}")
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def loss_curve_figure(
    losses: Sequence[float],
    eval_losses: Mapping[int, float] | None = None,
    lrs: Sequence[float] | None = None,
    title: str = "training loss",
):
    """A matplotlib ``Figure``: raw per-step losses (faint), their moving average, eval losses and the
    learning rate (second y axis, when given). Uses no pyplot state, so it never touches the backend.

    Example:
        >>> fig = loss_curve_figure([3.0, 2.5, 2.2, 2.0], {4: 2.4}, lrs=[1e-3] * 4)
        >>> [ax.get_ylabel() for ax in fig.axes]
        ['loss (mean per answer token)', 'learning rate']
    """
    from matplotlib.figure import Figure

    if not losses:
        raise ValueError("loss_curve_figure: no losses to plot")
    steps = list(range(1, len(losses) + 1))
    window = smoothing_window(len(losses))
    fig = Figure(figsize=(8, 4.8), dpi=100)
    ax = fig.add_subplot()
    ax.plot(steps, losses, ".", color="C0", alpha=0.25, markersize=3, label="train loss (each step)")
    ax.plot(
        steps,
        moving_average(losses, window),
        color="C0",
        linewidth=2,
        label=f"train loss (mean of {window} steps)" if window > 1 else "train loss",
    )
    if eval_losses:
        points = sorted(eval_losses.items())
        ax.plot(*zip(*points, strict=True), "o", color="C3", markersize=6, label="eval loss")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss (mean per answer token)")
    ax.set_xlim(0, len(losses) + 1)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if lrs:
        lr_ax = ax.twinx()
        lr_ax.plot(steps[: len(lrs)], lrs, color="C2", linewidth=1, linestyle="--", label="learning rate")
        lr_ax.set_ylabel("learning rate")
        lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        more = lr_ax.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    ax.legend(handles, labels, loc="upper right", fontsize="small")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def save_loss_curve(
    path: str | Path,
    losses: Sequence[float],
    eval_losses: Mapping[int, float] | None = None,
    title: str = "training loss",
    lrs: Sequence[float] | None = None,
) -> Path:
    """Draw :func:`loss_curve_figure` to ``path`` (PNG), atomically; returns the path.

    Example:
        >>> import tempfile, os
        >>> p = save_loss_curve(os.path.join(tempfile.mkdtemp(), "loss.png"), [3.0, 2.5, 2.2], {3: 2.4})
        >>> p.read_bytes()[:4] == b"\\x89PNG"
        True
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = loss_curve_figure(losses, eval_losses, lrs, title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            FigureCanvasAgg(fig).print_png(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
