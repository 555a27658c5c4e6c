"""How much of mini-DEMON's best no-vision rule comes from the size of the file it scores.

A model's gain over the no-vision baseline, and the issue's both-blank check, compare it with the *best* of
several text-only rules (:mod:`vpgkit.evaluation.controls`), each scored on the file being evaluated. The
maximum of several noisy scores sits above what each rule is worth, by more on a small file. This script
scores the rules on mini-DEMON files of several sizes, built by the default job's generator
(:func:`synthetic.world.mini_demon.make_mini_demon`) for the default job's seeds, so the inflation is measured.
A sample does not depend on the file's size: the first 100 samples of a 1000-sample file are the 100-sample file.

Beside the best rule it scores two forms of the rules that read nothing off the answers being scored: the
**cross-fitted** rules (:func:`vpgkit.evaluation.cross_fitted_baseline`, 5 folds: every sample answered by the
rule chosen, and fitted, on the other folds) and the **held-out** rules (:func:`vpgkit.evaluation.held_out_baseline`,
chosen and fitted on the next seed's file of the same size). With ``--null`` all three are also scored on the
redrawn files, where the cross-fitted and held-out rules should sit at chance.

    python benchmarks/no_vision_rules.py              # sizes 100 300 1000, seeds 0-4: a few minutes
    python benchmarks/no_vision_rules.py --null 20    # and the rules on redrawn gold answers: ~20 min in all
    python benchmarks/no_vision_rules.py --docs       # rewrites docs/tiny_world.md's block from the JSON
    python benchmarks/no_vision_rules.py --blank "world v10=benchmarks/results/mini_demon.json" --write-block
                                                      # trained runs' both-blank scores against the rules

Writes ``benchmarks/results/no_vision_rules.json``. ``--blank LABEL=FILE ...`` reads ``mini_demon_table.py``
results files and sets each run's both-blank scores against the best, cross-fitted and held-out rules of its
own evaluation files (a run of seed s evaluates mini-DEMON built with seed s, the files scored here; the best
rule recorded by the run must equal this file's, or the files differ and it stops).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import tempfile
from pathlib import Path

from doc_blocks import write_block
from mini_demon_table import labelled_results
from results_file import git_commit, write_results

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "no_vision_rules.json"
DOCS = ROOT / "docs" / "tiny_world.md"
BLOCK = "no-vision-rules"
BLANK_BLOCK = "both-blank-vs-rules"
TASKS = ("difference", "which_image", "detail_question", "cloze")
CHOICE_TASKS = ("which_image", "detail_question", "cloze")
FOLDS = 5  # cross-fitting folds
# The no-vision baselines of a both-blank comparison: row name, key in blank_against_rules' records.
RULE_ROWS = (("best rule", "best"), ("cross-fitted rules", "cross_fitted"), ("held-out rules", "held_out"))


def null_scores(task_dir: Path, reps: int, seed: str, fit_dir: Path) -> dict[str, list[float]]:
    """The best, the cross-fitted and the held-out rules' scores (percent) on ``reps`` copies of a choice task
    whose gold answers are redrawn uniformly among each sample's own options: the same prompts and options,
    with nothing in the text that predicts the answer. What the best rule scores there is what picking the
    best of several rules on the scored file is worth by itself; the cross-fitted rules (picked on other
    samples) and the held-out ones (picked on ``fit_dir``, unchanged) should score chance. Returns
    ``{"best": [...], "cross_fitted": [...], "held_out": [...]}``."""
    import random

    from vpgkit.evaluation import cross_fitted_baseline, held_out_baseline, load_task
    from vpgkit.evaluation.controls import no_vision_baselines

    source = json.loads((task_dir / "core.json").read_text())
    fit = load_task(fit_dir)
    rng = random.Random(seed)
    scores: dict[str, list[float]] = {"best": [], "cross_fitted": [], "held_out": []}
    for _ in range(reps):
        for sample in source["data"]:
            sample["response"] = rng.choice(sample["task_instance"]["choice_list"])
        with tempfile.TemporaryDirectory() as folder:
            redrawn = Path(folder) / task_dir.name
            redrawn.mkdir()
            (redrawn / "core.json").write_text(json.dumps(source))
            task = load_task(redrawn)
            scores["best"].append(no_vision_baselines(task)["best"]["score"])
            scores["cross_fitted"].append(cross_fitted_baseline(task, folds=FOLDS)["score"])
            scores["held_out"].append(held_out_baseline(task, fit_on=fit)["score"])
    return scores


def score_rules(sizes: list[int], seeds: list[int], null_reps: int = 0) -> dict:
    """Per task and size: each seed's best rule, every rule's score, the cross-fitted rules' and the held-out
    rules' (fitted on the next seed's file of the same size, the last seed on the first's), in percent with
    the task's metric; and for the choice tasks with ``null_reps``, each seed's mean of those on redrawn
    gold answers (:func:`null_scores`)."""
    from synthetic.world.mini_demon import make_mini_demon
    from vpgkit.evaluation import cross_fitted_baseline, held_out_baseline, load_task
    from vpgkit.evaluation.controls import no_vision_baselines

    tasks: dict[str, dict] = {t: {str(n): {"best": [], "rules": {}} for n in sizes} for t in TASKS}
    for n in sizes:
        with tempfile.TemporaryDirectory() as folder:
            files = {seed: Path(folder) / str(seed) for seed in seeds}
            for seed, path in files.items():
                make_mini_demon(path, seed=seed, per_task=n, tasks=TASKS, controls=False, progress=False)
            for k, seed in enumerate(seeds):
                fit_seed = seeds[(k + 1) % len(seeds)]
                for task in TASKS:
                    loaded = load_task(files[seed] / task)
                    baselines = no_vision_baselines(loaded)
                    fitted = cross_fitted_baseline(loaded, folds=FOLDS)
                    held_out = held_out_baseline(loaded, fit_on=load_task(files[fit_seed] / task))
                    entry = tasks[task][str(n)]
                    entry["best"].append({"rule": baselines["best"]["rule"],
                                          "score": round(baselines["best"]["score"], 2)})  # fmt: skip
                    for rule, score in baselines["rules"].items():
                        entry["rules"].setdefault(rule, []).append(round(score, 2))
                    entry.setdefault("cross_fitted", []).append(
                        {"score": round(fitted["score"], 2), "chosen": fitted["chosen"]}
                    )
                    entry.setdefault("held_out", []).append(
                        {
                            "score": round(held_out["score"], 2),
                            "chosen": held_out["chosen"],
                            "fit_seed": fit_seed,
                        }
                    )
                    if loaded.choices:  # a uniform guess among each sample's options
                        guess = statistics.mean(1 / len(c) for c in loaded.choices.values())
                        entry.setdefault("chance", []).append(round(100 * guess, 2))
                    if null_reps and task in CHOICE_TASKS:
                        null = null_scores(
                            files[seed] / task, null_reps, f"{seed}-{n}-{task}", files[fit_seed] / task
                        )
                        for key, values in null.items():
                            entry.setdefault(f"null_{key}", []).append(round(statistics.mean(values), 2))
                print(f"seed {seed}, {n} samples (best / cross-fitted / held-out): " + ", ".join(
                    f"{t} {tasks[t][str(n)]['best'][-1]['score']:.1f} / {tasks[t][str(n)]['cross_fitted'][-1]['score']:.1f}"
                    f" / {tasks[t][str(n)]['held_out'][-1]['score']:.1f}" for t in TASKS), flush=True)  # fmt: skip
    return tasks


def _mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def docs_block(results: dict) -> str:
    """The markdown tables of ``results``: the best rule's score per size and the best single rule, then
    (in files that have them) the cross-fitted rules'."""
    sizes = results["sizes"]
    largest = str(max(sizes))
    lines = [
        f"Best no-vision rule of the file, mean ± std over seeds {results['seeds']} (percent; ROUGE-L for "
        "difference, accuracy otherwise), by samples per task; last column: the rule with the best mean on "
        f"{largest} samples, scored alone on {largest}"
        + (
            f". In brackets, the best rule on the same files with every gold answer redrawn uniformly among "
            f"its sample's options ({results['null_reps']} draws per file, mean per seed): nothing in the "
            "text predicts the answer there, so that is what choosing the best rule on the file is worth alone:"
            if results.get("null_reps")
            else ":"
        ),
        "",
        "| task | "
        + " | ".join(f"best rule, {n} samples" for n in sizes)
        + f" | best single rule ({largest}) |",
        "|---|" + "---|" * (len(sizes) + 1),
    ]
    for task in TASKS:
        per_size = results["tasks"][task]
        cells = [
            _mean_std([b["score"] for b in per_size[str(n)]["best"]])
            + (
                f" (redrawn: {_mean_std(per_size[str(n)]['null_best'])})"
                if "null_best" in per_size[str(n)]
                else ""
            )
            for n in sizes
        ]
        rules = per_size[largest]["rules"]
        single = max(rules, key=lambda r: statistics.mean(rules[r]))
        cells.append(f"{_mean_std(rules[single])} ({single})")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    if "cross_fitted" in results["tasks"][TASKS[0]][largest]:
        lines += out_of_sample_lines(results, "cross_fitted", f"Cross-fitted rules ({FOLDS} folds: every sample "
                                     "answered by the rule chosen, and fitted, on the other folds; nothing is read "
                                     "off the answers being scored)")  # fmt: skip
    if "held_out" in results["tasks"][TASKS[0]][largest]:
        lines += out_of_sample_lines(results, "held_out", "Held-out rules (every sample answered by the rule chosen, "
                                     "and fitted, on the next seed's file of the same size)")  # fmt: skip
    lines += ["", f"Made by: `{results['command']}`"]
    return "\n".join(lines)


