"""One DEMON-format task file as an lmms-eval task, read from local files (no network, no dataset hub).

:class:`DemonLmmsTask` is a *python task* of lmms-eval 0.7: a YAML file with ``task``, ``class`` and
vpgkit's key ``demon`` (the task's ``core.json`` or its folder), as
:func:`~vpgkit.evaluation.lmms.configs.write_task_configs` writes it::

    task: mini_demon_cloze
    task_alias: cloze
    class: !function vpgkit.evaluation.lmms.task.DemonLmmsTask
    demon: /abs/path/mini_demon/cloze/core.json

The documents are the samples of :func:`vpgkit.evaluation.load_task` (so the same instruction, context
and ``Choice list:[...]`` text as ``python -m vpgkit.evaluate``): ``text`` is the user turn with one
``<image>`` marker where each ``{image#k}`` stood, ``images`` the image paths in marker order (given to the
model as PIL images, decoded as vpgkit decodes them), ``reference`` the answer. Answers are generated
(``generate_until``, greedy, ``max_new_tokens`` 32 unless ``--gen_kwargs max_new_tokens=N``; no ``until``
string: the model ends an answer itself) and scored with the task's metric exactly as
:func:`vpgkit.evaluation.score_sample` scores them: ``rouge_l`` (ROUGE-L F) or ``accuracy`` (free-text
answers mapped to the choice list). The task's score is ``100 × mean`` over its samples, summed in sample
order as ``vpgkit.evaluate`` sums them, so the two give the same number.

Example (lmms-eval builds tasks itself from the YAML; by hand)::

    task = DemonLmmsTask(config={"task": "mini_demon_cloze", "demon": "outputs/vpgc/data/mini_demon/cloze"})
    task.dataset["test"][0]["text"]   # "Fill in ... <image> ... <image> ...Choice list:[...]. Your answer is:"
"""

from __future__ import annotations

import os
from typing import Any

import datasets
from lmms_eval.api.task import ConfigurableTask

from ...data import load_image, open_image_store
from ..demon import DemonTask, load_task, score_sample
from . import DEFAULT_MAX_NEW_TOKENS

__all__ = ["DemonLmmsTask", "percent_mean"]

_VPGKIT_KEYS = ("demon", "class")


def percent_mean(items: list[float]) -> float:
    """A task's score: ``100 × sum / count`` in the given order, as :func:`vpgkit.evaluation.evaluate_demon`.

    >>> percent_mean([1.0, 0.0, 0.5])
    50.0
    """
    return 100.0 * sum(items) / len(items) if items else 0.0


class DemonLmmsTask(ConfigurableTask):
    """A DEMON task file (``config["demon"]``) as an lmms-eval ``generate_until`` task; see the module.

    Args:
        config: the YAML's mapping: ``task`` (lmms-eval's name), ``demon`` (``core.json`` or its folder),
            optional ``task_alias``, ``max_new_tokens`` (default 32), ``category`` / ``metric`` overrides
            (as :func:`~vpgkit.evaluation.load_task`).
        model_name: lmms-eval's model name (unused).
    """

    def __init__(self, config: dict[str, Any] | None = None, model_name: str | None = None, **_: Any) -> None:
        config = dict(config or {})
        name = config.get("task")
        if not name or not isinstance(name, str):
            raise ValueError(f"DEMON lmms-eval task: the YAML needs a task name (task: ...), got {config!r}")
        path = config.get("demon")
        if not path:
            raise ValueError(
                f"lmms-eval task {name!r}: the YAML needs `demon:` (a DEMON task's core.json or folder)"
            )
        if not os.path.exists(path):
            raise FileNotFoundError(f"lmms-eval task {name!r}: demon: {path} does not exist")
        self.demon: DemonTask = load_task(path, category=config.get("category"), metric=config.get("metric"))
        self._samples = {s.id: s for s in self.demon.samples}
        max_new_tokens = int(config.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS))
        task_config = {
            "task": name,
            "task_alias": config.get("task_alias", self.demon.name),
            "dataset_path": str(self.demon.path),
            "test_split": "test",
            "output_type": "generate_until",
            "generation_kwargs": {"until": [], "max_new_tokens": max_new_tokens, "do_sample": False},
            "doc_to_text": "text",
            "doc_to_target": "reference",
            "doc_to_visual": self.doc_images,
            "process_results": self.score,
            "metric_list": [
                {"metric": self.demon.metric, "aggregation": percent_mean, "higher_is_better": True}
            ],
            "metadata": {
                "version": 1,
                "demon_task": self.demon.name,
                "category": self.demon.category,
                "control": self.demon.control,
                "path": str(self.demon.path),
            },
        }
        unknown = set(config) - {*task_config, *_VPGKIT_KEYS, "max_new_tokens", "category", "metric"}
        if unknown:
            raise ValueError(f"lmms-eval task {name!r}: unknown YAML key(s) {sorted(unknown)}")
        super().__init__(config=task_config, model_name=model_name)

    def download(self, dataset_kwargs: dict[str, Any] | None = None) -> None:
        """The documents from the task file (lmms-eval's hook for fetching a dataset; nothing is fetched)."""
        docs = [
            {
                "sample_id": sample.id,
                "text": sample.conversation[0].text,
                "images": [str(p) for p in sample.images],
                "reference": self.demon.reference(sample),
            }
            for sample in self.demon.samples
        ]
        if not docs:
            raise ValueError(f"DEMON task {self.demon.name!r} ({self.demon.path}): no samples")
        self.dataset = datasets.DatasetDict({"test": datasets.Dataset.from_list(docs)})
        self.dataset_no_image = self.dataset

    def doc_images(self, doc: dict[str, Any]) -> list[Any]:
        """The document's images (PIL, RGB) in marker order, decoded as ``vpgkit.evaluate`` decodes them."""
        store = open_image_store(None)
        return [load_image(path, store)[0] for path in doc["images"]]

    def score(self, doc: dict[str, Any], results: list[str], **_: Any) -> dict[str, float]:
        """``{metric: score in [0, 1]}`` of the answer (:func:`vpgkit.evaluation.score_sample`)."""
        prediction = results[0] if results else ""
        return {self.demon.metric: score_sample(self.demon, self._samples[doc["sample_id"]], prediction)}
