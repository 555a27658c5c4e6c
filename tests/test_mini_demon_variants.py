"""The mini-DEMON table's variants compose to the training configs they claim: a variant that sets the
synthetic task mix gets exactly that mix, not the recipe's mix with one weight changed."""

from __future__ import annotations

import pytest
from benchmark_script import load_benchmark
from hydra import compose, initialize_config_module

from vpgkit.config import register_schema


@pytest.fixture(scope="module")
def table():
    return load_benchmark("mini_demon_table")


def _tasks(overrides: list[str]) -> dict[str, float]:
    register_schema()
    with initialize_config_module(config_module="vpgkit.recipes", version_base=None):
        cfg = compose(config_name="train", overrides=["recipe=vpgc", *overrides])
    return dict(cfg.data.prepare.tasks)


def test_every_variant_composes_and_task_mixes_are_exact(table, tmp_path):
    recipe = _tasks([])
    assert len(recipe) > 1  # the recipe has a mix of its own, which the variants below must replace
    mixes = [
        (("f", "g", "f3k", "g3k", "d3k", "h3k", "w3k", "xq", "xqe"), {"detail_question": 1.0}),
        (("x", "xe"), {"difference": 1.0}),
        (("xm", "xme"), {"difference": 0.4, "which_image": 0.2, "detail_question": 0.4}),
    ]
    expected = {name: mix for names, mix in mixes for name in names}
    for name, (_, overrides) in table.VARIANTS.items():
        tasks = _tasks([o.replace("{out}", str(tmp_path)) for o in overrides])
        assert tasks == expected.get(name, recipe), name
