"""The default job's frozen-feature cache (on in ``data/tiny_world``): bitwise the losses and adapter of
encoding the images every step, so the science runs on ``recipe=vpgc`` keep their numbers."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.utils import call

from vpgkit.config import register_schema, to_train_config
from vpgkit.data.collation import Collator
from vpgkit.training.build import build_model
from vpgkit.training.datasets import build_datasets
from vpgkit.training.loop import default_sampler, train


def _config(out, *overrides):
    register_schema()
    with initialize_config_module(config_module="vpgkit.recipes", version_base=None):
        return to_train_config(
            compose(config_name="train", overrides=["recipe=vpgc", f"output_dir={out}", *overrides])
        )


def test_default_recipe_turns_the_cache_on_in_its_output_dir(tmp_path):
    assert _config(tmp_path).data.feature_cache == f"{tmp_path}/feature_cache"
    assert _config(tmp_path, "data=tiny_world_captions").data.feature_cache == f"{tmp_path}/feature_cache"
    assert _config(tmp_path, "data.feature_cache=null").data.feature_cache is None


@pytest.mark.slow
def test_default_job_with_the_cache_is_bitwise_the_job_without(tmp_path):
    short = [
        "trainer.max_steps=6",
        "trainer.save_every=0",
        "trainer.log_with=null",
        "data.prepare.n_images=48",
        "data.prepare.n_edits=24",
        "data.prepare.n_eval=2",
    ]
    runs = {}
    for cached in (False, True):
        out = tmp_path / "run"  # one data folder; two caches / no cache
        cfg = _config(out, *short, *([] if cached else ["data.feature_cache=null"]))
        if not cached:
            call(cfg.data.prepare)
        model, tokenizer = build_model(cfg.model, cfg.seed)
        train_set, _, per_batch = build_datasets(cfg.data, tokenizer, model)
        assert any("vision_features" in train_set[i] for i in range(4)) == cached
        collate = Collator(pad_token_id=tokenizer.pad_token_id, image_size=model.vision.image_size)
        sampler = default_sampler(train_set, cfg.trainer.global_batch_size, cfg.seed, per_batch)
        result = train(cfg, model, train_set, collate, batch_sampler=sampler)
        runs[cached] = result.losses, {n: p.detach().clone() for n, p in model.trainable_parameters().items()}
    assert runs[True][0] == runs[False][0]
    for name, weight in runs[False][1].items():
        assert torch.equal(weight, runs[True][1][name]), name


@pytest.mark.parametrize("threads", [1, 2])
def test_world_vit_features_do_not_depend_on_the_batching(tmp_path, threads):
    """Why the cache is exact: the frozen ViT gives bitwise the same features for an image whether it is
    encoded alone, in the cache's batches of 32 or in a training batch of 24 — at 1 and at 2 threads."""
    model, _ = build_model(_config(tmp_path).model, 0)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        images = torch.rand(64, 1, 3, 56, 56, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            whole = model.vision(images)
            for size in (1, 24, 32):
                parts = torch.cat([model.vision(images[i : i + size]) for i in range(0, 64, size)])
                assert torch.equal(parts, whole), size
    finally:
        torch.set_num_threads(before)
