"""Where does VPG-C's fetch break on difference questions: in the guidance, or in the Q-Former?

A difference question names a region ("What changed in the top left of the image?"); VPG-C must fetch,
from each of the two images, what is in that region (an object's colour, or nothing). On the default job's
base model (the shipped recipe over the world of the vpgkit this imports), with mini-DEMON's generator
(train: instances of ``--train-seed`` in the training wording; test: mini-DEMON's own, seed 0):

1. **Does the guidance name the region?** A linear probe of the named region's cell (9 classes) from the
   last prompt token at the input of every decoder layer (VPG-C's guidance at that layer). Control: the
   majority cell.
2. **Can the frozen Q-Former be steered to it?** VPG-C's own trainable parts over the frozen Q-Former plus a
   linear head (``vpgc_stages.VPGCReader``), trained with supervision to give, per image, the named region's
   colour or "empty" (7 classes), with the guidance ``layer`` (the real layer-k hidden state), ``oracle_cell``
   (a one-hot of the named cell: the best guidance could be) or ``none`` (held at zero: a
   prompt-independent readout). Control: ``none`` and the majority class; scores also per edit kind.

If ``oracle_cell`` reads the region and ``layer`` does not, the Q-Former can fetch by position and the
guidance is what lacks it; a trained adapter's residual cannot hold more than the ``layer`` reader finds
(``vpgc_stages.py``, stage 3, measures that residual).

    python benchmarks/difference_fetch.py --out benchmarks/results/difference_fetch.json
    python benchmarks/difference_fetch.py --docs      # docs/tiny_world.md's block from DOCS_COLUMNS

CPU, one thread: about 4 minutes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from doc_blocks import ROOT, write_block
from results_file import write_results
from tqdm import tqdm
from vpgc_stages import VPGCReader, every_layer_input, probe_accuracy, train_reader

from synthetic.world.build import built_by, provenance
from synthetic.world.language import EVAL_WORDING, TRAIN_WORDING, Wording
from synthetic.world.mini_demon import mini_demon_instance
from synthetic.world.scene import COLOURS, POSITIONS, render
from synthetic.world.tasks import render_text
from vpgkit.backbones import ImageProcessor
from vpgkit.data import Sample, Turn
from vpgkit.training.datasets import sample_tokenizer

RESULTS = Path(__file__).resolve().parent / "results" / "difference_fetch.json"
# The docs table's columns: the world each results file was measured on.
DOCS_COLUMNS = {
    "world v7": RESULTS.with_name("difference_fetch_world_v7.json"),
    "comparison-loss build": RESULTS.with_name("difference_fetch_compare_lm.json"),
    "+ summary of difference questions": RESULTS.with_name("difference_fetch_summary_difference.json"),
    "... with a 1400-step LM": RESULTS.with_name("difference_fetch_summary_difference_lm1400.json"),
    "world v8": RESULTS.with_name("difference_fetch_world_v8.json"),
}
# The readers' classes: the named region is empty in that image, or holds an object of one of the colours.
REGION_CLASSES = ("empty", *COLOURS)
EDITS = ("add", "delete", "modify", "unchanged")  # a difference question's edit in its named region


@dataclass
class DifferenceQuestions:
    """Difference questions, one row per image (two per question).

    guidance: (n, L, D) the question's last prompt token at the input of each decoder layer (both rows of a
    question share it); oracle: (n, D) a one-hot (×10) of the named cell; vision: (n, 1, N_v, D_v) the
    image's ViT tokens; cell: (n,) the named cell; label: (n,) index in :data:`REGION_CLASSES`;
    edit: the question's edit kind (add / delete / modify / unchanged).
    """

    guidance: torch.Tensor
    oracle: torch.Tensor
    vision: torch.Tensor
    cell: torch.Tensor
    label: torch.Tensor
    edit: list[str]


def base_model():
    """(model, sample tokenizer, image processor) of the default job's recipe, adapters at their init."""
    from hydra import compose, initialize_config_module

    from vpgkit.config import register_schema, to_train_config
    from vpgkit.training.build import build_model

    register_schema()
    with initialize_config_module(config_module="vpgkit.recipes", version_base=None):
        cfg = to_train_config(compose(config_name="train", overrides=["recipe=vpgc"]))
    model, tokenizer = build_model(cfg.model, cfg.seed)
    model.eval()
    return model, sample_tokenizer(cfg.data, tokenizer, model), ImageProcessor(size=model.vision.image_size)


