"""DEMON tasks: where they are, which category and metric each belongs to, and how scores aggregate.

A task is one DEMON-format JSON file (``core.json`` of the DEMON-Core release; the layout is described in
:mod:`vpgkit.data.readers.demon`, whose :func:`~vpgkit.data.read_demon` builds the samples). Its
**category** and **metric** are resolved in this order:

1. explicit arguments of :func:`load_task`;
2. the file's ``metadata.category`` and ``metadata.metric`` — vpgkit's extension for datasets that are not
   part of DEMON (e.g. mini-DEMON): ``category`` is a DEMON abbreviation (``MD`` … ``MIR``), a DEMON
   category name, or any new name; ``metric`` is ``rouge_l`` or ``accuracy`` (required for a new
   category unless ``metadata.question_type`` is given);
3. the DEMON task table :data:`DEMON_TASKS` (the 29 DEMON-Core tasks), looked up by the task's name;
   case and punctuation are ignored (``nuScenes`` = ``nuscenes``);
4. for the metric only: the category's metric (:data:`CATEGORIES`), else ``metadata.question_type``
   (``open-ended`` → ROUGE-L, ``multi-choice`` → accuracy), as DEMON's own files state it.

A task's **name** is ``metadata.task`` if given, else the folder holding the JSON (its parent when
that folder is called ``core``), unless only ``metadata.dataset`` names a DEMON task.

Scores are percentages: a task's score is the mean of its samples' scores × 100; a category's score is
the unweighted mean over its tasks, as DEMON reports it.

**Controls** (vpgkit's extension, reported by :mod:`vpgkit.evaluation.controls`): a task file whose
``metadata.control`` is ``{"of": "<base task name>", "kind": "<kind>"}`` (e.g. ``"both_blank"``: every
image blank) is a control variant of another task; it is scored but never counted in a category
(:func:`aggregate`). A data item may carry ``"subsets": ["unchanged", ...]``, tags whose samples'
mean score is reported per task.

Example:
    >>> aggregate([TaskScore("Spot-the-Diff", "VRI", "rouge_l", 30.0, 10),
    ...            TaskScore("IEdit", "VRI", "rouge_l", 20.0, 500)])["VRI"]["score"]
    25.0
    >>> resolve_category("Visual Relation Inference"), DEMON_TASKS["Spot-the-Diff"]
    ('VRI', 'VRI')
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data import DataError, Sample, read_demon
from .metrics import choice_accuracy, rouge_l

__all__ = [
    "CATEGORIES",
    "DEMON_TASKS",
    "METRICS",
    "DemonTask",
    "TaskScore",
    "aggregate",
    "find_task_files",
    "load_task",
    "resolve_category",
    "score_sample",
]

METRICS = ("rouge_l", "accuracy")

# Abbreviation → (name, metric), in the order of DEMON's results table.
CATEGORIES: dict[str, tuple[str, str]] = {
    "MD": ("Multimodal Dialogue", "rouge_l"),
    "VST": ("Visual Storytelling", "rouge_l"),
    "VRI": ("Visual Relation Inference", "rouge_l"),
    "MC": ("Multimodal Cloze", "accuracy"),
    "KGQA": ("Knowledge-Grounded QA", "accuracy"),
    "TRQA": ("Text-Rich Images QA", "accuracy"),
    "MIR": ("Multi-Image Reasoning", "accuracy"),
}

# The 29 DEMON-Core tasks (their folder names in the release) → category.
DEMON_TASKS: dict[str, str] = {
    **dict.fromkeys(["MMCoQA", "ALFRED"], "MD"),
    **dict.fromkeys(["AESOP", "DiDeMoSV", "FlintstonesSV", "PororoSV", "VIST"], "VST"),
    **dict.fromkeys(["IEdit", "Spot-the-Diff", "Birds-to-Words", "CLEVR-Change"], "VRI"),
    **dict.fromkeys(["COMICS_Dialogue", "COMICS_Panel", "RecipeQA_VisualCloze", "RecipeQA_TextCloze"], "MC"),
    **dict.fromkeys(["WebQA", "TQA", "MultiModalQA"], "KGQA"),
    **dict.fromkeys(["SlideVQA", "OCR-VQA", "DocVQA"], "TRQA"),
    **dict.fromkeys(
        [
            "Fashion200K",
            "NLVR2",
            "nuScenes",
            "VizWiz",
            "MIT-States_StateCoherence",
            "MIT-States_PropertyCoherence",
            "VISION",
            "RecipeQA_ImageCoherence",
        ],
        "MIR",
    ),
}

_METRIC_ALIASES = {"rouge_l": "rouge_l", "rougel": "rouge_l", "accuracy": "accuracy", "acc": "accuracy"}
_QUESTION_TYPES = {"open-ended": "rouge_l", "multi-choice": "accuracy"}
TASK_FILE = "core.json"


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


_TASK_KEYS = {_key(name): category for name, category in DEMON_TASKS.items()}
_CATEGORY_KEYS = {**{_key(a): a for a in CATEGORIES}, **{_key(n): a for a, (n, _) in CATEGORIES.items()}}


def resolve_category(name: str) -> str:
    """A DEMON category abbreviation for a name or abbreviation (``"Multi-Modal Cloze"`` → ``"MC"``);
    any other name is a custom category and is returned as given."""
    return _CATEGORY_KEYS.get(_key(name), str(name))


def _metric(name: Any, where: str) -> str:
    metric = _METRIC_ALIASES.get(_key(name).replace("_", ""))
    if metric is None:
        raise ValueError(f"{where}: metric {name!r} is not one of {list(METRICS)}")
    return metric


@dataclass
class DemonTask:
    """One DEMON task ready to evaluate.

    Attributes:
        name: task name (e.g. ``Spot-the-Diff``).
        category: category abbreviation (``VRI``) or a custom category name.
        metric: ``rouge_l`` or ``accuracy``.
        path: the task's JSON file.
        samples: the samples (:func:`~vpgkit.data.read_demon`; the last turn is the reference answer).
        choices: sample id → its ``choice_list`` (multiple-choice tasks only).
        control: ``{"of": base task name, "kind": ...}`` when the file is a control variant of another
            task (``metadata.control``), else None.
        subsets: sample id → its ``subsets`` tags (only samples that have some).
    """

    name: str
    category: str
    metric: str
    path: Path
    samples: list[Sample]
    choices: dict[str, list[str]] = field(default_factory=dict)
    control: dict[str, str] | None = None
    subsets: dict[str, list[str]] = field(default_factory=dict)

    def reference(self, sample: Sample) -> str:
        """The reference answer of ``sample`` (its last, assistant, turn)."""
        return sample.conversation[-1].text


@dataclass(frozen=True)
class TaskScore:
    """A task's result: ``score`` in percent over ``count`` samples; ``control`` is the kind of a control
    variant (:attr:`DemonTask.control`), None for an ordinary task."""

    name: str
    category: str
    metric: str
    score: float
    count: int
    control: str | None = None


def find_task_files(paths: list[str | os.PathLike]) -> list[Path]:
    """The task JSON files under ``paths``, in order: a JSON file is itself; a folder with
    ``core.json`` (or ``core/core.json``) is one task; any other folder is searched recursively for
    ``core.json`` files (e.g. the whole DEMON-Core release, sorted by path)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            found.append(path)
        elif (path / TASK_FILE).is_file():
            found.append(path / TASK_FILE)
        elif (path / "core" / TASK_FILE).is_file():
            found.append(path / "core" / TASK_FILE)
        elif path.is_dir():
            inside = sorted(path.rglob(TASK_FILE))
            if not inside:
                raise FileNotFoundError(
                    f"DEMON path {path}: no {TASK_FILE} in it or below it (expected a task folder with "
                    f"{TASK_FILE} and images/, a task JSON file, or a folder of task folders)"
                )
            found.extend(inside)
        else:
            raise FileNotFoundError(f"DEMON path {path} does not exist")
    duplicates = {p for p in found if found.count(p) > 1}
    if duplicates:
        raise ValueError(f"DEMON paths: {sorted(map(str, duplicates))} given more than once")
    return found


