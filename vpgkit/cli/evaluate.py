"""DEMON-format evaluation of a training run: ``python -m vpgkit.evaluate --run OUTPUT_DIR --demon PATH ...``.

The model is rebuilt from the run's composed config (``OUTPUT_DIR/.hydra/config.yaml``, merged onto the
typed :class:`~vpgkit.config.TrainConfig`; backbones and seed as in training), then the run's adapter
(``OUTPUT_DIR/adapter``) is loaded — or not, with ``--base-only``. Every sample of the given DEMON tasks
is answered greedily, scored (ROUGE-L or accuracy, see :mod:`vpgkit.evaluation`), and a per-category
table is printed (``--per-task`` adds each task). The results JSON (scores, per-sample predictions,
settings, the run's config) is written atomically; predictions go to a JSONL next to it after every
batch, so an interrupted evaluation resumes and a finished one is not recomputed.

Examples::

    python -m vpgkit.evaluate --run outputs/vpgc --demon data/DEMON-Core --per-task
    python -m vpgkit.evaluate --run outputs/vpgc --base-only --demon data/mini_demon/* --limit 50
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from ..threads import apply_thread_policy
from . import exit_on_input_error

__all__ = ["build_parser", "cli", "load_run", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vpgkit.evaluate",
        description="Evaluate a vpgkit training run on DEMON-format tasks (ROUGE-L / accuracy per category).",
    )
    parser.add_argument(
        "--run", required=True, type=Path, help="training output_dir (.hydra/config.yaml, adapter/)"
    )
    parser.add_argument("--base-only", action="store_true", help="evaluate without loading the run's adapter")
    parser.add_argument(
        "--demon",
        required=True,
        nargs="+",
        type=Path,
        help="task folders (core.json + images/), task JSON files, or folders of task folders",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results JSON (default: RUN/eval/demon.json, or demon_base.json with --base-only)",
    )
    parser.add_argument(
        "--predictions", type=Path, default=None, help="predictions JSONL (default: next to --out)"
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="answer length limit in tokens (default: the run's evaluate.max_new_tokens, as its own "
        "end-of-training evaluation used)",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="prompts generated together (default: 8)")
    parser.add_argument("--limit", type=int, default=None, help="first N samples of each task (default: all)")
    parser.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="longest prompt in tokens (default: the LLM's context minus --max-new-tokens)",
    )
    parser.add_argument("--per-task", action="store_true", help="print each task's score too")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def load_run(run: str | Path, base_only: bool = False):
    """(model, tokenizer, TrainConfig, adapter dir or None) of a training run directory."""
    from omegaconf import OmegaConf

    from ..checkpoints import load_adapter
    from ..config import TrainConfig, register_schema, to_train_config
    from ..training.build import build_model

    run = Path(run)
    config_path = run / ".hydra" / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"--run {run}: no {config_path.relative_to(run)} (expected the output_dir of `python -m vpgkit.train`)"
        )
    register_schema()  # the ${asset:...} resolver recipes may use
    try:
        merged = OmegaConf.merge(OmegaConf.structured(TrainConfig), OmegaConf.load(config_path))
    except Exception as e:  # omegaconf raises several types for unknown keys / wrong types
        raise ValueError(f"{config_path}: not a vpgkit TrainConfig ({e})") from None
    cfg = to_train_config(merged)
    # A run's trainable weights are its adapter (or, base only, their own init): the warm start it was
    # trained from is neither, and need not exist any more.
    model, tokenizer = build_model(dataclasses.replace(cfg.model, init_adapter=None), cfg.seed)
    adapter = None
    if not base_only:
        adapter = run / "adapter"
        if not adapter.is_dir():
            raise FileNotFoundError(
                f"--run {run}: no adapter/ folder (the run has not finished?); pass --base-only to "
                "evaluate the base model"
            )
        load_adapter(model, adapter)
    return model, tokenizer, cfg, adapter


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse ``argv``, evaluate, print the table, write the results; returns the results dict."""
    args = build_parser().parse_args(argv)
    apply_thread_policy()
    from omegaconf import OmegaConf

    from ..backbones.language import max_positions
    from ..evaluation import evaluate_demon, find_task_files, format_table
    from ..training.datasets import sample_tokenizer
    from ..training.state import write_json_atomic

    for name in ("max_new_tokens", "batch_size", "limit", "max_length"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be ≥ 1, got {value}")
    task_files = find_task_files(args.demon)  # fail on a bad path before building the model
    out = args.out or args.run / "eval" / ("demon_base.json" if args.base_only else "demon.json")
    predictions = args.predictions or out.with_name(out.stem + ".predictions.jsonl")

    model, tokenizer, cfg, adapter = load_run(args.run, args.base_only)
    # the run's own setting by default, so a base-only evaluation answers under the adapter's limits
    max_new_tokens = args.max_new_tokens or cfg.evaluate.max_new_tokens
    max_length = args.max_length
    if max_length is None:
        context = max_positions(model.llm)
        max_length = context - max_new_tokens if context else cfg.data.max_length
    prompts = sample_tokenizer(dataclasses.replace(cfg.data, max_length=max_length), tokenizer, model)
    identity = {"run": str(args.run.resolve()), "adapter": str(adapter.resolve()) if adapter else None}
    results = evaluate_demon(
        model,
        tokenizer,
        prompts,
        task_files,
        batch_size=args.batch_size,
        max_new_tokens=max_new_tokens,
        limit=args.limit,
        predictions_path=predictions,
        settings=identity,
        progress=not args.no_progress,
    )
    results["config"] = {
        "run": str(args.run),
        "base_only": args.base_only,
        "adapter": str(adapter) if adapter else None,
        "demon": [str(p) for p in task_files],
        "predictions": str(predictions),
        "train_config": OmegaConf.to_container(OmegaConf.structured(cfg)),
    }
    write_json_atomic(out, results)
    print(format_table(results, per_task=args.per_task))
    print(
        f"{len(results['predictions'])} samples ({results['generated']} generated, {results['reused']} "
        f"reused) in {results['seconds']:.1f} s; results: {out}"
    )
    return results


def cli() -> None:
    """``python -m vpgkit.evaluate``: :func:`main` with input errors as one ``error:`` line (exit 1)."""
    exit_on_input_error(main)


if __name__ == "__main__":
    cli()
