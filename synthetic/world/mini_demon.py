"""mini-DEMON: a held-out benchmark from the tiny world in the real DEMON-Core layout.

One folder per task, each with ``core.json`` and ``images/``::

    OUT/detail_question/core.json
    OUT/detail_question/images/000003_1.png
    OUT/index.json                      {task: {"path", "category", "metric", "num_sample"}}

``core.json`` is ``{"metadata": {"dataset", "split": "core", "num_sample", "task_instruction": [...],
"question_type", "category", "metric"}, "data": [{"sample_id", "task_instruction_id", "task_instance":
{"context": "... {image#1} ...", "images_path": [...], "choice_list"?: [...]}, "response"}]}``, which
:func:`vpgkit.data.readers.read_demon` reads (instruction + context, ``{image#k}`` → ``<image>``, the
choice list appended). Tasks and metrics: :data:`synthetic.world.tasks.TASK_INFO`.

Held out twice over: the scenes come from seeds no training stage uses, and every instruction and
question uses :data:`~synthetic.world.language.EVAL_WORDING`, which shares no sentence with the training
wordings (tested).

Example:
    >>> import tempfile
    >>> from vpgkit.data.readers import read_demon
    >>> paths = make_mini_demon(tempfile.mkdtemp(), per_task=2, progress=False)
    >>> sorted(paths)
    ['caption', 'cloze', 'detail_question', 'difference', 'which_image']
    >>> len(read_demon(paths["cloze"]))
    2
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from ..storage import atomic_write_bytes, atomic_write_json
from .language import EVAL_WORDING, Wording
from .scene import make_scene, render
from .tasks import TASK_BUILDERS, TASK_INFO

__all__ = ["MINI_DEMON_STREAM", "make_mini_demon"]

MINI_DEMON_STREAM = 900  # scene seeds seed * 1000 + 900 + task index: used by no training stage


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _instructions(task: str, wording: Wording) -> tuple[str, ...]:
    field = {"caption": "caption", "difference": "difference", "which_image": "which",
             "detail_question": "question", "cloze": "cloze"}[task]  # fmt: skip
    return getattr(wording, field)


def make_mini_demon(
    out_dir: str | Path,
    seed: int = 0,
    per_task: int = 40,
    tasks: tuple[str, ...] = tuple(TASK_BUILDERS),
    progress: bool = True,
) -> dict[str, str]:
    """Write mini-DEMON under ``out_dir``; returns ``{task: path of its core.json}``.

    Args:
        out_dir: output folder (created).
        seed: the benchmark's seed (scenes use seeds ``seed * 1000 + 900 + k``, disjoint from training).
        per_task: samples per task.
        tasks: which tasks (default: all five of :data:`~synthetic.world.tasks.TASK_BUILDERS`).
        progress: show a tqdm bar.
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    index, paths = {}, {}
    bar = tqdm(total=per_task * len(tasks), desc="mini-DEMON", unit="sample", disable=not progress)
    for t, task in enumerate(tasks):
        if task not in TASK_BUILDERS:
            raise ValueError(
                f"make_mini_demon: unknown task {task!r}; expected some of {sorted(TASK_BUILDERS)}"
            )
        folder = out / task
        instructions = _instructions(task, EVAL_WORDING)
        data = []
        for i in range(per_task):
            rng = np.random.default_rng([seed, MINI_DEMON_STREAM, t, i])
            instance = TASK_BUILDERS[task](
                make_scene(seed * 1000 + MINI_DEMON_STREAM + t, i), rng, EVAL_WORDING
            )
            instruction_id = instructions.index(instance.instruction)
            images = []
            for k, scene in enumerate(instance.scenes, 1):
                name = f"{i:06d}_{k}.png"
                atomic_write_bytes(folder / "images" / name, _png(render(scene)[0]))
                images.append(name)
            task_instance = {"context": instance.context, "images_path": images}
            if instance.choices is not None:
                task_instance["choice_list"] = instance.choices
            data.append({"sample_id": f"{i:06d}", "task_instruction_id": instruction_id,
                         "task_instance": task_instance, "response": instance.response})  # fmt: skip
            bar.update(1)
        info = TASK_INFO[task]
        metadata = {
            "dataset": f"mini_demon_{task}",
            "split": "core",
            "num_sample": len(data),
            # read_demon concatenates instruction and context: end each instruction with a space
            "task_instruction": [f"{text} " for text in instructions],
            "question_type": "multi-choice" if info["metric"] == "accuracy" else "open-ended",
            "category": info["category"],
            "metric": info["metric"],
        }
        atomic_write_json(folder / "core.json", {"metadata": metadata, "data": data})
        paths[task] = str(folder / "core.json")
        index[task] = {"path": f"{task}/core.json", **info, "num_sample": len(data)}
    bar.close()
    atomic_write_json(out / "index.json", {"seed": seed, "per_task": per_task, "tasks": index})
    return paths