def _task_name(path: Path, metadata: dict[str, Any]) -> str:
    if "task" in metadata:
        return str(metadata["task"])
    folder = (path.parent.parent if path.parent.name == "core" else path.parent).resolve()
    dataset = str(metadata.get("dataset", ""))
    if _key(folder.name) not in _TASK_KEYS and _key(dataset) in _TASK_KEYS:
        return dataset
    return folder.name or path.stem


def load_task(
    path: str | os.PathLike,
    category: str | None = None,
    metric: str | None = None,
    limit: int | None = None,
    image_root: str | os.PathLike | None = None,
) -> DemonTask:
    """Read one task file (see the module docstring for how category and metric are found).

    Args:
        path: the task JSON (``core.json``) or its folder.
        category, metric: override what the file and the DEMON table say.
        limit: keep only the first ``limit`` samples.
        image_root: folder of ``images_path`` (default: ``images/`` next to the JSON).
    """
    path = Path(path)
    if path.is_dir():
        found = find_task_files([path])
        if len(found) != 1:
            raise ValueError(f"{path}: holds {len(found)} tasks; load_task reads one (use find_task_files)")
        path = found[0]
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError("invalid_json", f"{path}:{e.lineno}:{e.colno}: invalid JSON ({e.msg})") from None
    metadata = raw.get("metadata") if isinstance(raw, dict) else None
    if not isinstance(metadata, dict):
        raise DataError("invalid_value", f"{path}: expected a JSON object with a 'metadata' object")
    name = _task_name(path, metadata)
    where = f"{path} (task {name!r})"
    control = _control(metadata.get("control"), name, where)
    if category is None:
        if "category" in metadata:
            category = str(metadata["category"])
        else:
            category = _TASK_KEYS.get(_key(name)) or _TASK_KEYS.get(_key(metadata.get("dataset", "")))
        if category is None:
            raise ValueError(
                f"{where}: unknown task; give metadata.category (a DEMON category such as 'VRI' or a "
                f"new name) and metadata.metric ({' or '.join(METRICS)}), or name the task folder after a "
                f"DEMON-Core task ({', '.join(DEMON_TASKS)})"
            )
    category = resolve_category(category)
    if metric is None:
        metric = metadata.get("metric")
    if metric is None and category in CATEGORIES:
        metric = CATEGORIES[category][1]
    if metric is None:
        metric = _QUESTION_TYPES.get(str(metadata.get("question_type", "")))
    if metric is None:
        raise ValueError(
            f"{where}: custom category {category!r} needs metadata.metric ({' or '.join(METRICS)}) or "
            "metadata.question_type ('open-ended' or 'multi-choice')"
        )
    metric = _metric(metric, where)
    samples = read_demon(path, image_root)
    if limit is not None:
        samples = samples[:limit]
    choices: dict[str, list[str]] = {}
    subsets: dict[str, list[str]] = {}
    entries = {str(e.get("sample_id")): e for e in raw.get("data", []) if isinstance(e, dict)}
    for sample in samples:
        entry = entries[str(sample.meta["sample_id"])]
        given = sample.meta.get("choice_list")
        if given is None:
            given = entry["task_instance"].get("choice_list")
        if given is not None:
            choices[sample.id] = [str(c) for c in given]
        tags = entry.get("subsets")
        if tags is not None:
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                raise DataError(
                    "invalid_value",
                    f"{where}: sample_id {sample.meta['sample_id']!r}: subsets should be a list of strings, "
                    f"got {tags!r}",
                    sample.id,
                )
            if tags:
                subsets[sample.id] = list(dict.fromkeys(tags))  # a tag given twice counts once
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        raise DataError("invalid_value", f"{where}: sample_id values are not unique")
    return DemonTask(name, category, metric, path, samples, choices, control, subsets)


