"""benchmarks/no_vision_rules.py's null: redrawing the gold answers removes what the text predicts, and the
cross-fitted rules fall to chance there."""

from __future__ import annotations

import json
import statistics

import pytest
from benchmark_script import load_benchmark


def test_redrawn_gold_answers_leave_the_rules_nothing_the_text_predicts(tmp_path):
    rules = load_benchmark("no_vision_rules")
    from vpgkit.evaluation import cross_fitted_baseline, held_out_baseline, load_task
    from vpgkit.evaluation.controls import no_vision_baselines

    colours = ["red", "blue", "green", "purple"]
    # the answer is always the option the question does not mention: a text prior the rules find (100%)
    data = [{"sample_id": i, "task_instance": {"context": f"{{image#1}} Not {colours[i % 4]}, so?",
             "images_path": ["a.png"], "choice_list": sorted([colours[i % 4], colours[(i + 1) % 4]])},
             "response": colours[(i + 1) % 4]} for i in range(200)]  # fmt: skip
    meta = {"task_instruction": ["Which colour? "], "category": "MC", "metric": "accuracy"}
    task, fit = tmp_path / "cloze", tmp_path / "fit" / "cloze"
    for folder in (task, fit):
        folder.mkdir(parents=True)
        (folder / "core.json").write_text(json.dumps({"metadata": meta, "data": data}))
    assert no_vision_baselines(load_task(task))["best"]["score"] == 100.0
    assert cross_fitted_baseline(load_task(task))["score"] == 100.0  # a prior that holds across samples
    assert held_out_baseline(load_task(task), fit_on=load_task(fit))["score"] == 100.0
    null = rules.null_scores(task, reps=5, seed="0", fit_dir=fit)
    # two options: chance 50, plus the choice of rule on the scored file; the cross-fitted and held-out
    # rules choose elsewhere, so over all draws they are at chance (1000 answers: binomial sigma 1.6)
    assert len(null["best"]) == 5 and all(50 <= s < 65 for s in null["best"])
    for key in ("cross_fitted", "held_out"):
        assert abs(statistics.mean(null[key]) - 50) < 5
        assert statistics.mean(null[key]) < statistics.mean(null["best"])
    assert null == rules.null_scores(task, reps=5, seed="0", fit_dir=fit)  # seeded
    assert json.loads((task / "core.json").read_text())["data"] == data  # the task file is left as it was


def _rules_file(seeds: list[int], best: float, cross: float) -> dict:
    entry = {"best": [{"rule": "frequent_answer", "score": best + s} for s in seeds],
             "cross_fitted": [{"score": cross + s, "chosen": []} for s in seeds],
             "held_out": [{"score": cross - 1 + s, "chosen": "option_1"} for s in seeds]}  # fmt: skip
    return {"sizes": [300], "seeds": seeds, "tasks": {t: {"300": entry} for t in ("difference", "which_image",
            "detail_question", "cloze")}}  # fmt: skip


def _table(seeds: list[int], blank: float, best: float, n_eval: int = 300) -> dict:
    def tasks(s: int) -> dict:
        return {t: {"variants": {"both_blank": blank + s}, "no_vision": {"score": best + s}}
                for t in ("caption", "difference", "which_image", "detail_question", "cloze")}  # fmt: skip

    runs = {f"{v}_seed{s}": {"variant": v, "seed": s, "tasks": tasks(s)} for v in ("a", "c") for s in seeds}
    return {"default_job": {"n_eval": n_eval}, "runs": runs}


def test_blank_scores_meet_the_rules_of_their_own_evaluation_files(tmp_path):
    rules = load_benchmark("no_vision_rules")
    got = rules.blank_against_rules(_table([0, 1, 2], blank=20.0, best=30.0), _rules_file([0, 1], 30.0, 25.0))
    assert list(got) == ["c"]  # (a) is not asked for; seed 2 is not in the rules file
    assert got["c"]["cloze"] == [{"seed": 0, "blank": 20.0, "best": 30.0, "cross_fitted": 25.0, "held_out": 24.0},
                                 {"seed": 1, "blank": 21.0, "best": 31.0, "cross_fitted": 26.0, "held_out": 25.0}]  # fmt: skip
    with pytest.raises(ValueError, match=r"c seed 1, difference: .* 32.00, the rules file's 31.00"):
        rules.blank_against_rules(_table([1], 20.0, best=31.0), _rules_file([0, 1], 30.0, 25.0))
    with pytest.raises(ValueError, match="the runs evaluate 100 samples per task; the rules file has sizes"):
        rules.blank_against_rules(_table([0], 20.0, 30.0, n_eval=100), _rules_file([0, 1], 30.0, 25.0))
    table, rules_path = tmp_path / "table.json", tmp_path / "rules.json"
    table.write_text(json.dumps(_table([0, 1], blank=20.0, best=30.0)))
    rules_path.write_text(json.dumps(_rules_file([0, 1], 30.0, 25.0)))
    block = rules.blank_block([("world", table)], rules_path)
    assert "| world, seeds 0, 1 | best rule | 30.5 | 30.5 | 30.5 | 30.5 |" in block
    assert "| | held-out rules | 24.5 | 24.5 | 24.5 | 24.5 |" in block
    assert (
        "| | (c) both blank − cross-fitted rules | -5.0 ± 0.0 | -5.0 ± 0.0 | -5.0 ± 0.0 | -5.0 ± 0.0 |"
        in block
    )
    assert (
        "| | (c) both blank − held-out rules | -4.0 ± 0.0 | -4.0 ± 0.0 | -4.0 ± 0.0 | -4.0 ± 0.0 |" in block
    )
    # one seed: means without a spread, not a statistics error
    table.write_text(json.dumps(_table([0], blank=20.0, best=30.0)))
    assert "| | (c) both blank − best rule | -10.0 | -10.0 | -10.0 | -10.0 |" in rules.blank_block(
        [("world", table)], rules_path
    )
