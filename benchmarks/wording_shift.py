"""How much of a trained run's mini-DEMON score owes to the evaluation's words.

mini-DEMON asks in :data:`~synthetic.world.language.EVAL_WORDING`, which neither the world LM's corpus nor the
adapter's synthetic data ever uses. This poses the same samples (same scenes, options, answers and controls)
once more in :data:`~synthetic.world.language.TRAIN_WORDING` and evaluates each run on both: a score that
rises in the training words was lost to the wording, not to what the adapter sees. ``--wordings ... paraphrase``
adds :data:`~synthetic.world.language.PARAPHRASE_WORDING`: known words in new phrasings, which tells the
evaluation's new words from its new phrasings. Also counted: detail and
cloze answers that are which-image answers (``first`` / ``second``), which no option of theirs is.

    python benchmarks/wording_shift.py --runs runs/mini_demon/c_seed0 runs/mini_demon/e_seed0 --base
    python benchmarks/wording_shift.py --docs-block          # the docs table from the JSON only

Run it in the checkout whose world the runs were trained on (the runs load ``vpgkit/assets/tiny_world``).
``--base`` also evaluates each seed's model without an adapter. Writes ``benchmarks/results/wording_shift.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the world and vpgkit of this checkout, as the evaluations load them

from mini_demon_table import percent_where, task_and_kind, task_records  # noqa: E402
from results_file import git_commit, write_results  # noqa: E402

from synthetic.world.build import built_by, provenance  # noqa: E402
from synthetic.world.language import EVAL_WORDING, PARAPHRASE_WORDING, TRAIN_WORDING  # noqa: E402
from synthetic.world.mini_demon import make_mini_demon  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "wording_shift.json"
# paraphrase: known words in phrasings the LM never read (nor the adapter, unless trained with paraphrase > 0)
WORDINGS = {"eval": EVAL_WORDING, "train": TRAIN_WORDING, "paraphrase": PARAPHRASE_WORDING}
WHICH_IMAGE_ANSWERS = ("first", "second")
COUNTED = ("detail_question", "cloze")  # choice tasks whose options are never which-image answers


def _is_which_image_answer(record: dict) -> bool:
    return record["prediction"].strip().rstrip(".").strip().lower() in WHICH_IMAGE_ANSWERS


def which_image_answers(predictions: list[dict]) -> dict[str, dict[str, float]]:
    """Per task of :data:`COUNTED` and evaluation (``real`` or a control): percent of answers that are a
    which-image answer (``first`` / ``second``, any case, a final ``.`` ignored).

    Example:
        >>> which_image_answers([{"task": "mini_demon_cloze", "prediction": "First."},
        ...                      {"task": "mini_demon_cloze", "prediction": "red"}])
        {'cloze': {'real': 50.0}}
    """
    return percent_where(predictions, lambda r: task_and_kind(r) if task_and_kind(r)[0] in COUNTED else None,
                         _is_which_image_answer)  # fmt: skip


def by_question(predictions: list[dict], demon: Path, wording: str) -> dict[str, dict[str, float]]:
    """Detail questions per evaluation (``real`` or a control) and question template of ``wording``: percent of
    answers that are a which-image answer (the templates are told apart by matching each sample's question)."""
    templates = (*WORDINGS[wording].colour_q, *WORDINGS[wording].position_q)
    patterns = [re.compile(re.escape(t).replace(re.escape("{object}"), ".+")) for t in templates]
    questions = {}
    for folder in ("detail_question", "detail_question__both_blank"):
        for sample in json.loads((demon / folder / "core.json").read_text())["data"]:
            context = sample["task_instance"]["context"].split("} ", 1)[1]
            (template,) = (
                t for t, pattern in zip(templates, patterns, strict=True) if pattern.fullmatch(context)
            )
            questions[folder, sample["sample_id"]] = template

    def key(record: dict) -> tuple[str, str] | None:
        task, kind = task_and_kind(record)
        folder = record["task"].removeprefix("mini_demon_")
        return (
            (kind, questions[folder, record["id"].rsplit("-", 1)[1]]) if task == "detail_question" else None
        )

    return percent_where(predictions, key, _is_which_image_answer)


class Job(NamedTuple):
    """One evaluation: a run (or its model without the adapter, ``base``) on its mini-DEMON in ``wording``."""

    name: str
    wording: str
    run: Path
    demon: Path
    result: Path
    base: bool


def _benchmark(config: dict, wording: str, out: Path) -> Path:
    """The mini-DEMON of ``config`` (a run's ``prepare_config.json`` entry: seed, size) in ``wording``,
    written once."""
    folder = out / f"{wording}_wording" / f"seed{config['seed']}_n{config['n_eval']}"
    if not (folder / "index.json").is_file():
        make_mini_demon(folder, seed=config["seed"], per_task=config["n_eval"], progress=False,
                        wording=WORDINGS[wording])  # fmt: skip
    return folder


def _evaluate(job: Job) -> dict:
    """Run ``job`` (unless its result is there) and return its per-task record."""
    if not job.result.is_file():
        cmd = [sys.executable, "-m", "vpgkit.evaluate", "--run", str(job.run), "--demon", str(job.demon),
               "--out", str(job.result), "--no-progress", *(["--base-only"] if job.base else [])]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    tasks = task_records(job.result)
    predictions = json.loads(job.result.read_text())["predictions"]
    for task, shares in which_image_answers(predictions).items():
        tasks[task]["which_image_answers"] = shares
    tasks["detail_question"]["which_image_answers_by_question"] = by_question(
        predictions, job.demon, job.wording
    )
    return tasks


def run_all(
    runs: list[Path], out: Path, base: bool, jobs: int, wordings: tuple[str, ...] = ("eval", "train")
) -> dict:
    """Every run, and with ``base`` each seed's model without an adapter (from the seed's first run), evaluated
    in each of ``wordings`` (names of :data:`WORDINGS`)."""
    from tqdm.auto import tqdm

    todo, base_seeds = [], set()
    for run in runs:
        config = json.loads((run / "data" / "prepare_config.json").read_text())["mini_demon"]
        kinds = [(run.name, False)]
        if base and config["seed"] not in base_seeds:
            base_seeds.add(config["seed"])
            kinds.append((f"base_seed{config['seed']}", True))
        for wording in wordings:
            demon = _benchmark(config, wording, out)
            todo += [Job(name, wording, run, demon, out / "evals" / f"{name}_{wording}.json", is_base)
                     for name, is_base in kinds]  # fmt: skip
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        records = list(tqdm(pool.map(_evaluate, todo), total=len(todo), desc="evaluations"))
    data: dict[str, dict] = {}
    for job, tasks in zip(todo, records, strict=True):
        data.setdefault(job.name, {"run": str(job.run)})[job.wording] = tasks
    return data


def docs_block(data: dict) -> str:
    """The docs table: per variant (runs named ``<variant>_seed<n>``) and wording, the mean ± std over seeds of
    the detail tasks' scores, detail questions by kind and with both images blank, and the detail answers that
    name no option or are which-image answers (real images / both blank)."""

    def detail(t: dict) -> dict:
        return t["detail_question"]

    columns = [
        ("difference", lambda t: t["difference"]["score"]),
        ("which-image", lambda t: t["which_image"]["score"]),
        ("detail", lambda t: detail(t)["score"]),
        ("detail: position", lambda t: detail(t)["subsets"]["position"]),
        ("detail: colour", lambda t: detail(t)["subsets"]["colour"]),
        ("detail, both blank", lambda t: detail(t)["variants"]["both_blank"]),
        ("detail off the options", lambda t: detail(t)["off_choice"]["real"]),
        ("... both blank", lambda t: detail(t)["off_choice"]["both_blank"]),
        ("detail `first`/`second`", lambda t: detail(t)["which_image_answers"]["real"]),
        ("... both blank", lambda t: detail(t)["which_image_answers"]["both_blank"]),
        ("cloze", lambda t: t["cloze"]["score"]),
    ]
    variants: dict[str, list[dict]] = {}
    for name, entry in data["runs"].items():
        variants.setdefault(name.rsplit("_seed", 1)[0], []).append(entry)
    lines = [f"`{data['command']}` (commit {data['commit']}) on the world built by {built_by(data['assets'])}.",
             "Mean ± std over seeds; `base`: the model without an adapter.", "",
             "| variant (seeds) | wording | " + " | ".join(header for header, _ in columns) + " |",
             "|" + "---|" * (len(columns) + 2)]  # fmt: skip
    for variant, entries in variants.items():
        for wording in (w for w in WORDINGS if w in entries[0]):
            cells = []
            for _, get in columns:
                values = [get(e[wording]) for e in entries]
                std = statistics.stdev(values) if len(values) > 1 else 0.0
                cells.append(f"{statistics.mean(values):.1f} ± {std:.1f}")
            lines.append(f"| {variant} ({len(entries)}) | {wording} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--runs", type=Path, nargs="+", help="finished runs of benchmarks/mini_demon_table.py"
    )
    parser.add_argument("--base", action="store_true", help="also each seed's model without an adapter")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("runs/wording_shift"),
        help="benchmarks and evaluations (an evaluation already there, by run name, is reused)",
    )
    parser.add_argument("--jobs", type=int, default=2, help="evaluations at once (1 thread each)")
    parser.add_argument("--wordings", nargs="+", choices=list(WORDINGS), default=["eval", "train"])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--docs-block", action="store_true", help="only print the docs table from --results")
    args = parser.parse_args()
    if not args.docs_block:
        if not args.runs:
            parser.error("--runs is required (or --docs-block)")
        for run in args.runs:
            if not (run / "adapter").is_dir() or not (run / "data" / "prepare_config.json").is_file():
                parser.error(f"--runs: {run} is not a finished default-job run (no adapter/ or data/)")
        data = {"command": "python benchmarks/wording_shift.py " + " ".join(sys.argv[1:]),
                "commit": git_commit(ROOT), "assets": provenance(),
                "runs": run_all([r.resolve() for r in args.runs], args.out.resolve(), args.base, args.jobs,
                                tuple(args.wordings))}  # fmt: skip
        write_results(args.results, data)
    print(docs_block(json.loads(args.results.read_text())))


if __name__ == "__main__":
    main()
