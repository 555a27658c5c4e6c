"""What a trained adapter answers when it cannot see: the mini-DEMON choice tasks with real and with blank images.

The both-blank control of ``benchmarks/mini_demon_table.py`` reports one number per task. This script reads
the predictions behind it (each run's ``eval/results.json``) and splits it, per choice task and evaluation
(``real`` images, ``both_blank``):

- ``off_option``: answers naming none of the sample's options (percent). vpgkit's mapping
  (:func:`vpgkit.evaluation.map_to_choice`) scores them 0.
- ``on_option_accuracy``: accuracy among the answers that name an option, against ``chance_on_option``,
  the mean of 1 / (number of options) over those samples. An answer prior the text teaches would lift
  the blank-image value above chance; looking at nothing cannot.
- ``demon_script``: the accuracy DEMON's own scoring script (``DEMON Benchmark/scripts/evaluate.py`` of
  DCDmllm/Cheetah) would give. It maps *every* answer to the option with the highest TF-IDF cosine
  (scikit-learn's ``TfidfVectorizer`` defaults, fitted on the answer and the options) and takes the first
  option when no word is shared (the argmax of all zeros), so an off-option answer is right whenever the
  gold is the first option. :func:`demon_script_choice` re-implements that mapping from its documented
  behaviour; vpgkit's evaluator does not use it. The script's own punctuation rules (it deletes or spaces
  out some marks before fitting) are not reproduced: they change nothing on answers made of words, as this
  world's are, but can on hyphenated or numeric ones.
- ``off_option_answers``: every off-option answer (token-normalised) and how often it was given.

    python benchmarks/blank_answers.py --runs DIR --label "world v10 seed 1" --variants c
    python benchmarks/blank_answers.py --docs        # rewrites docs/tiny_world.md's block from the JSON

``DIR`` is a ``mini_demon_table.py --out`` directory (run directories ``<variant>_seed<k>``); the run
directories must still hold their evaluation data (``data/mini_demon``). Reads files only (seconds).
Writes ``benchmarks/results/blank_answers.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "blank_answers.json"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

CHOICE_TASKS = ("which_image", "detail_question", "cloze")
KINDS = ("real", "both_blank")
_WORD = re.compile(r"\b\w\w+\b")  # TfidfVectorizer's default token pattern: words of two or more characters


def demon_script_choice(answer: str, options: Sequence[str]) -> int | None:
    """The option DEMON's scoring script maps ``answer`` to: the highest TF-IDF cosine (smoothed idf,
    l2-normalised raw counts, fitted on the answer and the options; ties and all-zero rows → the first),
    or None when the fit has no vocabulary (the script then compares the texts exactly).

    Example:
        >>> demon_script_choice("it is blue", ["red", "blue"]), demon_script_choice("orange", ["red", "blue"])
        (1, 0)
    """
    docs = [Counter(_WORD.findall(text.lower())) for text in [answer, *options]]
    vocabulary = set().union(*docs)
    if not vocabulary:
        return None
    df = Counter(word for doc in docs for word in doc)
    idf = {w: math.log((1 + len(docs)) / (1 + df[w])) + 1 for w in vocabulary}

    def vector(doc: Counter) -> dict[str, float]:
        weights = {w: n * idf[w] for w, n in doc.items()}
        norm = math.sqrt(sum(v * v for v in weights.values())) or 1.0
        return {w: v / norm for w, v in weights.items()}

    query, *rows = (vector(doc) for doc in docs)
    cosines = [sum(v * row.get(w, 0.0) for w, v in query.items()) for row in rows]
    return cosines.index(max(cosines))


def _demon_script_correct(answer: str, reference: str, options: Sequence[str]) -> bool:
    # The script lower-cases and strips every text first; its punctuation rules do not touch these words.
    index = demon_script_choice(answer, options)
    if index is None:
        return answer.strip().lower() == reference.strip().lower()
    return options[index].strip().lower() == reference.strip().lower()


def measure_run(results_path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """task → kind → the measures of the module docstring, for one run's ``eval/results.json``."""
    from mini_demon_table import task_and_kind

    from vpgkit.evaluation import load_task
    from vpgkit.evaluation.metrics import normalize

    results = json.loads(results_path.read_text())
    grouped: dict[tuple[str, str], list[dict]] = {}
    for record in results["predictions"]:
        where = task_and_kind(record)
        if where[0] in CHOICE_TASKS and where[1] in KINDS:
            grouped.setdefault(where, []).append(record)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (task, kind), records in sorted(grouped.items()):
        # the options by sample id (the ids the predictions carry), from the file this evaluation read
        choices = load_task(results["tasks"][records[0]["task"]]["path"]).choices
        on = [r for r in records if r["choice_rule"] != "none"]
        off = Counter(normalize(r["prediction"]) for r in records if r["choice_rule"] == "none")
        demon = [_demon_script_correct(r["prediction"], r["reference"], choices[r["id"]]) for r in records]
        out.setdefault(task, {})[kind] = {
            "count": len(records),
            "score": 100.0 * sum(r["score"] for r in records) / len(records),
            "off_option": 100.0 * (len(records) - len(on)) / len(records),
            "on_option_accuracy": 100.0 * sum(r["score"] for r in on) / len(on) if on else None,
            "chance_on_option": 100.0 * statistics.mean(1 / len(choices[r["id"]]) for r in on)
            if on
            else None,
            "demon_script": 100.0 * sum(demon) / len(demon),
            "off_option_answers": dict(off.most_common()),
        }
    return out


