"""What `python -m vpgkit.train` says to a user: --help, configuration mistakes (issue 16, item 7)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from vpgkit.launch import CONFIGS, config_path


def _train(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vpgkit.train", *args], cwd=cwd, capture_output=True, text=True
    )


def test_help_lists_only_selectable_groups_and_points_to_the_accelerate_configs(tmp_path):
    proc = _train("--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    groups = proc.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    names = {line.split(":")[0] for line in groups.splitlines() if ":" in line and "group=option" not in line}
    assert names == {"data", "model", "optim", "recipe", "trainer"}
    assert "python -m vpgkit.launch ddp_gpu" in proc.stdout
    for name in CONFIGS:
        assert yaml.safe_load(config_path(name).read_text())["compute_environment"] == "LOCAL_MACHINE"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+optim.learning_rate=0.1", "unknown config key 'optim.learning_rate'"),
        ("trainer.max_steps=0", "trainer.max_steps=0: nothing would be trained"),
    ],
)
def test_config_mistakes_are_one_line_without_a_traceback(tmp_path, override, message):
    proc = _train("recipe=vpgc_toy", f"output_dir={tmp_path / 'run'}", override, cwd=tmp_path)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "HYDRA_FULL_ERROR" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and message in proc.stderr