@torch.no_grad()
def collect(
    model, prompts, processor, seed: int, n: int, wording: Wording = EVAL_WORDING
) -> DifferenceQuestions:
    """Run the base model over ``n`` difference instances of ``seed`` (both images), keeping each layer's
    input at the last prompt token."""
    rows: dict[str, list] = {k: [] for k in ("guidance", "oracle", "vision", "cell", "label", "edit")}
    width = model.llm.config.hidden_size
    with every_layer_input(model) as inputs:
        for i in tqdm(range(n), desc=f"difference questions (seed {seed})", file=sys.stderr, leave=False):
            inst = mini_demon_instance("difference", i, seed, wording)
            sample = Sample("q", [None, None], [Turn("user", render_text(inst, lambda _: "<image>"))])
            ids = torch.as_tensor(prompts.prompt(sample)["input_ids"]).view(1, -1)
            vision = model.vision(
                processor([[render(scene)[0] for scene in inst.scenes]])
            )  # (1, 2, N_v, D_v)
            model(ids, vision_features=vision, num_images=torch.tensor([2]))
            guidance = torch.stack([inputs[k][0, -1] for k in sorted(inputs)])
            oracle = torch.zeros(width)
            oracle[inst.named.cell] = 10.0
            for t, shown in enumerate(inst.focus):  # what the named region holds in image t (nothing: [])
                rows["guidance"].append(guidance)
                rows["oracle"].append(oracle)
                rows["vision"].append(vision[0, t : t + 1])
                rows["cell"].append(inst.named.cell)
                rows["label"].append(REGION_CLASSES.index(shown[0].colour) if shown else 0)
                rows["edit"].append(inst.subsets[0])
    return DifferenceQuestions(
        torch.stack(rows["guidance"]), torch.stack(rows["oracle"]), torch.stack(rows["vision"]),
        torch.tensor(rows["cell"]), torch.tensor(rows["label"]), rows["edit"],
    )  # fmt: skip


def region_probe(tr: DifferenceQuestions, te: DifferenceQuestions) -> dict[str, float]:
    """Stage 1: per layer, a linear probe's test accuracy (%) on the named cell from the guidance."""
    one = slice(None, None, 2)  # a row per question: both images share the guidance
    x_tr, y_tr, x_te, y_te = tr.guidance[one], tr.cell[one], te.guidance[one], te.cell[one]
    majority = 100 * float(np.bincount(y_te.numpy()).max() / len(y_te))
    return {"majority": round(majority, 1)} | {
        str(k): round(probe_accuracy(x_tr[:, k], y_tr, x_te[:, k], y_te, len(POSITIONS)), 1)
        for k in range(x_tr.shape[1])
    }


def region_reader(
    model, tr: DifferenceQuestions, te: DifferenceQuestions, source: str, layer: int, steps: int
) -> dict:
    """Stage 2: a supervised VPG-C reader over the frozen Q-Former with ``source`` guidance; its test
    accuracy (%) on the named region's content, overall and per edit kind."""
    torch.manual_seed(0)
    reader = VPGCReader(model, guidance=source != "none", train_qformer=False, classes=len(REGION_CLASSES))

    def pick(q: DifferenceQuestions) -> torch.Tensor:  # "none": ignored, VPG-C holds its guidance at zero
        return q.guidance[:, layer] if source == "layer" else q.oracle

    g_tr, g_te = pick(tr), pick(te)
    loss = train_reader(reader, g_tr, tr.vision, tr.label, steps)
    with torch.no_grad():
        right = (reader(g_te, te.vision).argmax(-1) == te.label).float()
    edits = np.array(te.edit)
    return {
        "train_loss": round(loss, 3),
        "accuracy": round(100 * float(right.mean()), 1),
        "by_edit": {e: round(100 * float(right[edits == e].mean()), 1) for e in sorted(set(te.edit))},
    }