def _control(value: Any, name: str, where: str) -> dict[str, str] | None:
    """``metadata.control`` checked: None, or ``{"of", "kind"}`` naming another task."""
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or not all(isinstance(value.get(k), str) and value[k] for k in ("of", "kind"))
        or value["of"] == name
    ):
        raise DataError(
            "invalid_value",
            f"{where}: metadata.control should be {{'of': <another task's name>, 'kind': <kind>}}, "
            f"got {value!r}",
        )
    return {"of": value["of"], "kind": value["kind"]}


def score_sample(task: DemonTask, sample: Sample, prediction: str) -> float:
    """The sample's score in [0, 1] under the task's metric."""
    reference = task.reference(sample)
    if task.metric == "rouge_l":
        return rouge_l(prediction, reference)
    return choice_accuracy(prediction, reference, task.choices.get(sample.id))


def aggregate(scores: list[TaskScore]) -> dict[str, dict[str, Any]]:
    """Category abbreviation/name → ``{"name", "metric", "score", "tasks"}``: the unweighted mean of its
    tasks' scores (percent). DEMON categories come first in their table order, custom ones after.
    Control variants (``TaskScore.control`` set) are left out: they measure the model on altered inputs,
    not the category.

    >>> aggregate([TaskScore("cloze", "MC", "accuracy", 60.0, 4),
    ...            TaskScore("cloze__both_blank", "MC", "accuracy", 20.0, 4, control="both_blank")])
    {'MC': {'name': 'Multimodal Cloze', 'metric': 'accuracy', 'score': 60.0, 'tasks': ['cloze']}}
    """
    by_category: dict[str, list[TaskScore]] = {}
    for s in scores:
        if s.control is None:
            by_category.setdefault(s.category, []).append(s)
    order = [c for c in CATEGORIES if c in by_category] + [c for c in by_category if c not in CATEGORIES]
    out = {}
    for category in order:
        tasks = by_category[category]
        metrics = sorted({t.metric for t in tasks})
        out[category] = {
            "name": CATEGORIES[category][0] if category in CATEGORIES else category,
            "metric": metrics[0] if len(metrics) == 1 else "mixed",
            "score": sum(t.score for t in tasks) / len(tasks),
            "tasks": [t.name for t in tasks],
        }
    return out
