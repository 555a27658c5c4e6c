"""Does what a run learned from its synthetic data generalise? Its loss on its own synthetic samples and on
another seed's (same generator, other images and questions: held out).

Each ``--runs`` directory is a finished ``python -m vpgkit.train`` run whose data source named ``synthetic``
was generated with its seed. Run *i* is scored on its own file and on the file of run *i + 1* of the same
variant (cyclically, so every seed's data is someone's held-out set); variants are told apart by the run
directory's name without its ``_seed<N>`` suffix. The model is in eval mode, the loss is the training
loss (mean over labelled tokens, per batch, averaged), on the first ``--samples`` samples of each file.
A guided run (VPG-C) whose held-out loss is below its unguided twin's fetched something that generalises;
one whose own-data loss is lower but held-out loss is not memorised.

    python benchmarks/synthetic_loss.py --runs runs/grounded/{f3k,g3k}_seed{0,1,2,3,4} \\
        --out benchmarks/results/synthetic_loss_3k.json

The runs must be read with the world build they were trained on (the results record it). CPU, one thread:
about 15 s per run and file at 1200 samples. Not run in tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from accelerate import Accelerator
from omegaconf import OmegaConf
from results_file import write_results

from synthetic.world.build import provenance
from vpgkit.config import TrainConfig, register_schema, to_train_config
from vpgkit.data import SkipReport
from vpgkit.data.collation import Collator
from vpgkit.evaluate import load_run
from vpgkit.training.datasets import build_split
from vpgkit.training.loop import evaluate_loss


def _variant(run: Path) -> tuple[str, int]:
    match = re.fullmatch(r"(.+)_seed(\d+)", run.name)
    if not match:
        raise ValueError(f"--runs {run}: expected a directory named <variant>_seed<N>")
    return match[1], int(match[2])


def _config(run: Path) -> TrainConfig:
    register_schema()
    raw = OmegaConf.load(run / ".hydra" / "config.yaml")
    return to_train_config(OmegaConf.merge(OmegaConf.structured(TrainConfig), raw))


def synthetic_loss(model, tokenizer, data_run: Path, samples: int, accelerator: Accelerator) -> float:
    """Mean loss of ``model`` on the first ``samples`` samples of ``data_run``'s ``synthetic`` source."""
    cfg = _config(data_run)
    sources = [s for s in cfg.data.train if s.name == "synthetic"]
    if not sources:
        raise ValueError(f"{data_run}: its data has no source named 'synthetic'")
    # No feature cache: the other run's cache folder is not ours to write.
    dataset = build_split(
        sources, dataclasses.replace(cfg.data, feature_cache=None), tokenizer, model, SkipReport()
    )
    items = [dataset[i] for i in range(min(samples, len(dataset)))]
    collate = Collator(pad_token_id=tokenizer.pad_token_id, image_size=model.vision.image_size)
    return evaluate_loss(model, items, collate, cfg.trainer.global_batch_size, accelerator)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--runs", nargs="+", type=Path, required=True, help="<variant>_seed<N> run directories"
    )
    parser.add_argument("--samples", type=int, default=1200, help="samples scored per file (default 1200)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/synthetic_loss.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    by_variant: dict[str, dict[int, Path]] = defaultdict(dict)
    for run in args.runs:
        variant, seed = _variant(run)
        by_variant[variant][seed] = run
    accelerator = Accelerator(cpu=True)
    start = time.perf_counter()
    results = {}
    for variant, runs in by_variant.items():
        seeds = sorted(runs)
        if len(seeds) < 2:
            raise ValueError(
                f"--runs: variant {variant} needs at least two seeds (one's data is another's held-out set)"
            )
        for i, seed in enumerate(seeds):
            model, tokenizer, _, _ = load_run(runs[seed])
            model.eval()
            held_out = seeds[(i + 1) % len(seeds)]
            row = {
                "own": synthetic_loss(model, tokenizer, runs[seed], args.samples, accelerator),
                "held_out": synthetic_loss(model, tokenizer, runs[held_out], args.samples, accelerator),
                "held_out_data_seed": held_out,
            }
            results[f"{variant}_seed{seed}"] = row
            print(f"{variant} seed {seed}: own {row['own']:.4f}, held out (seed {held_out}) {row['held_out']:.4f}",
                  file=sys.stderr)  # fmt: skip
    data = {
        "command": "python benchmarks/synthetic_loss.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "samples": args.samples,
        "seconds": round(time.perf_counter() - start),
        "assets": provenance(),
        "runs": results,
    }
    write_results(args.out, data, indent=1)
    print(f"wrote {args.out}")
    return data


if __name__ == "__main__":
    main()
