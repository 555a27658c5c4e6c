"""What the tiny world's frozen backbones can do on their own: the ceilings behind the mini-DEMON table.

1. The language model on held-out mini-DEMON-style tasks (evaluation wordings, unseen scenes) when each
   image is given exactly — as its full description in words, and as object slots (the continuous input
   the LM also learnt, see ``synthetic.world.backbones``). No VPG is involved: this is the best any
   visual prompt could do with this LM.
2. What the frozen ViT's tokens carry: an MLP probe (trained on 3000 scenes, tested on 500 others)
   predicts each object's colour and shape from all patch tokens + the object's grid cell, for salient
   and small objects separately.

    python benchmarks/world_diagnostics.py                      # the shipped backbones
    python benchmarks/world_diagnostics.py --assets /tmp/build  # another build's output folder
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from synthetic.world.backbones import (
    NUM_SLOTS,
    encode_scenes,
    slot_inputs_embeds,
    slot_word_ids,
)
from synthetic.world.language import EVAL_WORDING, full_description
from synthetic.world.scene import COLOURS, SHAPES, make_scene
from synthetic.world.tasks import TASK_BUILDERS, TASK_INFO, render_text
from vpgkit.assets import asset_path
from vpgkit.backbones import EvaVisionConfig, TimmEvaEncoder
from vpgkit.backbones.language import load_causal_lm
from vpgkit.data import Sample, Turn
from vpgkit.data.templates import get_template
from vpgkit.evaluation.metrics import choice_accuracy, rouge_l

STREAM = 5500  # scene seeds no build stage and no mini-DEMON uses


@torch.no_grad()
def lm_ceiling(assets: Path, n: int) -> dict[str, dict[str, float]]:
    """Per task: score of the LM given each image as words and as object slots."""
    tok = AutoTokenizer.from_pretrained(assets / "llm", local_files_only=True)
    lm = load_causal_lm(assets / "llm").float().eval()
    image_id = tok.convert_tokens_to_ids("<image>")
    template = get_template("vicuna_v0", system="")
    scores: dict[str, dict[str, float]] = {}
    for t, task in enumerate(TASK_BUILDERS):
        scores[task] = {}
        for mode in ("words", "slots"):
            values = []
            for i in range(n):
                rng = np.random.default_rng([STREAM, t, i])
                instance = TASK_BUILDERS[task](make_scene(STREAM + t, i), rng, EVAL_WORDING)
                slot_scenes = []

                def image_text(scene, rng=rng, slot_scenes=slot_scenes, mode=mode):
                    if mode == "words":
                        return "<Img>" + full_description(scene, rng) + "</Img>"
                    slot_scenes.append(scene)
                    return "<Img>" + "<image>" * NUM_SLOTS + "</Img>"

                sample = Sample("d", [], [Turn("user", render_text(instance, image_text))])
                prompt = "".join(seg.text for seg in template.segments(sample, generation=True))
                ids = [tok.bos_token_id, *tok(prompt, add_special_tokens=False)["input_ids"]]
                ids = torch.tensor([ids])
                embeds = slot_inputs_embeds(
                    lm.get_input_embeddings(), ids, slot_word_ids(tok, slot_scenes), image_id
                )
                out = lm.generate(
                    inputs_embeds=embeds,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=40,
                    do_sample=False,
                    eos_token_id=tok.eos_token_id,
                    pad_token_id=tok.pad_token_id,
                )
                answer = tok.decode(out[0], skip_special_tokens=True).strip()
                if TASK_INFO[task]["metric"] == "rouge_l":
                    values.append(rouge_l(answer, instance.response))
                else:
                    values.append(choice_accuracy(answer, instance.response, instance.choices))
            scores[task][mode] = 100 * float(np.mean(values))
    return scores


def _features(vit: TimmEvaEncoder, seed: int, n: int):
    scenes = [make_scene(seed, i) for i in range(n)]
    tokens = encode_scenes(vit, scenes)[:, 0].flatten(1).numpy()  # (n, N_v * D_v)
    rows, colour, shape, small = [], [], [], []
    for scene, feats in zip(scenes, tokens, strict=True):
        for obj in scene.objects:
            cell = np.zeros(9, dtype=np.float32)
            cell[obj.cell] = 1
            rows.append(np.concatenate([feats, cell]))
            colour.append(list(COLOURS).index(obj.colour))
            shape.append(SHAPES.index(obj.shape))
            small.append(not obj.salient)
    return np.stack(rows).astype(np.float32), np.array(colour), np.array(shape), np.array(small)


def vit_probe(assets: Path, epochs: int = 150) -> dict[str, dict[str, float]]:
    """Probe accuracy (%) of colour and shape from the frozen ViT's tokens, salient vs small objects."""
    vit = TimmEvaEncoder.from_checkpoint(assets / "eva.safetensors", EvaVisionConfig.preset("tiny_world"))
    x_train, c_train, s_train, _ = _features(vit, STREAM + 50, 3000)
    x_test, c_test, s_test, small = _features(vit, STREAM + 51, 500)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-5
    x_train, x_test = torch.tensor((x_train - mean) / std), torch.tensor((x_test - mean) / std)
    result = {}
    for name, y_train, y_test in (("colour", c_train, c_test), ("shape", s_train, s_test)):
        torch.manual_seed(0)
        probe = torch.nn.Sequential(
            torch.nn.Linear(x_train.shape[1], 256),
            torch.nn.GELU(),
            torch.nn.Linear(256, int(y_train.max()) + 1),
        )
        opt = torch.optim.Adam(probe.parameters(), 1e-3, weight_decay=1e-4)
        target = torch.tensor(y_train)
        for _ in range(epochs):
            for idx in torch.randperm(len(x_train)).split(256):
                loss = F.cross_entropy(probe(x_train[idx]), target[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            hit = probe(x_test).argmax(1).numpy() == y_test
        result[name] = {
            "salient": 100 * float(hit[~small].mean()),
            "small": 100 * float(hit[small].mean()),
            "chance": 100 / (int(y_train.max()) + 1),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--assets", type=Path, default=Path(asset_path("tiny_world")))
    parser.add_argument("--n", type=int, default=100, help="samples per task for the LM ceiling")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"backbones: {args.assets}\n")
    print("| task (metric) | LM, images as words | LM, images as object slots |")
    print("| --- | --- | --- |")
    for task, s in lm_ceiling(args.assets, args.n).items():
        print(f"| {task} ({TASK_INFO[task]['metric']}) | {s['words']:.1f} | {s['slots']:.1f} |")
    print("\n| ViT probe (%) | salient objects | small objects | chance |")
    print("| --- | --- | --- | --- |")
    for name, r in vit_probe(args.assets).items():
        print(f"| {name} | {r['salient']:.1f} | {r['small']:.1f} | {r['chance']:.1f} |")


if __name__ == "__main__":
    main()
