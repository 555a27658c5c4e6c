"""benchmarks/blank_answers.py: DEMON's own answer-to-option mapping, re-implemented, agrees with the
scikit-learn computation its script runs; the per-run split of a control's score adds up."""

from __future__ import annotations

import json
import random

import pytest
from benchmark_script import load_benchmark


@pytest.fixture(scope="module")
def blank():
    return load_benchmark("blank_answers")


def test_demon_script_choice_is_the_argmax_of_scikit_learns_tfidf_cosine(blank):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics.pairwise import cosine_similarity

    words = ["red", "blue", "green", "top", "left", "right", "first", "second", "the", "is", "orange", "x"]
    rng = random.Random(0)
    checked = 0
    for _ in range(400):
        options = [" ".join(rng.choices(words, k=rng.randint(1, 3))) for _ in range(rng.randint(2, 4))]
        answer = " ".join(rng.choices(words, k=rng.randint(1, 4)))
        try:
            matrix = TfidfVectorizer().fit_transform([answer, *options])
        except ValueError:  # no word of two or more characters anywhere: the script compares exactly
            assert blank.demon_script_choice(answer, options) is None
            continue
        expected = int(cosine_similarity(matrix[0:1], matrix[1:]).flatten().argmax())
        assert blank.demon_script_choice(answer, options) == expected, (answer, options)
        checked += 1
    assert checked > 300
    assert blank.demon_script_choice("x", ["y", "z"]) is None


def _task(path, name, of=None):
    data = [{"sample_id": i, "task_instance": {"context": "{image#1} Which colour?", "images_path": ["a.png"],
             "choice_list": ["red", "blue", "green", "purple"]}, "response": "red" if i % 2 else "blue"}
            for i in range(4)]  # fmt: skip
    meta = {"task_instruction": ["Q "], "category": "MC", "metric": "accuracy"}
    if of:
        meta["control"] = {"of": of, "kind": "both_blank"}
    path.mkdir()
    (path / "core.json").write_text(json.dumps({"metadata": meta, "data": data}))
    return str(path / "core.json")


def test_a_runs_answers_are_split_into_off_option_on_option_and_demons_score(blank, tmp_path):
    from vpgkit.evaluation import load_task
    from vpgkit.evaluation.metrics import choice_accuracy, map_to_choice

    options = ["red", "blue", "green", "purple"]
    answers = {"mini_demon_cloze": ["blue", "red", "blue", "green"],  # 3 of 4 right
               "mini_demon_cloze__both_blank": ["orange", "orange", "grey", "red"]}  # 3 off, 1 right  # fmt: skip
    tasks, predictions = {}, []
    for name, given in answers.items():
        tasks[name] = {"path": _task(tmp_path / name, name, of="mini_demon_cloze" if "__" in name else None)}
        ids = [s.id for s in load_task(tasks[name]["path"]).samples]
        for i, answer in enumerate(given):
            reference = "red" if i % 2 else "blue"
            predictions.append({"task": name, "id": ids[i], "prediction": answer, "reference": reference,
                                "score": choice_accuracy(answer, reference, options),
                                "choice_rule": map_to_choice(answer, options).rule})  # fmt: skip
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"tasks": tasks, "predictions": predictions}))
    out = blank.measure_run(results)["cloze"]
    assert out["real"]["score"] == 75.0 and out["real"]["off_option"] == 0.0
    assert out["real"]["demon_script"] == 75.0  # answers naming an option: both mappings agree
    b = out["both_blank"]
    assert (b["score"], b["off_option"], b["chance_on_option"]) == (25.0, 75.0, 25.0)
    assert b["on_option_accuracy"] == 100.0  # the one answer naming an option is right
    # DEMON's script maps the off-option answers to the first option, "red": right for sample 1 (and 3)
    assert b["demon_script"] == 50.0
    assert b["off_option_answers"] == {"orange": 2, "grey": 1}
    row = blank.docs_block(
        {
            "commands": ["x"],
            "entries": [
                {"label": "w", "variant": "c", "seeds": [0], "runs": {"c_seed0": blank.measure_run(results)}}
            ],
        }
    )
    assert (
        "| w, (c) seeds 0 | cloze | 75.0 / 25.0 | 0.0 / 75.0 | 75.0 / 100.0 (25) | 75.0 / 50.0 | orange 67%, grey 33% |"
        in row
    )
