"""`python -m vpgkit.evaluate` end to end: a tiny random run directory and a tiny DEMON-layout folder."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from test_evaluate_cases import detail_task, difference_task

from vpgkit.checkpoints import save_adapter
from vpgkit.config import register_schema, to_train_config
from vpgkit.data import DataError, SampleTokenizer
from vpgkit.evaluate import main
from vpgkit.evaluation import evaluate_demon
from vpgkit.training.build import build_model
from vpgkit.training.datasets import sample_tokenizer

ARGS = ["--max-new-tokens", "6", "--batch-size", "4", "--no-progress"]


@pytest.fixture(scope="module")
def run_and_demon(tmp_path_factory):
    """A run directory as `vpgkit.train` leaves it (config + adapter with non-zero VPG-C weights)."""
    root = tmp_path_factory.mktemp("evaluate")
    run = root / "run"
    register_schema()
    with initialize_config_module(config_module="vpgkit.recipes", version_base=None):
        composed = compose(config_name="train", overrides=["recipe=vpgc_toy", f"output_dir={run}"])
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(composed))
    cfg = to_train_config(composed)
    model, tokenizer = build_model(cfg.model, cfg.seed)
    torch.manual_seed(5)
    with torch.no_grad():
        for p in model.trainable_parameters().values():
            p.normal_(std=0.5)
    save_adapter(model, run / "adapter")
    difference_task(root / "demon" / "Spot-the-Diff", count=3)
    detail_task(root / "demon" / "detail_qa", count=4)
    return run, root / "demon", (model, tokenizer, cfg)


def test_help_runs():
    proc = subprocess.run([sys.executable, "-m", "vpgkit.evaluate", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--base-only" in proc.stdout and "--demon" in proc.stdout


def test_cli_writes_results_resumes_and_matches_the_in_memory_model(run_and_demon, tmp_path):
    run, demon, (model, tokenizer, cfg) = run_and_demon
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vpgkit.evaluate",
            "--run",
            str(run),
            "--demon",
            str(demon),
            "--out",
            str(out),
            "--per-task",
            *ARGS,
        ],
        capture_output=True,
        text=True,  # no timeout: on a loaded machine a fixed wall-clock limit failed a correct run
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "VRI  Visual Relation Inference" in proc.stdout and "Detail QA" in proc.stdout
    assert "  Spot-the-Diff" in proc.stdout and "7 generated, 0 reused" in proc.stdout

    results = json.loads(out.read_text())
    assert set(results) >= {"categories", "tasks", "predictions", "settings", "config"}
    assert set(results["categories"]) == {"VRI", "Detail QA"}
    assert results["tasks"]["Spot-the-Diff"]["count"] == 3 and results["tasks"]["detail_qa"]["count"] == 4
    records = results["predictions"]
    assert len(records) == 7 and all(isinstance(r["prediction"], str) for r in records)
    assert all(0.0 <= r["score"] <= 1.0 for r in records)
    assert {r["choice_rule"] for r in records if r["task"] == "detail_qa"} <= {
        "exact",
        "letter",
        "overlap",
        "none",
    }
    vri = results["tasks"]["Spot-the-Diff"]["score"]
    assert vri == pytest.approx(100 * sum(r["score"] for r in records[:3]) / 3)
    assert results["config"]["adapter"] and results["config"]["train_config"]["model"]["vpgc"] == "tiny"

    # The CLI rebuilt the same backbones and loaded the same adapter: the in-memory model agrees.
    st = sample_tokenizer(cfg.data, tokenizer, model)
    st = SampleTokenizer(
        tokenizer, "vicuna_v0", model.image_token_id, num_queries=st.slots.num_queries, max_length=250
    )
    direct = evaluate_demon(model, tokenizer, st, [demon], max_new_tokens=6, batch_size=1, progress=False)
    assert [r["prediction"] for r in direct["predictions"]] == [r["prediction"] for r in records]

    # Resume: a second run generates nothing; after losing two predictions it generates exactly two.
    again = main(["--run", str(run), "--demon", str(demon), "--out", str(out), *ARGS])
    assert (again["generated"], again["reused"]) == (0, 7)
    assert again["predictions"] == records
    predictions = tmp_path / "results.predictions.jsonl"
    lines = predictions.read_text().splitlines()
    predictions.write_text("\n".join(lines[:-2]) + "\n")
    resumed = main(["--run", str(run), "--demon", str(demon), "--out", str(out), *ARGS])
    assert (resumed["generated"], resumed["reused"]) == (2, 5)
    assert resumed["predictions"] == records  # deterministic: the regenerated answers are the same


def test_base_only_skips_the_adapter_and_keeps_its_own_predictions(run_and_demon, tmp_path):
    run, demon, _ = run_and_demon
    out = tmp_path / "base.json"
    base = main(
        [
            "--run",
            str(run),
            "--base-only",
            "--demon",
            str(demon / "detail_qa"),
            "--out",
            str(out),
            "--limit",
            "2",
            *ARGS,
        ]
    )
    assert base["config"]["adapter"] is None and base["generated"] == 2
    assert [r["task"] for r in base["predictions"]] == ["detail_qa", "detail_qa"]
    assert json.loads(out.read_text())["settings"]["limit"] == 2
    full = main(
        [
            "--run",
            str(run),
            "--demon",
            str(demon / "detail_qa"),
            "--out",
            str(tmp_path / "a.json"),
            "--limit",
            "2",
            *ARGS,
        ]
    )
    assert [r["prediction"] for r in full["predictions"]] != [r["prediction"] for r in base["predictions"]]


def test_bad_inputs_fail_with_clear_messages(run_and_demon, tmp_path):
    run, demon, (model, tokenizer, _) = run_and_demon
    with pytest.raises(FileNotFoundError, match=r"no \.hydra/config\.yaml"):
        main(["--run", str(tmp_path), "--demon", str(demon), *ARGS])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        main(["--run", str(run), "--demon", str(tmp_path / "nope"), *ARGS])
    short = SampleTokenizer(tokenizer, "vicuna_v0", model.image_token_id, num_queries=4, max_length=20)
    with pytest.raises(DataError, match=r"7 prompt\(s\) longer than max_length 20.*--max-length"):
        evaluate_demon(model, tokenizer, short, [demon], progress=False)


def test_a_warm_started_run_loads_without_its_warm_start_and_its_base_is_the_base(run_and_demon, tmp_path):
    """A run trained with model.init_adapter: its own adapter replaces the warm start, --base-only gives the
    model's own init, and neither needs the warm-start directory (moved or deleted after training)."""
    from omegaconf import OmegaConf

    from vpgkit.evaluate import load_run

    run, _, (trained, _, cfg) = run_and_demon
    warm_run = tmp_path / "warm_run"
    (warm_run / ".hydra").mkdir(parents=True)
    config = OmegaConf.load(run / ".hydra" / "config.yaml")
    config.model.init_adapter = str(tmp_path / "deleted_warm_start")
    (warm_run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(config))
    (warm_run / "adapter").symlink_to(run / "adapter")
    model, _, loaded_cfg, _ = load_run(warm_run)
    assert loaded_cfg.model.init_adapter == str(tmp_path / "deleted_warm_start")  # the record is kept
    want = trained.trainable_parameters()
    assert all(torch.equal(p, want[n]) for n, p in model.trainable_parameters().items())
    base, _, _, _ = load_run(warm_run, base_only=True)
    fresh, _ = build_model(cfg.model, cfg.seed)
    init = fresh.trainable_parameters()
    assert all(torch.equal(p, init[n]) for n, p in base.trainable_parameters().items())


def test_answer_length_defaults_to_the_runs_own_setting(run_and_demon, tmp_path):
    """Without --max-new-tokens a (base-only) evaluation answers under the run's evaluate.max_new_tokens, the
    limit of its end-of-training evaluation, so base and adapter scores of one run are comparable."""
    run, demon, (_, _, cfg) = run_and_demon
    args = [
        "--run",
        str(run),
        "--base-only",
        "--demon",
        str(demon / "detail_qa"),
        "--limit",
        "1",
        "--no-progress",
    ]
    default = main([*args, "--out", str(tmp_path / "default.json")])
    assert default["settings"]["max_new_tokens"] == cfg.evaluate.max_new_tokens != 32
    given = main([*args, "--out", str(tmp_path / "given.json"), "--max-new-tokens", "5"])
    assert given["settings"]["max_new_tokens"] == 5
