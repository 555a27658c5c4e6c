"""``lmms-eval --model vpgkit``: a vpgkit training run as an lmms-eval model.

The model is loaded as ``python -m vpgkit.evaluate --run DIR`` loads it (:func:`vpgkit.evaluate.load_run`:
the run's ``.hydra/config.yaml`` rebuilds the backbones, ``DIR/adapter`` is loaded), and answers requests
through the same code: prompts from :meth:`SampleTokenizer.prompt <vpgkit.data.SampleTokenizer.prompt>`
with the run's template, left-padded batches, greedy decoding cut at EOS and the template's next-turn
marker (:func:`vpgkit.evaluation.generate_answers`). So a DEMON task scores the same here as there.

``--model_args`` (``key=value`` pairs, comma-separated):

* ``adapter=DIR`` (or ``run=DIR``): a ``python -m vpgkit.train`` output directory, or its ``adapter/``
  folder; ``base_only=True`` evaluates the run's model without its adapter;
* ``max_length=N``: longest prompt in tokens (default: the LLM's context minus the answer length, as
  ``vpgkit.evaluate``); ``device=cpu|cuda[:k]`` (also ``--device``); the batch size is lmms-eval's
  ``--batch_size``.

**Images and text.** A request's visuals (``doc_to_visual``: PIL images, arrays or image paths) are its
images in order. A context with as many ``<image>`` markers as images is interleaved as written (DEMON's
``{image#k}`` placeholders become these markers); a context with none gets every image in front
(``<image> <image> text``), as lmms-eval's own tasks expect; any other count is an error naming the task and
document. Video and audio inputs are refused with an error.

**generate_until**: greedy only (``do_sample``/``num_beams > 1`` are refused); ``max_new_tokens`` from the
task's ``generation_kwargs`` (default 32); the answer is also cut at each ``until`` string.

**loglikelihood**: the continuation is scored as the assistant's answer after the context's prompt:
``(−log p(answer tokens | prompt, images), is_greedy)`` summed over the answer's tokens (without the EOS or
end-of-chunk that ends a turn in training). A leading space of the continuation (lmms-eval's
``target_delimiter``) is dropped: the template writes its own. lmms-eval 0.7's docstring asks for the
log-probability, but its ``multiple_choice`` scoring picks the option with the *lowest* value (``argmin``)
and its built-in models return a loss; vpgkit returns the negative log-likelihood so that multiple-choice
tasks score correctly. (lmms-eval 0.7.x's evaluator itself turns every such pair into a string before
scoring, so its multiple-choice tasks fail for every model; see docs/evaluate_with_lmms_eval.md.)

Example (shell; see docs/evaluate_with_lmms_eval.md)::

    python -m vpgkit.lmms_tasks outputs/vpgc/data/mini_demon --out outputs/vpgc/lmms_tasks
    lmms-eval --model vpgkit --model_args adapter=outputs/vpgc \\
        --include_path outputs/vpgc/lmms_tasks --tasks mini_demon
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from PIL import Image
from tqdm.auto import tqdm

from ...backbones.image_processor import ImageProcessor
from ...data import IGNORE_INDEX, IMAGE_MARKER, DataError, Sample, SampleTokenizer, Turn, open_image_store
from ..runner import PredictionStore, _pixels, generate_answers
from . import DEFAULT_MAX_NEW_TOKENS

__all__ = ["VpgkitLMM", "request_sample", "resolve_run"]

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def resolve_run(adapter: str | os.PathLike | None, run: str | os.PathLike | None) -> Path:
    """The run directory named by ``adapter=`` or ``run=`` (a run directory or its ``adapter/`` folder).

    >>> resolve_run(None, None)
    Traceback (most recent call last):
    ...
    ValueError: --model_args: give adapter=RUN_DIR (a `python -m vpgkit.train` output directory)
    """
    if adapter is not None and run is not None:
        raise ValueError(f"--model_args: give adapter= or run=, not both (adapter={adapter}, run={run})")
    given = adapter if adapter is not None else run
    key = "adapter" if adapter is not None else "run"
    if given is None or str(given) == "":
        raise ValueError("--model_args: give adapter=RUN_DIR (a `python -m vpgkit.train` output directory)")
    path = Path(str(given))
    if not path.exists():
        raise FileNotFoundError(f"--model_args {key}={path}: no such directory")
    for candidate in (path, path.parent):
        if (candidate / ".hydra" / "config.yaml").is_file() and (candidate == path or path.name == "adapter"):
            return candidate
    raise FileNotFoundError(
        f"--model_args {key}={path}: not a vpgkit run (no .hydra/config.yaml in it, and it is not the "
        "adapter/ folder of a run); pass the output_dir of `python -m vpgkit.train`"
    )


def _visuals(value: Any, where: str) -> list[Any]:
    """A request's visuals, flattened, as images vpgkit can load (PIL image, array or image path)."""
    out: list[Any] = []
    stack = [value]
    while stack:
        item = stack.pop(0)
        if item is None:
            continue
        if isinstance(item, (list, tuple)):
            stack[:0] = list(item)
        elif isinstance(item, (Image.Image, np.ndarray)):
            out.append(item)
        elif isinstance(item, (str, os.PathLike)) and Path(item).suffix.lower() in _IMAGE_SUFFIXES:
            out.append(str(item))
        else:
            shown = f"{type(item).__name__} {str(item)[:80]!r}"
            raise ValueError(
                f"{where}: visual {shown} is not an image (vpgkit reads images, not video or audio)"
            )
    return out


