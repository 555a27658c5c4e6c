"""Can the world LM read a *perfect* VPG-C residual? The upper bound of what VPG-C can achieve in the tiny world.

For mini-DEMON's colour questions (detail questions about a colour, cloze), the base model of a run (its VPG
prompts at the input, no adapter) gets, at the input of decoder layer k, each image's focus object added to its
first prompt slot as a unit slot vector times ``scale`` times the hidden state's norm there — the form the LM's
pre-training injected (``synthetic.world.backbones.slot_injection``). Answers are scored by the first answer
token's logit among the options. ``scale`` 0 is the base model.

    python benchmarks/oracle_residual.py --run outputs/vpgc --layer 3 --scales 0 0.1 0.3 1

Writes ``benchmarks/results/oracle_residual.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from synthetic.world.backbones import NUM_SLOTS, slot_vectors, slot_word_ids
from synthetic.world.mini_demon import mini_demon_instance
from synthetic.world.scene import render
from synthetic.world.tasks import render_text
from vpgkit.backbones import ImageProcessor
from vpgkit.data import Sample, Turn
from vpgkit.evaluate import load_run
from vpgkit.training.datasets import sample_tokenizer

RESULTS = Path(__file__).resolve().parent / "results" / "oracle_residual.json"


def colour_questions(n: int, seed: int = 0):
    """mini-DEMON's detail questions about a colour and its cloze instances (seed ``seed``)."""
    for task in ("detail_question", "cloze"):
        for i in range(n):
            inst = mini_demon_instance(task, i, seed)
            if task == "cloze" or inst.subsets == ["colour"]:
                yield task, inst


@torch.no_grad()
def accuracy(model, tok, prompts, layer: int, scale: float, n: int) -> dict[str, float]:
    processor = ImageProcessor(size=model.vision.image_size)
    embed = model.llm.get_input_embeddings()
    hits: dict[str, list[int]] = {}
    for task, inst in colour_questions(n):
        s = Sample("x", [None] * len(inst.scenes), [Turn("user", render_text(inst, lambda _: "<image>"))])
        ids = torch.as_tensor(prompts.prompt(s)["input_ids"]).view(1, -1)
        pixels = processor([[render(sc)[0] for sc in inst.scenes]])
        slots = (ids[0] == model.image_token_id).nonzero().flatten().view(len(inst.scenes), -1)[:, 0]
        focus = [[f[0] if f else None] + [None] * (NUM_SLOTS - 1) for f in inst.focus]
        unit = slot_vectors(embed, slot_word_ids(tok, focus)).view(len(inst.scenes), NUM_SLOTS, -1)[:, 0]
        unit = unit / unit.norm(dim=-1, keepdim=True).clamp(min=1e-6)

        def hook(module, args, kwargs, unit=unit, slots=slots):
            h = (args[0] if args else kwargs["hidden_states"]).clone()
            h[0, slots] = h[0, slots] + scale * unit * h[0, slots].norm(dim=-1, keepdim=True)
            return ((h, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": h})

        handle = model.llm.model.layers[layer].register_forward_pre_hook(hook, with_kwargs=True)
        try:
            logits = model(ids, pixel_values=pixels, num_images=torch.tensor([len(inst.scenes)])).logits[
                0, -1
            ]
        finally:
            handle.remove()
        options = [tok(c, add_special_tokens=False)["input_ids"][0] for c in inst.choices]
        hits.setdefault(task, []).append(
            int(int(logits[options].argmax()) == inst.choices.index(inst.response))
        )
    return {task: 100 * float(np.mean(h)) for task, h in hits.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--run", type=Path, required=True, help="a vpgkit.train output directory (its base model)"
    )
    parser.add_argument("--layer", type=int, default=3)
    parser.add_argument("--scales", type=float, nargs="+", default=[0.0, 0.1, 0.3, 1.0])
    parser.add_argument(
        "--n", type=int, default=100, help="instances per task before keeping colour questions"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    model, tok, cfg, _ = load_run(args.run, base_only=True)
    prompts = sample_tokenizer(cfg.data, tok, model)
    rows = {str(s): accuracy(model, tok, prompts, args.layer, s, args.n) for s in args.scales}
    print("| residual scale (x hidden norm) | detail colour questions | cloze |\n| --- | --- | --- |")
    for s, r in rows.items():
        print(f"| {s} | {r['detail_question']:.1f} | {r['cloze']:.1f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": f"python benchmarks/oracle_residual.py --run {args.run} --layer {args.layer} --out {args.out}",
                                    "layer": args.layer, "scores": rows}, indent=1) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
