"""Controls of the DEMON evaluator: text-only baselines on hand-made files whose right answer is known,
control variants kept out of the categories, subset scores, and the controls of a real evaluation."""

from __future__ import annotations

import doctest
import json
import random
from pathlib import Path

import pytest
from PIL import Image
from test_evaluate_cases import detail_task, write_task
from test_evaluate_cli import ARGS, run_and_demon  # noqa: F401 (run_and_demon: the fixture, reused)

import vpgkit.evaluation.controls
from vpgkit.data import DataError, SampleTokenizer
from vpgkit.evaluate import main
from vpgkit.evaluation import (
    TaskScore,
    aggregate,
    cross_fitted_baseline,
    evaluate_demon,
    format_table,
    held_out_baseline,
    lcs_length,
    load_task,
    no_vision_baselines,
    rouge_l,
)
from vpgkit.evaluation.controls import _lcs_bits, _match_masks, _neighbours, _rouge_tokens
from vpgkit.training.datasets import sample_tokenizer

COLOURS = ["red", "blue", "green"]


def task_file(folder: Path, rows: list[dict], metric: str = "accuracy", **metadata) -> Path:
    """A core.json without images: the rules must never need them. ``rows``: context, response,
    choice_list?, subsets?"""
    data = []
    for i, row in enumerate(rows):
        instance = {"context": row["context"], "images_path": ["x.png"] * row["context"].count("{image#")}
        if "choice_list" in row:
            instance["choice_list"] = row["choice_list"]
        entry = {
            "sample_id": i,
            "task_instruction_id": 0,
            "task_instance": instance,
            "response": row["response"],
        }
        if "subsets" in row:
            entry["subsets"] = row["subsets"]
        data.append(entry)
    meta = {"task_instruction": ["Answer. "], "category": "Hand", "metric": metric, **metadata}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "core.json").write_text(json.dumps({"metadata": meta, "data": data}))
    return folder


def baselines(folder: Path, metric: str = "accuracy", rows: list[dict] | None = None) -> dict:
    if rows is not None:
        task_file(folder, rows, metric)
    return no_vision_baselines(load_task(folder))


def test_position_rule_finds_an_answer_that_is_always_the_second_option(tmp_path):
    rng = random.Random(1)
    rows = []
    for i in range(12):
        options = rng.sample(["cat", "dog", "cup", "car", "tree"], 3)
        rows.append({"context": f"{{image#1}} item {i}?", "choice_list": options, "response": options[1]})
    result = baselines(tmp_path, rows=rows)
    assert result["rules"]["option_2"] == 100.0
    assert result["rules"]["option_1"] == result["rules"]["option_3"] == 0.0
    assert result["best"] == {"rule": "option_2", "score": 100.0} and result["count"] == 12