def request_sample(context: Any, visuals: Any, sample_id: str, where: str = "request") -> Sample:
    """The :class:`~vpgkit.data.Sample` (one user turn) of an lmms-eval request's context and visuals.

    >>> request_sample("Compare <image> with <image>.", ["a.png", "b.png"], "0").conversation[0].text
    'Compare <image> with <image>.'
    >>> request_sample("What changed?", ["a.png", "b.png"], "1").conversation[0].text
    '<image> <image> What changed?'
    >>> request_sample("Only <image>?", ["a.png", "b.png"], "2", "task t, doc 2")
    Traceback (most recent call last):
    ...
    ValueError: task t, doc 2: the context has 1 <image> marker(s) but 2 images; give one marker per image, or none (images first)
    """
    if not isinstance(context, str):
        raise ValueError(f"{where}: context of type {type(context).__name__}; vpgkit takes a text context")
    images = _visuals(visuals, where)
    markers = context.count(IMAGE_MARKER)
    if markers == 0 and images:
        context = " ".join([IMAGE_MARKER] * len(images)) + " " + context
    elif markers != len(images):
        raise ValueError(
            f"{where}: the context has {markers} {IMAGE_MARKER} marker(s) but {len(images)} images; give one "
            "marker per image, or none (images first)"
        )
    return Sample(sample_id, images, [Turn("user", context)]).validate()


def _generation_settings(kwargs: dict[str, Any] | None, where: str) -> tuple[int, list[str]]:
    """(max_new_tokens, until strings) of a request's generation kwargs; sampling and beams refused."""
    kwargs = dict(kwargs or {})
    until = kwargs.pop("until", None) or []
    until = [until] if isinstance(until, str) else [str(u) for u in until]
    max_new_tokens = int(kwargs.pop("max_new_tokens", DEFAULT_MAX_NEW_TOKENS))
    if max_new_tokens < 1:
        raise ValueError(f"{where}: max_new_tokens must be ≥ 1, got {max_new_tokens}")
    if kwargs.get("do_sample"):
        raise ValueError(f"{where}: do_sample=True; vpgkit's lmms-eval model decodes greedily only")
    if int(kwargs.get("num_beams", 1) or 1) > 1:
        raise ValueError(
            f"{where}: num_beams={kwargs['num_beams']}; vpgkit's lmms-eval model decodes greedily only"
        )
    return max_new_tokens, until


