"""What the world LM's training recipe does to its ceilings: the LM stage of the build under named variants.

Each variant trains the tiny world's LLaMA exactly as ``python -m synthetic.world.build`` does
(:func:`synthetic.world.backbones.train_language_model`, 2000 steps, fp16-rounded afterwards as shipped)
with one recipe change, then measures :func:`synthetic.world.diagnostics.lm_ceilings` (perfect object
slots at the input, and small objects injected at layer 3 where VPG-C writes; per question kind and per
changed / unchanged cloze pair). No ViT, Q-Former or adapter is involved: this isolates what the LM can
read, so that a world rebuild is chosen on evidence.

    OMP_NUM_THREADS=1 python benchmarks/lm_variants.py --seeds 1   # 20-60 min a run, by machine
    python benchmarks/lm_variants.py --docs      # rewrites docs/tiny_world.md's block from the JSON

Runs go one per process (``--jobs`` at once, ``--threads`` each, default 1); ``--merge`` adds to the runs already in
``--out``. Writes ``benchmarks/results/lm_variants.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from synthetic.world.diagnostics import MODES

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "lm_variants.json"
sys.path.insert(0, str(ROOT / "benchmarks"))

# world v6's LM recipe (the summary loss at weight 0.1 on detail-question and cloze documents), and the task
# mix with which-image at 40% of the documents (25% in the build; the others scaled down)
SUMMARY_W01: dict[str, Any] = {"question_summary": 0.1, "summary_tasks": ("detail_question", "cloze")}
SUMMARY_DIFFERENCE: dict[str, Any] = {
    "question_summary": 0.1,
    "summary_tasks": ("detail_question", "cloze", "difference"),
    "compare": 1.0,
}
# world v9's recipe (summary_difference_colours_groups4) with row / column slots
ROWCOL: dict[str, Any] = SUMMARY_DIFFERENCE | {
    "pair_colours": 1.0,
    "length_groups": 4,
    "layout": {"row_column_slots": True},
}
HEADS8 = {"num_attention_heads": 8, "num_key_value_heads": 8}
WHICH40 = {"caption": 0.12, "detail_question": 0.16, "difference": 0.16, "which_image": 0.4, "cloze": 0.16}
# name → (description, train_language_model keyword arguments). "summary" is world v5's recipe, "summary_w01"
# the shipped world v6's.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "no_summary": ("LM loss only (world v4's recipe)", {"question_summary": 0.0}),
    "summary": (
        "+ question summary 0.5 on detail-question and cloze documents (world v5)",
        {"question_summary": 0.5, "summary_tasks": ("detail_question", "cloze")},
    ),
    "summary_w01": (
        "as summary, with the summary loss weighted 0.1 (world v6, shipped)",
        SUMMARY_W01,
    ),
    "summary_w01_all": (
        "as summary_w01, with the summary on which-image documents too",
        {"question_summary": 0.1, "summary_tasks": ("detail_question", "which_image", "cloze")},
    ),
    "summary_w01_which40": (
        "as summary_w01, with which-image 40% of the documents (25% in the build; the others scaled down)",
        SUMMARY_W01 | {"task_weights": WHICH40},
    ),
    # Recoloured which-image pairs differ in one word of one slot (an equality between the question and a
    # slot decides the answer); pairs whose other image lacks the object can be told apart by the shape /
    # position match cloze also needs. Does training on some of those help the recoloured ones?
    "summary_w01_remove50": (
        "as summary_w01, with half the which-image documents' other image lacking the named object",
        SUMMARY_W01 | {"which_forms": {"remove": 0.5}},
    ),
    # A recoloured pair can only be told apart by matching the question's colour against a slot *and* reading
    # which image that slot is in; neither step pays off without the other. The "alone" form (the object
    # against an empty image) rewards reading an image's identity on its own; position questions about one
    # of two same-shape objects reward matching by colour. Do the two footholds together unlock the recolour?
    "summary_w01_curriculum": (
        "as summary_w01, with which-image documents a third each: object alone vs an empty image, other "
        "image lacking the object, recoloured",
        SUMMARY_W01 | {"which_forms": {"alone": 1 / 3, "remove": 1 / 3}},
    ),
    "summary_w01_curriculum_which40": (
        "as summary_w01_curriculum, with which-image 40% of the documents and half of them recoloured",
        SUMMARY_W01 | {"which_forms": {"alone": 0.25, "remove": 0.25}, "task_weights": WHICH40},
    ),
    # Without labels the two images' slots are written the same way (``<Img>`` + slots + ``</Img>``), so
    # which image a slot is in can only be read by counting the markers before it. With perfect slots the
    # shipped LM scores worst on difference questions about an *added* object (43 ROUGE-L) and answers
    # "first" to nearly every which-image question, the one-image "alone" form included. A label before
    # each image can be read by attending to the nearest one.
    "summary_w01_labels": (
        "as summary_w01, with difference questions' images labelled `first image:` / `second image:` as which-image "
        "questions' are (in documents and prompts)",
        SUMMARY_W01 | {"layout": {"label_images": True}},
    ),
    "summary_w01_labels_curriculum": (
        "as summary_w01_labels, with the which-image forms of summary_w01_curriculum",
        SUMMARY_W01 | {"layout": {"label_images": True}, "which_forms": {"alone": 1 / 3, "remove": 1 / 3}},
    ),
    # A VPG runs the same queries over both images of a pair, so the query that finds the object of a region
    # in one image finds its counterpart in the other; the LM's documents put each image's slots in a random
    # order of their own. With one order per document the two objects a difference or which-image answer
    # compares sit a fixed number of tokens apart.
    "summary_w01_labels_aligned": (
        "as summary_w01_labels, with one slot order for both images of a document (the object asked about in "
        "the same slot of each)",
        SUMMARY_W01 | {"layout": {"label_images": True, "align_slots": True}},
    ),
    # The layouts above leave the comparison of the two images' slots to the answers' loss alone. Here a linear
    # head on each slot at the input of layer 5 must tell a first-image slot from a second-image slot whose
    # position the first image does not show, shows changed, or shows the same (SLOT_RELATIONS): add, modify
    # and unchanged at the named region, and which image a slot is in.
    "summary_w01_compare": (
        "as summary_w01, with a slot-relation loss (weight 0.3) on two-image documents' slots at layer 5",
        SUMMARY_W01 | {"compare": 0.3},
    ),
    "summary_w01_compare1": (
        "as summary_w01_compare, with the slot-relation loss at weight 1",
        SUMMARY_W01 | {"compare": 1.0},
    ),
    "summary_w01_compare3": (
        "as summary_w01_compare, with the slot-relation loss at weight 3",
        SUMMARY_W01 | {"compare": 3.0},
    ),
    "summary_difference": (
        "the summary-difference build's recipe: the summary loss (0.1) on detail-question, cloze and difference "
        "documents, the slot-relation loss at weight 1",
        SUMMARY_DIFFERENCE,
    ),
    # Its builds' which-image ceilings were 79 / 56 / 61: the answer loss alone does not reliably find the
    # two-step circuit (read the asked object's colour in each image, compare it with the question's). Here a
    # head on the last prompt token at layer 5 must name that colour in each image, so only the comparison is
    # left to the answer's loss.
    "summary_difference_colours": (
        "as summary_difference, with a pair-colour loss (weight 1): the asked object's colour in each image, "
        "read from the last prompt token at layer 5",
        SUMMARY_DIFFERENCE | {"pair_colours": 1.0},
    ),
    "summary_difference_colours_groups4": (
        "as summary_difference_colours, each step in 4 length groups (same loss, other rounding)",
        SUMMARY_DIFFERENCE | {"pair_colours": 1.0, "length_groups": 4},
    ),
    # World v9's LM answers position questions at ~67% with perfect slots (300 questions), colour ones at
    # ~93%; most misses drop or add a row or column word ("left" read as "top", "top left" as "top"). A slot
    # is the mean of its words' embeddings, and a middle row or column is a word missing from it.
    "summary_difference_colours_groups4_rowcol": (
        "as summary_difference_colours_groups4, each slot naming a row and a column (`center left` for "
        "`left`)",
        ROWCOL,
    ),
    # With row / column slots most position misses name *another shown object's* position, and accuracy falls
    # with the objects shown (1: 94%, 2: 77%, 3: 57%): binding the question's object to its slot is what fails.
    # The pair-colour head, the same kind of read for which-image, took that task from ~50% to 100%.
    "summary_difference_colours_groups4_rowcol_cells": (
        "as summary_difference_colours_groups4_rowcol, with an asked-cell loss (weight 1): the grid cell of a "
        "detail question's object, read from the last prompt token at layer 5",
        ROWCOL | {"asked_cells": 1.0},
    ),
    # At weight 1 the asked-cell head took detail questions to 96 / 91 but difference questions from 92 / 95 to
    # 74 / 73 (seed 0): unchanged regions read as "added". A lighter weight, or the same read on difference
    # documents (the cell of the region the question names), so that one late read serves both tasks:
    "summary_difference_colours_groups4_rowcol_cells03": (
        "as summary_difference_colours_groups4_rowcol_cells, the asked-cell loss at weight 0.3",
        ROWCOL | {"asked_cells": 0.3},
    ),
    "summary_difference_colours_groups4_rowcol_cells01": (
        "as summary_difference_colours_groups4_rowcol_cells, the asked-cell loss at weight 0.1",
        ROWCOL | {"asked_cells": 0.1},
    ),
    "summary_difference_colours_groups4_rowcol_cells_difference": (
        "as summary_difference_colours_groups4_rowcol_cells, the asked-cell loss on difference documents too "
        "(the named region's cell)",
        ROWCOL | {"asked_cells": 1.0, "asked_cell_tasks": ("detail_question", "difference")},
    ),
    # The position misses that remain are binding misses (the question's object read from another shown slot)
    # and difference questions compare two slots: both are routing, and the LM has 4 heads of 32 dims per
    # layer for every read the tasks need. (Measured: it does not help.)
    "summary_difference_colours_groups4_rowcol_cells03_heads8": (
        "as summary_difference_colours_groups4_rowcol_cells03, with 8 attention heads of 16 dims (4 of 32)",
        ROWCOL | {"asked_cells": 0.3, "llm_shape": HEADS8},
    ),
}
COLUMNS = [
    ("which_image", None),
    ("detail_question", "colour"),
    ("detail_question", "position"),
    ("cloze", "changed"),
    ("cloze", "unchanged"),
    ("difference", None),
    ("difference", "add"),
    ("difference", "delete"),
    ("difference", "modify"),
    ("difference", "unchanged"),
    ("caption", None),
]


def run_one(
    variant: str, seed: int, steps: int, n: int, save: Path | None = None, threads: int = 1
) -> dict[str, Any]:
    """Train one LM variant in this process and measure its ceilings; ``save``: also write the LM (fp16, as
    the build ships it) and its tokenizer to ``save/<variant>_seed<seed>``."""
    import torch

    from synthetic.world.backbones import DocumentLayout, train_language_model
    from synthetic.world.build import round_to_fp16, save_llm
    from synthetic.world.diagnostics import lm_ceilings
    from synthetic.world.language import build_world_tokenizer

    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    tokenizer = build_world_tokenizer()
    start = time.process_time()
    kwargs = dict(VARIANTS[variant][1])
    layout = DocumentLayout(**kwargs.pop("layout", {}))  # a variant names only the fields it changes
    reports: list[str] = []
    llm, result = train_language_model(tokenizer, seed, steps, log=reports.append, layout=layout, **kwargs)
    round_to_fp16(llm)  # as shipped
    train_cpu = time.process_time() - start
    if save is not None:  # the build's own writer: fp16 safetensors + tokenizer, swapped in whole
        save.mkdir(parents=True, exist_ok=True)
        save_llm(save / f"{variant}_seed{seed}", llm, tokenizer)
        llm.float()  # exact: the weights were fp16-rounded above
    return {
        "variant": variant,
        "seed": seed,
        "steps": steps,
        "n": n,
        "final_loss": round(result.final_loss, 5),
        "train_cpu_seconds": round(train_cpu, 1),
        "threads": threads,
        "ceilings": lm_ceilings(llm, tokenizer, n=n, layout=layout),
        **({"relation_head": _relation_head(reports[-5:])} if kwargs.get("compare") else {}),
        **({"pair_colour_head": _head_report(reports[-5:], "colours")} if kwargs.get("pair_colours") else {}),
        **({"asked_cell_head": _head_report(reports[-5:], "cells")} if kwargs.get("asked_cells") else {}),
    }


def _relation_head(reports: list[str]) -> dict[str, float]:
    """The slot-relation head's loss and accuracies (first-image slots; second-image slots, the comparison)
    on the training batches of the last reports (every 50 steps), averaged."""
    values = [re.search(r"compare (\S+) first (\S+) second (\S+)", line).groups() for line in reports]
    means = np.mean(np.array(values, dtype=float), axis=0)
    return {
        "loss": round(means[0], 4),
        "first_accuracy": round(means[1], 3),
        "second_accuracy": round(means[2], 3),
    }


def _head_report(reports: list[str], name: str) -> dict[str, float]:
    """A head's loss and accuracy on the training batches of the last reports, averaged; ``name`` is the word
    its training log line uses (``colours``: the pair-colour head; ``cells``: the asked-cell head)."""
    values = [re.search(rf"{name} (\S+) right (\S+)", line).groups() for line in reports]
    means = np.mean(np.array(values, dtype=float), axis=0)
    return {"loss": round(means[0], 4), "accuracy": round(means[1], 3)}


def _cell(ceilings: dict, task: str, subset: str | None) -> str:
    """A ceiling as ``input / layered``, then `` / blank`` for runs that measured the every-slot-empty
    control; "–" for a subset not measured (runs from before difference questions were split by edit, or a
    subset no instance fell into at a tiny ``--n``)."""
    modes = [m for m in MODES if m in ceilings[task]]  # runs from before the blank control lack it
    if subset is None:
        return " / ".join(f"{ceilings[task][m]:.0f}" for m in modes)
    per_mode = ceilings[task].get("subsets", {})
    if any(subset not in per_mode.get(mode, {}) for mode in modes):
        return "–"
    return " / ".join(f"{per_mode[m][subset]:.0f}" for m in modes)


def docs_block(data: dict) -> str:
    """Markdown table: per variant and seed, each ceiling as input / layer 3."""
    head = " | ".join(f"{t}{': ' + s if s else ''}" for t, s in COLUMNS)
    lines = [
        "LM ceilings with perfect object slots, **input / injected at layer 3**, and for the runs that "
        "measured it **/ every slot empty** (the text-only control; percent; accuracy, ROUGE-L for difference "
        f"and caption), {data['n']} held-out instances per task, each LM {data['steps']} steps:",
        "",
        f"| variant | seed | {head} |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    for run in data["runs"]:
        cells = " | ".join(_cell(run["ceilings"], t, s) for t, s in COLUMNS)
        lines.append(f"| {run['variant']} | {run['seed']} | {cells} |")
    heads = [r for r in data["runs"] if "relation_head" in r]
    if heads:
        lines += [
            "",
            "The slot-relation head's accuracy on its last training batches (first-image / second-image slots):",
        ]
        lines += [""] + [
            f"- {r['variant']} seed {r['seed']}: {r['relation_head']['first_accuracy']:.2f} / "
            f"{r['relation_head']['second_accuracy']:.2f} (loss {r['relation_head']['loss']})"
            for r in heads
        ]
    for key, title in (
        (
            "pair_colour_head",
            "The pair-colour head's accuracy on its last training batches (both images' colours):",
        ),
        (
            "asked_cell_head",
            "The asked-cell head's accuracy on its last training batches (detail questions):",
        ),
    ):
        runs = [r for r in data["runs"] if key in r]
        if runs:
            lines += ["", title, ""]
            lines += [
                f"- {r['variant']} seed {r['seed']}: {r[key]['accuracy']:.2f} (loss {r[key]['loss']})"
                for r in runs
            ]
    lines += ["", "Variants:", ""]
    lines += [
        f"- `{name}`: {VARIANTS[name][0]}" for name in dict.fromkeys(r["variant"] for r in data["runs"])
    ]
    lines += ["", "Made by: " + "; ".join(f"`{c}`" for c in data["commands"])]
    return "\n".join(lines)


def write_docs_block(text: str, page: Path = ROOT / "docs" / "tiny_world.md") -> None:
    from doc_blocks import write_block

    write_block(page, "lm-variants", text)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--steps", type=int, default=2000, help="LM steps (the build's default)")
    parser.add_argument("--n", type=int, default=200, help="instances per task for the ceilings")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--merge", action="store_true", help="add to the runs already in --out")
    parser.add_argument(
        "--docs", action="store_true", help="only rewrite docs/tiny_world.md's block from --out"
    )
    parser.add_argument(
        "--save", type=Path, default=None, help="also write each trained LM to SAVE/<variant>_seed<k>"
    )
    parser.add_argument("--one", nargs=2, metavar=("VARIANT", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]), args.steps, args.n, args.save, args.threads)))
        return
    if args.docs:
        write_docs_block(docs_block(json.loads(args.out.read_text())))
        return
    from results_file import git_commit, write_results

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}

    def child(job: tuple[str, int]) -> dict[str, Any]:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            job[0],
            str(job[1]),
            "--steps",
            str(args.steps),
            "--n",
            str(args.n),
            "--threads",
            str(args.threads),
            *(["--save", str(args.save)] if args.save else []),
        ]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        run = json.loads(out.strip().splitlines()[-1])
        print(f"{job[0]} seed {job[1]}: {run['train_cpu_seconds']} CPU s", flush=True)
        return run

    previous = json.loads(args.out.read_text()) if args.merge and args.out.exists() else None
    if previous is not None and (previous["steps"], previous["n"]) != (args.steps, args.n):
        parser.error(f"--merge: {args.out} has --steps {previous['steps']} --n {previous['n']}; use the same")
    jobs = [(v, s) for v in args.variants for s in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(child, jobs))
    for run in runs:
        run["commit"] = git_commit(ROOT)
    command = "python benchmarks/lm_variants.py --variants " + " ".join(args.variants)
    command += " --seeds " + " ".join(map(str, args.seeds))
    command += f" --steps {args.steps}" * (args.steps != 2000) + f" --n {args.n}" * (args.n != 200)
    command += f" --threads {args.threads}" * (args.threads != 1)
    keep = [r for r in (previous or {}).get("runs", []) if (r["variant"], r["seed"]) not in set(jobs)]
    commands = (previous or {}).get("commands", [])
    data = {"commands": [*commands, command], "steps": args.steps, "n": args.n, "runs": keep + runs}
    write_results(args.out, data, indent=1)
    print(docs_block(data))


if __name__ == "__main__":
    main()
