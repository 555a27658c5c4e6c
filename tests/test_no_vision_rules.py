"""benchmarks/no_vision_rules.py's null: redrawing the gold answers removes what the text predicts, and the
cross-fitted rules fall to chance there."""

from __future__ import annotations

import json
import statistics

from benchmark_script import load_benchmark


def test_redrawn_gold_answers_leave_the_rules_nothing_the_text_predicts(tmp_path):
    rules = load_benchmark("no_vision_rules")
    from vpgkit.evaluation import cross_fitted_baseline, load_task
    from vpgkit.evaluation.controls import no_vision_baselines

    colours = ["red", "blue", "green", "purple"]
    # the answer is always the option the question does not mention: a text prior the rules find (100%)
    data = [{"sample_id": i, "task_instance": {"context": f"{{image#1}} Not {colours[i % 4]}, so?",
             "images_path": ["a.png"], "choice_list": sorted([colours[i % 4], colours[(i + 1) % 4]])},
             "response": colours[(i + 1) % 4]} for i in range(200)]  # fmt: skip
    meta = {"task_instruction": ["Which colour? "], "category": "MC", "metric": "accuracy"}
    task = tmp_path / "cloze"
    task.mkdir()
    (task / "core.json").write_text(json.dumps({"metadata": meta, "data": data}))
    assert no_vision_baselines(load_task(task))["best"]["score"] == 100.0
    assert cross_fitted_baseline(load_task(task))["score"] == 100.0  # a prior that holds across samples
    null = rules.null_scores(task, reps=5, seed="0")
    # two options: chance 50, plus the choice of rule on the scored file; the cross-fitted rules choose
    # on other samples, so over all draws they are at chance (1000 answers: binomial sigma 1.6)
    assert len(null["best"]) == 5 and all(50 <= s < 65 for s in null["best"])
    assert abs(statistics.mean(null["cross_fitted"]) - 50) < 5
    assert statistics.mean(null["cross_fitted"]) < statistics.mean(null["best"])
    assert null == rules.null_scores(task, reps=5, seed="0")  # seeded
    assert json.loads((task / "core.json").read_text())["data"] == data  # the task file is left as it was
