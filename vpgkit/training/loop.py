"""The training loop on accelerate: exact under any split of a batch, resumable to the bit.

One optimiser step consumes one *global batch* (``trainer.global_batch_size`` samples) split over the
processes and ``gradient_accumulation_steps`` micro-batches. Each micro-batch's summed token loss is
divided by the number of labelled tokens in the whole global batch (all-reduced up front), so one
process, two processes or any accumulation give the same gradient. The data order is a pure function of
(seed, epoch), so the position in it is two integers, saved with every checkpoint.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..backbones.language import base_causal_lm
from ..config import TrainConfig
from ..data.mixture import MixtureSampler
from .fetch import fetch_loss
from .optim import adamw_warmup_cosine, optimizer_step
from .optim import warmup_cosine as warmup_cosine  # re-exported: it was defined here
from .preflight import check_config, check_datasets, check_output_dir
from .runlog import SignalStop, TrainingStopped, ignore_stop_signals, run_logger
from .state import begin_checkpoint, finish_checkpoint, latest_checkpoint, load_checkpoint, load_rng, save_rng


@dataclass
class TrainResult:
    """What a run did: where it wrote, its per-step global losses and learning rates, wall times (this
    process's steps only, not restored on resume), what data it skipped (distinct samples per reason).
    ``fetch_losses``: the per-step mean fetch loss when ``trainer.fetch_loss_weight`` > 0 (NaN on a step
    whose batch had no ``fetch_box``)."""

    output_dir: Path
    step: int
    losses: list[float] = field(default_factory=list)
    eval_losses: dict[int, float] = field(default_factory=dict)
    step_seconds: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    fetch_losses: list[float] = field(default_factory=list)
    skipped_samples: dict[str, list[str]] = field(default_factory=dict)
    checkpoint: Path | None = None

    @property
    def skipped(self) -> dict[str, int]:
        """Distinct skipped samples per reason."""
        return {reason: len(ids) for reason, ids in self.skipped_samples.items()}


def default_sampler(
    dataset: Sequence, global_batch: int, seed: int, per_batch: dict[str, int] | None = None
) -> MixtureSampler:
    """Global batches over ``dataset`` (a :class:`MixtureDataset` or a plain dataset).

    ``per_batch`` gives each source's samples per global batch (they must sum to ``global_batch``);
    a single source may leave it out.
    """
    parts = getattr(dataset, "datasets", None) or {"train": dataset}
    check_datasets(parts)  # an empty source otherwise fails inside the sampler, unnamed
    sizes = {name: len(part) for name, part in parts.items()}
    if not per_batch:
        if len(sizes) > 1:
            raise ValueError(
                f"data: several train sources {list(sizes)} need per_batch counts (summing to the global batch)"
            )
        per_batch = {next(iter(sizes)): global_batch}
    if sum(per_batch.values()) != global_batch:
        raise ValueError(
            f"data: per_batch counts {per_batch} sum to {sum(per_batch.values())}, "
            f"but trainer.global_batch_size is {global_batch}"
        )
    return MixtureSampler(sizes, per_batch=per_batch, seed=seed)


def micro_batches(
    sampler: MixtureSampler, start: tuple[int, int], rank: int, world: int, accumulation: int
) -> Iterator[tuple[int, int, list[int]]]:
    """Yield (epoch, batch_in_epoch, indices) of this process's micro-batches from position ``start``.

    Global batch g of an epoch (``sampler.batch_indices``, a pure function of (seed, epoch, g)) is split
    into ``world × accumulation`` equal micro-batches; micro-batch j of process r is part j·world + r.
    """
    size = sampler.batch_size // (world * accumulation)
    epoch, batch = start
    while True:
        for g in range(batch, sampler.num_batches):
            chunk = sampler.batch_indices(epoch, g)
            for j in range(accumulation):
                part = j * world + rank
                yield epoch, g, chunk[part * size : (part + 1) * size]
        epoch, batch = epoch + 1, 0


class _BatchIndices:
    """A batch sampler over :func:`micro_batches` for a DataLoader, stopping after ``limit`` micro-batches."""

    def __init__(self, generator_args: tuple, limit: int):
        self.generator_args, self.limit = generator_args, limit

    def __iter__(self):
        for n, (_, _, indices) in enumerate(micro_batches(*self.generator_args)):
            if n >= self.limit:
                return
            yield indices

    def __len__(self) -> int:
        return self.limit


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


MODEL_INPUTS = ("input_ids", "attention_mask", "labels", "pixel_values", "vision_features", "num_images")


def _labelled_tokens(batch: dict[str, Any]) -> int:
    return int((batch["labels"][:, 1:] != -100).sum())


def _boxed_images(batch: dict[str, Any]) -> int:
    """Images the fetch loss scores in ``batch``: those of rows with a ``fetch_box``."""
    if "fetch_boxes" not in batch:
        return 0
    return int(batch["num_images"][~batch["fetch_boxes"].isnan().any(-1)].sum())


@dataclass
class _Run:
    """What the step loop carries from step to step (built by :func:`_setup`)."""

    accelerator: Accelerator
    model: Any
    ddp_model: Any
    optimizer: torch.optim.Optimizer
    scheduler: LambdaLR
    params: list[torch.nn.Parameter]
    log: Any
    result: TrainResult
    checkpoints: Path
    mixture: MixtureSampler
    batches: Iterator
    first_batch: int
    position: tuple[int, int]
    bar: Any
    skipped: dict[str, set[str]]


def train(
    cfg: TrainConfig,
    model,
    train_dataset: Sequence,
    collate_fn,
    eval_dataset: Sequence | None = None,
    accelerator: Accelerator | None = None,
    batch_sampler: MixtureSampler | None = None,
) -> TrainResult:
    """Train ``model``'s trainable weights on ``train_dataset`` as ``cfg`` says.

    Three parts: :func:`_setup` (optimiser, schedule, resume, data order), :func:`_step` (one optimiser
    step over a global batch) and :func:`_evaluate_and_save` (eval loss, checkpoints, a requested stop).

    Args:
        cfg: the typed config (``trainer``, ``optim``, ``seed``, ``resume``, ``output_dir`` are read here).
        model: a :class:`~vpgkit.model.VisionLanguageModel`.
        train_dataset, eval_dataset: indexable datasets of tokenised items (see ``vpgkit.data``).
        collate_fn: turns a list of items into a batch dict.
        accelerator: an existing accelerate ``Accelerator`` (default: one built from ``cfg.trainer``).
        batch_sampler: the global batches (default: :func:`default_sampler`).

    Returns:
        A :class:`TrainResult`; the last checkpoint is under ``output_dir/checkpoints``.

    Raises:
        TrainingStopped: on SIGTERM, after finishing the current step and writing a checkpoint
            (``resume=auto`` continues bitwise as if uninterrupted).
    """
    run = _setup(cfg, model, train_dataset, collate_fn, accelerator, batch_sampler)
    stop = SignalStop().__enter__()
    try:
        while run.result.step < cfg.trainer.max_steps:
            _step(cfg, run)
            _evaluate_and_save(cfg, run, eval_dataset, collate_fn, stop)
    finally:
        stop.__exit__(None, None, None)
    run.bar.close()
    _record_skips(run.result, run.skipped)
    if run.result.skipped:
        run.log.info("skipped samples (distinct, per reason): %s", run.result.skipped)
    if cfg.trainer.log_with:
        run.accelerator.end_training()
    return run.result


def _setup(
    cfg: TrainConfig,
    model,
    train_dataset: Sequence,
    collate_fn,
    accelerator: Accelerator | None,
    batch_sampler: MixtureSampler | None,
) -> _Run:
    """Checks, optimiser and schedule, resume from a checkpoint, the data order from its position."""
    t = cfg.trainer
    check_config(cfg)
    out = check_output_dir(cfg.output_dir)  # not found at the first checkpoint, after the compute
    accelerator = accelerator or Accelerator(
        mixed_precision=t.mixed_precision, log_with=t.log_with or None, project_dir=str(out)
    )
    world, rank, accumulation = (
        accelerator.num_processes,
        accelerator.process_index,
        t.gradient_accumulation_steps,
    )
    if t.global_batch_size % (world * accumulation):
        raise ValueError(
            f"trainer.global_batch_size={t.global_batch_size} must be divisible by processes ({world}) × "
            f"gradient_accumulation_steps ({accumulation})"
        )
    set_seed(cfg.seed)
    if t.gradient_checkpointing:
        lm = base_causal_lm(model.llm)
        if hasattr(lm, "activation_checkpointing_enable"):  # transformers ≥ 5
            lm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if t.fetch_loss_weight and "vpgc" not in model.plugin_modules():
        raise ValueError(
            f"trainer.fetch_loss_weight={t.fetch_loss_weight} supervises VPG-C's attention, but the model has "
            f"no vpgc plug-in (it has {sorted(model.plugin_modules())}); set it to 0"
        )
    params = list(model.trainable_parameters().values())
    if not params:
        raise ValueError("the model has no trainable weights: check the recipe's model section")
    optimizer, scheduler = adamw_warmup_cosine(
        params,
        t.max_steps,
        cfg.optim.warmup_steps,
        cfg.optim.min_lr_ratio,
        lr=cfg.optim.lr,
        betas=tuple(cfg.optim.betas),
        eps=cfg.optim.eps,
        weight_decay=cfg.optim.weight_decay,
    )

    log = run_logger(out, enabled=accelerator.is_main_process)
    log.info(
        "training %s: %d steps, global batch %d, %d process(es), %d train samples, output_dir %s",
        cfg.recipe,
        t.max_steps,
        t.global_batch_size,
        world,
        len(train_dataset),
        out,
    )
    checkpoints = out / "checkpoints"
    result, position = _resume(cfg, model, optimizer, scheduler, checkpoints, accelerator, log)

    model.train()
    ddp_model, optimizer = accelerator.prepare(model, optimizer)
    remaining = (t.max_steps - result.step) * accumulation
    mixture = batch_sampler or default_sampler(train_dataset, t.global_batch_size, cfg.seed)
    loader = DataLoader(
        train_dataset,
        batch_sampler=_BatchIndices((mixture, position, rank, world, accumulation), remaining),
        collate_fn=collate_fn,
        num_workers=cfg.data.num_workers,
        worker_init_fn=ignore_stop_signals if cfg.data.num_workers else None,
    )
    if t.log_with and accelerator.is_main_process:
        accelerator.init_trackers("vpgkit", config=_flat(asdict(cfg)))
    bar = tqdm(
        total=t.max_steps, initial=result.step, disable=not accelerator.is_local_main_process, desc="train"
    )
    return _Run(
        accelerator=accelerator,
        model=model,
        ddp_model=ddp_model,
        optimizer=optimizer,
        scheduler=scheduler,
        params=params,
        log=log,
        result=result,
        checkpoints=checkpoints,
        mixture=mixture,
        batches=iter(loader),
        # Each optimiser step consumes one global batch, so the position is derived, not tracked.
        first_batch=position[0] * mixture.num_batches + position[1] - result.step,
        position=position,
        bar=bar,
        # A bad sample is replaced by the next good one each time it is drawn: count samples, not draws.
        skipped={reason: set(ids) for reason, ids in result.skipped_samples.items()},
    )


def _resume(
    cfg: TrainConfig, model, optimizer, scheduler, checkpoints: Path, accelerator: Accelerator, log
) -> tuple[TrainResult, tuple[int, int]]:
    """A fresh result at step 0, or the state of the checkpoint ``cfg.resume`` names (weights, optimiser,
    schedule, RNG, losses, skips) and the data position it was saved at."""
    result = TrainResult(output_dir=checkpoints.parent, step=0)
    position = (0, 0)
    resume_from = _resume_path(cfg.resume, checkpoints)
    if resume_from is not None:
        state = load_checkpoint(resume_from)
        missing = set(model.trainable_parameters()) ^ set(state["trainable"])
        if missing:
            raise ValueError(
                f"resume: checkpoint {resume_from} does not match the model's trainable weights: {sorted(missing)[:10]}"
            )
        with torch.no_grad():
            for name, p in model.trainable_parameters().items():
                p.copy_(state["trainable"][name])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        load_rng(resume_from, accelerator.process_index)
        ts = state["trainer_state"]
        result.step, position = ts["step"], tuple(ts["position"])
        result.losses, result.lrs = list(ts["losses"]), list(ts.get("lrs", []))
        result.fetch_losses = list(ts.get("fetch_losses", []))
        # Checkpoints written before skips were kept by sample carry counts only: keep those counts.
        counted = {r: [f"(counted before resume: {i})" for i in range(n)] for r, n in ts["skipped"].items()}
        result.skipped_samples = {r: list(ids) for r, ids in ts.get("skipped_samples", counted).items()}
        result.eval_losses = {int(k): v for k, v in ts["eval_losses"].items()}
        accelerator.print(f"resumed from {resume_from} at step {result.step}")
        log.info("resumed from %s at step %d", resume_from, result.step)
    return result, position


def _step(cfg: TrainConfig, run: _Run) -> None:
    """One optimiser step on the next global batch: losses normalised by its labelled-token count."""
    t, accelerator, result = cfg.trainer, run.accelerator, run.result
    world, accumulation = accelerator.num_processes, t.gradient_accumulation_steps
    started = time.perf_counter()
    window = [_to_device(next(run.batches), accelerator.device) for _ in range(accumulation)]
    for batch in window:
        for record in batch.get("skipped", []):
            key = record.get("sample_id") or record.get("message")
            run.skipped.setdefault(record["reason"], set()).add(str(key))
    boxed = [_boxed_images(b) if t.fetch_loss_weight > 0 else 0 for b in window]
    counts = torch.tensor(
        [float(sum(_labelled_tokens(b) for b in window)), float(sum(boxed))], device=accelerator.device
    )
    total_tokens, total_boxed = accelerator.reduce(counts, reduction="sum").tolist()
    loss_sum = torch.zeros((), device=accelerator.device)
    fetch_sum = torch.zeros((), device=accelerator.device)
    for j, batch in enumerate(window):
        inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
        fetch = boxed[j] > 0
        if fetch:
            inputs["return_vpgc_attention"] = True
        sync = accelerator.no_sync(run.ddp_model) if j < accumulation - 1 else contextlib.nullcontext()
        with sync, accelerator.autocast():
            out = run.ddp_model(**inputs, loss_only=True, loss_reduction="sum")
            loss = out.loss * world / max(total_tokens, 1.0)
            if fetch:
                boxed_loss, _ = fetch_loss(out.vpgc_attention, batch["fetch_boxes"], batch["num_images"])
                loss = loss + t.fetch_loss_weight * boxed_loss * world / total_boxed
                fetch_sum += boxed_loss.detach()
            accelerator.backward(loss)
        loss_sum += out.loss.detach()
    lr = optimizer_step(
        run.optimizer, run.scheduler, run.params, cfg.optim.max_grad_norm, clip=accelerator.clip_grad_norm_
    )
    result.step += 1
    global_loss = accelerator.reduce(loss_sum[None], reduction="sum").item() / max(total_tokens, 1.0)
    result.losses.append(global_loss)
    if t.fetch_loss_weight > 0:
        fetch_total = accelerator.reduce(fetch_sum[None], reduction="sum").item()
        result.fetch_losses.append(fetch_total / total_boxed if total_boxed else float("nan"))
    result.lrs.append(lr)
    result.step_seconds.append(time.perf_counter() - started)
    run.position = divmod(run.first_batch + result.step, run.mixture.num_batches)
    rate = t.global_batch_size / (time.perf_counter() - started)
    run.bar.update(1)
    fetch_note = f", fetch loss {result.fetch_losses[-1]:.4f}" if result.fetch_losses else ""
    run.bar.set_postfix(loss=f"{global_loss:.4f}", lr=f"{lr:.2e}", samples_s=f"{rate:.1f}")
    if t.log_every and (result.step % t.log_every == 0 or result.step == 1):
        run.log.info(
            "step %d: loss %.4f%s, lr %.3e, %.1f samples/s", result.step, global_loss, fetch_note, lr, rate
        )
    if t.log_with and t.log_every and result.step % t.log_every == 0:
        scalars = {"train/loss": global_loss, "train/lr": lr, "train/samples_per_s": rate}
        if result.fetch_losses:
            scalars["train/fetch_loss"] = result.fetch_losses[-1]
        accelerator.log(scalars, step=result.step)


def _evaluate_and_save(
    cfg: TrainConfig, run: _Run, eval_dataset: Sequence | None, collate_fn, stop: SignalStop
) -> None:
    """Eval loss when due, a checkpoint when scheduled or when any process was asked to stop (then raise)."""
    t, accelerator, result = cfg.trainer, run.accelerator, run.result
    if eval_dataset is not None and t.eval_every and result.step % t.eval_every == 0:
        result.eval_losses[result.step] = evaluate_loss(
            run.model, eval_dataset, collate_fn, t.global_batch_size // accelerator.num_processes, accelerator
        )
        run.log.info("step %d: eval loss %.4f", result.step, result.eval_losses[result.step])
        if t.log_with:
            accelerator.log({"eval/loss": result.eval_losses[result.step]}, step=result.step)
    stopping = _agree(stop.requested is not None, accelerator)
    scheduled = (t.save_every and result.step % t.save_every == 0) or result.step == t.max_steps
    if scheduled or stopping:
        _record_skips(result, run.skipped)
        result.checkpoint = _save(
            accelerator,
            run.model,
            run.optimizer,
            run.scheduler,
            run.checkpoints,
            result,
            run.position,
            t.keep_checkpoints,
        )
        run.log.info("step %d: checkpoint %s", result.step, result.checkpoint)
    if stopping:
        run.bar.close()
        stopped = TrainingStopped(stop.requested or "SIGTERM", result.step, result.checkpoint)
        run.log.warning("%s", stopped)
        raise stopped


@torch.no_grad()
def evaluate_loss(model, dataset: Sequence, collate_fn, batch_size: int, accelerator: Accelerator) -> float:
    """Token-mean loss of ``model`` on ``dataset`` (split over processes, all-reduced)."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(2, device=accelerator.device)
    indices = list(range(accelerator.process_index, len(dataset), accelerator.num_processes))
    for start in range(0, len(indices), max(1, batch_size)):
        batch = _to_device(
            collate_fn([dataset[i] for i in indices[start : start + batch_size]]), accelerator.device
        )
        inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
        totals[0] += model(**inputs, loss_only=True, loss_reduction="sum").loss
        totals[1] += _labelled_tokens(batch)
    model.train(was_training)
    totals = accelerator.reduce(totals, reduction="sum")
    return (totals[0] / totals[1].clamp(min=1)).item()


def _record_skips(result: TrainResult, skipped: dict[str, set[str]]) -> None:
    result.skipped_samples = {reason: sorted(ids) for reason, ids in sorted(skipped.items())}


def _agree(flag: bool, accelerator: Accelerator) -> bool:
    """True on every process when any process has ``flag`` (all stop at the same step)."""
    if accelerator.num_processes == 1:
        return flag
    value = torch.tensor([float(flag)], device=accelerator.device)
    return accelerator.reduce(value, reduction="sum").item() > 0


def _save(
    accelerator, model, optimizer, scheduler, root: Path, result: TrainResult, position, keep: int
) -> Path:
    tmp = root / f".step_{result.step:06d}.tmp"
    if accelerator.is_main_process:
        tmp = begin_checkpoint(root, result.step)
    accelerator.wait_for_everyone()
    save_rng(tmp, accelerator.process_index)
    accelerator.wait_for_everyone()
    final = root / f"step_{result.step:06d}"
    if accelerator.is_main_process:
        state = {
            "step": result.step,
            "position": list(position),
            "losses": result.losses,
            "eval_losses": {str(k): v for k, v in result.eval_losses.items()},
            "skipped": result.skipped,
            "skipped_samples": result.skipped_samples,
            "lrs": result.lrs,
            "fetch_losses": result.fetch_losses,
        }
        final = finish_checkpoint(tmp, model.trainable_parameters(), optimizer, scheduler, state, keep)
    accelerator.wait_for_everyone()
    return final


def _resume_path(resume: str, checkpoints: Path) -> Path | None:
    if resume in ("none", "", None):
        return None
    if resume == "auto":
        return latest_checkpoint(checkpoints)
    path = Path(resume)
    if not path.is_dir():
        raise FileNotFoundError(
            f"resume: {resume} is not a checkpoint directory (or use resume=auto / resume=none)"
        )
    return path


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(_flat(v, key + "."))
        else:
            flat[key] = v if isinstance(v, int | float | str | bool) else str(v)
    return flat
