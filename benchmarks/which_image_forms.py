"""Which part of a which-image question does the world LM fail? Its score per form of the task, with perfect slots.

The world LM's which-image ceiling sits at chance (50%) on every build (``lm_variants.py``). A recoloured
pair (mini-DEMON's form) can only be told apart by matching the question's colour against the two images'
slots, which otherwise name the same size, shape and position, and answering with the image whose slot
matched. The easier forms of :func:`synthetic.world.tasks.which_image_task` take steps away, on the same
scenes and draws:

- ``remove`` — the other image lacks the named object: any attribute that sets it apart will do;
- ``alone`` — the named object against an empty image: the answer is the image that shows anything.

For each LM given (``--llm LABEL=DIR``; default: the shipped world's), per form and slot mode (all at the input
/ small objects injected at layer 3), the score (%) and the share of answers that are "first" (a collapse to
one answer reads ~100 or ~0 there, chance at ~50 with a balanced gold).

    python benchmarks/which_image_forms.py --llm "world v6 (shipped)=vpgkit/assets/tiny_world/llm"
    python benchmarks/which_image_forms.py --docs    # rewrites docs/tiny_world.md's block from the JSON

CPU, one thread: about a minute per LM. Writes ``benchmarks/results/which_image_forms.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "which_image_forms.json"
SHIPPED = ROOT / "vpgkit" / "assets" / "tiny_world" / "llm"
sys.path.insert(0, str(ROOT / "benchmarks"))


def measure(llm_dir: Path, n: int) -> dict[str, dict[str, dict[str, float]]]:
    """form → mode → {"score": %, "first": % of answers that are "first"} for the LM saved in ``llm_dir``."""
    import torch
    from transformers import LlamaForCausalLM

    from synthetic.world.diagnostics import MODES, answer_score, lm_answers
    from synthetic.world.language import build_world_tokenizer
    from synthetic.world.tasks import WHICH_FORMS, which_image_task
    from vpgkit.evaluation.metrics import choice_accuracy

    llm = LlamaForCausalLM.from_pretrained(llm_dir, dtype=torch.float32).eval()
    tokenizer = build_world_tokenizer()
    out: dict[str, dict[str, dict[str, float]]] = {}
    for form in WHICH_FORMS:
        builder = functools.partial(which_image_task, form=form)
        out[form] = {}
        for mode in MODES:
            answers = lm_answers(llm, tokenizer, "which_image", mode, n, builder=builder)
            score = sum(answer_score(a, inst) for a, inst in answers) / len(answers)
            # the evaluator's own answer-to-option mapping, so "First." counts as "first" as it is scored
            first = sum(choice_accuracy(a, "first", inst.choices) for a, inst in answers) / len(answers)
            out[form][mode] = {"score": round(100 * score, 1), "first": round(100 * first, 1)}
    return out


def docs_block(data: dict[str, Any]) -> str:
    """Markdown: one row per LM, per form the score and the share of "first" answers, input / layer 3."""
    forms = list(next(iter(data["runs"]))["forms"])
    lines = [
        f"Which-image score with perfect slots, **input / injected at layer 3** (percent, {data['n']} held-out "
        'instances per form; chance 50), and in brackets the share of answers that are "first":',
        "",
        "| world LM | " + " | ".join(forms) + " |",
        "|---|" + "---|" * len(forms),
    ]
    for run in data["runs"]:
        cells = []
        for form in forms:
            inp, lay = (run["forms"][form][m] for m in ("input", "layered"))
            cells.append(f"{inp['score']:.0f} / {lay['score']:.0f} ({inp['first']:.0f} / {lay['first']:.0f})")
        lines.append(f"| {run['label']} | " + " | ".join(cells) + " |")
    lines += ["", "Made by: " + "; ".join(f"`{c}`" for c in data["commands"])]
    return "\n".join(lines)


def write_docs_block(text: str, page: Path = ROOT / "docs" / "tiny_world.md") -> None:
    from doc_blocks import write_block

    write_block(page, "which-image-forms", text)


def _labelled(value: str) -> tuple[str, Path]:
    label, sep, path = value.partition("=")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(f"--llm: expected LABEL=DIR, got {value!r}")
    if not (Path(path) / "config.json").is_file():
        raise argparse.ArgumentTypeError(f"--llm {value!r}: {path} holds no saved LM (no config.json)")
    return label, Path(path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--llm",
        type=_labelled,
        action="append",
        help=f"LABEL=DIR of a saved world LM (repeatable; default: the shipped one, {SHIPPED})",
    )
    parser.add_argument("--n", type=int, default=200, help="instances per form and mode")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--merge", action="store_true", help="add to (or replace by label) the runs in --out")
    parser.add_argument(
        "--docs", action="store_true", help="only rewrite docs/tiny_world.md's block from --out"
    )
    args = parser.parse_args()
    if args.docs:
        write_docs_block(docs_block(json.loads(args.out.read_text())))
        return
    import torch
    from results_file import git_commit, write_results

    torch.set_num_threads(args.threads)
    llms = args.llm or [("world v6 (shipped)", SHIPPED)]
    previous = json.loads(args.out.read_text()) if args.merge and args.out.exists() else None
    if previous is not None and previous["n"] != args.n:
        parser.error(f"--merge: {args.out} has --n {previous['n']}; use the same")
    runs = []
    for label, path in llms:
        runs.append(
            {"label": label, "llm": str(path), "forms": measure(path, args.n), "commit": git_commit(ROOT)}
        )
        print(f"{label}: {json.dumps(runs[-1]['forms'])}", flush=True)
    labels = {r["label"] for r in runs}
    keep = [r for r in (previous or {}).get("runs", []) if r["label"] not in labels]
    shown = [(lb, p.resolve().relative_to(ROOT) if p.resolve().is_relative_to(ROOT) else p) for lb, p in llms]
    command = "python benchmarks/which_image_forms.py " + " ".join(f'--llm "{lb}={p}"' for lb, p in shown)
    command += f" --n {args.n}" * (args.n != 200)
    data = {"commands": [*(previous or {}).get("commands", []), command], "n": args.n, "runs": keep + runs}
    write_results(args.out, data, indent=1)
    print(docs_block(data))


if __name__ == "__main__":
    main()
