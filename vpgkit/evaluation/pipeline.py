"""The DEMON evaluation of a model: tasks → generated answers → per-sample, per-task and per-category
scores, and per task the controls that could refute a visual gain (text-only baselines, control variants,
subsets; :mod:`vpgkit.evaluation.controls`). :func:`evaluate_demon` is what ``python -m vpgkit.evaluate``
and the training job call.

Example (a tiny random model, so the scores mean nothing; see docs/evaluation.md)::

    results = evaluate_demon(model, tokenizer, sample_tokenizer, ["data/mini_demon"], max_new_tokens=16)
    print(format_table(results, per_task=True))
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import torch

from ..data import SampleTokenizer
from .controls import no_vision_baselines
from .demon import DemonTask, TaskScore, aggregate, find_task_files, load_task, score_sample
from .metrics import map_to_choice
from .runner import PredictionStore, generate_answers

__all__ = ["evaluate_demon", "format_table", "load_tasks"]

_METRIC_NAMES = {"rouge_l": "ROUGE-L", "accuracy": "accuracy", "mixed": "mixed"}


def load_tasks(tasks: Sequence[DemonTask | str | os.PathLike], limit: int | None = None) -> list[DemonTask]:
    """DemonTasks from tasks and/or paths (see :func:`~vpgkit.evaluation.demon.find_task_files`);
    ``limit`` keeps the first samples of each task read from a path."""
    out: list[DemonTask] = []
    for task in tasks:
        if isinstance(task, DemonTask):
            out.append(task)
        else:
            out.extend(load_task(path, limit=limit) for path in find_task_files([task]))
    names = [t.name for t in out]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        paths = [str(t.path) for t in out if t.name in repeated]
        raise ValueError(
            f"DEMON tasks: the name(s) {repeated} occur more than once ({paths}); task names must be "
            "unique (set metadata.task to tell them apart)"
        )
    return out


def evaluate_demon(
    model: torch.nn.Module,
    tokenizer: Any,
    sample_tokenizer: SampleTokenizer,
    tasks: Sequence[DemonTask | str | os.PathLike],
    *,
    batch_size: int = 8,
    max_new_tokens: int = 32,
    limit: int | None = None,
    predictions_path: str | os.PathLike | None = None,
    settings: dict[str, Any] | None = None,
    images: Any = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Answer every sample of ``tasks`` greedily and score the answers.

    Args:
        model: a VisionLanguageModel (with its vision encoder).
        tokenizer: the model's tokenizer.
        sample_tokenizer: prompt builder matching the model (template, image slots, max_length).
        tasks: :class:`DemonTask` objects and/or paths (task folders, ``core.json`` files, or folders of
            task folders).
        batch_size, max_new_tokens: generation settings.
        limit: first samples per task read from a path (None: all).
        predictions_path: JSONL file of predictions; existing predictions made with the same settings are
            reused (resume), new ones are added after every batch. None: keep them in memory.
        settings: extra JSON values that identify the model (e.g. run directory, adapter); stored with
            each prediction, so predictions of another model are not reused.
        images: image store for relative image references.
        progress: show a progress bar.

    Returns:
        ``{"categories": {category: {name, metric, score, tasks}}, "tasks": {name: {category, metric,
        score, count, path, control?}}, "predictions": [{task, id, prediction, reference, score, choice?}],
        "controls": {task: {score, metric, no_vision, gain_over_no_vision, variants, subsets}},
        "settings": {...}, "generated": int, "reused": int, "seconds": float}``; scores in percent.

        ``controls`` has an entry for every task that is not itself a control variant: ``no_vision`` is
        :func:`~vpgkit.evaluation.controls.no_vision_baselines`, ``gain_over_no_vision`` the score minus
        its best rule, ``variants`` the score of each control variant of the task (``{kind: score}``,
        from the files whose ``metadata.control.of`` names it), ``subsets`` the mean over the samples of
        each ``subsets`` tag (``{tag: {score, count}}``). Control variants are left out of
        ``categories``; a variant whose base task was not evaluated gets an entry with ``score``,
        ``no_vision`` and ``gain_over_no_vision`` None.
    """
    loaded = load_tasks(tasks, limit)
    _check_controls(loaded)  # before generating: a bad declaration should not cost a model run
    store_settings = {
        "max_new_tokens": max_new_tokens,
        "template": sample_tokenizer.template.name,
        "max_length": sample_tokenizer.max_length,
        **(settings or {}),
    }
    store = PredictionStore(predictions_path, store_settings)
    items = [(task.name, sample) for task in loaded for sample in task.samples]
    reused = sum(store.get(name, sample.id) is not None for name, sample in items)
    start = time.perf_counter()
    generated = generate_answers(
        model,
        tokenizer,
        sample_tokenizer,
        items,
        store,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        images=images,
        progress=progress,
    )
    seconds = time.perf_counter() - start
    records, task_scores, task_rows, sample_scores = [], [], {}, {}
    for task in loaded:
        scores = []
        for sample in task.samples:
            prediction = store.get(task.name, sample.id)
            score = score_sample(task, sample, prediction)
            scores.append(score)
            record = {
                "task": task.name,
                "id": sample.id,
                "prediction": prediction,
                "reference": task.reference(sample),
                "score": score,
            }
            if task.metric == "accuracy" and sample.id in task.choices:
                match = map_to_choice(prediction, task.choices[sample.id])
                record["choice"] = None if match.index is None else task.choices[sample.id][match.index]
                record["choice_rule"] = match.rule
            records.append(record)
        mean = 100.0 * sum(scores) / len(scores) if scores else 0.0
        kind = task.control["kind"] if task.control else None
        task_scores.append(TaskScore(task.name, task.category, task.metric, mean, len(scores), kind))
        task_rows[task.name] = {
            "category": task.category,
            "metric": task.metric,
            "score": mean,
            "count": len(scores),
            "path": str(task.path),
        }
        if task.control:
            task_rows[task.name]["control"] = dict(task.control)
        sample_scores[task.name] = scores
    return {
        "categories": aggregate(task_scores),
        "tasks": task_rows,
        "predictions": records,
        "controls": _controls(loaded, task_rows, sample_scores),
        "settings": {**store_settings, "batch_size": batch_size, "limit": limit},
        "generated": generated,
        "reused": reused,
        "seconds": seconds,
    }


