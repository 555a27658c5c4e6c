"""Where a world LM's position answers go wrong, with perfect object slots.

For each LM folder given, poses the diagnostics' held-out detail questions (evaluation wording, the
ceilings' scenes; :func:`synthetic.world.diagnostics.lm_answers`) with perfect slots at the input and with
the small objects injected at layer 3, and splits the position questions two ways:

* by how many objects the image's slots show (1–3: the asked one plus 0–2 others);
* each miss by what it named: the position of *another shown object* (the question's object was not bound
  to its slot), of an object under a layer-3 slot, or of no shown object (the slot's position was misread).

    python benchmarks/position_questions.py --lm vpgkit/assets/tiny_world/llm
    python benchmarks/position_questions.py --lm runs/lms/a runs/lms/b --row-column-slots 0 1 --n 600

Writes ``benchmarks/results/position_questions.json``.
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch
from results_file import git_commit, write_results

from synthetic.world.backbones import DocumentLayout
from synthetic.world.diagnostics import answer_score, lm_answers, posed_instance

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "position_questions.json"
TASK = "detail_question"


def position_breakdown(llm, tokenizer, layout: DocumentLayout, mode: str, n: int) -> dict:
    """Position accuracy (%) overall and by objects shown, and the misses by kind, over ``n`` detail questions."""
    answers = lm_answers(llm, tokenizer, TASK, mode, n=n, batch_size=100, layout=layout)
    by_shown, misses = defaultdict(list), Counter()
    for i, (answer, instance) in enumerate(answers):
        if instance.subsets[0] != "position":
            continue
        image = posed_instance(TASK, i, mode, layout=layout)[1][0]  # the slots lm_answers showed
        shown = [o for o in image.shown if o is not None]
        right = answer_score(answer, instance)
        by_shown[len(shown)].append(right)
        if right:
            continue
        under = [o.position for o, lay in zip(image.at_input, image.at_layer, strict=True) if lay and o]
        if answer in [o.position for o in shown if o is not instance.target]:
            misses["another shown object"] += 1
        elif answer in under:
            misses["an object under a layer-3 slot"] += 1
        else:
            misses["no shown object"] += 1
    every = [v for values in by_shown.values() for v in values]
    return {
        "questions": len(every),
        "accuracy": round(100 * float(np.mean(every)), 1),
        "by_objects_shown": {
            str(k): {"questions": len(v), "accuracy": round(100 * float(np.mean(v)), 1)}
            for k, v in sorted(by_shown.items())
        },
        "misses": dict(misses),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lm", type=Path, nargs="+", required=True, help="LM folders (HF format)")
    parser.add_argument(
        "--row-column-slots", type=int, nargs="+", choices=(0, 1), default=None,
        help="per LM: 1 if it was trained on row / column slots (default: 0 for each)",
    )  # fmt: skip
    parser.add_argument("--n", type=int, default=600, help="detail questions (about half ask position)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    flags = args.row_column_slots or [0] * len(args.lm)
    if len(flags) != len(args.lm):
        parser.error(f"--row-column-slots: expected one value per --lm ({len(args.lm)}), got {len(flags)}")
    from transformers import AutoTokenizer

    from vpgkit.backbones.language import load_causal_lm

    torch.manual_seed(0)
    runs = []
    for folder, flag in zip(args.lm, flags, strict=True):
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        llm = load_causal_lm(folder).float().eval()
        layout = DocumentLayout(row_column_slots=bool(flag))
        modes = {m: position_breakdown(llm, tokenizer, layout, m, args.n) for m in ("input", "layered")}
        runs.append({"lm": folder.as_posix(), "row_column_slots": bool(flag), **modes})
        for mode, r in modes.items():
            shown = ", ".join(f"{k}: {v['accuracy']}" for k, v in r["by_objects_shown"].items())
            print(
                f"{folder.name} {mode}: {r['accuracy']}% of {r['questions']} (by objects shown {shown}); misses {r['misses']}"
            )
    command = "python benchmarks/position_questions.py --lm " + " ".join(p.as_posix() for p in args.lm)
    command += f" --row-column-slots {' '.join(map(str, flags))}" * any(flags) + f" --n {args.n}"
    write_results(
        args.out, {"command": command, "commit": git_commit(ROOT), "n": args.n, "runs": runs}, indent=1
    )


if __name__ == "__main__":
    main()
