"""Where does VPG-C's mechanism break in the tiny world? Each stage measured on its own, with a control.

VPG-C can only beat its ablations if three things hold; this script measures each on mini-DEMON's detail
questions (train: instances of seed ``--train-seed``; test: mini-DEMON's own instances, seed 0):

1. **Guidance carries the question.** A linear probe reads the asked object's shape (always named by the
   question) from the hidden state of the last prompt token at the input of every decoder layer — what
   VPG-C's guidance is at that layer — and, for comparison, from the mean over the question's tokens (the
   information is in the text; does the last token gather it?); and what the question *names* that a reader
   must fetch by (the colour for position questions, the cell for colour questions). Control: the majority
   class.
2. **The frozen Q-Former can be steered to the asked object.** Readers trained with supervision to give the
   *asked attribute* (colour or position) of the *asked object*, given a guidance vector:
   ``vpgc_frozen_qformer`` — VPG-C's own trainable parts (guided queries, guidance and output projections)
   over the frozen Q-Former, plus a linear head; ``vpgc_trainable_qformer`` — the same with the Q-Former's
   weights trained too; ``free_reader`` — two rounds of cross-attention over the ViT tokens, all trained
   (what the ViT's tokens allow at this budget). Guidance: ``oracle`` (one-hot of the attributes the
   question names, the best guidance could be), ``layer`` (the real layer-k hidden state) and ``none``
   (zero: the prompt-independent readout). Control: ``none``, and chance per attribute.
3. **What the trained residual holds.** With ``--adapter-runs``, each trained adapter's residual norm
   relative to the hidden state's norm at the image slots (compare with ``benchmarks/oracle_residual.py``:
   the LM reads a perfect residual fully only near 1x), and a linear probe of the asked attribute from the
   residual (mean over its queries): if the residual holds the answer and the scores do not move, the
   LM does not read it; if it does not, VPG-C never fetched it. The same on mini-DEMON's difference
   questions: the norm, and each image's named-region colour (or that the region is empty) by a probe.

    python benchmarks/vpgc_stages.py --run outputs/vpgc --layer 3

Writes ``benchmarks/results/vpgc_stages.json`` (``--out``). CPU, one thread: about 15 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from doc_blocks import write_block
from results_file import write_results
from torch import nn
from tqdm import tqdm

from synthetic.world.build import built_by, provenance
from synthetic.world.language import EVAL_WORDING, Wording
from synthetic.world.mini_demon import mini_demon_instance
from synthetic.world.scene import COLOURS, SHAPES, render
from synthetic.world.tasks import render_text
from vpgkit.backbones import ImageProcessor
from vpgkit.data import Sample, Turn
from vpgkit.evaluate import load_run
from vpgkit.modules import VPGC
from vpgkit.training.datasets import sample_tokenizer

RESULTS = Path(__file__).resolve().parent / "results" / "vpgc_stages.json"
# The docs table's columns: each world since v3 (world v3 measured on a checkout of its commit), and the two
# builds between v4 and v5 (v4's ViT + LM with a --qformer-grounding Q-Former; --lm-question-summary 0.5 on
# every task that names an object).
DOCS_COLUMNS = {
    "world v3": RESULTS.with_name("vpgc_stages_world_v3.json"),
    "world v4": RESULTS.with_name("vpgc_stages_world_v4.json"),
    "v4 + grounded Q-Former": RESULTS.with_name("vpgc_stages_grounded.json"),
    "+ question-summary LM": RESULTS.with_name("vpgc_stages_question_summary.json"),
    "world v5": RESULTS.with_name("vpgc_stages_world_v5.json"),
    "world v6, 1000 steps": RESULTS.with_name("vpgc_stages_world_v6.json"),
    # the default job's runs while it trained 2000 steps on 2000 synthetic samples
    "world v6, 2000 steps": RESULTS.with_name("vpgc_stages_world_v6_2k.json"),
    # the same recipe built with --seed 1 (not shipped; docs/tiny_world.md, "A second build")
    "world v6 recipe, seed 1": RESULTS.with_name("vpgc_stages_world_v6_seed1.json"),
    # world v6's ViT and LM, the Q-Former's grounding loss weighted 4 (docs/tiny_world.md, "World v7")
    "world v7": RESULTS.with_name("vpgc_stages_world_v7.json"),
    # the same recipe built with --seed 1 (not shipped; docs/tiny_world.md, "A second build of world v7's recipe")
    "world v7 recipe, seed 1": RESULTS.with_name("vpgc_stages_world_v7_seed1.json"),
    # world v7's recipe with the LM's slot-relation loss (not shipped; docs/tiny_world.md, "A build with the
    # comparison loss")
    "comparison-loss build": RESULTS.with_name("vpgc_stages_compare_lm.json"),
    # the shipped world (README table); stage 3 on the default job's seeds 3 and 4 (the table shows seed 3's)
    "world v9": RESULTS.with_name("vpgc_stages_world_v9.json"),
}
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


@contextlib.contextmanager
def every_layer_input(model):
    """Yields a dict that, after each forward pass of ``model``, maps every decoder layer's index to its
    (B, T, D) input hidden states (the guidance VPG-C would get at that layer is the last prompt token's)."""
    inputs: dict[int, torch.Tensor] = {}
    handles = [
        layer.register_forward_pre_hook(
            lambda m, a, kw, k=k: inputs.__setitem__(k, a[0] if a else kw["hidden_states"]), with_kwargs=True
        )
        for k, layer in enumerate(model.llm.model.layers)
    ]
    try:
        yield inputs
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def collect(model, prompts, processor, seed: int, n: int, wording: Wording = EVAL_WORDING) -> Questions:
    """Run the base model over ``n`` detail-question instances of ``seed``, keeping colour/position ones.

    ``wording``: mini-DEMON's (default) or another, e.g. ``TRAIN_WORDING`` for anything that then trains an
    adapter (the same scenes and draws, asked in other words)."""
    rows: dict[str, list] = {
        k: [] for k in ("guidance", "question", "oracle", "vision", "label", "shape", "asked")
    }
    width = model.llm.config.hidden_size
    with every_layer_input(model) as inputs:
        for i in tqdm(range(n), desc=f"questions (seed {seed})", file=sys.stderr, leave=False):
            inst = mini_demon_instance("detail_question", i, seed, wording)
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


# What a detail question names about its object and a reader must match on: a position question names the
# colour (it tells the object from a same-shape one about 70% of the time), a colour question the cell.
NAMED = {"position": "colour", "colour": "position"}


def named_probe(q_tr: Questions, q_te: Questions) -> dict[str, dict[str, float]]:
    """Per asked attribute and layer: a linear probe's accuracy (%) on what the question names (:data:`NAMED`)
    from the last prompt token, with the majority class — the guidance holds the key VPG-C must fetch by."""
    out = {}
    for asked, named in NAMED.items():
        group = list(GROUPS[named])

        def rows(q: Questions, group=group, asked=asked):
            keep = [j for j, a in enumerate(q.asked) if a == asked]
            return q.guidance[keep], q.oracle[keep][:, group].argmax(-1)  # the oracle one-hot names it

        (x_tr, y_tr), (x_te, y_te) = rows(q_tr), rows(q_te)
        majority = 100 * float(np.bincount(y_te.numpy()).max() / len(y_te))
        out[f"{asked}_question:{named}"] = {"majority": round(majority, 1)} | {
            str(k): round(probe_accuracy(x_tr[:, k], y_tr, x_te[:, k], y_te, len(group)), 1)
            for k in range(x_tr.shape[1])
        }
    return out


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

    def __init__(self, model, guidance: bool, train_qformer: bool, classes: int = NUM_CLASSES):
        super().__init__()
        config = copy.deepcopy(model.vpgc.config)
        config.guidance = guidance
        self.qformer = copy.deepcopy(model.vpg).requires_grad_(train_qformer)
        self.vpgc = VPGC.from_qformer(self.qformer, config)
        nn.init.normal_(self.vpgc.output_proj.weight, std=0.01)  # zero init would block the head's gradient
        self.head = nn.Linear(config.llm_width, classes)

    def forward(self, guidance: torch.Tensor, vision: torch.Tensor) -> torch.Tensor:
        return self.head(self.vpgc(guidance, vision, self.qformer)[:, 0].mean(1))


def train_reader(reader: nn.Module, guidance, vision, labels, steps: int) -> float:
    """Adam (lr 1e-3) on ``reader(guidance, vision)``'s cross-entropy against ``labels``, batches of 64 drawn
    with a fixed seed; returns the last batch's loss."""
    opt = torch.optim.Adam([p for p in reader.parameters() if p.requires_grad], 1e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(labels), (64,), generator=gen)
        loss = F.cross_entropy(reader(guidance[idx], vision[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item()


def reader_accuracy(reader: nn.Module, g_tr, q_tr: Questions, g_te, q_te: Questions, steps: int) -> dict:
    """Train ``reader`` on the asked attribute; test accuracy (%) per attribute among that attribute's classes."""
    loss = train_reader(reader, g_tr, q_tr.vision, q_tr.label, steps)
    with torch.no_grad():
        logits = reader(g_te, q_te.vision)
    out = {"train_loss": round(loss, 3)}
    for attribute in ("position", "colour"):
        rows = [j for j, a in enumerate(q_te.asked) if a == attribute]
        group = list(GROUPS[attribute])
        pred = logits[rows][:, group].argmax(-1) + group[0]
        out[attribute] = round(100 * float((pred == q_te.label[rows]).float().mean()), 1)
    return out


@torch.no_grad()
def trained_residual(run: Path, processor, n_train: int, n_test: int, train_seed: int) -> dict:
    """What a trained run's VPG-C residual is: its norm relative to the hidden state at the image slots, and
    what a linear probe reads from it (mean over queries) — on detail questions, the asked attribute; on
    difference questions, per image, the colour of the object in the named region (or none)."""
    model, tok, cfg, _ = load_run(run)
    model.eval()
    prompts = sample_tokenizer(cfg.data, tok, model)
    seen: dict[str, torch.Tensor] = {}
    forward = model.vpgc.forward

    def recording(*args, **kwargs):
        seen["residual"] = forward(*args, **kwargs)
        return seen["residual"]

    model.vpgc.forward = recording  # an instance attribute on a throwaway model, to read the residual
    handle = model.llm.model.layers[model.vpgc.config.layer].register_forward_pre_hook(
        lambda m, args, kwargs: seen.__setitem__("hidden", args[0] if args else kwargs["hidden_states"]),
        with_kwargs=True,
    )

    def residual(inst) -> tuple[torch.Tensor, torch.Tensor]:
        """(T_img, D) each image's residual averaged over its queries, (T_img,) its norm / the hidden norm."""
        t = len(inst.scenes)
        s = Sample("q", [None] * t, [Turn("user", render_text(inst, lambda _: "<image>"))])
        ids = torch.as_tensor(prompts.prompt(s)["input_ids"]).view(1, -1)
        model(
            ids, pixel_values=processor([[render(sc)[0] for sc in inst.scenes]]), num_images=torch.tensor([t])
        )
        r = seen["residual"].reshape(t, -1, seen["residual"].shape[-1])
        slots = (ids[0] == model.image_token_id).nonzero().flatten().view(t, -1)
        before = seen["hidden"][0, slots] - r  # this hook runs after VPG-C's
        return r.mean(1), r.norm(dim=-1).mean(1) / before.norm(dim=-1).mean(1)

    sets = {}
    for name, seed, n in (("train", train_seed, n_train), ("test", 0, n_test)):
        rows: dict[str, list] = {"x": [], "y": [], "asked": [], "ratio": [], "dx": [], "dy": [], "dratio": []}
        for i in tqdm(range(n), desc=f"residuals ({run.name}, {name})", file=sys.stderr, leave=False):
            inst = mini_demon_instance("detail_question", i, seed)
            if inst.subsets[0] in ("position", "colour"):
                x, ratio = residual(inst)
                rows["x"].append(x[0])
                rows["ratio"].append(float(ratio[0]))
                rows["y"].append(attribute_class(inst.target, inst.subsets[0]))
                rows["asked"].append(inst.subsets[0])
            inst = mini_demon_instance("difference", i, seed)
            x, ratio = residual(inst)
            rows["dx"] += list(x)
            rows["dratio"] += ratio.tolist()
            rows["dy"] += [1 + list(COLOURS).index(f[0].colour) if f else 0 for f in inst.focus]
        sets[name] = rows
    handle.remove()
    out = {"norm_ratio": round(float(np.mean(sets["test"]["ratio"])), 3)}
    with torch.enable_grad():  # this function runs under no_grad; the probes train
        for attribute in ("position", "colour"):
            xs, ys = [], []
            for name in ("train", "test"):
                keep = [j for j, a in enumerate(sets[name]["asked"]) if a == attribute]
                xs.append(torch.stack([sets[name]["x"][j] for j in keep]))
                ys.append(torch.tensor([sets[name]["y"][j] - GROUPS[attribute][0] for j in keep]))
            accuracy = probe_accuracy(xs[0], ys[0], xs[1], ys[1], len(GROUPS[attribute]))
            out[f"probe_{attribute}"] = round(accuracy, 1)
        tr, te = sets["train"], sets["test"]
        accuracy = probe_accuracy(torch.stack(tr["dx"]), torch.tensor(tr["dy"]), torch.stack(te["dx"]),
                                  torch.tensor(te["dy"]), 1 + len(COLOURS))  # fmt: skip
    out["difference_norm_ratio"] = round(float(np.mean(te["dratio"])), 3)
    out["difference_probe_region_colour"] = round(accuracy, 1)
    out["difference_majority"] = round(100 * float(np.bincount(te["dy"]).max() / len(te["dy"])), 1)
    return out


def _named(results: dict, layer: int) -> str:
    """The named-attribute probe's cell; "—" for results files made before it was measured."""
    probe = results.get("guidance_named_probe")
    if probe is None:
        return "—"
    return " / ".join(f"{probe[f'{a}_question:{n}'][str(layer)]}" for a, n in NAMED.items())


def _trained(results: dict, variant: str, key: str) -> float | str:
    """A trained-residual measure of the (first) run of ``variant`` in ``results``; "—" where not measured."""
    runs = results["trained_residual"]
    return next(v.get(key, "—") for k, v in runs.items() if Path(k).name.startswith(f"{variant}_"))


def _difference_probe(results: dict) -> str:
    """The difference-question probe's cell: (c); (e) (majority), or "—" where it was not measured."""
    if _trained(results, "c", "difference_majority") == "—":
        return "—"
    probes = "; ".join(f"({v}) {_trained(results, v, 'difference_probe_region_colour')}" for v in ("c", "e"))
    return f"{probes} ({_trained(results, 'c', 'difference_majority')})"


def stage_table(results: dict[str, dict], layer: int = 3) -> str:
    """Markdown: one column per results file (label → its JSON), one row per measured stage."""
    labels = list(results)
    rows = [
        (f"1. asked object's shape from the last prompt token at layer {layer} (majority)",
         lambda r: f"{r['guidance_shape_probe'][str(layer)]} ({r['guidance_shape_probe']['majority']})"),
        (f"1. ... from the mean over the question's tokens at layer {layer}",
         lambda r: str(r["question_mean_shape_probe"][str(layer)])),
        (f"1. what the question names, from the last prompt token at layer {layer}: colour (position "
         "questions) / cell (colour questions)", lambda r: _named(r, layer)),
        (f"1. norm of the last prompt token's hidden state at layer {layer}",
         lambda r: str(r["guidance_norm"][str(layer)])),
    ]  # fmt: skip
    chance = next(iter(results.values()))["asked_attribute_readers"]["chance"]
    for name in ("vpgc_frozen_qformer/oracle", "vpgc_frozen_qformer/layer", "vpgc_frozen_qformer/none",
                 "vpgc_trainable_qformer/oracle", "free_reader/oracle", "free_reader/layer"):  # fmt: skip
        kind, source = name.split("/")
        rows.append(
            (f"2. {kind.replace('_', ' ')}, {source} guidance: position / colour (chance {chance['position']} / {chance['colour']})",
             lambda r, name=name: "{position} / {colour}".format(**r["asked_attribute_readers"][name]))
        )  # fmt: skip
    rows.append(
        (
            "3. trained (c) residual norm / hidden norm at the slots",
            lambda r: str(_trained(r, "c", "norm_ratio")),
        )
    )
    rows.append(("3. asked attribute read linearly from the trained residual: position / colour",
                 lambda r: "; ".join(f"({v}) {_trained(r, v, 'probe_position')} / {_trained(r, v, 'probe_colour')}"
                                     for v in ("c", "e"))))  # fmt: skip
    rows.append(
        (
            "3. difference questions: trained (c) residual norm / hidden norm at the slots",
            lambda r: str(_trained(r, "c", "difference_norm_ratio")),
        )
    )
    rows.append(("3. ... each image's named-region colour (or none) read linearly from the residual: (c); (e) "
                 "(majority)", _difference_probe))  # fmt: skip
    lines = ["| stage | " + " | ".join(labels) + " |", "| --- |" + " --- |" * len(labels)]
    lines += [
        f"| {title} | " + " | ".join(cell(results[label]) for label in labels) + " |" for title, cell in rows
    ]
    return "\n".join(lines)


def docs_block() -> str:
    """The docs/tiny_world.md block: :func:`stage_table` of :data:`DOCS_COLUMNS` and their commands."""
    data = {label: json.loads(path.read_text()) for label, path in DOCS_COLUMNS.items()}
    commands = "; ".join(
        f"{label}: `{d['command']}`" + (f" on {built_by(d['assets'])}" if "assets" in d else "")
        for label, d in data.items()
    )
    return stage_table(data) + f"\n\nMade by: {commands} (world v3 on a checkout of commit e3639f1)"


def write_docs_block(text: str, page: Path = RESULTS.parents[2] / "docs" / "tiny_world.md") -> None:
    write_block(page, "vpgc-stages", text)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, help="a vpgkit.train output dir (its base model)")
    parser.add_argument("--layer", type=int, default=3, help="k: the layer whose guidance the readers get")
    parser.add_argument("--train", type=int, default=4000, help="training instances drawn (before filtering)")
    parser.add_argument("--test", type=int, default=300, help="mini-DEMON instances drawn (before filtering)")
    parser.add_argument("--train-seed", type=int, default=7)
    parser.add_argument("--steps", type=int, default=2000, help="reader training steps (batch 64)")
    parser.add_argument("--adapter-runs", type=Path, nargs="*", default=[], help="trained runs to measure")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--residuals-only",
        action="store_true",
        help="only stage 3 (the --adapter-runs' trained residuals); --run is then not needed",
    )
    parser.add_argument(
        "--docs", action="store_true", help="only rewrite docs/tiny_world.md's block from DOCS_COLUMNS"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch threads, recorded (sums, so trained readers, can differ between thread counts)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.docs:
        write_docs_block(docs_block())
        return
    if args.residuals_only:
        if not args.adapter_runs:
            parser.error("--residuals-only needs --adapter-runs")
        start = time.perf_counter()
        results = {"trained_residual": residuals(args)}
        _write(results, args.out, start)
        return
    if args.run is None:
        parser.error("--run is required (except with --docs or --residuals-only)")
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
    results["guidance_named_probe"] = named_probe(q_tr, q_te)
    print("   what the question names (colour / cell), per layer:", results["guidance_named_probe"])
    norms = q_te.guidance.norm(dim=-1).mean(0)
    results["guidance_norm"] = {str(k): round(float(n), 1) for k, n in enumerate(norms)}
    print("   norm of the last prompt token's hidden state, per layer:", results["guidance_norm"])

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
        results["trained_residual"] = residuals(args, processor)
    _write(results, args.out, start)


def residuals(args, processor=None) -> dict[str, dict]:
    """Stage 3 for every ``--adapter-runs`` run (:func:`trained_residual`), printed."""
    if processor is None:
        model = load_run(args.adapter_runs[0], base_only=True)[0]
        processor = ImageProcessor(size=model.vision.image_size)
    out = {
        str(run): trained_residual(run, processor, args.train, args.test, args.train_seed)
        for run in args.adapter_runs
    }
    print("3. trained residuals:", out)
    return out


def _write(results: dict, out: Path, start: float) -> None:
    """``results`` with its wall time, command and world build, written to ``out``."""
    results["seconds"] = round(time.perf_counter() - start)
    results["threads"] = torch.get_num_threads()
    results["command"] = "python " + " ".join(sys.argv)
    results["assets"] = provenance()
    out.parent.mkdir(parents=True, exist_ok=True)
    write_results(out, results, indent=1)
    print(f"wrote {out} ({results['seconds']} s)")


if __name__ == "__main__":
    main()