def _mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def docs_block(data: dict[str, Any]) -> str:
    """Markdown: per set of runs and choice task, real / both blank for each measure (seed means)."""
    lines = [
        "Per choice task, **real images / both blank** (percent; means over the runs' seeds): the score, "
        "answers naming no option, accuracy among the answers that name one (chance in brackets), and the "
        "score DEMON's own script would give (every answer mapped to an option); and, with both images "
        "blank, the two commonest answers naming no option (their share of those answers):",
        "",
        "| runs | task | score | no option | accuracy on an option (chance) | DEMON's script "
        "| blank: commonest answers naming no option |",
        "|---|---|---|---|---|---|---|",
    ]
    for entry in data["entries"]:
        label = f"{entry['label']}, ({entry['variant']}) seeds {', '.join(map(str, entry['seeds']))}"
        for task in CHOICE_TASKS:
            per = [run[task] for run in entry["runs"].values() if task in run]
            if not per:
                continue

            def pair(key: str, per=per) -> str:
                values = [_mean([p[k][key] for p in per]) for k in KINDS]
                return " / ".join("–" if v is None else f"{v:.1f}" for v in values)

            chance = _mean([p["both_blank"]["chance_on_option"] for p in per])
            pooled = sum((Counter(p["both_blank"]["off_option_answers"]) for p in per), Counter())
            common = ", ".join(f"{a} {100 * n / pooled.total():.0f}%" for a, n in pooled.most_common(2))
            lines.append(
                f"| {label} | {task} | {pair('score')} | {pair('off_option')} | "
                f"{pair('on_option_accuracy')} ({chance:.0f}) | {pair('demon_script')} | {common or '–'} |"
            )
    lines += ["", "Made by: " + "; ".join(f"`{c}`" for c in data["commands"])]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=Path, help="a mini_demon_table.py --out directory")
    parser.add_argument("--label", help="what the runs are (e.g. the world build)")
    parser.add_argument("--variants", nargs="+", default=["c"], help="variants to read (default: c)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--merge", action="store_true", help="add to (or replace by label) the entries in --out"
    )
    parser.add_argument(
        "--docs", action="store_true", help="only rewrite docs/tiny_world.md's block from --out"
    )
    args = parser.parse_args()
    if args.docs:
        from doc_blocks import write_block

        write_block(
            ROOT / "docs" / "tiny_world.md", "blank-answers", docs_block(json.loads(args.out.read_text()))
        )
        return
    if args.runs is None or args.label is None:
        parser.error("--runs and --label are required (or --docs)")
    from results_file import write_results

    previous = json.loads(args.out.read_text()) if args.merge and args.out.exists() else {}
    entries = [e for e in previous.get("entries", []) if e["label"] != args.label]
    for variant in args.variants:
        found = sorted(args.runs.glob(f"{variant}_seed*/eval/results.json"))
        if not found:
            parser.error(
                f"--runs {args.runs}: no {variant}_seed*/eval/results.json (expected a table's --out)"
            )
        runs = {path.parts[-3]: measure_run(path) for path in found}
        seeds = sorted(int(name.rpartition("_seed")[2]) for name in runs)
        entries.append({"label": args.label, "variant": variant, "seeds": seeds, "runs": runs})
    command = f"python benchmarks/blank_answers.py --runs {args.runs} --label {json.dumps(args.label)}"
    command += f" --variants {' '.join(args.variants)}" if args.variants != ["c"] else ""
    data = {
        "commands": [*previous.get("commands", []), command + " --merge" * args.merge],
        "entries": entries,
    }
    write_results(args.out, data, indent=1)
    print(docs_block(data))


if __name__ == "__main__":
    main()