def test_the_unmentioned_colour_rule_wins_when_the_answer_is_the_colour_the_text_leaves_out(tmp_path):
    rows = []
    for i in range(12):
        said, answer = COLOURS[i % 3], COLOURS[(i + 1 + (i // 3) % 2) % 3]  # never the same colour
        rows.append(
            {
                "context": f"{{image#1}} It is not {said}. Sample {i}: which colour?",
                "choice_list": [said, answer] if i % 2 else [answer, said],  # position tells nothing
                "response": answer,
            }
        )
    rules = baselines(tmp_path, rows=rows)["rules"]
    assert rules["unmentioned_option"] == 100.0 and rules["mentioned_option"] == 0.0
    assert rules["option_1"] == rules["option_2"] == 50.0
    assert baselines(tmp_path)["best"]["rule"] == "unmentioned_option"


def test_mention_is_decided_by_the_distinctive_words_and_ignores_the_appended_choice_list(tmp_path):
    # "cup" and "a" are in every option; "red" alone decides. The choice list the reader appends to the
    # prompt names every option, so counting it would call all of them mentioned.
    rows = [
        {
            "context": f"{{image#1}} Is the {c} one there?",
            "choice_list": [f"a {o} cup" for o in COLOURS],
            "response": f"a {c} cup",
        }
        for c in COLOURS * 2
    ]
    rules = baselines(tmp_path, rows=rows)["rules"]
    assert rules["mentioned_option"] == 100.0 and rules["unmentioned_option"] == 0.0


def test_frequent_answer_is_the_oracle_preference_order(tmp_path):
    rows = [
        {"context": "{image#1} Is it on?", "choice_list": ["no", "yes"], "response": r}
        for r in ["yes", "yes", "no", "yes"]
    ]
    # "grey", given once, ranks above "pink", never given
    rows.append({"context": "{image#1} Colour?", "choice_list": ["pink", "grey"], "response": "grey"})
    result = baselines(tmp_path, rows=rows)
    assert result["rules"]["frequent_answer"] == pytest.approx(100 * 4 / 5)  # all but the one "no"
    assert result["rules"]["option_1"] == pytest.approx(100 * 1 / 5)
    assert result["oracle"] == ["frequent_answer"]


def test_nearest_neighbour_copies_the_answer_of_the_most_similar_prompt(tmp_path):
    # Pairs of samples share a rare word and an answer; everything else is balanced, so only the
    # neighbour rule reads it.
    words = ["zebra", "kettle", "violin", "anchor", "tulip", "comet"]
    rows = []
    for k, word in enumerate(words):
        for j in range(2):
            answer = COLOURS[k % 3]
            others = [c for c in COLOURS if c != answer]
            options = [answer, others[0]] if (k + j) % 2 else [others[0], answer]
            rows.append(
                {"context": f"{{image#1}} The {word} here?", "choice_list": options, "response": answer}
            )
    rules = baselines(tmp_path, rows=rows)["rules"]
    assert rules["nearest_neighbour"] == 100.0
    assert max(v for r, v in rules.items() if r != "nearest_neighbour") <= 50.0
    # a neighbour's answer that is not among this sample's options falls back to the preference order
    rows[1]["choice_list"] = ["pink", "grey"]
    rows[1]["response"] = "grey"
    assert baselines(tmp_path / "b", rows=rows)["rules"]["nearest_neighbour"] == pytest.approx(100 * 11 / 12)


def test_rouge_task_with_one_constant_response_has_a_perfect_constant(tmp_path):
    rows = [
        {"context": f"{{image#1}}{{image#2}} case {i}", "response": "the cup moved left ."} for i in range(5)
    ]
    result = baselines(tmp_path, "rouge_l", rows)
    assert result["rules"]["best_constant"] == 100.0 and result["best"]["rule"] == "best_constant"
    assert result["oracle"] == ["best_constant"]


def test_rouge_best_constant_and_neighbour_on_known_cases(tmp_path):
    responses = ["a dog runs", "a dog runs", "a dog sits", "the cat sleeps"]
    rows = [
        {"context": f"{{image#1}} story {w}", "response": r} for w, r in zip("wxyz", responses, strict=True)
    ]
    task = load_task(task_file(tmp_path, rows, "rouge_l"))
    result = no_vision_baselines(task)
    # by hand: "a dog runs" scores 1 + 1 + 2/3 + 0 against the four references, the best of them
    assert result["rules"]["best_constant"] == pytest.approx(100 * (2 + 2 / 3) / 4)
    # only the first candidate considered: still "a dog runs"; a cap at the last would differ
    assert no_vision_baselines(task, max_candidates=1)["rules"] == result["rules"]
    # identical prompts in pairs copy each other's response
    rows = [
        {"context": f"{{image#1}} story {w}", "response": r} for w, r in zip("wwyy", responses, strict=True)
    ]
    rules = baselines(tmp_path / "nn", "rouge_l", rows)["rules"]
    assert rules["nearest_neighbour"] == pytest.approx(100 * (1 + 1 + 0 + 0) / 4)


def test_bit_parallel_lcs_and_rouge_equal_the_metric(tmp_path):
    rng = random.Random(0)
    for _ in range(500):
        a = rng.choices("abcdef", k=rng.randint(0, 40))
        b = rng.choices("abcdef", k=rng.randint(0, 70))  # longer than one 64-bit word
        assert _lcs_bits(a, _match_masks(b), len(b)) == lcs_length(a, b)
        assert _rouge_tokens(a, _match_masks(b), len(b)) == pytest.approx(rouge_l(" ".join(a), " ".join(b)))


def test_neighbours_are_the_most_similar_earliest_other_prompt():
    def brute_force(prompts):
        out = []
        for i, a in enumerate(prompts):
            sims = [(len(a & b) / len(a | b) if a | b else 1.0, -j) for j, b in enumerate(prompts) if j != i]
            out.append(-max(sims)[1] if sims else None)
        return out

    rng = random.Random(2)
    for _ in range(300):
        prompts = [frozenset(rng.sample("abcdef", rng.randint(0, 3))) for _ in range(rng.randint(0, 10))]
        assert _neighbours(prompts) == brute_force(prompts)


def test_rules_are_deterministic_and_read_no_image(tmp_path):
    rng = random.Random(3)
    rows = [
        {
            "context": "{image#1} " + " ".join(rng.choices(["a", "b", "c", "d"], k=4)),
            "choice_list": rng.sample(COLOURS, 3),
            "response": rng.choice(COLOURS),
        }
        for _ in range(30)
    ]
    task_file(tmp_path, rows)
    assert not (tmp_path / "images").exists()
    assert baselines(tmp_path) == baselines(tmp_path)
    empty = load_task(tmp_path, limit=0)
    assert no_vision_baselines(empty) == {
        "rules": {},
        "best": {"rule": None, "score": None},
        "oracle": [],
        "count": 0,
    }


def _random_choice_rows(rng: random.Random, n: int) -> list[dict]:
    return [
        {
            "context": "{image#1} " + " ".join(rng.choices(["a", "b", "c", "d", "red", "blue"], k=3)),
            "choice_list": rng.sample(COLOURS, rng.choice([2, 3])),
            "response": rng.choice(COLOURS),
        }
        for _ in range(n)
    ]


def test_cross_fitting_chooses_each_folds_rule_as_the_in_sample_rules_do_on_the_other_folds(tmp_path):
    rng = random.Random(4)
    for case in range(6):
        rows = _random_choice_rows(rng, rng.randint(7, 25))
        for r in rows:  # an answer the options lack, sometimes: scored 0 by every rule
            r["response"] = r["response"] if rng.random() < 0.9 else "pink"
        folds = rng.choice([2, 3, 5])
        task = load_task(task_file(tmp_path / str(case), rows))
        fitted = cross_fitted_baseline(task, folds=folds)
        assert fitted["folds"] == folds and fitted["count"] == len(rows) and len(fitted["chosen"]) == folds
        for fold in range(folds):
            fit = [r for i, r in enumerate(rows) if i % folds != fold]
            best = baselines(tmp_path / f"{case}-fit{fold}", rows=fit)["best"]["rule"]
            assert fitted["chosen"][fold] == best
        in_sample = no_vision_baselines(task)["rules"]
        for rule in in_sample:  # options by position need no fit: the same answers either way
            if rule.startswith("option_"):
                assert fitted["rules"][rule] == pytest.approx(in_sample[rule])
        assert set(fitted["rules"]) == set(in_sample)


def test_cross_fitted_rules_keep_a_text_prior_but_not_a_files_own_answers(tmp_path):
    # the answer is always the colour the question leaves out: a prior every fold teaches
    rows = [
        {"context": f"{{image#1}} Not {COLOURS[i % 3]}, so?", "choice_list": sorted(
         [COLOURS[i % 3], COLOURS[(i + 1) % 3]]), "response": COLOURS[(i + 1) % 3]}
        for i in range(12)
    ]  # fmt: skip
    fitted = cross_fitted_baseline(load_task(task_file(tmp_path / "prior", rows)), folds=2)
    assert fitted["score"] == 100.0 and fitted["chosen"] == ["unmentioned_option"] * 2
    # Pairs of samples share a rare word and an answer. Pairs within a fold (i, i + 2 with 2 folds) are
    # each other's only neighbour in-sample, but never across the fold boundary.
    words = ["zebra", "kettle", "violin", "anchor"]
    rows = []
    for i in range(8):
        word = words[(i // 4) * 2 + i % 2]  # 0 & 2, 1 & 3, 4 & 6, 5 & 7 share a word
        answer = COLOURS[words.index(word) % 3]
        rows.append({"context": f"{{image#1}} The {word}?", "choice_list": COLOURS, "response": answer})
    task = load_task(task_file(tmp_path / "pairs", rows))
    assert no_vision_baselines(task)["rules"]["nearest_neighbour"] == 100.0
    assert cross_fitted_baseline(task, folds=2)["rules"]["nearest_neighbour"] < 50.0
    # pairs across the boundary (i, i + 1) are found: their neighbour is in the other fold
    shifted = [rows[i] for i in (0, 2, 1, 3, 4, 6, 5, 7)]
    task = load_task(task_file(tmp_path / "across", shifted))
    assert cross_fitted_baseline(task, folds=2)["rules"]["nearest_neighbour"] == 100.0


def test_cross_fitted_constant_is_chosen_on_the_other_folds(tmp_path):
    responses = ["a dog runs", "the cat sleeps"] * 3  # even samples one story, odd ones the other
    rows = [{"context": f"{{image#1}} story {i}", "response": r} for i, r in enumerate(responses)]
    task = load_task(task_file(tmp_path, rows, "rouge_l"))
    assert no_vision_baselines(task)["rules"]["best_constant"] == 50.0
    fitted = cross_fitted_baseline(task, folds=2)
    assert fitted["rules"]["best_constant"] == 0.0 and fitted["chosen"] == ["best_constant"] * 2
    assert fitted == cross_fitted_baseline(task, folds=2)  # deterministic


def test_held_out_rules_are_fitted_on_the_other_file_and_cross_fitting_is_held_out_per_fold(tmp_path):
    rng = random.Random(6)
    for case in range(4):
        rows, fit_rows = (
            _random_choice_rows(rng, rng.randint(5, 15)),
            _random_choice_rows(rng, rng.randint(5, 15)),
        )
        task = load_task(task_file(tmp_path / f"{case}-task", rows))
        fitted = held_out_baseline(task, fit_on=load_task(task_file(tmp_path / f"{case}-fit", fit_rows)))
        assert fitted["chosen"] == baselines(tmp_path / f"{case}-fit")["best"]["rule"]
        assert fitted["score"] == fitted["rules"][fitted["chosen"]] and fitted["count"] == len(rows)
        in_sample = no_vision_baselines(task)["rules"]
        assert all(
            fitted["rules"][r] == pytest.approx(v) for r, v in in_sample.items() if r.startswith("option_")
        )
        # cross-fitting = each fold held out against a file of the other folds
        folds = 3
        crossed = cross_fitted_baseline(task, folds=folds)
        right = 0.0
        for fold in range(folds):
            held = [r for i, r in enumerate(rows) if i % folds == fold]
            rest = [r for i, r in enumerate(rows) if i % folds != fold]
            one = held_out_baseline(load_task(task_file(tmp_path / f"{case}-h{fold}", held)),
                                    fit_on=load_task(task_file(tmp_path / f"{case}-r{fold}", rest)))  # fmt: skip
            assert one["chosen"] == crossed["chosen"][fold]
            right += one["score"] * len(held) / 100
        assert crossed["score"] == pytest.approx(100 * right / len(rows))
    # a neighbour in the other file: the sample naming the same rare word gives its answer
    fit = [{"context": f"{{image#1}} The {w}?", "choice_list": COLOURS, "response": c}
           for w, c in (("zebra", "green"), ("kettle", "blue"), ("violin", "red"))]  # fmt: skip
    task = [{"context": "{image#1} The kettle?", "choice_list": COLOURS, "response": "blue"}]
    fitted = held_out_baseline(
        load_task(task_file(tmp_path / "nt", task)), load_task(task_file(tmp_path / "nf", fit))
    )
    assert fitted["rules"]["nearest_neighbour"] == 100.0
    with pytest.raises(
        ValueError, match=r"fit_on \(.*nf/core.json\) is scored by accuracy, the task by rouge_l"
    ):
        rouge = [{"context": "{image#1} story", "response": "a dog runs"}]
        held_out_baseline(load_task(task_file(tmp_path / "nr", rouge, "rouge_l")), load_task(tmp_path / "nf"))
    with pytest.raises(ValueError, match="has no samples"):
        held_out_baseline(load_task(tmp_path / "nt"), load_task(tmp_path / "nf", limit=0))


def test_cross_fitting_on_tiny_tasks_and_bad_folds(tmp_path):
    rows = _random_choice_rows(random.Random(5), 3)
    task = load_task(task_file(tmp_path, rows))
    assert cross_fitted_baseline(task, folds=10)["folds"] == 3  # one sample per fold
    assert cross_fitted_baseline(load_task(tmp_path, limit=1)) == {
        "rules": {}, "score": None, "chosen": [], "folds": 0, "count": 1
    }  # fmt: skip
    with pytest.raises(ValueError, match="folds must be at least 2, got 1"):
        cross_fitted_baseline(task, folds=1)


def test_control_and_subsets_reach_the_task_and_bad_ones_fail(tmp_path):
    rows = [
        {"context": "{image#1} q", "choice_list": ["a", "b"], "response": "a", "subsets": ["unchanged", "x"]},
        {"context": "{image#1} q", "choice_list": ["a", "b"], "response": "b"},
    ]
    control = {"of": "cloze", "kind": "both_blank"}
    task = load_task(task_file(tmp_path / "cloze__both_blank", rows, control=control))
    assert task.name == "cloze__both_blank" and task.control == control
    assert task.subsets == {f"{task.samples[0].id}": ["unchanged", "x"]}
    assert load_task(task_file(tmp_path / "plain", rows)).control is None
    for bad in [{"of": "cloze"}, {"of": "", "kind": "k"}, "cloze", {"of": "self", "kind": "k"}]:
        with pytest.raises(DataError, match=r"metadata\.control"):
            load_task(task_file(tmp_path / "self", rows, control=bad))
    rows[1]["subsets"] = "unchanged"
    with pytest.raises(DataError, match="subsets should be a list of strings"):
        load_task(task_file(tmp_path / "bad", rows))


def test_control_tasks_are_not_counted_in_the_categories():
    scores = [
        TaskScore("cloze", "MC", "accuracy", 60.0, 4),
        TaskScore("cloze__both_blank", "MC", "accuracy", 20.0, 4, control="both_blank"),
        TaskScore("blank_only", "Other", "accuracy", 10.0, 4, control="both_blank"),
    ]
    categories = aggregate(scores)
    assert list(categories) == ["MC"]
    assert categories["MC"]["score"] == 60.0 and categories["MC"]["tasks"] == ["cloze"]


def test_bad_control_declarations_fail_before_any_generation(tmp_path):
    rows = [{"context": "{image#1} q", "choice_list": ["a", "b"], "response": "a"}]
    base = task_file(tmp_path / "base", rows)
    one = task_file(tmp_path / "one", rows, control={"of": "base", "kind": "both_blank"})
    two = task_file(tmp_path / "two", rows, control={"of": "base", "kind": "both_blank"})
    nested = task_file(tmp_path / "nested", rows, control={"of": "one", "kind": "x"})
    rouge = task_file(tmp_path / "rouge", rows, "rouge_l", control={"of": "base", "kind": "y"})
    for tasks, message in [
        ([base, one, two], "already the 'both_blank' variant"),
        ([base, one, nested], "itself a control variant"),
        ([base, rouge], "differs from its base"),
    ]:
        with pytest.raises(ValueError, match=message):
            evaluate_demon(None, None, None, tasks, progress=False)  # no model needed to refuse


def _blank_variant(source: Path, folder: Path, base: str) -> Path:
    """A ``both_blank`` control of the task at ``source``: same file, every image a black PNG."""
    raw = json.loads((source / "core.json").read_text())
    raw["metadata"]["control"] = {"of": base, "kind": "both_blank"}
    write_task(folder, raw["metadata"], raw["data"])
    for image in (folder / "images").iterdir():
        Image.new("RGB", (28, 28)).save(image)
    return folder


def test_evaluation_reports_controls_variants_and_subsets(run_and_demon, tmp_path):  # noqa: F811
    _, _, (model, tokenizer, cfg) = run_and_demon
    demon = tmp_path / "demon"
    detail_task(demon / "detail_qa", count=6)
    raw = json.loads((demon / "detail_qa" / "core.json").read_text())
    for i, entry in enumerate(raw["data"]):
        entry["subsets"] = ["unchanged"] if i < 4 else ["edited"]
    (demon / "detail_qa" / "core.json").write_text(json.dumps(raw))
    _blank_variant(demon / "detail_qa", demon / "detail_qa__both_blank", "detail_qa")
    st = sample_tokenizer(cfg.data, tokenizer, model)
    st = SampleTokenizer(
        tokenizer, "vicuna_v0", model.image_token_id, num_queries=st.slots.num_queries, max_length=250
    )
    results = evaluate_demon(model, tokenizer, st, [demon], max_new_tokens=4, progress=False)

    assert results["categories"]["Detail QA"]["tasks"] == ["detail_qa"]  # the variant is not counted
    assert results["tasks"]["detail_qa__both_blank"]["control"] == {"of": "detail_qa", "kind": "both_blank"}
    assert list(results["controls"]) == ["detail_qa"]
    c = results["controls"]["detail_qa"]
    assert c["score"] == results["tasks"]["detail_qa"]["score"] and c["metric"] == "accuracy"
    assert c["no_vision"] == no_vision_baselines(load_task(demon / "detail_qa"))
    assert c["gain_over_no_vision"] == pytest.approx(c["score"] - c["no_vision"]["best"]["score"])
    assert c["variants"] == {"both_blank": results["tasks"]["detail_qa__both_blank"]["score"]}
    records = [r for r in results["predictions"] if r["task"] == "detail_qa"]
    assert c["subsets"] == {
        "unchanged": {"score": pytest.approx(100 * sum(r["score"] for r in records[:4]) / 4), "count": 4},
        "edited": {"score": pytest.approx(100 * sum(r["score"] for r in records[4:]) / 2), "count": 2},
    }
    json.dumps(results)  # what the CLI and the training job write

    table = format_table(results, per_task=True)
    header = next(line for line in table.splitlines() if line.startswith("controls"))
    assert header.split() == [
        "controls",
        "score",
        "best",
        "no-vision",
        "rule",
        "gain",
        "v:both_blank",
        "s:unchanged",
        "s:edited",
    ]
    assert "detail_qa__both_blank" not in table  # shown as the variant column, not as a task
    row = next(line for line in table.splitlines() if line.startswith("detail_qa "))
    assert f"{c['variants']['both_blank']:.2f}" in row and "(4)" in row and "(2)" in row

    # A variant evaluated without its base task still shows, with nothing to compare it to.
    alone = evaluate_demon(
        model, tokenizer, st, [demon / "detail_qa__both_blank"], max_new_tokens=4, progress=False
    )
    assert alone["categories"] == {}
    assert alone["controls"]["detail_qa"]["score"] is None
    assert alone["controls"]["detail_qa"]["variants"] == c["variants"]
    assert "detail_qa" in format_table(alone)


def test_cli_prints_and_writes_the_controls(run_and_demon, tmp_path, capsys):  # noqa: F811
    run, demon, _ = run_and_demon
    out = tmp_path / "results.json"
    results = main(["--run", str(run), "--demon", str(demon), "--out", str(out), *ARGS])
    written = json.loads(out.read_text())
    assert set(written["controls"]) == {"Spot-the-Diff", "detail_qa"} and written["controls"] == json.loads(
        json.dumps(results["controls"])
    )
    assert written["controls"]["Spot-the-Diff"]["no_vision"]["best"]["rule"] in {
        "best_constant",
        "nearest_neighbour",
    }
    printed = capsys.readouterr().out
    assert "best no-vision rule" in printed and "\nSpot-the-Diff " in printed


def test_training_job_prints_and_writes_the_controls(tmp_path, capsys):
    from test_train import FAST, config

    from vpgkit.train import run

    demon = tmp_path / "demon"
    detail_task(demon / "detail", count=3)
    _blank_variant(demon / "detail", demon / "detail__both_blank", "detail")
    cfg = config(
        "recipe=vpgc_toy",
        f"output_dir={tmp_path / 'run'}",
        "trainer.max_steps=2",
        *FAST,
        f"evaluate.demon=[{demon}]",
        "evaluate.max_new_tokens=4",
    )
    run(cfg)
    results = json.loads((tmp_path / "run" / "eval" / "results.json").read_text())
    assert results["controls"]["detail"]["variants"].keys() == {"both_blank"}
    assert list(results["categories"]["Detail QA"]["tasks"]) == ["detail"]
    printed = capsys.readouterr().out
    assert "v:both_blank" in printed and "\ndetail " in printed


def test_docstring_examples():
    result = doctest.testmod(vpgkit.evaluation.controls)
    assert result.attempted > 0 and result.failed == 0
