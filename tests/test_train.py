"""The training entry point and loop: recipes, learning, exact resume, atomic checkpoints, bad config."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException
from safetensors.torch import load_file
from toy_files import toy_jsonl_with_a_missing_image
from train_cli import run_train, torchrun

from vpgkit.config import TrainConfig, register_schema, to_train_config
from vpgkit.data import Collator
from vpgkit.training import state as state_module
from vpgkit.training.build import build_model
from vpgkit.training.datasets import build_datasets
from vpgkit.training.loop import default_sampler, train
from vpgkit.training.state import latest_checkpoint, load_checkpoint

FAST = ["trainer.log_with=null", "data.train.0.options.count=64", "data.eval=[]"]


def config(*overrides: str) -> TrainConfig:
    register_schema()
    with initialize_config_module(config_module="vpgkit.recipes", version_base=None):
        cfg = compose(config_name="train", overrides=list(overrides))
    return to_train_config(cfg)


def run_training(cfg: TrainConfig):
    model, tokenizer = build_model(cfg.model, cfg.seed)
    train_set, eval_set, per_batch = build_datasets(cfg.data, tokenizer, model)
    collate = Collator(pad_token_id=tokenizer.pad_token_id, image_size=model.vision.image_size)
    sampler = default_sampler(train_set, cfg.trainer.global_batch_size, cfg.seed, per_batch)
    return model, train(cfg, model, train_set, collate, eval_set, batch_sampler=sampler)


@pytest.mark.parametrize("recipe", ["vpgc_toy", "blip2", "otter"])
def test_recipe_trains_only_its_adapter_and_the_loss_falls(recipe, tmp_path):
    cfg = config(f"recipe={recipe}", f"output_dir={tmp_path}", "trainer.max_steps=30", *FAST)
    model, tokenizer = build_model(cfg.model, cfg.seed)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in model.trainable_parameters().items()}
    train_set, _, _ = build_datasets(cfg.data, tokenizer, model)
    collate = Collator(pad_token_id=tokenizer.pad_token_id, image_size=model.vision.image_size)
    result = train(cfg, model, train_set, collate)
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < first - 0.1, (first, last)
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert all(not torch.equal(p, trainable[n]) for n, p in model.trainable_parameters().items())
    assert (tmp_path / "checkpoints" / "step_000030" / "trainable.safetensors").is_file()


def test_otter_recipe_trains_the_added_token_rows_like_openflamingo():
    cfg = config("recipe=otter")
    model, tokenizer = build_model(cfg.model, cfg.seed)
    parts = {n.split(".")[0] for n in model.trainable_parameters()}
    assert parts == {"perceiver", "cross_attention", "added_tokens"}
    ids = tokenizer.convert_tokens_to_ids(["<image>", "<|endofchunk|>"])
    assert model.added_tokens.config.ids == ids
    embed = model.llm.get_input_embeddings().weight
    assert not embed.requires_grad and torch.equal(model.added_tokens.input_rows, embed[ids])


def test_vpgc_recipe_trains_only_vpgc():
    cfg = config("recipe=vpgc_toy")
    model, _ = build_model(cfg.model, cfg.seed)
    assert {n.split(".")[0] for n in model.trainable_parameters()} == {"vpgc"}


def test_main_job_writes_an_adapter_from_any_directory(tmp_path):
    out = tmp_path / "run"
    proc = run_train("recipe=vpgc_toy", f"output_dir={out}", "trainer.max_steps=6", *FAST, cwd=tmp_path)
    assert "recipe vpgc_toy: 6 steps on 1 process(es)" in proc.stdout
    assert (out / "loss_curve.png").read_bytes().startswith(b"\x89PNG")
    config_json = json.loads((out / "adapter" / "vpgkit_config.json").read_text())
    assert config_json["modules"]["vpgc"] is not None
    weights = load_file(out / "adapter" / "adapter.safetensors")
    assert sorted(weights) == [
        "vpgc.guidance_proj.bias",
        "vpgc.guidance_proj.weight",
        "vpgc.output_proj.bias",
        "vpgc.output_proj.weight",
        "vpgc.query_tokens",
    ]


def test_unknown_or_mistyped_keys_are_rejected_by_name():
    with pytest.raises(ConfigCompositionException, match=r"Could not override 'optim\.learning_rate'"):
        config("optim.learning_rate=0.1")
    with pytest.raises(ValueError, match=r"unknown config key 'optim\.learning_rate'"):
        config("+optim.learning_rate=0.1")
    with pytest.raises(ValueError, match=r"unknown config key 'data\.train\.0\.pth'"):
        config("+data.train.0.pth=x")
    with pytest.raises(ConfigCompositionException, match="max_steps"):
        config("trainer.max_steps=many")
    with pytest.raises(ConfigCompositionException, match="recipe"):
        config("recipe=no_such_recipe")


def trained_weights(tmp_path: Path, name: str, *overrides: str) -> dict[str, torch.Tensor]:
    cfg = config("recipe=vpgc_toy", f"output_dir={tmp_path / name}", *FAST, *overrides)
    model, _ = run_training(cfg)
    return {n: p.detach().clone() for n, p in model.trainable_parameters().items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> None:
    assert sorted(a) == sorted(b)
    for name, w in a.items():
        torch.testing.assert_close(b[name], w, rtol=1e-5, atol=atol)


def test_gradient_accumulation_gives_the_same_adapter(tmp_path):
    """One global batch of 16 in one micro-batch or in 4: the same weights (token-count normalisation)."""
    steps = "trainer.max_steps=4"
    one = trained_weights(tmp_path, "one", steps, "trainer.gradient_accumulation_steps=1")
    four = trained_weights(tmp_path, "four", steps, "trainer.gradient_accumulation_steps=4")
    assert_same_weights(one, four, atol=1e-6)


def test_a_failed_checkpoint_write_leaves_the_previous_one_loadable(tmp_path, monkeypatch):
    cfg = config(
        "recipe=vpgc_toy", f"output_dir={tmp_path}", "trainer.max_steps=4", "trainer.save_every=2", *FAST
    )
    real_save = state_module.save_file

    def failing_save(tensors, path, *args, **kwargs):
        if "step_000004" in str(path) and str(path).endswith("optimizer.safetensors"):
            raise OSError("disk full (simulated)")
        return real_save(tensors, path, *args, **kwargs)

    monkeypatch.setattr(state_module, "save_file", failing_save)
    with pytest.raises(OSError, match="simulated"):
        run_training(cfg)
    latest = latest_checkpoint(tmp_path / "checkpoints")
    assert latest.name == "step_000002"
    assert load_checkpoint(latest)["trainer_state"]["step"] == 2
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))


def _launch(out: Path, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "vpgkit.train", "recipe=vpgc_toy", f"output_dir={out}", *FAST, *extra]
    return subprocess.Popen(args, cwd=out.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_sigkill_then_resume_auto_equals_an_uninterrupted_run(tmp_path):
    common = ("trainer.max_steps=12", "trainer.save_every=3")
    straight = _launch(tmp_path / "straight", *common)
    assert straight.wait(timeout=600) == 0, straight.stdout.read()[-3000:]

    killed = tmp_path / "killed"
    proc = _launch(killed, *common)
    deadline = time.time() + 600
    while latest_step(killed) < 6 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 6 <= latest_step(killed) < 12
    resumed = _launch(killed, *common, "resume=auto")
    output = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, output[-3000:]
    assert "resumed from" in output

    a = load_file(tmp_path / "straight" / "adapter" / "adapter.safetensors")
    b = load_file(killed / "adapter" / "adapter.safetensors")
    assert sorted(a) == sorted(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = [
        load_checkpoint(latest_checkpoint(d / "checkpoints"))["trainer_state"]["losses"]
        for d in (tmp_path / "straight", killed)
    ]
    assert losses[0] == losses[1]


def latest_step(out: Path) -> int:
    try:
        return json.loads((out / "checkpoints" / "latest.json").read_text())["step"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


@pytest.mark.slow
def test_two_processes_give_the_same_adapter_as_one(tmp_path):
    """torchrun with 2 CPU processes (gloo, DDP) against one process, same global batch: ≤ 1e-5."""
    args = ["recipe=vpgc_toy", "trainer.max_steps=4", *FAST]
    run_train(*args, f"output_dir={tmp_path / 'one'}", cwd=tmp_path)
    two = subprocess.run(
        [*torchrun(2, 29517), "-m", "vpgkit.train", *args, f"output_dir={tmp_path / 'two'}"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert two.returncode == 0, (two.stdout + two.stderr)[-3000:]
    assert "on 2 process(es)" in two.stdout
    a = load_file(tmp_path / "one" / "adapter" / "adapter.safetensors")
    b = load_file(tmp_path / "two" / "adapter" / "adapter.safetensors")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-5)
        assert not torch.equal(a[key], torch.zeros_like(a[key]))


@pytest.mark.slow
def test_installed_wheel_runs_the_main_job_from_another_directory(tmp_path):
    """A non-editable wheel carries the recipes: the job runs with the source tree nowhere on the path."""
    root = Path(__file__).resolve().parents[1]
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheels), str(root)], check=True, timeout=600)
    wheel = next(wheels.glob("vpgkit-*.whl"))
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True, timeout=600
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run(
        [sys.executable, "-c", "import vpgkit; print(vpgkit.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.stdout.startswith(str(target)), where.stdout + where.stderr
    out = tmp_path / "run"
    run_train("recipe=vpgc_toy", f"output_dir={out}", "trainer.max_steps=2", *FAST, cwd=tmp_path, env=env)
    assert (out / "adapter" / "adapter.safetensors").is_file()


def test_feature_cache_trains_the_same_adapter_and_skips_the_encoder(tmp_path):
    weights = []
    for cached in (False, True):
        extra = [f"data.feature_cache={tmp_path / 'cache'}"] if cached else []
        cfg = config(
            "recipe=vpgc_toy", f"output_dir={tmp_path / str(cached)}", "trainer.max_steps=3", *FAST, *extra
        )
        model, tokenizer = build_model(cfg.model, cfg.seed)
        train_set, _, _ = build_datasets(cfg.data, tokenizer, model)
        calls = []
        model.vision.register_forward_hook(lambda *a, calls=calls: calls.append(1))
        collate = Collator(pad_token_id=tokenizer.pad_token_id, image_size=model.vision.image_size)
        train(cfg, model, train_set, collate)
        assert bool(calls) != cached  # with the cache, training never runs the encoder
        weights.append({n: p.detach().clone() for n, p in model.trainable_parameters().items()})
    assert list((tmp_path / "cache").glob("shard-*.safetensors"))
    for name, w in weights[0].items():
        torch.testing.assert_close(weights[1][name], w, rtol=1e-5, atol=1e-6)


def test_gradient_checkpointing_gives_the_same_gradients(tmp_path):
    plain = trained_weights(tmp_path, "plain", "trainer.max_steps=2")
    checkpointed = trained_weights(
        tmp_path, "ckpt", "trainer.max_steps=2", "trainer.gradient_checkpointing=true"
    )
    assert_same_weights(plain, checkpointed, atol=1e-7)


def test_bf16_backbones_and_autocast_train(tmp_path):
    cfg = config(
        "recipe=vpgc_toy",
        f"output_dir={tmp_path}",
        "trainer.max_steps=3",
        "model.backbone_dtype=bfloat16",
        "trainer.mixed_precision=bf16",
        *FAST,
    )
    model, result = run_training(cfg)
    assert all(p.dtype == torch.float32 for p in model.trainable_parameters().values())
    assert model.llm.dtype == torch.bfloat16
    assert all(map(math.isfinite, result.losses))


def test_a_relative_image_root_is_resolved_once(tmp_path, monkeypatch):
    """`images: data` with relative paths in the file (as the default job writes under outputs/vpgc/data)."""
    (tmp_path / "data").mkdir()
    toy_jsonl_with_a_missing_image(tmp_path / "data", n=32, missing=5)
    monkeypatch.chdir(tmp_path)
    source = "data.train=[{name: files, format: jsonl, path: data/train.jsonl, images: data}]"
    cfg = config("recipe=vpgc_toy", "output_dir=run", "data.eval=[]", source)
    model, tokenizer = build_model(cfg.model, cfg.seed)
    train_set, _, _ = build_datasets(cfg.data, tokenizer, model)
    item = train_set.datasets["files"][0]
    assert item["pixel_values"].shape[0] == 1


@pytest.mark.parametrize("skip", [False, True])
def test_bad_samples_stop_the_run_by_name_or_are_skipped_and_counted(tmp_path, skip):
    path = toy_jsonl_with_a_missing_image(tmp_path, n=32, missing=5)
    source = f"data.train=[{{name: files, format: jsonl, path: {path}, images: {tmp_path}}}]"
    cfg = config(
        "recipe=vpgc_toy",
        f"output_dir={tmp_path / 'run'}",
        "trainer.max_steps=4",
        "trainer.global_batch_size=16",
        "trainer.log_with=null",
        "data.eval=[]",
        source,
        f"data.skip_bad_samples={skip}",
    )
    if not skip:
        with pytest.raises(ValueError, match=r"does_not_exist\.png"):
            run_training(cfg)
        return
    _, result = run_training(cfg)
    assert result.skipped.get("missing_image", 0) >= 1
    state = load_checkpoint(latest_checkpoint(tmp_path / "run" / "checkpoints"))["trainer_state"]
    assert state["skipped"] == result.skipped


def test_training_ends_with_demon_evaluation_when_asked(tmp_path):
    from test_evaluate_cases import detail_task, difference_task

    tasks = [difference_task(tmp_path / "demon" / "diff"), detail_task(tmp_path / "demon" / "detail")]
    cfg = config(
        "recipe=vpgc_toy",
        f"output_dir={tmp_path / 'run'}",
        "trainer.max_steps=2",
        *FAST,
        f"evaluate.demon=[{tasks[0]},{tasks[1]}]",
        "evaluate.max_new_tokens=4",
    )
    from vpgkit.train import run

    run(cfg)
    results = json.loads((tmp_path / "run" / "eval" / "results.json").read_text())
    assert set(results["tasks"]) and results["generated"] == 6


def test_init_adapter_starts_training_from_a_saved_adapter_and_refuses_one_that_does_not_fit(tmp_path):
    from vpgkit.checkpoints import CheckpointError, save_adapter

    cfg = config("recipe=vpgc_toy", *FAST)
    trained, _ = build_model(cfg.model, cfg.seed)
    with torch.no_grad():
        for p in trained.trainable_parameters().values():
            p.normal_(std=0.1)
    save_adapter(trained, tmp_path / "adapter")
    fresh, _ = build_model(cfg.model, cfg.seed)
    warm, _ = build_model(
        config("recipe=vpgc_toy", f"model.init_adapter={tmp_path / 'adapter'}", *FAST).model
    )
    want = trained.trainable_parameters()
    assert want.keys() == warm.trainable_parameters().keys()
    assert all(torch.equal(p, want[n]) for n, p in warm.trainable_parameters().items())
    assert not any(torch.equal(p, want[n]) for n, p in fresh.trainable_parameters().items())
    with pytest.raises(CheckpointError, match="layer"):  # another VPG-C layer: the configs differ
        build_model(
            config(
                "recipe=vpgc_toy", "model.vpgc_layer=0", f"model.init_adapter={tmp_path / 'adapter'}"
            ).model
        )
