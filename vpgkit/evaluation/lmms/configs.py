"""lmms-eval task files for DEMON-format folders: one YAML per task and a group YAML that names them all.

lmms-eval 0.7 finds tasks only as YAML files in its own package or under ``--include_path`` (there is no
entry point for tasks), so vpgkit writes them: ``python -m vpgkit.lmms_tasks PATH ... --out DIR`` (or
:func:`write_task_configs`). Each task file points at a DEMON task's ``core.json`` by absolute path and is
read by :class:`~vpgkit.evaluation.lmms.task.DemonLmmsTask`; the data stay where they are.

Names: the group is ``--group`` (default: the first path's folder name, e.g. ``mini_demon``), each task
``<group>_<task>`` (lower case; other characters than letters, digits and ``_`` become ``_``) with the
DEMON task's own name as its alias. The group holds one sub-group per category, ``<group>_<category>``
(e.g. ``mini_demon_vri``), whose score lmms-eval aggregates as DEMON does: the unweighted mean of its
tasks' scores (a category whose tasks use two metrics gets no aggregate). Control variants
(``metadata.control``) are tasks of the group outside every category, as ``vpgkit.evaluate`` counts them.

Example:
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> root = Path(tempfile.mkdtemp())
    >>> (root / "demon" / "Spot-the-Diff").mkdir(parents=True)
    >>> _ = (root / "demon" / "Spot-the-Diff" / "core.json").write_text(json.dumps({
    ...     "metadata": {"task_instruction": ["What changed? "]}, "data": []}))
    >>> written = write_task_configs([root / "demon"], root / "tasks", group="mini")
    >>> [p.name for p in written]
    ['mini.yaml', 'mini_vri.yaml', 'mini_spot_the_diff.yaml']
    >>> print((root / "tasks" / "mini.yaml").read_text().strip())
    group: mini
    task:
    - mini_vri
    >>> print((root / "tasks" / "mini_vri.yaml").read_text().strip())
    group: mini_vri
    group_alias: "VRI"
    task:
    - mini_spot_the_diff
    aggregate_metric_list:
    - metric: rouge_l
      aggregation: mean
      weight_by_size: false
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from ..demon import find_task_files, load_task

__all__ = ["TASK_CLASS", "task_name", "write_task_configs"]

TASK_CLASS = "vpgkit.evaluation.lmms.task.DemonLmmsTask"


def task_name(group: str, name: str) -> str:
    """lmms-eval's name for DEMON task ``name`` in ``group``.

    >>> task_name("mini_demon", "Spot-the-Diff")
    'mini_demon_spot_the_diff'
    """
    return f"{group}_{re.sub(r'[^a-z0-9_]+', '_', name.lower()).strip('_')}"


def _yaml_string(value: str) -> str:
    """A YAML scalar for any string (JSON strings are YAML)."""
    return json.dumps(value, ensure_ascii=False)


def write_task_configs(
    paths: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    group: str | None = None,
    max_new_tokens: int | None = None,
) -> list[Path]:
    """Write ``<out>/<group>.yaml`` and one ``<out>/<group>_<task>.yaml`` per DEMON task under ``paths``.

    Args:
        paths: task folders, task JSON files or folders of task folders (as ``python -m vpgkit.evaluate
            --demon``).
        out: folder for the YAML files (created); pass it to lmms-eval as ``--include_path``.
        group: the group's name (``--tasks GROUP`` runs every task); default: the first path's folder name.
        max_new_tokens: answer length limit written into every task (default: the task's, 32).

    Returns:
        The files written: the group's, the categories', then the tasks'.
    """
    files = find_task_files(list(paths))  # a bad path fails here, naming it
    tasks = [load_task(path) for path in files]
    names = [t.name for t in tasks]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(
            f"DEMON tasks: the name(s) {repeated} occur more than once; task names must be unique"
        )
    if group is None:
        first = Path(paths[0]).resolve()
        group = first.parent.name if first.is_file() else first.name
    group = re.sub(r"[^A-Za-z0-9_]+", "_", group).strip("_")
    if not group:
        raise ValueError("--group: empty after keeping letters, digits and '_'; give a name")
    lmms_names = [task_name(group, t.name) for t in tasks]
    clashes = sorted({n for n in lmms_names if lmms_names.count(n) > 1})
    if clashes:
        raise ValueError(
            f"DEMON tasks {names}: the lmms-eval names {clashes} clash (names differing only in case or punctuation)"
        )
    categories: dict[str, list[int]] = {}
    for i, task in enumerate(tasks):
        if task.control is None:
            categories.setdefault(task.category, []).append(i)
    group_names = {c: task_name(group, c) for c in categories}
    clashes = sorted(set(group_names.values()) & {group, *lmms_names})
    if clashes:
        raise ValueError(f"DEMON tasks {names}: the lmms-eval names {clashes} are both a category and a task")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    members = [*group_names.values(), *(n for t, n in zip(tasks, lmms_names, strict=True) if t.control)]
    written = [out / f"{group}.yaml"]
    written[0].write_text(f"group: {group}\ntask:\n" + "".join(f"- {n}\n" for n in members), encoding="utf-8")
    for category, indices in categories.items():
        lines = [f"group: {group_names[category]}", f"group_alias: {_yaml_string(category)}", "task:"]
        lines += [f"- {lmms_names[i]}" for i in indices]
        metrics = {tasks[i].metric for i in indices}
        if len(metrics) == 1:
            lines += ["aggregate_metric_list:", f"- metric: {metrics.pop()}", "  aggregation: mean"]
            lines += ["  weight_by_size: false"]
        path = out / f"{group_names[category]}.yaml"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        written.append(path)
    for task, name in zip(tasks, lmms_names, strict=True):
        lines = [
            f"task: {name}",
            f"task_alias: {_yaml_string(task.name)}",
            f"class: !function {TASK_CLASS}",
            f"demon: {_yaml_string(str(task.path.resolve()))}",
        ]
        if max_new_tokens is not None:
            lines.append(f"max_new_tokens: {int(max_new_tokens)}")
        path = out / f"{name}.yaml"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        written.append(path)
    return written
