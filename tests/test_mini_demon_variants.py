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


DETAIL = ("difference", "which_image", "detail_question", "cloze")


def _run(variant: str, seed: int, score: float, blank: float = 20.0) -> dict:
    task = {"score": score, "variants": {"both_blank": blank}, "subsets": {}, "gain_over_no_vision": score - 30,
            "no_vision": {"score": 30.0}}  # fmt: skip
    return {"variant": variant, "seed": seed, "tasks": {k: dict(task) for k in ("caption", *DETAIL)}}


def test_comparison_sets_results_files_side_by_side(table):
    import doctest

    assert doctest.testmod(table).failed == 0
    one = {"runs": {"c0": _run("c", 0, 70.0), "c1": _run("c", 1, 80.0), "e0": _run("e", 0, 50.0),
                    "e1": _run("e", 1, 60.0)}}  # fmt: skip
    other = {"runs": {"c0": _run("c", 0, 40.0), "c1": _run("c", 1, 40.0)}}
    lines = table.comparison([("one", one), ("other", other)]).splitlines()
    assert lines[0] == "| | one | other |"
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    rows = {row[0]: row[1:] for row in cells}
    assert rows["(c)"] == ["75.0 / 75.0 / 75.0 / 75.0", "40.0 / 40.0 / 40.0 / 40.0"]
    assert rows["(c) − (e), no guidance"] == ["+20.0 / +20.0 / +20.0 / +20.0", "–"]  # the other has no (e)
    assert (
        rows["(c) both blank − rules"][1] == "−10.0 / −10.0 / −10.0 / −10.0"
    )  # Unicode minus, as in the docs
    assert "(b), captions only" not in rows  # no file has (b): the row is left out
    seed1 = table.comparison([("one", one)], seeds={1}).splitlines()[2]
    assert seed1 == "| (c) | 80.0 / 80.0 / 80.0 / 80.0 |"


def test_compare_arguments_name_a_label_and_an_existing_file(table, tmp_path):
    import argparse

    results = tmp_path / "r.json"
    results.write_text("{}")
    assert table.labelled_results(f"world v10={results}") == ("world v10", results)
    for bad in ("no-label", f"={results}", f"x={tmp_path / 'missing.json'}"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"LABEL=FILE|no results file"):
            table.labelled_results(bad)
