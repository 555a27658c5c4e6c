"""Training entry point: ``python -m vpgkit.train recipe=vpgc [key=value ...]``.

Hydra composes the recipe (``recipe=vpgc|vpgc_toy|blip2|otter``, shipped in the wheel as ``vpgkit.recipes``) onto
the typed schema :class:`vpgkit.config.TrainConfig`, so unknown keys and wrong types fail before anything
runs. Add your own recipe folders with ``hydra.searchpath=[file:///path/to/recipes]``. Runs under
``accelerate launch`` unchanged (configs in :mod:`vpgkit.launch`).

Examples::

    python -m vpgkit.train recipe=vpgc                              # tiny world default, runs anywhere
    python -m vpgkit.train recipe=vpgc trainer.max_steps=200 resume=auto
    python -m vpgkit.train recipe=vpgc model=vicuna7b_vpgc model.llm.path=/models/vicuna-7b \\
        model.vision.checkpoint=/models/blip2_pretrained.pth data=cheetah_mix optim=adamw_paper trainer=a100
    torchrun --nproc_per_node 2 -m vpgkit.train recipe=vpgc_toy    # 2 CPU processes (gloo)
    accelerate launch --config_file "$(python -m vpgkit.launch ddp_gpu)" -m vpgkit.train recipe=vpgc ...
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import statistics
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig

from ..config import TrainConfig, register_schema, to_train_config
from ..threads import apply_thread_policy
from ..training.plot import save_loss_curve, smoothing_window
from ..training.preflight import check_config, check_output_dir
from ..training.runlog import TrainingStopped, close_run_logger

if TYPE_CHECKING:
    from ..training.loop import TrainResult


def run(cfg: TrainConfig) -> TrainResult:
    """Build model and data from ``cfg``, train, and write the adapter to ``output_dir/adapter``."""
    # Imported here, not at the top: ``--help`` and configuration mistakes answer without loading
    # torch, transformers and timm (seconds per process).
    import torch
    from accelerate import Accelerator

    from ..checkpoints import save_adapter
    from ..data.collation import Collator
    from ..training.build import build_model
    from ..training.datasets import build_datasets
    from ..training.loop import default_sampler, train

    t = cfg.trainer
    # Fail in the first second, before data synthesis or model building, on what would fail later.
    check_config(cfg)
    check_output_dir(cfg.output_dir)
    # cpu=True on machines without CUDA lets accelerate join a CPU process group (torchrun, gloo).
    accelerator = Accelerator(
        mixed_precision=t.mixed_precision,
        log_with=t.log_with or None,
        project_dir=cfg.output_dir,
        cpu=not torch.cuda.is_available(),
    )
    if cfg.data.prepare:
        if accelerator.is_main_process:
            hydra.utils.call(cfg.data.prepare)
        accelerator.wait_for_everyone()
    model, tokenizer = build_model(cfg.model, cfg.seed)
    train_set, eval_set, per_batch = build_datasets(cfg.data, tokenizer, model)
    collate = Collator(pad_token_id=tokenizer.pad_token_id, image_size=model.vision.image_size)
    sampler = default_sampler(train_set, t.global_batch_size, cfg.seed, per_batch)
    result = train(cfg, model, train_set, collate, eval_set, accelerator=accelerator, batch_sampler=sampler)
    log = logging.getLogger("vpgkit.train")
    if accelerator.is_main_process:
        adapter = save_adapter(model, Path(cfg.output_dir) / "adapter")
        if result.losses:
            save_loss_curve(
                Path(cfg.output_dir) / "loss_curve.png",
                result.losses,
                result.eval_losses,
                title=f"recipe {cfg.recipe}",
                lrs=result.lrs if len(result.lrs) == len(result.losses) else None,
            )
        summary = summary_lines(cfg, model, result, adapter, accelerator.num_processes)
        print("\n".join(summary))
        for line in summary:
            log.info("%s", line)
        if cfg.evaluate.demon:
            _evaluate(cfg, model, tokenizer)
    accelerator.wait_for_everyone()
    return result


def _evaluate(cfg: TrainConfig, model, tokenizer) -> dict:
    """Evaluate the trained model on the DEMON-format tasks of ``cfg.evaluate``; print and save the table."""
    from ..backbones.language import max_positions
    from ..evaluation import evaluate_demon, format_table
    from ..training.datasets import sample_tokenizer
    from ..training.state import write_json_atomic

    e = cfg.evaluate
    context = max_positions(model.llm) or cfg.data.max_length + e.max_new_tokens
    results = evaluate_demon(
        model,
        tokenizer,
        # Prompts may be longer than training samples: allow the LM's context minus the answer.
        sample_tokenizer(
            dataclasses.replace(cfg.data, max_length=context - e.max_new_tokens), tokenizer, model
        ),
        list(e.demon),
        batch_size=e.batch_size,
        max_new_tokens=e.max_new_tokens,
        limit=e.limit,
        predictions_path=Path(cfg.output_dir) / "eval" / "predictions.jsonl",
        settings={"run": str(cfg.output_dir), "adapter": True, "demon": [str(p) for p in e.demon]},
    )
    write_json_atomic(Path(cfg.output_dir) / "eval" / "results.json", results)
    table = format_table(results, per_task=True)
    print(table)
    logging.getLogger("vpgkit.train").info("evaluation (%s):\n%s", Path(cfg.output_dir) / "eval", table)
    return results


def summary_lines(cfg: TrainConfig, model, result: TrainResult, adapter: Path, processes: int) -> list[str]:
    """The end-of-run summary: steps, smoothed start/end loss, weights, eval losses, skips, adapter.

    The loss quoted is the mean over the first and the last :func:`smoothing_window` steps (the curve's
    smoothed line), not two single noisy steps.
    """
    report = model.parameter_report()
    window = smoothing_window(len(result.losses))
    first, last = statistics.fmean(result.losses[:window]), statistics.fmean(result.losses[-window:])
    over = f" (mean of the first / last {window} steps)" if window > 1 else ""
    lines = [
        f"recipe {cfg.recipe}: {result.step} steps on {processes} process(es), "
        f"loss {first:.4f} → {last:.4f}{over}",
        f"trainable weights {report['trainable']:,} ({100 * report['trainable_share_of_llm']:.3f}% of the LLM)",
    ]
    if result.eval_losses:
        lines.append(
            "eval loss " + ", ".join(f"step {s}: {v:.4f}" for s, v in sorted(result.eval_losses.items()))
        )
    if result.skipped:
        lines.append(f"skipped samples (distinct, by reason): {result.skipped}")
    lines.append(f"adapter: {adapter}")
    return lines


@hydra.main(config_path="pkg://vpgkit.recipes", config_name="train", version_base=None)
def _hydra_main(cfg: DictConfig) -> None:
    # Configuration mistakes are the user's to fix: one line naming the key, no traceback.
    try:
        config = to_train_config(cfg)
        check_config(config)
        check_output_dir(config.output_dir)
    except (ValueError, OSError) as err:
        sys.exit(f"vpgkit.train: {err}")
    apply_thread_policy()  # here, not in main(): --help and config mistakes need no torch
    try:
        run(config)
    except TrainingStopped as stopped:
        print(f"vpgkit.train: {stopped}", file=sys.stderr)
        sys.exit(128 + signal.SIGTERM)  # the shell's code for "terminated by SIGTERM"
    finally:
        close_run_logger()


def main() -> None:
    """Console entry: register the schema, then let Hydra parse ``sys.argv``."""
    register_schema()
    _hydra_main()


if __name__ == "__main__":
    sys.exit(main())