def _check_controls(tasks: Sequence[DemonTask]) -> None:
    """Control declarations that cannot be reported: a control of a control, a base task with two
    variants of one kind, or a variant scored with another metric than its base."""
    by_name = {t.name: t for t in tasks}
    seen: dict[tuple[str, str], str] = {}
    for task in tasks:
        if not task.control:
            continue
        base, kind = task.control["of"], task.control["kind"]
        where = f"DEMON task {task.name!r} ({task.path}): metadata.control"
        if base in by_name and by_name[base].control:
            raise ValueError(f"{where} names {base!r}, which is itself a control variant")
        if base in by_name and by_name[base].metric != task.metric:
            raise ValueError(
                f"{where}: metric {task.metric!r} differs from its base task's ({by_name[base].metric!r})"
            )
        if (base, kind) in seen:
            raise ValueError(f"{where}: {seen[(base, kind)]!r} is already the {kind!r} variant of {base!r}")
        seen[(base, kind)] = task.name


def _controls(
    tasks: Sequence[DemonTask], rows: dict[str, dict[str, Any]], sample_scores: dict[str, list[float]]
) -> dict[str, dict[str, Any]]:
    """The ``controls`` section of :func:`evaluate_demon`'s results (see there)."""
    out: dict[str, dict[str, Any]] = {}
    for task in tasks:
        if task.control:
            continue
        baselines = no_vision_baselines(task)
        best = baselines["best"]["score"]
        score = rows[task.name]["score"]
        subsets: dict[str, list[float]] = {}
        for sample, value in zip(task.samples, sample_scores[task.name], strict=True):
            for tag in task.subsets.get(sample.id, []):
                subsets.setdefault(tag, []).append(value)
        out[task.name] = {
            "score": score,
            "metric": task.metric,
            "no_vision": baselines,
            "gain_over_no_vision": None if best is None else score - best,
            "variants": {},
            "subsets": {
                tag: {"score": 100.0 * sum(values) / len(values), "count": len(values)}
                for tag, values in subsets.items()
            },
        }
    for task in tasks:
        if task.control:
            entry = out.setdefault(
                task.control["of"],
                {
                    "score": None,
                    "metric": task.metric,
                    "no_vision": None,
                    "gain_over_no_vision": None,
                    "variants": {},
                    "subsets": {},
                },
            )
            entry["variants"][task.control["kind"]] = rows[task.name]["score"]
    return out