class VpgkitLMM(lmms):
    """A vpgkit run (base model + adapter) as an lmms-eval ``lmms`` model; see the module docstring.

    Args:
        adapter: the run directory (``python -m vpgkit.train``'s ``output_dir``) or its ``adapter/`` folder.
        run: the same as ``adapter`` (give one of them).
        base_only: evaluate without the adapter (the model before training).
        batch_size: prompts generated (or scored) together; lmms-eval passes ``--batch_size``.
        device: ``cpu`` (default) or a CUDA device.
        max_length: longest prompt in tokens (default: the LLM's context minus the answer length).
        max_batch_size: accepted for lmms-eval's ``--max_batch_size``; unused.

    Example (Python; ``outputs/vpgc`` a run, ``tasks`` written by ``python -m vpgkit.lmms_tasks``)::

        from lmms_eval.evaluator import simple_evaluate
        from lmms_eval.tasks import TaskManager

        results = simple_evaluate(model="vpgkit", model_args="adapter=outputs/vpgc", tasks=["mini_demon"],
                                  task_manager=TaskManager(include_path="tasks"))
        results["results"]["mini_demon_cloze"]["accuracy,none"]     # percent, as vpgkit.evaluate
    """

    is_simple = True

    def __init__(
        self,
        adapter: str | None = None,
        run: str | None = None,
        base_only: bool = False,
        batch_size: int | str = 1,
        device: str | None = None,
        max_length: int | None = None,
        max_batch_size: int | None = None,
        **unknown: Any,
    ) -> None:
        super().__init__()
        if unknown:
            raise TypeError(
                f"--model_args: unknown argument(s) {sorted(unknown)}; vpgkit takes adapter (or run), "
                "base_only, max_length, device"
            )
        try:
            self.batch_size = int(batch_size)
        except (TypeError, ValueError):
            raise ValueError(
                f"--batch_size {batch_size!r}: vpgkit needs a whole number ≥ 1 (no 'auto')"
            ) from None
        if self.batch_size < 1:
            raise ValueError(f"--batch_size must be ≥ 1, got {self.batch_size}")
        if max_length is not None and int(max_length) < 1:
            raise ValueError(f"--model_args max_length must be ≥ 1, got {max_length}")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise RuntimeError("vpgkit's lmms-eval model runs in one process (WORLD_SIZE > 1 given)")
        from ...backbones.language import max_positions
        from ...cli.evaluate import load_run
        from ...threads import apply_thread_policy

        apply_thread_policy()
        self.run = resolve_run(adapter, run)
        self.model, self.tokenizer, self.config, self.adapter = load_run(self.run, bool(base_only))
        device = device or "cpu"
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"--device {device}: CUDA is not available here; use --device cpu")
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.max_length = None if max_length is None else int(max_length)
        self.context_length = max_positions(self.model.llm)
        self._tokenizers: dict[int, SampleTokenizer] = {}

    def sample_tokenizer(self, max_new_tokens: int) -> SampleTokenizer:
        """The run's prompt builder, with ``vpgkit.evaluate``'s prompt limit for answers of this length."""
        if max_new_tokens not in self._tokenizers:
            from ...training.datasets import sample_tokenizer

            limit = self.max_length
            if limit is None:
                limit = (
                    self.context_length - max_new_tokens
                    if self.context_length
                    else self.config.data.max_length
                )
            data = dataclasses.replace(self.config.data, max_length=limit, truncation="error")
            self._tokenizers[max_new_tokens] = sample_tokenizer(data, self.tokenizer, self.model)
        return self._tokenizers[max_new_tokens]

    def _request(self, request: Instance, index: int) -> tuple[str, Sample, Any, dict]:
        """(task, sample, second argument, doc) of a generate_until / loglikelihood request."""
        context, second, doc_to_visual, doc_id, task, split = request.args[:6]
        where = f"task {task!r}, doc {doc_id}"
        doc = self.task_dict[task][split][doc_id]
        visuals = doc_to_visual(doc) if callable(doc_to_visual) else doc_to_visual
        return task, request_sample(context, visuals, f"doc{doc_id}#{index}", where), second, doc

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Greedy answers to ``requests`` (see the module docstring), in order."""
        groups: dict[int, list[int]] = {}
        parsed = []
        for i, request in enumerate(requests):
            task, sample, gen_kwargs, _ = self._request(request, i)
            max_new_tokens, until = _generation_settings(gen_kwargs, f"task {task!r}, doc {request.args[3]}")
            parsed.append((task, sample, until))
            groups.setdefault(max_new_tokens, []).append(i)
        answers: list[str] = [""] * len(requests)
        for max_new_tokens, indices in groups.items():
            store = PredictionStore(None, {})
            generate_answers(
                self.model,
                self.tokenizer,
                self.sample_tokenizer(max_new_tokens),
                [parsed[i][:2] for i in indices],
                store,
                batch_size=self.batch_size,
                max_new_tokens=max_new_tokens,
                progress=self.rank == 0,
            )
            for i in indices:
                task, sample, until = parsed[i]
                answer = store.get(task, sample.id)
                for stop in until:
                    answer = answer.split(stop, 1)[0] if stop else answer
                answers[i] = answer.strip()
                self.cache_hook.add_partial(
                    "generate_until", (requests[i].args[0], requests[i].args[1]), answer
                )
        return answers

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        """Not supported: vpgkit answers single-round requests (``generate_until``)."""
        raise NotImplementedError("vpgkit's lmms-eval model does not implement generate_until_multi_round")

    def _answer_end(self, st: SampleTokenizer) -> list[int]:
        """Token ids that close an answer in training (EOS, or Otter's end-of-chunk), not scored."""
        if st.template.eos_after_answer:
            return [] if st.eos_id is None else [st.eos_id]
        end = getattr(st.template, "end_of_chunk", "")
        return list(self.tokenizer(end, add_special_tokens=False)["input_ids"]) if end else []

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        """``(−log p(continuation | context, images), is_greedy)`` per request (see the module docstring)."""
        st = self.sample_tokenizer(0)
        end = self._answer_end(st)
        rows = []
        for i, request in enumerate(requests):
            task, sample, continuation, doc = self._request(request, i)
            where = f"task {task!r}, doc {request.args[3]}"
            if callable(continuation):
                continuation = continuation(doc)
            if not isinstance(continuation, str):
                raise ValueError(f"{where}: continuation {continuation!r} is not a string")
            answer = continuation.lstrip()
            if not answer:
                raise ValueError(f"{where}: empty continuation")
            answered = dataclasses.replace(
                sample, conversation=[*sample.conversation, Turn("assistant", answer)]
            )
            try:
                full, prompt = st(answered), st.prompt(sample)["input_ids"]
            except DataError as error:
                raise DataError(error.reason, f"{where}: {error}", error.sample_id) from None
            ids, labels = full["input_ids"], full["labels"].clone()
            if not torch.equal(ids[: len(prompt)], prompt):
                raise ValueError(f"{where}: the prompt does not tokenise as a prefix of prompt + answer")
            labelled = (labels != IGNORE_INDEX).nonzero().flatten()
            if end and len(labelled) > len(end) and labels[labelled[-len(end) :]].tolist() == end:
                labels[labelled[-len(end) :]] = IGNORE_INDEX
            rows.append((task, sample, ids, labels))
        results: list[tuple[float, bool]] = []
        processor = ImageProcessor(size=self.model.vision.image_size)
        images = open_image_store(None)
        with (
            torch.no_grad(),
            tqdm(total=len(rows), desc="loglikelihood", disable=self.rank != 0) as bar,
        ):
            for start in range(0, len(rows), self.batch_size):
                batch = rows[start : start + self.batch_size]
                results.extend(self._score(batch, processor, images))
                bar.update(len(batch))
        for request, result in zip(requests, results, strict=True):
            self.cache_hook.add_partial("loglikelihood", request.args[:2], result)
        return results

    def _score(
        self, batch: Sequence[tuple[str, Sample, torch.Tensor, torch.Tensor]], processor: Any, images: Any
    ) -> list[tuple[float, bool]]:
        """Summed negative log-likelihood and greediness of the labelled tokens of left-padded rows."""
        length = max(len(ids) for _, _, ids, _ in batch)
        pad = (
            self.tokenizer.pad_token_id
            if self.tokenizer.pad_token_id is not None
            else self.tokenizer.eos_token_id
        )
        input_ids = torch.full((len(batch), length), pad, dtype=torch.long)
        labels = torch.full((len(batch), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), length), dtype=torch.long)
        for b, (_, _, ids, row_labels) in enumerate(batch):
            input_ids[b, length - len(ids) :] = ids
            labels[b, length - len(ids) :] = row_labels
            attention_mask[b, length - len(ids) :] = 1
        pixel_values, num_images = _pixels(
            [(task, sample) for task, sample, _, _ in batch], processor, images
        )
        out = self.model(
            input_ids.to(self.device),
            attention_mask.to(self.device),
            labels=labels.to(self.device),
            pixel_values=pixel_values.to(self.device),
            num_images=num_images.to(self.device),
        )
        logp = out.logits[:, :-1].float().log_softmax(-1)
        targets = labels[:, 1:].to(self.device)
        mask = targets != IGNORE_INDEX
        token_logp = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        nll = -(token_logp * mask).sum(dim=1)
        greedy = ((logp.argmax(-1) == targets) | ~mask).all(dim=1)
        return [(float(n), bool(g)) for n, g in zip(nll.cpu(), greedy.cpu(), strict=True)]
