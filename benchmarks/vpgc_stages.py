"""Where does VPG-C's mechanism break in the tiny world? Each stage measured on its own, with a control.

VPG-C can only beat its ablations if three things hold; this script measures each on mini-DEMON's detail
questions (train: instances of seed ``--train-seed``; test: mini-DEMON's own instances, seed 0):

1. **Guidance carries the question.** A linear probe reads the asked object's shape (always named by the
   question) from the hidden state of the last prompt token at the input of every decoder layer — what
   VPG-C's guidance is at that layer — and, for comparison, from the mean over the question's tokens (the
   information is in the text; does the last token gather it?). Control: the majority class.
2. **The frozen Q-Former can be steered to the asked object.** Readers trained with supervision to give the
   *asked attribute* (colour or position) of the *asked object*, given a guidance vector:
   ``vpgc_frozen_qformer`` — VPG-C's own trainable parts (guided queries, guidance and output projections)
   over the frozen Q-Former, plus a linear head; ``vpgc_trainable_qformer`` — the same with the Q-Former's
   weights trained too; ``free_reader`` — two rounds of cross-attention over the ViT tokens, all trained
   (what the ViT's tokens allow at this budget). Guidance: ``oracle`` (one-hot of the attributes the
   question names, the best guidance could be), ``layer`` (the real layer-k hidden state) and ``none``
   (zero: the prompt-independent readout). Control: ``none``, and chance per attribute.
3. **The LM reads a residual of the size VPG-C reaches.** With ``--adapter-runs``, the trained adapters'
   residual norm relative to the hidden state's norm at the image slots (compare with
   ``benchmarks/oracle_residual.py``: the LM reads a perfect residual fully only near 1x).

    python benchmarks/vpgc_stages.py --run outputs/vpgc --layer 3

Writes ``benchmarks/results/vpgc_stages.json`` (``--out``). CPU, one thread: about 15 minutes.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from synthetic.world.mini_demon import mini_demon_instance
from synthetic.world.scene import COLOURS, SHAPES, render
from synthetic.world.tasks import render_text
from vpgkit.backbones import ImageProcessor
from vpgkit.data import Sample, Turn
from vpgkit.evaluate import load_run
from vpgkit.modules import VPGC
from vpgkit.training.datasets import sample_tokenizer

RESULTS = Path(__file__).resolve().parent / "results" / "vpgc_stages.json"
# Class layout of the readers' head: 9 cells, then colours, then shapes.
GROUPS = {
    "position": range(0, 9),
    "colour": range(9, 9 + len(COLOURS)),
    "shape": range(9 + len(COLOURS), 9 + len(COLOURS) + len(SHAPES)),
}
NUM_CLASSES = 9 + len(COLOURS) + len(SHAPES)


def attribute_class(obj, attribute: str) -> int:
    """The head class of ``obj``'s ``attribute`` (``position``, ``colour`` or ``shape``)."""
    if attribute == "position":
        return obj.cell
    if attribute == "colour":
        return GROUPS["colour"][list(COLOURS).index(obj.colour)]
    return GROUPS["shape"][SHAPES.index(obj.shape)]


def oracle_guidance(obj, asked: str, width: int) -> torch.Tensor:
    """(width,) one-hot (×10) of ``obj``'s attributes other than ``asked``, plus which attribute is asked."""
    v = torch.zeros(width)
    for attribute in GROUPS:
        if attribute != asked:
            v[attribute_class(obj, attribute)] = 10.0
    v[NUM_CLASSES + list(GROUPS).index(asked)] = 10.0
    return v


@dataclass
class Questions:
    """Detail questions with everything the stages need.

    guidance: (n, L, D) last-prompt-token hidden state at the input of each decoder layer;
    question: (n, L, D) the same averaged over the text after the image (the question and its choices);
    oracle: (n, D); vision: (n, 1, N_v, D_v); label: (n,) asked attribute's class; shape: (n,) shape class;
    asked: the asked attribute per question.
    """

    guidance: torch.Tensor
    question: torch.Tensor
    oracle: torch.Tensor
    vision: torch.Tensor
    label: torch.Tensor
    shape: torch.Tensor
    asked: list[str]


