"""`python -m vpgkit.publish RUN_DIR [REPO_ID] [--local-dir DIR]` on a real training run (issue 16, item 1)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import hub_double
import pytest
import torch
from test_evaluate_cases import detail_task, difference_task
from train_cli import run_train

from vpgkit.checkpoints import load_adapter
from vpgkit.checkpoints.publish import main
from vpgkit.evaluate import load_run
from vpgkit.evaluation import evaluate_demon
from vpgkit.training.datasets import sample_tokenizer

FAST = ["trainer.log_with=null", "data.train.0.options.count=64", "data.eval=[]"]


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory):
    """A run as `python -m vpgkit.train` leaves it, with a DEMON evaluation at the end."""
    root = tmp_path_factory.mktemp("publish")
    tasks = [difference_task(root / "demon" / "diff"), detail_task(root / "demon" / "detail")]
    run_train(
        "recipe=vpgc_toy",
        f"output_dir={root / 'run'}",
        "trainer.max_steps=6",
        *FAST,
        f"evaluate.demon=[{tasks[0]},{tasks[1]}]",
        "evaluate.max_new_tokens=4",
        cwd=root,
    )
    return root / "run", root / "demon"


def _predictions(model, tokenizer, cfg, demon) -> list[str]:
    st = sample_tokenizer(dataclasses.replace(cfg.data, max_length=250), tokenizer, model)
    done = evaluate_demon(model, tokenizer, st, [demon], max_new_tokens=6, batch_size=2, progress=False)
    return [r["prediction"] for r in done["predictions"]]


def test_publish_a_run_to_a_local_folder_and_load_it_back(evaluated_run, tmp_path):
    run, demon = evaluated_run
    done = subprocess.run(
        [sys.executable, "-m", "vpgkit.publish", str(run), "--local-dir", str(tmp_path / "pub")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    card = (tmp_path / "pub" / "README.md").read_text()
    results = json.loads((run / "eval" / "results.json").read_text())
    for key, category in results["categories"].items():
        assert f"| DEMON {key} ({category['metric']}) | {category['score']:.2f} |" in card
    assert "- recipe: vpgc_toy" in card and "| training steps | 6 |" in card

    trained, tokenizer, cfg, _ = load_run(run)
    fresh, _, _, _ = load_run(run, base_only=True)
    load_adapter(fresh, tmp_path / "pub")
    a, b = trained.trainable_parameters(), fresh.trainable_parameters()
    assert all(torch.equal(a[k], b[k]) for k in a) and any(bool(p.abs().sum()) for p in a.values())
    assert _predictions(fresh, tokenizer, cfg, demon) == _predictions(trained, tokenizer, cfg, demon)


def test_the_adapter_folder_of_a_run_publishes_the_run_in_a_dry_run(evaluated_run, capsys):
    run, _ = evaluated_run
    assert main([str(run / "adapter"), "me/x", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "adapter.safetensors" in out and "# me/x" in out and "DEMON" in out
    assert not (run / "adapter" / "README.md").exists()  # a dry run writes nothing


def test_upload_of_a_run_reaches_the_hub_with_its_card(evaluated_run, monkeypatch, capsys):
    run, _ = evaluated_run
    hub = hub_double.start()
    try:
        monkeypatch.setenv("HF_TOKEN", "hf_test")
        assert main([str(run), "me/run", "--endpoint", hub.endpoint]) == 0
    finally:
        hub.server.shutdown()
    assert "uploaded to me/run" in capsys.readouterr().out
    commit = [json.loads(line) for line in hub.requests[-1].body.decode().splitlines()]
    paths = {c["value"]["path"] for c in commit if c["key"] == "file"}
    assert paths == {"README.md", "adapter.safetensors", "vpgkit_config.json"}


def test_failures_are_one_line_errors(evaluated_run, tmp_path, capsys):
    run, _ = evaluated_run
    closed = "http://127.0.0.1:9"  # the discard port: nothing listens there
    assert main([str(run), "me/x", "--endpoint", closed]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("vpgkit.publish: upload to me/x failed: ") and "\n" not in err
    assert main([str(tmp_path), "--local-dir", str(tmp_path / "pub")]) == 2
    err = capsys.readouterr().err.strip()
    assert "neither a training run" in err and "\n" not in err
    assert main([str(run)]) == 2
    assert "give REPO_ID to upload, --local-dir DIR" in capsys.readouterr().err
