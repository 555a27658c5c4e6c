"""The loss curve and the summary's loss quote (issue 16, item 8)."""

from __future__ import annotations

import statistics

import numpy as np
import pytest
from PIL import Image
from test_train import FAST, config

from vpgkit.training.plot import loss_curve_figure, moving_average, save_loss_curve, smoothing_window


def _noisy(n: int, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(2.0 * np.exp(-np.arange(n) / 80) + 0.5 + rng.normal(0, 0.3, n))


def test_curve_draws_smoothed_line_over_raw_points_with_eval_lr_and_axis_titles():
    losses, lrs = _noisy(200), [1e-3 * min(1, (i + 1) / 20) for i in range(200)]
    fig = loss_curve_figure(losses, {100: 1.1, 200: 0.8}, lrs, title="recipe vpgc")
    ax, lr_ax = fig.axes
    assert ax.get_xlabel() == "optimiser step" and ax.get_ylabel() == "loss (mean per answer token)"
    assert lr_ax.get_ylabel() == "learning rate" and ax.get_title() == "recipe vpgc"
    raw, smooth, evals = ax.get_lines()
    assert list(raw.get_ydata()) == losses and raw.get_alpha() < 0.5 and raw.get_linestyle() == "None"
    assert list(smooth.get_ydata()) == pytest.approx(moving_average(losses, smoothing_window(200)))
    assert np.std(np.diff(smooth.get_ydata())) < np.std(np.diff(losses)) / 3  # the line is smooth
    assert list(evals.get_xdata()) == [100, 200] and list(evals.get_ydata()) == [1.1, 0.8]
    assert list(lr_ax.get_lines()[0].get_ydata()) == lrs
    assert len([t for t in ax.get_xticks() if 0 <= t <= 200]) >= 4  # steps marked along the axis
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["train loss (each step)", "train loss (mean of 20 steps)", "eval loss", "learning rate"]


def test_png_is_written_atomically_and_decodes(tmp_path):
    path = save_loss_curve(tmp_path / "loss.png", _noisy(50), lrs=[1e-3] * 50)
    assert Image.open(path).size == (800, 480)
    assert [p.name for p in tmp_path.iterdir()] == ["loss.png"]


def test_summary_quotes_the_smoothed_start_and_end(tmp_path):
    from vpgkit.train import run, summary_lines

    cfg = config("recipe=vpgc_toy", f"output_dir={tmp_path}", "trainer.max_steps=30", *FAST)
    result = run(cfg)
    from vpgkit.training.build import build_model

    model, _ = build_model(cfg.model, cfg.seed)
    first = statistics.fmean(result.losses[:3])
    last = statistics.fmean(result.losses[-3:])
    line = summary_lines(cfg, model, result, tmp_path / "adapter", 1)[0]
    assert f"loss {first:.4f} → {last:.4f} (mean of the first / last 3 steps)" in line
    assert len(result.lrs) == 30 and (tmp_path / "loss_curve.png").is_file()