@torch.no_grad()
def collect(model, prompts, processor, seed: int, n: int) -> Questions:
    """Run the base model over ``n`` detail-question instances of ``seed``, keeping colour/position ones."""
    rows: dict[str, list] = {
        k: [] for k in ("guidance", "question", "oracle", "vision", "label", "shape", "asked")
    }
    width = model.llm.config.hidden_size
    inputs: dict[int, torch.Tensor] = {}
    handles = [
        layer.register_forward_pre_hook(
            lambda m, a, kw, k=k: inputs.__setitem__(k, a[0] if a else kw["hidden_states"]), with_kwargs=True
        )
        for k, layer in enumerate(model.llm.model.layers)
    ]
    for i in tqdm(range(n), desc=f"questions (seed {seed})", file=sys.stderr, leave=False):
        inst = mini_demon_instance("detail_question", i, seed)
        asked = inst.subsets[0]
        if asked not in ("position", "colour"):
            continue
        s = Sample("q", [None], [Turn("user", render_text(inst, lambda _: "<image>"))])
        ids = torch.as_tensor(prompts.prompt(s)["input_ids"]).view(1, -1)
        vision = model.vision(processor([[render(inst.scenes[0])[0]]]))
        model(ids, vision_features=vision, num_images=torch.tensor([1]))
        target = inst.target
        rows["guidance"].append(torch.stack([inputs[k][0, -1] for k in sorted(inputs)]))
        after_image = int((ids[0] == model.image_token_id).nonzero().max()) + 1
        rows["question"].append(torch.stack([inputs[k][0, after_image:].mean(0) for k in sorted(inputs)]))
        rows["oracle"].append(oracle_guidance(target, asked, width))
        rows["vision"].append(vision[0])
        rows["label"].append(attribute_class(target, asked))
        rows["shape"].append(SHAPES.index(target.shape))
        rows["asked"].append(asked)
    for handle in handles:
        handle.remove()
    return Questions(
        torch.stack(rows["guidance"]), torch.stack(rows["question"]), torch.stack(rows["oracle"]), torch.stack(rows["vision"]),
        torch.tensor(rows["label"]), torch.tensor(rows["shape"]), rows["asked"],
    )  # fmt: skip


def probe_accuracy(x_tr, y_tr, x_te, y_te, classes: int, steps: int = 500) -> float:
    """Test accuracy (%) of a standardised linear probe trained with Adam."""
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
    probe = nn.Linear(x_tr.shape[1], classes)
    opt = torch.optim.Adam(probe.parameters(), 1e-2, weight_decay=1e-4)
    for _ in range(steps):
        loss = F.cross_entropy(probe((x_tr - mu) / sd), y_tr)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return 100 * float((probe((x_te - mu) / sd).argmax(-1) == y_te).float().mean())


class FreeReader(nn.Module):
    """Two rounds of cross-attention from a guidance-derived query over (B, 1, N_v, D_v) ViT tokens."""

    def __init__(self, guidance_width: int, vision_width: int, width: int = 128):
        super().__init__()
        self.query = nn.Sequential(nn.Linear(guidance_width, width), nn.GELU(), nn.Linear(width, width))
        self.kv = nn.Linear(vision_width, width)
        self.attn = nn.ModuleList(nn.MultiheadAttention(width, 4, batch_first=True) for _ in range(2))
        self.mlp = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU())
        self.head = nn.Linear(width, NUM_CLASSES)

    def forward(self, guidance: torch.Tensor, vision: torch.Tensor) -> torch.Tensor:
        kv, q = self.kv(vision[:, 0]), self.query(guidance)[:, None]
        q = q + self.attn[0](q, kv, kv)[0]
        q = q + self.mlp(q)
        q = q + self.attn[1](q, kv, kv)[0]
        return self.head(q[:, 0])


class VPGCReader(nn.Module):
    """VPG-C's trainable parts over the (frozen or trainable) Q-Former; a linear head on the mean residual."""

    def __init__(self, model, guidance: bool, train_qformer: bool):
        super().__init__()
        config = copy.deepcopy(model.vpgc.config)
        config.guidance = guidance
        self.qformer = copy.deepcopy(model.vpg).requires_grad_(train_qformer)
        self.vpgc = VPGC.from_qformer(self.qformer, config)
        nn.init.normal_(self.vpgc.output_proj.weight, std=0.01)  # zero init would block the head's gradient
        self.head = nn.Linear(config.llm_width, NUM_CLASSES)

    def forward(self, guidance: torch.Tensor, vision: torch.Tensor) -> torch.Tensor:
        return self.head(self.vpgc(guidance, vision, self.qformer)[:, 0].mean(1))