def out_of_sample_lines(results: dict, key: str, rules: str) -> list[str]:
    """A table of ``results``' rules fitted away from the scored answers (``key``: ``cross_fitted`` or
    ``held_out``, described by ``rules``): mean ± std over seeds per size, the redrawn files' in brackets,
    and a uniform guess among the options."""
    sizes = results["sizes"]
    lines = [
        "",
        f"{rules}, mean ± std over the same seeds"
        + (", in brackets on the redrawn files" if results.get("null_reps") else "")
        + "; last column: a uniform guess among each sample's options:",
        "",
        "| task | " + " | ".join(f"{key.replace('_', '-')}, {n} samples" for n in sizes) + " | guess |",
        "|---|" + "---|" * (len(sizes) + 1),
    ]
    for task in TASKS:
        per_size = results["tasks"][task]
        cells = [
            _mean_std([c["score"] for c in per_size[str(n)][key]])
            + (
                f" (redrawn: {_mean_std(per_size[str(n)][f'null_{key}'])})"
                if f"null_{key}" in per_size[str(n)]
                else ""
            )
            for n in sizes
        ]
        chance = per_size[str(max(sizes))].get("chance")
        cells.append(f"{statistics.mean(chance):.1f}" if chance else "")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return lines


def blank_against_rules(table: dict, rules: dict, variants: tuple[str, ...] = ("c", "n")) -> dict:
    """Per variant of ``table`` (a ``mini_demon_table.py`` results file) and task: per seed the run's
    both-blank score and the best, cross-fitted and held-out rules of its evaluation files, from ``rules``
    (this script's results) at the job's ``n_eval``. Seeds ``rules`` lacks are left out.

    Raises:
        ValueError: ``rules`` has no size equal to the job's ``n_eval``, or a run's recorded best rule is
            not ``rules``' for its seed (the evaluation files were not these).
    """
    n = str(table.get("default_job", {}).get("n_eval"))
    if n not in rules["tasks"][TASKS[0]]:
        raise ValueError(f"the runs evaluate {n} samples per task; the rules file has sizes {rules['sizes']}")
    out: dict = {}
    for run in sorted(table["runs"].values(), key=lambda r: (r["variant"], r["seed"])):
        if run["variant"] not in variants or run["seed"] not in rules["seeds"]:
            continue
        index = rules["seeds"].index(run["seed"])
        for task in TASKS:
            entry = rules["tasks"][task][n]
            best = entry["best"][index]["score"]
            recorded = run["tasks"][task]["no_vision"]["score"]
            if abs(recorded - best) > 0.01:
                raise ValueError(f"{run['variant']} seed {run['seed']}, {task}: the run's best no-vision rule is "
                                 f"{recorded:.2f}, the rules file's {best:.2f}: not the same evaluation files")  # fmt: skip
            out.setdefault(run["variant"], {}).setdefault(task, []).append({
                "seed": run["seed"], "blank": run["tasks"][task]["variants"]["both_blank"], "best": best,
                "cross_fitted": entry["cross_fitted"][index]["score"], "held_out": entry["held_out"][index]["score"],
            })  # fmt: skip
    return out