def format_table(results: dict[str, Any], per_task: bool = False) -> str:
    """A plain-text table of the category scores (and each task's under its category with ``per_task``),
    then, when ``results`` has controls, one row per task: its score, the best text-only rule and the
    gain over it, the score of each control variant (``v:kind``) and of each subset (``s:tag``, with
    its sample count). A rule marked ``*`` was chosen with the references (an upper bound).

    >>> print(format_table({"categories": {"VRI": {"name": "Visual Relation Inference", "metric": "rouge_l",
    ...     "score": 25.0, "tasks": ["IEdit"]}}, "tasks": {"IEdit": {"category": "VRI", "metric": "rouge_l",
    ...     "score": 25.0, "count": 3}}}, per_task=True))
    category                          metric     score  tasks/samples
    VRI  Visual Relation Inference    ROUGE-L    25.00  1
      IEdit                           ROUGE-L    25.00  3
    >>> print(format_table({"categories": {}, "tasks": {}, "controls": {"cloze": {"score": 62.5,
    ...     "metric": "accuracy", "no_vision": {"best": {"rule": "frequent_answer", "score": 50.0},
    ...     "oracle": ["frequent_answer"]}, "gain_over_no_vision": 12.5, "variants": {"both_blank": 37.5},
    ...     "subsets": {"unchanged": {"score": 75.0, "count": 4}}}}}))
    category                          metric     score  tasks/samples
    <BLANKLINE>
    controls  score  best no-vision rule       gain  v:both_blank  s:unchanged
    cloze     62.50  50.00 frequent_answer*  +12.50         37.50    75.00 (4)
    (* oracle-chosen rule: an upper bound for its kind; v: control variant; s: subset (samples))
    """
    lines = [f"{'category':<34}{'metric':<8}{'score':>8}  tasks/samples"]
    for abbr, row in results["categories"].items():
        label = f"{abbr}  {row['name']}" if row["name"] != abbr else abbr
        metric = _METRIC_NAMES.get(row["metric"], row["metric"])
        lines.append(f"{label:<34}{metric:<8}{row['score']:>8.2f}  {len(row['tasks'])}")
        if per_task:
            for name in row["tasks"]:
                task = results["tasks"][name]
                metric = _METRIC_NAMES.get(task["metric"], task["metric"])
                lines.append(f"  {name:<32}{metric:<8}{task['score']:>8.2f}  {task['count']}")
    if results.get("controls"):
        lines += ["", *_controls_table(results["controls"])]
    return "\n".join(lines)


def _controls_table(controls: dict[str, dict[str, Any]]) -> list[str]:
    """The rows of :func:`format_table`'s controls table, columns sized to their contents."""

    def number(value: float | None, sign: str = "") -> str:
        return "-" if value is None else f"{value:{sign}.2f}"

    kinds = list(dict.fromkeys(k for c in controls.values() for k in c["variants"]))
    tags = list(dict.fromkeys(t for c in controls.values() for t in c["subsets"]))
    header = ["controls", "score", "best no-vision rule", "gain", *(f"v:{k}" for k in kinds)]
    header += [f"s:{t}" for t in tags]
    rows = []
    for name, c in controls.items():
        best = (c.get("no_vision") or {}).get("best") or {}
        rule = "-"
        if best.get("rule") is not None:
            star = "*" if best["rule"] in c["no_vision"].get("oracle", []) else ""
            rule = f"{best['score']:.2f} {best['rule']}{star}"
        row = [name, number(c["score"]), rule, number(c["gain_over_no_vision"], "+")]
        row += [number(c["variants"].get(k)) for k in kinds]
        for t in tags:
            subset = c["subsets"].get(t)
            row.append("-" if subset is None else f"{subset['score']:.2f} ({subset['count']})")
        rows.append(row)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    left = {0, 2}  # names and rules read left to right, numbers line up on the right

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    legend = "(* oracle-chosen rule: an upper bound for its kind"
    legend += "; v: control variant" if kinds else ""
    legend += "; s: subset (samples)" if tags else ""
    return [line(header), *map(line, rows), legend + ")"]