def measure(train: int, test: int, train_seed: int, steps: int) -> dict:
    """Both stages on the default job's base model; the results dict (without provenance)."""
    model, prompts, processor = base_model()
    layer = model.vpgc.config.layer
    tr = collect(model, prompts, processor, train_seed, train, TRAIN_WORDING)
    te = collect(model, prompts, processor, 0, test)
    results: dict = {"layer": layer, "train_questions": train, "test_questions": test}
    results["guidance_region_probe"] = region_probe(tr, te)
    print("1. the named cell from the last prompt token, per layer:", results["guidance_region_probe"])
    majority = 100 * float(np.bincount(te.label.numpy()).max() / len(te.label))
    readers: dict = {"majority": round(majority, 1), "classes": list(REGION_CLASSES)}
    for source in ("layer", "oracle_cell", "none"):
        readers[source] = region_reader(model, tr, te, source, layer, steps)
        print(f"2. VPG-C over the frozen Q-Former, {source} guidance:", readers[source], flush=True)
    results["region_readers"] = readers
    return results


def docs_block(columns: dict[str, Path] = DOCS_COLUMNS) -> str:
    """Markdown: one column per results file, a row per stage, and the commands that made them."""
    data = {label: json.loads(path.read_text()) for label, path in columns.items()}
    first = next(iter(data.values()))
    layer = first["layer"]

    def reader(source: str):
        def cell(r: dict) -> str:
            by = r["region_readers"][source]["by_edit"]
            return f"{r['region_readers'][source]['accuracy']} ({' / '.join(str(by[e]) for e in EDITS)})"

        return cell

    rows = [
        (f"1. the named cell from the last prompt token at layer {layer} (majority)",
         lambda r: f"{r['guidance_region_probe'][str(layer)]} ({r['guidance_region_probe']['majority']})"),
        (f"2. VPG-C over the frozen Q-Former, layer-{layer} guidance: region content per image "
         f"({' / '.join(EDITS)})", reader("layer")),
        ("2. ... oracle guidance (a one-hot of the named cell)", reader("oracle_cell")),
        ("2. ... no guidance (majority)",
         lambda r: f"{reader('none')(r)} ({r['region_readers']['majority']})"),
    ]  # fmt: skip
    lines = ["| stage | " + " | ".join(data) + " |", "| --- |" + " --- |" * len(data)]
    lines += [f"| {title} | " + " | ".join(cell(r) for r in data.values()) + " |" for title, cell in rows]
    commands = "; ".join(f"{label}: `{d['command']}` on {built_by(d['assets'])}" for label, d in data.items())
    return "\n".join(lines) + f"\n\nMade by: {commands}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", type=int, default=2000, help="training questions (two images each)")
    parser.add_argument("--test", type=int, default=300, help="mini-DEMON difference questions (seed 0)")
    parser.add_argument("--train-seed", type=int, default=7)
    parser.add_argument("--steps", type=int, default=2000, help="reader training steps (batch 64)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, recorded")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--docs", action="store_true", help="only rewrite docs/tiny_world.md's block")
    args = parser.parse_args()
    if args.docs:
        write_block(ROOT / "docs" / "tiny_world.md", "difference-fetch", docs_block())
        return
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    results = measure(args.train, args.test, args.train_seed, args.steps)
    results["seconds"] = round(time.perf_counter() - start)
    results["threads"] = torch.get_num_threads()
    results["command"] = "python " + " ".join(sys.argv)
    results["assets"] = provenance()
    write_results(args.out, results, indent=1)
    print(f"wrote {args.out} ({results['seconds']} s)")


if __name__ == "__main__":
    main()