def _seed_means(per_task: dict, get, spread: bool = False) -> str:
    """Table cells: per task the mean over seeds of ``get(record)``, with the std when ``spread``."""
    values = [[get(r) for r in per_task[task]] for task in TASKS]
    if spread:  # one seed has no spread: the mean alone
        return " | ".join(f"{statistics.mean(v):+.1f}" + (f" ± {statistics.stdev(v):.1f}" if len(v) > 1 else "")
                          for v in values)  # fmt: skip
    return " | ".join(f"{statistics.mean(v):.1f}" for v in values)


def blank_block(files: list[tuple[str, Path]], rules_path: Path) -> str:
    """The docs table of :func:`blank_against_rules` for labelled results files."""
    rules = json.loads(rules_path.read_text())
    lines = [
        "Both images blank against the no-vision rules of the same evaluation files: mean over seeds (± std of "
        "the per-seed differences). The best rule is the evaluator's (chosen on the scored file); the "
        f"cross-fitted rules are chosen and fitted on other folds ({FOLDS} folds), the held-out rules on the "
        "next seed's file:",
        "",
        "| runs | row | " + " | ".join(TASKS) + " |",
        "|---|---|" + "---|" * len(TASKS),
    ]
    for label, path in files:
        for k, (variant, per_task) in enumerate(
            blank_against_rules(json.loads(path.read_text()), rules).items()
        ):
            if k == 0:  # the rules are the same for every variant of one file's seeds
                seeds = ", ".join(str(r["seed"]) for r in per_task[TASKS[0]])
                for j, (name, key) in enumerate(RULE_ROWS):
                    head = f" {label}, seeds {seeds} " if j == 0 else " "
                    lines.append(f"|{head}| {name} | {_seed_means(per_task, lambda r, key=key: r[key])} |")
            lines.append(f"| | ({variant}) both blank | {_seed_means(per_task, lambda r: r['blank'])} |")
            for name, key in RULE_ROWS:
                cells = _seed_means(per_task, lambda r, key=key: r["blank"] - r[key], spread=True)
                lines.append(f"| | ({variant}) both blank − {name} | {cells} |")
    shown = " ".join(shlex.quote(f"{label}={path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
                     for label, path in files)  # fmt: skip
    made = f"Made by: `python benchmarks/no_vision_rules.py --blank {shown} --write-block`"
    return "\n".join([*lines, "", made])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000], help="samples per task")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="mini-DEMON seeds")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON")
    parser.add_argument("--null", type=int, default=0, metavar="REPS",
                        help="also score the choice tasks with their gold answers redrawn, REPS times per file")  # fmt: skip
    parser.add_argument(
        "--docs", action="store_true", help=f"rewrite {DOCS.name}'s block from --out; no scoring"
    )
    parser.add_argument("--blank", nargs="+", metavar="LABEL=FILE", type=labelled_results,
                        help="only print mini_demon_table results files' both-blank scores against --out's rules")  # fmt: skip
    parser.add_argument("--write-block", action="store_true", help=f"with --blank: write {DOCS.name}'s block")
    args = parser.parse_args()
    if args.docs:
        write_block(DOCS, BLOCK, docs_block(json.loads(args.out.read_text())))
        return
    if args.blank:
        block = blank_block(args.blank, args.out)
        write_block(DOCS, BLANK_BLOCK, block) if args.write_block else print(block)
        return
    if min(args.sizes) < 2 or len(args.seeds) < 2:
        parser.error("--sizes must be ≥ 2 (leave-one-out rules) and --seeds needs two or more (a std)")
    command = "python benchmarks/no_vision_rules.py --sizes " + " ".join(map(str, args.sizes))
    command += " --seeds " + " ".join(map(str, args.seeds)) + f" --null {args.null}" * bool(args.null)
    results = {"command": command, "commit": git_commit(ROOT), "sizes": args.sizes, "seeds": args.seeds,
               "null_reps": args.null, "tasks": score_rules(args.sizes, args.seeds, args.null)}  # fmt: skip
    write_results(args.out, results, indent=1)
    print(docs_block(results))


if __name__ == "__main__":
    main()
