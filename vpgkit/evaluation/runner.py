"""Generate answers for evaluation samples with a :class:`~vpgkit.model.VisionLanguageModel`.

Prompts are built with :meth:`SampleTokenizer.prompt <vpgkit.data.SampleTokenizer.prompt>` (the
template's assistant header ends the prompt; the reference answer is dropped), **left-padded** into
batches (so every row's last prompt token is the last position, where generation and VPG-C's guidance
start), and decoded greedily: ``model.generate(..., do_sample=False, max_new_tokens=...)``. An answer ends
at the first EOS or end-of-chunk token and at the template's next-turn marker (``###`` for
``vicuna_v0``, ``[INST]`` for ``llama2_chat``, ``User:`` for ``otter``).

Predictions are kept in a :class:`PredictionStore`, a JSONL file rewritten atomically (temp file +
``os.replace``) after every batch: an interrupted evaluation resumes where it stopped, and a finished one
generates nothing when run again. Each record carries the generation settings; records made with other
settings are ignored (and regenerated).

Example:
    >>> import tempfile, os
    >>> store = PredictionStore(os.path.join(tempfile.mkdtemp(), "p.jsonl"), {"max_new_tokens": 8})
    >>> store.add([("task", "s1", "a cat")]); store.flush()
    >>> PredictionStore(store.path, {"max_new_tokens": 8}).get("task", "s1")
    'a cat'
    >>> PredictionStore(store.path, {"max_new_tokens": 16}).get("task", "s1") is None
    True
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..data import DataError, Sample, SampleTokenizer, load_image, open_image_store
from ..fileio import mkstemp

__all__ = ["STOP_STRINGS", "PredictionStore", "generate_answers"]

# Text that starts the next turn in each template: an answer is cut there.
STOP_STRINGS: dict[str, tuple[str, ...]] = {
    "vicuna_v0": ("###",),
    "llama2_chat": ("[INST]",),
    "otter": ("<|endofchunk|>", "User:"),
}
_STOP_TOKENS = ("<|endofchunk|>",)


class PredictionStore:
    """Predictions keyed by (task, sample id), persisted as JSONL ``{"task", "id", "prediction",
    "settings"}`` lines.

    Args:
        path: the JSONL file (None: keep in memory only).
        settings: JSON-serialisable generation settings; existing records with other settings are ignored.
    """

    def __init__(self, path: str | os.PathLike | None, settings: dict[str, Any]):
        self.path = Path(path) if path is not None else None
        self.settings = json.loads(json.dumps(settings))  # normalise (tuples → lists) for comparison
        self.records: dict[tuple[str, str], str] = {}
        self.ignored = 0
        if self.path is not None and self.path.exists():
            with open(self.path, encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                        key, prediction = (str(record["task"]), str(record["id"])), str(record["prediction"])
                    except (json.JSONDecodeError, KeyError, TypeError) as e:
                        raise DataError(
                            "invalid_json",
                            f"{self.path}:{n}: not a prediction record {{task, id, prediction, settings}} ({e})",
                        ) from None
                    if record.get("settings") == self.settings:
                        self.records[key] = prediction
                    else:
                        self.ignored += 1

    def get(self, task: str, sample_id: str) -> str | None:
        """The stored prediction, or None."""
        return self.records.get((task, sample_id))

    def add(self, items: Sequence[tuple[str, str, str]]) -> None:
        """Add ``(task, sample id, prediction)`` triples (in memory; :meth:`flush` writes them)."""
        for task, sample_id, prediction in items:
            self.records[(task, sample_id)] = prediction

    def flush(self) -> None:
        """Rewrite the file atomically with every record (a crash leaves the previous file intact)."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                for (task, sample_id), prediction in self.records.items():
                    record = {
                        "task": task,
                        "id": sample_id,
                        "prediction": prediction,
                        "settings": self.settings,
                    }
                    f.write(json.dumps(record, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


def _prompts(items: Sequence[tuple[str, Sample]], sample_tokenizer: SampleTokenizer) -> list[dict[str, Any]]:
    """Tokenise every prompt up front, so a too-long sample fails before any generation."""
    prompts, too_long = [], []
    for task, sample in items:
        try:
            prompts.append(sample_tokenizer.prompt(sample))
        except DataError as e:
            if e.reason != "too_long":
                raise DataError(e.reason, f"task {task!r}: {e}", e.sample_id) from None
            too_long.append(f"{task}/{sample.id}")
    if too_long:
        raise DataError(
            "too_long",
            f"{len(too_long)} prompt(s) longer than max_length {sample_tokenizer.max_length} "
            f"(first: {too_long[:3]}); raise the evaluation's max_length (--max-length)",
        )
    return prompts


def answer_text(ids: torch.Tensor, tokenizer: Any, stop_ids: set[int], stop_strings: tuple[str, ...]) -> str:
    """The answer in generated ``ids`` (new_tokens,): cut at the first stop id, decoded, cut at the first
    stop string, stripped — as the evaluator scores it."""
    ids = ids.tolist()
    for k, token in enumerate(ids):
        if token in stop_ids:
            ids = ids[:k]
            break
    text = tokenizer.decode(ids, skip_special_tokens=True)
    for stop in stop_strings:
        text = text.split(stop, 1)[0]
    return text.strip()


def generate_answers(
    model: torch.nn.Module,
    tokenizer: Any,
    sample_tokenizer: SampleTokenizer,
    items: Sequence[tuple[str, Sample]],
    store: PredictionStore,
    *,
    batch_size: int = 8,
    max_new_tokens: int = 32,
    images: Any = None,
    progress: bool = True,
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """Generate the answers of ``items`` — ``(task name, sample)`` pairs — missing from ``store``.

    Args:
        model: a VisionLanguageModel with a vision encoder (put in eval mode here, restored after).
        tokenizer: its tokenizer (``pad_token_id``, ``eos_token_id``, ``decode``).
        sample_tokenizer: builds prompts (template, image slots, max_length).
        items: what to answer; the last assistant turn of each sample is ignored (the reference).
        store: where answers go; flushed after every batch.
        batch_size, max_new_tokens: generation settings.
        images: image store for relative image references (default: paths as given).
        progress: show a tqdm bar.
        on_batch: called with the number of answers generated so far, after every batch.

    Returns:
        The number of answers generated (0 when the store had them all).
    """
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError(f"batch_size and max_new_tokens must be ≥ 1, got {batch_size}, {max_new_tokens}")
    todo = [(task, s) for task, s in items if store.get(task, s.id) is None]
    if not todo:
        return 0
    if getattr(model, "vision", None) is None:
        raise ValueError("generate_answers: the model has no vision encoder to read the images with")
    from ..backbones.image_processor import ImageProcessor

    processor = ImageProcessor(size=model.vision.image_size)
    image_store = open_image_store(images)
    prompts = _prompts(todo, sample_tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    vocab = tokenizer.get_vocab()
    stop_ids = {tokenizer.eos_token_id} | {vocab[t] for t in _STOP_TOKENS if t in vocab}
    stop_strings = STOP_STRINGS.get(sample_tokenizer.template.name, ())
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    done = 0
    try:
        with tqdm(total=len(todo), desc="generating", unit="sample", disable=not progress) as bar:
            for start in range(0, len(todo), batch_size):
                batch, batch_prompts = todo[start : start + batch_size], prompts[start : start + batch_size]
                length = max(len(p["input_ids"]) for p in batch_prompts)
                input_ids = torch.full((len(batch), length), pad, dtype=torch.long)
                attention_mask = torch.zeros((len(batch), length), dtype=torch.long)
                for b, p in enumerate(batch_prompts):
                    n = len(p["input_ids"])
                    input_ids[b, length - n :] = p["input_ids"]
                    attention_mask[b, length - n :] = 1
                pixel_values, num_images = _pixels(batch, processor, image_store)
                out = model.generate(
                    input_ids.to(device),
                    attention_mask.to(device),
                    pixel_values=pixel_values.to(device),
                    num_images=num_images.to(device),
                    do_sample=False,
                    num_beams=1,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=pad,
                    eos_token_id=tokenizer.eos_token_id,
                )
                store.add(
                    [
                        (task, sample.id, answer_text(row, tokenizer, stop_ids, stop_strings))
                        for (task, sample), row in zip(batch, out.cpu(), strict=True)
                    ]
                )
                store.flush()
                done += len(batch)
                bar.update(len(batch))
                if on_batch is not None:
                    on_batch(done)
    finally:
        model.train(was_training)
    return done


def _pixels(
    batch: Sequence[tuple[str, Sample]], processor: Any, store: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T_img, 3, S, S) zero-padded pixels and (B,) image counts of a batch."""
    rows = []
    for task, sample in batch:
        refs = [ref for e in sample.in_context for ref in e.images] + list(sample.images)
        pixels = []
        for t, ref in enumerate(refs):
            try:
                image, _ = load_image(ref, store)
            except DataError as e:
                raise DataError(
                    e.reason, f"task {task!r}, sample {sample.id!r}, image {t}: {e}", sample.id
                ) from None
            pixels.append(processor.preprocess(image))
        rows.append(pixels)
    size = processor.size
    t_max = max(1, max(len(r) for r in rows))
    out = torch.zeros(len(rows), t_max, 3, size, size)
    for b, pixels in enumerate(rows):
        if pixels:
            out[b, : len(pixels)] = torch.stack(pixels)
    return out, torch.tensor([len(r) for r in rows], dtype=torch.long)
