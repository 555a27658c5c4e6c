"""Can the world LM read a *perfect* VPG-C residual? The upper bound of what VPG-C can achieve in the tiny world.

The base model of a run (its VPG prompts at the input, no adapter) gets, at the input of decoder layer k, each
image's focus object — the object its question is about, none where an image has none there (an added or a
removed object) — added to the image's first prompt slot as a unit slot vector times ``scale`` times the
hidden state's norm there: the form the LM's pre-training injected
(``synthetic.world.backbones.slot_injection``). ``scale`` 0 is the base model.

- colour questions (mini-DEMON's detail questions about a colour, and cloze): scored by the first answer
  token's logit among the options;
- difference questions: a greedy answer of the evaluator's length, cut as it cuts answers (the hook acts on
  the prompt; later tokens read it from the KV cache), scored by ROUGE-L against the reference, overall and per edit in the named region.

    python benchmarks/oracle_residual.py --run outputs/vpgc --layer 3 --scales 0 0.1 0.3 1

Writes ``benchmarks/results/oracle_residual.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from synthetic.world.backbones import NUM_SLOTS, norm_scaled_addition, slot_vectors, slot_word_ids
from synthetic.world.build import provenance, slot_layout
from synthetic.world.mini_demon import mini_demon_instance
from synthetic.world.scene import render
from synthetic.world.tasks import render_text
from vpgkit.backbones import ImageProcessor
from vpgkit.data import Sample, Turn
from vpgkit.evaluate import load_run
from vpgkit.evaluation import STOP_STRINGS, answer_text
from vpgkit.evaluation.metrics import rouge_l
from vpgkit.training.datasets import sample_tokenizer

RESULTS = Path(__file__).resolve().parent / "results" / "oracle_residual.json"
TASKS = ("detail_question", "cloze", "difference")


def oracle_instances(tasks: tuple[str, ...], n: int, seed: int = 0):
    """mini-DEMON's instances of ``tasks`` (seed ``seed``), keeping only colour questions among detail ones."""
    for task in tasks:
        for i in range(n):
            inst = mini_demon_instance(task, i, seed)
            if task != "detail_question" or inst.subsets == ["colour"]:
                yield task, inst


@functools.cache
def _row_column_slots() -> bool:
    """Whether the shipped LM learned row / column slots (read once from its manifest)."""
    return slot_layout().row_column_slots


def oracle_residual(model, tok, ids: torch.Tensor, inst, layer: int, scale: float, every_slot: bool = False):
    """A context: ``inst``'s focus objects, as unit slot vectors × ``scale`` × the hidden norm, added to the
    first prompt slot of each image (``every_slot``: to each of its prompt slots, as a residual spread over all
    of VPG-C's queries is) at the input of decoder ``layer`` while the prompt ``ids`` (1, L) is processed."""
    slots = (ids[0] == model.image_token_id).nonzero().flatten().view(len(inst.scenes), -1)  # (T_img, N_q)
    slots = slots if every_slot else slots[:, :1]
    focus = [[f[0] if f else None] + [None] * (NUM_SLOTS - 1) for f in inst.focus]
    embed = model.llm.get_input_embeddings()
    words = slot_word_ids(tok, focus, _row_column_slots())  # as the shipped LM learned slots
    unit = slot_vectors(embed, words).view(len(inst.scenes), NUM_SLOTS, -1)[:, 0]
    unit = unit / unit.norm(dim=-1, keepdim=True).clamp(min=1e-6)  # (T_img, D); an image without a focus: 0
    injected = torch.zeros(1, ids.shape[1], unit.shape[-1])
    injected[0, slots] = scale * unit[:, None]
    return norm_scaled_addition(model.llm, layer, injected)


@torch.no_grad()
def scores(
    model,
    tok,
    prompts,
    layer: int,
    scale: float,
    tasks: tuple[str, ...],
    n: int,
    every_slot: bool = False,
    max_new_tokens: int = 24,
) -> dict[str, float]:
    """Per task (and, for difference, per edit kind ``difference: add`` …): accuracy or ROUGE-L, in points."""
    processor = ImageProcessor(size=model.vision.image_size)
    stops = STOP_STRINGS.get(prompts.template.name, ())
    hits: dict[str, list[float]] = {}
    for task, inst in tqdm(list(oracle_instances(tasks, n)), desc=f"scale {scale:g}", leave=False):
        s = Sample("x", [None] * len(inst.scenes), [Turn("user", render_text(inst, lambda _: "<image>"))])
        ids = torch.as_tensor(prompts.prompt(s)["input_ids"]).view(1, -1)
        pixels = processor([[render(sc)[0] for sc in inst.scenes]])
        num_images = torch.tensor([len(inst.scenes)])
        with oracle_residual(model, tok, ids, inst, layer, scale, every_slot):
            if task == "difference":
                out = model.generate(ids, pixel_values=pixels, num_images=num_images, do_sample=False,
                                     num_beams=1, max_new_tokens=max_new_tokens, eos_token_id=tok.eos_token_id,
                                     pad_token_id=tok.pad_token_id)  # fmt: skip
            else:
                logits = model(ids, pixel_values=pixels, num_images=num_images).logits[0, -1]
        if task == "difference":
            answer = answer_text(out[0], tok, {tok.eos_token_id}, stops)
            score = 100 * rouge_l(answer, inst.response)
            hits.setdefault(f"{task}: {inst.subsets[0]}", []).append(score)
        else:
            options = [tok(c, add_special_tokens=False)["input_ids"][0] for c in inst.choices]
            score = 100 * int(int(logits[options].argmax()) == inst.choices.index(inst.response))
        hits.setdefault(task, []).append(score)
    order = sorted(hits, key=lambda k: (TASKS.index(k.split(":")[0]), k))  # each task, then its edits
    return {key: float(np.mean(hits[key])) for key in order}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--run", type=Path, required=True, help="a vpgkit.train output directory (its base model)"
    )
    parser.add_argument("--layer", type=int, default=3)
    parser.add_argument("--scales", type=float, nargs="+", default=[0.0, 0.1, 0.3, 1.0])
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument(
        "--every-slot", action="store_true", help="add the focus to every prompt slot of its image"
    )
    parser.add_argument(
        "--n", type=int, default=100, help="instances per task before keeping colour questions"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    model, tok, cfg, _ = load_run(args.run, base_only=True)
    prompts = sample_tokenizer(cfg.data, tok, model)
    tasks = tuple(args.tasks)
    rows = {
        str(s): scores(
            model, tok, prompts, args.layer, s, tasks, args.n, args.every_slot, cfg.evaluate.max_new_tokens
        )  # the evaluator's answer length
        for s in args.scales
    }
    keys = list(next(iter(rows.values())))
    print("| residual scale (x hidden norm) | " + " | ".join(keys) + " |\n|" + " --- |" * (len(keys) + 1))
    for s, r in rows.items():
        print(f"| {s} | " + " | ".join(f"{r[k]:.1f}" for k in keys) + " |")
    command = (f"python benchmarks/oracle_residual.py --run {args.run} --layer {args.layer} --tasks "
               f"{' '.join(tasks)} --n {args.n}{' --every-slot' * args.every_slot} --out {args.out}")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "command": command,
                "layer": args.layer,
                "every_slot": args.every_slot,
                "assets": provenance(),
                "scores": rows,
            },
            indent=1,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
