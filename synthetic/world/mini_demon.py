"""mini-DEMON: a held-out benchmark from the tiny world in the real DEMON-Core layout, with controls.

One folder per task, each with ``core.json`` and ``images/``::

    OUT/detail_question/core.json
    OUT/detail_question/images/000003_1.png
    OUT/cloze__both_blank/core.json       a control of ``cloze`` (same samples, every image blank)
    OUT/cloze__image2_replaced/core.json  a control of ``cloze`` (image 2 from another sample)
    OUT/index.json                        {task: {"path", "category", "metric", "num_sample", "control"?}}

``core.json`` is ``{"metadata": {"dataset", "split": "core", "num_sample", "task_instruction": [...],
"question_type", "category", "metric", "control"?}, "data": [{"sample_id", "task_instruction_id",
"task_instance": {"context": "... {image#1} ...", "images_path": [...], "choice_list"?: [...]},
"response", "subsets"}]}``, which :func:`vpgkit.data.readers.read_demon` reads. ``subsets`` tags a sample
(``unchanged``, ``distractor``, the edit kind, ...); a control file's ``metadata.control`` is ``{"of":
task, "kind": "both_blank" | "image2_replaced"}``. The evaluator reports subsets and controls beside
each task's score, with the best no-vision baseline computed from the file (``vpgkit.evaluation``).

Held out twice over: the scenes come from seeds no training stage uses, and every instruction and
question uses :data:`~synthetic.world.language.EVAL_WORDING`, which shares no sentence with the training
wordings (tested).

Example:
    >>> import tempfile
    >>> from vpgkit.data.readers import read_demon
    >>> paths = make_mini_demon(tempfile.mkdtemp(), per_task=2, progress=False)
    >>> sorted(p for p in paths if "__" not in p)
    ['caption', 'cloze', 'detail_question', 'difference', 'which_image']
    >>> len(read_demon(paths["cloze__both_blank"]))
    2
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from ..storage import atomic_write_bytes, atomic_write_json
from .language import EVAL_WORDING, Wording
from .scene import Scene, make_scene, render
from .tasks import TASK_BUILDERS, TASK_INFO, TaskInstance

__all__ = ["CONTROLS", "MINI_DEMON_STREAM", "make_mini_demon", "mini_demon_instance"]

MINI_DEMON_STREAM = 900  # scene seeds seed * 1000 + 900 + task index: used by no training stage
# Control kind → the tasks it applies to.
CONTROLS: dict[str, tuple[str, ...]] = {
    "both_blank": ("difference", "which_image", "detail_question", "cloze"),
    "image2_replaced": ("difference", "which_image", "cloze"),
}


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _instructions(task: str, wording: Wording) -> tuple[str, ...]:
    field = {"caption": "caption", "difference": "difference", "which_image": "which",
             "detail_question": "question", "cloze": "cloze"}[task]  # fmt: skip
    return getattr(wording, field)


def mini_demon_instance(task: str, i: int, seed: int = 0, wording: Wording = EVAL_WORDING) -> TaskInstance:
    """Sample ``i`` of mini-DEMON's ``task`` under ``seed`` (what :func:`make_mini_demon` writes); another
    ``wording`` asks the same scene and draws in other words (e.g. ``TRAIN_WORDING``)."""
    t = list(TASK_BUILDERS).index(task)
    rng = np.random.default_rng([seed, MINI_DEMON_STREAM, t, i])
    return TASK_BUILDERS[task](make_scene(seed * 1000 + MINI_DEMON_STREAM + t, i), rng, wording)


def _write_task(
    folder: Path,
    task: str,
    instances: list[TaskInstance],
    scenes: list[list[Scene]],
    control: dict | None,
    wording: Wording,
) -> dict:
    instructions = _instructions(task, wording)
    data = []
    for i, (instance, shown) in enumerate(zip(instances, scenes, strict=True)):
        images = []
        for k, scene in enumerate(shown, 1):
            name = f"{i:06d}_{k}.png"
            atomic_write_bytes(folder / "images" / name, _png(render(scene)[0]))
            images.append(name)
        task_instance = {"context": instance.context, "images_path": images}
        if instance.choices is not None:
            task_instance["choice_list"] = instance.choices
        data.append({"sample_id": f"{i:06d}", "task_instruction_id": instructions.index(instance.instruction),
                     "task_instance": task_instance, "response": instance.response,
                     "subsets": instance.subsets})  # fmt: skip
    info = TASK_INFO[task]
    metadata = {
        "dataset": f"mini_demon_{folder.name}",
        "split": "core",
        "num_sample": len(data),
        # read_demon concatenates instruction and context: end each instruction with a space
        "task_instruction": [f"{text} " for text in instructions],
        "question_type": "multi-choice" if info["metric"] == "accuracy" else "open-ended",
        "category": info["category"],
        "metric": info["metric"],
    }
    if control is not None:
        metadata["control"] = control
    atomic_write_json(folder / "core.json", {"metadata": metadata, "data": data})
    return {"path": f"{folder.name}/core.json", **info, "num_sample": len(data),
            **({"control": control} if control else {})}  # fmt: skip


def make_mini_demon(
    out_dir: str | Path,
    seed: int = 0,
    per_task: int = 40,
    tasks: tuple[str, ...] = tuple(TASK_BUILDERS),
    controls: bool = True,
    progress: bool = True,
    wording: Wording = EVAL_WORDING,
) -> dict[str, str]:
    """Write mini-DEMON under ``out_dir``; returns ``{task: path of its core.json}`` (controls included).

    Args:
        out_dir: output folder (created).
        seed: the benchmark's seed (scenes use seeds ``seed * 1000 + 900 + k``, disjoint from training).
        per_task: samples per task.
        tasks: which tasks (default: all five of :data:`~synthetic.world.tasks.TASK_BUILDERS`).
        controls: also write the :data:`CONTROLS` variants of the tasks they apply to.
        progress: show a tqdm bar.
        wording: the instructions' and questions' words. mini-DEMON is :data:`EVAL_WORDING`; another
            (e.g. ``TRAIN_WORDING``) asks the same scenes the same questions in other words, a diagnostic of
            how much a score owes to the wording (``benchmarks/wording_shift.py``).
    """
    from tqdm.auto import tqdm

    unknown = [t for t in tasks if t not in TASK_BUILDERS]
    if unknown:
        raise ValueError(
            f"make_mini_demon: unknown task(s) {unknown}; expected some of {sorted(TASK_BUILDERS)}"
        )
    out = Path(out_dir)
    index, paths = {}, {}
    bar = tqdm(total=len(tasks), desc="mini-DEMON", unit="task", disable=not progress)
    for task in tasks:
        instances = [mini_demon_instance(task, i, seed, wording) for i in range(per_task)]
        variants = {task: ([x.scenes for x in instances], None)}
        if controls and task in CONTROLS["both_blank"]:
            blank = [[s.with_objects(()) for s in x.scenes] for x in instances]
            variants[f"{task}__both_blank"] = (blank, {"of": task, "kind": "both_blank"})
        if controls and task in CONTROLS["image2_replaced"] and per_task > 1:
            # image 2 of the next sample: same kind of scene, other objects
            swapped = [
                [x.scenes[0], instances[(i + 1) % per_task].scenes[1]] for i, x in enumerate(instances)
            ]
            variants[f"{task}__image2_replaced"] = (swapped, {"of": task, "kind": "image2_replaced"})
        for name, (scenes, control) in variants.items():
            index[name] = _write_task(out / name, task, instances, scenes, control, wording)
            paths[name] = str(out / name / "core.json")
        bar.update(1)
    bar.close()
    atomic_write_json(out / "index.json", {"seed": seed, "per_task": per_task, "tasks": index})
    return paths
