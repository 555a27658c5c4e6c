"""The CPU thread policy (vpgkit.threads): quiet machine → torch's default, a busy core → fewer threads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from vpgkit import threads


def test_quiet_machine_keeps_torch_default():
    assert threads.choose_threads(default=2, usable_cores=2.0, busy_cores=0.0) == 2
    assert threads.choose_threads(default=2, usable_cores=2.0, busy_cores=0.3) == 2
    assert threads.choose_threads(default=8, usable_cores=16.0, busy_cores=2.0) == 8


def test_busy_cores_are_left_to_their_owners():
    assert threads.choose_threads(default=2, usable_cores=2.0, busy_cores=0.9) == 1
    assert threads.choose_threads(default=2, usable_cores=2.0, busy_cores=2.0) == 1  # never 0
    assert threads.choose_threads(default=8, usable_cores=8.0, busy_cores=3.2) == 5
    assert threads.choose_threads(default=8, usable_cores=3.0, busy_cores=0.0) == 3  # affinity / quota


def test_an_explicit_count_is_obeyed(monkeypatch):
    assert threads.choose_threads(default=2, usable_cores=2.0, busy_cores=2.0, explicit=3) == 3
    monkeypatch.setenv("VPGKIT_NUM_THREADS", "1")
    assert threads._explicit_threads() == 1
    monkeypatch.setenv("VPGKIT_NUM_THREADS", "many")
    with pytest.raises(ValueError, match="VPGKIT_NUM_THREADS='many'"):
        threads._explicit_threads()


def test_the_policy_can_be_switched_off(monkeypatch):
    import torch

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setenv("VPGKIT_THREAD_POLICY", "off")
    monkeypatch.setenv("VPGKIT_NUM_THREADS", "1")
    threads.prefer_passive_waiting()
    assert "OMP_WAIT_POLICY" not in os.environ
    assert threads.apply_thread_policy() == torch.get_num_threads()


def test_busy_cores_reads_proc():
    busy = threads.busy_cores(sample_seconds=0.05)
    assert 0.0 <= busy <= (os.cpu_count() or 1)
    assert 1.0 <= threads.usable_cores() <= (os.cpu_count() or 1)


def test_import_prefers_passive_waiting_and_apply_sets_threads():
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env["VPGKIT_NUM_THREADS"] = "1"
    code = (
        "import os, vpgkit, torch; from vpgkit.threads import apply_thread_policy; "
        "print(os.environ['OMP_WAIT_POLICY'], apply_thread_policy(), torch.get_num_threads())"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["PASSIVE", "1", "1"]
    env["OMP_WAIT_POLICY"] = "ACTIVE"  # a user's choice is kept
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == "ACTIVE"