def reader_accuracy(reader: nn.Module, g_tr, q_tr: Questions, g_te, q_te: Questions, steps: int) -> dict:
    """Train ``reader`` on the asked attribute; test accuracy (%) per attribute among that attribute's classes."""
    params = [p for p in reader.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, 1e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(q_tr.label), (64,), generator=gen)
        loss = F.cross_entropy(reader(g_tr[idx], q_tr.vision[idx]), q_tr.label[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        logits = reader(g_te, q_te.vision)
    out = {"train_loss": round(loss.item(), 3)}
    for attribute in ("position", "colour"):
        rows = [j for j, a in enumerate(q_te.asked) if a == attribute]
        group = list(GROUPS[attribute])
        pred = logits[rows][:, group].argmax(-1) + group[0]
        out[attribute] = round(100 * float((pred == q_te.label[rows]).float().mean()), 1)
    return out


@torch.no_grad()
def residual_ratio(run: Path, prompts_of, processor, n: int = 40) -> float:
    """Mean ‖VPG-C residual‖ / ‖hidden state‖ at the image slots of a trained run, on mini-DEMON questions."""
    model, tok, cfg, _ = load_run(run)
    model.eval()
    prompts = prompts_of(cfg, tok, model)
    seen: dict[str, torch.Tensor] = {}
    forward = model.vpgc.forward

    def recording(*args, **kwargs):
        seen["residual"] = forward(*args, **kwargs)
        return seen["residual"]

    model.vpgc.forward = recording
    handle = model.llm.model.layers[model.vpgc.config.layer].register_forward_pre_hook(
        lambda m, args, kwargs: seen.__setitem__("hidden", args[0] if args else kwargs["hidden_states"]),
        with_kwargs=True,
    )
    ratios = []
    for i in range(n):
        inst = mini_demon_instance("detail_question", i, 0)
        s = Sample("q", [None], [Turn("user", render_text(inst, lambda _: "<image>"))])
        ids = torch.as_tensor(prompts.prompt(s)["input_ids"]).view(1, -1)
        model(ids, pixel_values=processor([[render(inst.scenes[0])[0]]]), num_images=torch.tensor([1]))
        residual = seen["residual"].reshape(-1, seen["residual"].shape[-1])
        slots = (ids[0] == model.image_token_id).nonzero().flatten()
        before = seen["hidden"][0, slots] - residual  # this hook runs after VPG-C's
        ratios.append(float(residual.norm(dim=-1).mean() / before.norm(dim=-1).mean()))
    handle.remove()
    return float(np.mean(ratios))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, required=True, help="a vpgkit.train output dir (its base model)")
    parser.add_argument("--layer", type=int, default=3, help="k: the layer whose guidance the readers get")
    parser.add_argument("--train", type=int, default=4000, help="training instances drawn (before filtering)")
    parser.add_argument("--test", type=int, default=300, help="mini-DEMON instances drawn (before filtering)")
    parser.add_argument("--train-seed", type=int, default=7)
    parser.add_argument("--steps", type=int, default=2000, help="reader training steps (batch 64)")
    parser.add_argument("--adapter-runs", type=Path, nargs="*", default=[], help="trained runs to measure")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.manual_seed(0)
    start = time.perf_counter()
    model, tok, cfg, _ = load_run(args.run, base_only=True)
    model.eval()
    processor = ImageProcessor(size=model.vision.image_size)
    prompts = sample_tokenizer(cfg.data, tok, model)
    q_tr = collect(model, prompts, processor, args.train_seed, args.train)
    q_te = collect(model, prompts, processor, 0, args.test)
    results: dict = {
        "train_questions": len(q_tr.label),
        "test_questions": len(q_te.label),
        "layer": args.layer,
    }

    majority = 100 * float(np.bincount(q_te.shape.numpy()).max() / len(q_te.shape))
    results["guidance_shape_probe"] = {"majority": round(majority, 1)} | {
        str(k): round(probe_accuracy(q_tr.guidance[:, k], q_tr.shape, q_te.guidance[:, k], q_te.shape, len(SHAPES)), 1)
        for k in range(q_tr.guidance.shape[1])
    }  # fmt: skip
    results["question_mean_shape_probe"] = {"majority": round(majority, 1)} | {
        str(k): round(probe_accuracy(q_tr.question[:, k], q_tr.shape, q_te.question[:, k], q_te.shape, len(SHAPES)), 1)
        for k in range(q_tr.question.shape[1])
    }  # fmt: skip
    print(
        "1. shape of the asked object from the last prompt token, per layer:", results["guidance_shape_probe"]
    )
    print("   ... from the mean over the question's tokens, per layer:", results["question_mean_shape_probe"])

    chance = {"position": round(100 / 9, 1), "colour": round(100 / len(COLOURS), 1)}
    readers = {"chance": chance}
    guidance = {
        "oracle": (q_tr.oracle, q_te.oracle),
        "layer": (q_tr.guidance[:, args.layer], q_te.guidance[:, args.layer]),
        "none": (q_tr.oracle, q_te.oracle),  # ignored: the VPG-C holds it at zero
    }
    plan = [
        ("vpgc_frozen_qformer", "oracle"),
        ("vpgc_frozen_qformer", "layer"),
        ("vpgc_frozen_qformer", "none"),
        ("vpgc_trainable_qformer", "oracle"),
        ("free_reader", "oracle"),
        ("free_reader", "layer"),
    ]
    for kind, source in plan:
        torch.manual_seed(0)
        if kind == "free_reader":
            reader = FreeReader(q_tr.oracle.shape[1], q_tr.vision.shape[-1])
        else:
            reader = VPGCReader(
                model, guidance=source != "none", train_qformer=kind == "vpgc_trainable_qformer"
            )
        g_tr, g_te = guidance[source]
        readers[f"{kind}/{source}"] = reader_accuracy(reader, g_tr, q_tr, g_te, q_te, args.steps)
        print(f"2. {kind} with {source} guidance:", readers[f"{kind}/{source}"], flush=True)
    results["asked_attribute_readers"] = readers

    if args.adapter_runs:
        results["residual_to_hidden_norm"] = {
            str(run): round(residual_ratio(run, lambda c, t, m: sample_tokenizer(c.data, t, m), processor), 3)
            for run in args.adapter_runs
        }
        print("3. trained residual norm / hidden norm:", results["residual_to_hidden_norm"])
    results["seconds"] = round(time.perf_counter() - start)
    results["command"] = "python " + " ".join(sys.argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out} ({results['seconds']} s)")


if __name__ == "__main__":
    main()
