"""Is *finding* the guided fetch the block, or *reading* it? VPG-C warm-started from a supervised fetch.

On a world where the guidance carries the question and the Q-Former can be steered
(``vpgc_stages.py`` stages 1–2 pass), VPG-C trained with the LM loss still does not fetch the asked
object (stage 3). This script separates the two halves of that failure:

1. it trains VPG-C's guided queries and guidance projection over the frozen Q-Former, with the real
   layer-k guidance of the run's base model, to give the asked object's asked attribute through a linear
   head (stage 2's ``vpgc_frozen_qformer`` reader, trained on instances in the *training* wording of scenes
   no evaluation uses — mini-DEMON's generator under ``--train-seed``);
2. it writes an adapter with those weights and the output projection at zero, so the residual is still
   exactly zero: the model starts as the base model, with a fetch already in its queries.

``python -m vpgkit.train ... model.init_adapter=OUT/adapter`` then trains it end to end with the LM loss
(variant ``w3k`` of ``mini_demon_table.py``). If w3k beats the runs that start from Cheetah's init, the LM
loss can learn to *read* a fetched object and what fails is *finding* the fetch; if not, the reading.

    python benchmarks/vpgc_warm_start.py --run RUN --out runs/mini_demon/warm_start

Writes OUT/adapter and OUT/warm_start.json (the reader's accuracy on mini-DEMON's questions).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from results_file import write_results
from vpgc_stages import VPGCReader, collect, reader_accuracy

from synthetic.world.build import provenance
from synthetic.world.language import TRAIN_WORDING
from vpgkit.backbones import ImageProcessor
from vpgkit.checkpoints import save_adapter
from vpgkit.evaluate import load_run
from vpgkit.training.datasets import sample_tokenizer


def warm_start(run: Path, out: Path, train: int, test: int, train_seed: int, steps: int) -> dict:
    """Train the supervised fetch on ``run``'s base model and save it as ``out/adapter``; returns its scores."""
    torch.manual_seed(0)
    model, tok, cfg, _ = load_run(run, base_only=True)
    model.eval()
    processor = ImageProcessor(size=model.vision.image_size)
    prompts = sample_tokenizer(cfg.data, tok, model)
    layer = model.vpgc.config.layer
    q_tr = collect(model, prompts, processor, train_seed, train, TRAIN_WORDING)
    q_te = collect(model, prompts, processor, 0, test)
    reader = VPGCReader(model, guidance=True, train_qformer=False)
    scores = reader_accuracy(reader, q_tr.guidance[:, layer], q_tr, q_te.guidance[:, layer], q_te, steps)
    print("supervised fetch over the frozen Q-Former, real guidance:", scores, flush=True)
    model.vpgc.load_state_dict(reader.vpgc.state_dict())
    with torch.no_grad():  # the reader's output projection fed its head; zero, the residual starts at zero
        model.vpgc.output_proj.weight.zero_()
        model.vpgc.output_proj.bias.zero_()
    save_adapter(model, out / "adapter")
    return {"layer": layer, "train_questions": len(q_tr.label), "test_questions": len(q_te.label),
            "reader": scores, "adapter": str(out / "adapter")}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, required=True, help="a vpgkit.train output dir (its base model)")
    parser.add_argument("--out", type=Path, required=True, help="writes OUT/adapter and OUT/warm_start.json")
    parser.add_argument("--train", type=int, default=4000, help="training instances drawn (before filtering)")
    parser.add_argument("--test", type=int, default=300, help="mini-DEMON instances drawn (before filtering)")
    parser.add_argument("--train-seed", type=int, default=7)
    parser.add_argument("--steps", type=int, default=2000, help="reader training steps (batch 64)")
    args = parser.parse_args()
    start = time.perf_counter()
    results = warm_start(args.run, args.out, args.train, args.test, args.train_seed, args.steps)
    results |= {"seconds": round(time.perf_counter() - start), "command": "python " + " ".join(sys.argv),
                "assets": provenance()}  # fmt: skip
    write_results(args.out / "warm_start.json", results, indent=1)
    print(f"wrote {args.out / 'adapter'} and {args.out / 'warm_start.json'}")


if __name__ == "__main__":
    main()
