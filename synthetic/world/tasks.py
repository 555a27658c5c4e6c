"""Task instances over world scenes, in DEMON's shape: instruction, context with ``{image#k}``, choices, response.

One generator per task; each takes the scene it starts from, a seeded generator and a
:class:`~synthetic.world.language.Wording`, so the same code makes the language model's training text
(:data:`TRAIN_WORDING`) and the held-out mini-DEMON (:data:`EVAL_WORDING`).

=====================  ======  ====================================================  =========
task                   images  asks                                                  metric
=====================  ======  ====================================================  =========
``caption``            1       a brief caption (salient objects only)                rouge_l
``difference``         2       what changed (a small object recoloured/removed/added) rouge_l
``which_image``        3       which image shows a given small object               accuracy
``detail_question``    1       colour or position of a small object                 accuracy
``cloze``              2       the colour word missing from the second sentence     accuracy
=====================  ======  ====================================================  =========

Example:
    >>> import numpy as np
    >>> from synthetic.world.scene import make_scene
    >>> from synthetic.world.language import EVAL_WORDING
    >>> t = TASK_BUILDERS["which_image"](make_scene(0, 2), np.random.default_rng(0), EVAL_WORDING)
    >>> len(t.scenes), t.context.count("{image#"), t.response in t.choices
    (3, 3, True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..discriminative.captions import DifferenceCaptioner, located
from .edits import edit_scene
from .language import (
    ORDINALS,
    Wording,
    choice_suffix,
    detail_question,
    full_description,
    noun_phrase,
    salient_caption,
)
from .scene import COLOURS, Scene

__all__ = ["TASK_BUILDERS", "TASK_INFO", "TaskInstance", "render_text"]


@dataclass
class TaskInstance:
    """One task instance: ``context`` refers to ``scenes[k-1]`` as ``{image#k}``."""

    task: str
    instruction: str
    context: str
    scenes: list[Scene]
    response: str
    choices: list[str] | None = None
    meta: dict[str, Any] | None = None


def _pick(options: tuple[str, ...], rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]


def caption_task(scene: Scene, rng: np.random.Generator, wording: Wording) -> TaskInstance:
    return TaskInstance(
        "caption", _pick(wording.caption, rng), "{image#1}", [scene], salient_caption(scene, rng)
    )


def detail_description_task(scene: Scene, rng: np.random.Generator, wording: Wording) -> TaskInstance:
    return TaskInstance(
        "detail_description", _pick(wording.detail, rng), "{image#1}", [scene], full_description(scene, rng)
    )


def detail_question_task(scene: Scene, rng: np.random.Generator, wording: Wording) -> TaskInstance:
    q = detail_question(scene, rng, wording)
    return TaskInstance(
        "detail_question", _pick(wording.question, rng), "{image#1} " + q.text, [scene], q.answer, q.choices,
        {"kind": q.kind},
    )  # fmt: skip


_CAPTIONER = DifferenceCaptioner()


def difference_task(scene: Scene, rng: np.random.Generator, wording: Wording) -> TaskInstance:
    edited, meta = edit_scene(scene, rng, kinds=("modify", "delete", "add"), small_only=True)
    caption = _CAPTIONER.caption(meta, rng)
    return TaskInstance(
        "difference", _pick(wording.difference, rng), "{image#1} {image#2}", [scene, edited], caption,
        meta={"edit": meta},
    )  # fmt: skip


def which_image_task(scene: Scene, rng: np.random.Generator, wording: Wording) -> TaskInstance:
    """The original and two variants whose target small object has other colours, in random order."""
    details = list(scene.details)
    target = details[int(rng.integers(len(details)))]
    k = scene.objects.index(target)
    # The question names size, colour, shape and position, so it stays unambiguous in every variant.
    colours = [c for c in COLOURS if c != target.colour]
    others = [colours[i] for i in rng.permutation(len(colours))[:2]]
    variants = [scene]
    for c in others:
        objects = list(scene.objects)
        objects[k] = replace(target, colour=c)
        variants.append(scene.with_objects(objects))
    order = rng.permutation(3)
    scenes = [variants[i] for i in order]
    answer = ORDINALS[int(np.nonzero(order == 0)[0][0])]
    phrase = "a " + noun_phrase(target)
    question = _pick(wording.which_q, rng).format(object=phrase)
    return TaskInstance(
        "which_image", _pick(wording.which, rng), "{image#1} {image#2} {image#3} " + question, scenes, answer,
        list(ORDINALS),
    )  # fmt: skip


def cloze_task(scene: Scene, rng: np.random.Generator, wording: Wording) -> TaskInstance:
    """Two images; the same small object is described in each; its colour in the second is the blank."""
    edited, meta = edit_scene(scene, rng, kinds=("modify",), small_only=True)
    target = next(o for o in scene.objects if list(o.box) == meta["box"])
    line = _pick(wording.cloze_line, rng)
    fields = {"object": f"{target.size} {target.shape}", "where": located(target.position)}
    context = (
        "{image#1} " + line.format(colour=meta["colour"], **fields)
        + " {image#2} " + line.format(colour="___", **fields)
    )  # fmt: skip
    answer = meta["new_colour"]
    pool = [c for c in COLOURS if c not in (answer, meta["colour"])]
    choices = [answer, meta["colour"], *(pool[i] for i in rng.permutation(len(pool))[:2])]
    choices = [choices[i] for i in rng.permutation(len(choices))]
    return TaskInstance("cloze", _pick(wording.cloze, rng), context, [scene, edited], answer, choices)


TASK_BUILDERS: dict[str, Callable[[Scene, np.random.Generator, Wording], TaskInstance]] = {
    "caption": caption_task,
    "difference": difference_task,
    "which_image": which_image_task,
    "detail_question": detail_question_task,
    "cloze": cloze_task,
}
# mini-DEMON metadata per task: DEMON-like category and metric.
TASK_INFO: dict[str, dict[str, str]] = {
    "caption": {"category": "captioning", "metric": "rouge_l"},
    "difference": {"category": "visual_relation_inference", "metric": "rouge_l"},
    "which_image": {"category": "multi_image_reasoning", "metric": "accuracy"},
    "detail_question": {"category": "detail_question_answering", "metric": "accuracy"},
    "cloze": {"category": "multi_modal_cloze", "metric": "accuracy"},
}


def render_text(instance: TaskInstance, image_text: Callable[[Scene], str]) -> str:
    """The user turn as ``read_demon`` writes it, with each ``{image#k}`` replaced by ``image_text(scene)``.

    Used to make the language model's text-only training documents, where an image is written as
    ``<Img> its full description </Img>``.
    """
    text = instance.context
    for k, scene in enumerate(instance.scenes, 1):
        placeholder = f"{{image#{k}}}"
        if placeholder in text:  # later turns of a conversation do not repeat the image
            text = text.replace(placeholder, image_text(scene))
    text = instance.instruction + text
    if instance.choices is not None:
        text += choice_suffix(instance.choices)
    return text
