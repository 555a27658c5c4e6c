"""Preemption, skip counts and the run's log (issue 16, items 6 and 7).

SIGTERM is raised from inside the data pipeline at a chosen sample read, so the step it interrupts is
fixed by the data, not by timing; the subprocess test sends a real ``kill -TERM`` to a run too long to
finish first.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from test_train import FAST, config, run_training
from toy_files import toy_jsonl_with_a_missing_image

from vpgkit.training.runlog import TrainingStopped
from vpgkit.training.state import latest_checkpoint, load_checkpoint


class TermAtRead:
    """A dataset that sends this process SIGTERM when item number ``at`` is read (1-based)."""

    def __init__(self, dataset, at: int):
        self.dataset, self.at, self.reads = dataset, at, 0
        self.datasets = getattr(dataset, "datasets", None)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        self.reads += 1
        if self.reads == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return self.dataset[i]


def _weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.trainable_parameters().items()}


def test_sigterm_writes_a_checkpoint_and_resume_is_bitwise_equal(tmp_path, monkeypatch):
    steps = ("trainer.max_steps=8", "trainer.save_every=0")
    straight_model, straight = run_training(
        config("recipe=vpgc_toy", f"output_dir={tmp_path / 'a'}", *FAST, *steps)
    )

    import test_train

    from vpgkit.training import datasets

    real_build = datasets.build_datasets

    def build_with_term(*args, **kwargs):
        train_set, eval_set, per_batch = real_build(*args, **kwargs)
        return TermAtRead(train_set, at=3 * 16 + 5), eval_set, per_batch  # in step 4 (global batch 16)

    monkeypatch.setattr(test_train, "build_datasets", build_with_term)
    cfg = config("recipe=vpgc_toy", f"output_dir={tmp_path / 'b'}", *FAST, *steps)
    with pytest.raises(TrainingStopped, match=r"stopped by SIGTERM after step 4.*resume=auto") as stopped:
        run_training(cfg)
    assert stopped.value.checkpoint == tmp_path / "b" / "checkpoints" / "step_000004"
    assert load_checkpoint(latest_checkpoint(tmp_path / "b" / "checkpoints"))["trainer_state"]["step"] == 4
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is removed again

    monkeypatch.setattr(test_train, "build_datasets", real_build)
    resumed_model, resumed = run_training(
        config("recipe=vpgc_toy", f"output_dir={tmp_path / 'b'}", *FAST, *steps, "resume=auto")
    )
    a, b = _weights(straight_model), _weights(resumed_model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.losses == straight.losses and resumed.step == 8
    log = (tmp_path / "b" / "train.log").read_text()
    assert "stopped by SIGTERM after step 4" in log and "resumed from" in log


def test_skips_count_distinct_samples_not_draws(tmp_path):
    """One bad sample in four, drawn in every one of 6 batches of 4: one skip, through resume too."""
    path = toy_jsonl_with_a_missing_image(tmp_path, n=4, missing=2)
    source = f"data.train=[{{name: files, format: jsonl, path: {path}, images: {tmp_path}}}]"
    common = (
        "recipe=vpgc_toy",
        f"output_dir={tmp_path / 'run'}",
        "trainer.global_batch_size=4",
        "trainer.log_with=null",
        "trainer.save_every=3",
        "data.eval=[]",
        "data.skip_bad_samples=true",
        source,
    )
    _, result = run_training(config(*common, "trainer.max_steps=3"))
    assert result.skipped == {"missing_image": 1}
    _, result = run_training(config(*common, "trainer.max_steps=6", "resume=auto"))
    assert result.skipped == {"missing_image": 1}
    state = load_checkpoint(latest_checkpoint(tmp_path / "run" / "checkpoints"))["trainer_state"]
    assert state["skipped"] == {"missing_image": 1}
    assert [len(ids) for ids in state["skipped_samples"].values()] == [1]


def test_the_run_writes_a_real_log(tmp_path):
    from vpgkit.train import run

    cfg = config(
        "recipe=vpgc_toy", f"output_dir={tmp_path}", "trainer.max_steps=4", "trainer.log_every=2", *FAST
    )
    run(cfg)
    log = (tmp_path / "train.log").read_text()
    for expected in ("training vpgc_toy: 4 steps", "step 2: loss", "step 4: loss", "checkpoint", "adapter:"):
        assert expected in log, (expected, log)


@pytest.mark.slow
def test_kill_term_on_the_command_line_checkpoints_and_exits_143(tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "vpgkit.train", "recipe=vpgc_toy", f"output_dir={out}", *FAST]
    # Far more steps than can run before the signal: no race with the end of training.
    proc = subprocess.Popen(
        [*args, "trainer.max_steps=1000000", "trainer.save_every=0", "trainer.log_every=1"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = out / "train.log"
    while proc.poll() is None and not (log.is_file() and "step 2: loss" in log.read_text()):
        time.sleep(0.1)  # polling interval only; nothing depends on how long a step takes
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate()
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "stopped by SIGTERM" in stderr and "resume=auto" in stderr
    step = json.loads((out / "checkpoints" / "latest.json").read_text())["step"]
    assert step >= 2
    assert sorted(load_file(out / "checkpoints" / f"step_{step:06d}" / "trainable.safetensors"))
