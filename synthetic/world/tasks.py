"""Task instances over world scenes, in DEMON's shape: instruction, context with ``{image#k}``, choices, response.

One generator per task; each takes the scene it starts from, a seeded generator and a
:class:`~synthetic.world.language.Wording`, so the same code makes the language model's training text
(:data:`TRAIN_WORDING`), the default job's synthetic data and the held-out mini-DEMON
(:data:`EVAL_WORDING`). Every question names what it asks about (an object or a region), so the
instruction decides which of the 5–7 small objects matters: the information VPG-C's guidance carries.

=====================  ======  =========================================================  =========
task                   images  asks                                                       metric
=====================  ======  =========================================================  =========
``caption``            1       a brief caption (salient objects only)                     rouge_l
``difference``         2       what changed in a named region (two edits, one there; 20%  rouge_l
                               of the time the region is unchanged)
``which_image``        2       which image shows a named small object in a named colour  accuracy
``detail_question``    1       colour or position of a named small object                accuracy
``cloze``              2       the colour word missing from the second sentence (25%      accuracy
                               unchanged; the answer colour often visible elsewhere)
=====================  ======  =========================================================  =========

Every instance records ``focus`` — per image, the objects its answer depends on (what a perfect
visual prompt must carry) — and ``subsets``, tags the evaluator reports separately (``unchanged``,
``distractor``, the edit kind, the question kind). Answer distributions are balanced: options are
shuffled, which-image answers are first/second with equal odds, cloze answers are the stated colour
25% of the time, as likely as each of the other three options.

Example:
    >>> import numpy as np
    >>> from synthetic.world.scene import make_scene
    >>> from synthetic.world.language import EVAL_WORDING
    >>> t = TASK_BUILDERS["which_image"](make_scene(0, 2), np.random.default_rng(0), EVAL_WORDING)
    >>> len(t.scenes), t.context.count("{image#"), t.response in t.choices, len(t.focus)
    (2, 2, True, 2)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..discriminative.captions import TEMPLATES, DifferenceCaptioner, located
from .edits import edit_scene
from .language import (
    NO_CHANGE,
    ORDINALS,
    Wording,
    choice_suffix,
    detail_question,
    noun_phrase,
    salient_caption,
)
from .scene import COLOURS, POSITIONS, Scene, WorldObject

__all__ = [
    "TASK_BUILDERS",
    "TASK_INFO",
    "Picker",
    "TaskInstance",
    "free_colours",
    "random_picker",
    "render_text",
]

# Picks the object a task asks about among candidates (default: uniformly; the default job's synthetic
# data picks the one the VPG attends to least).
Picker = Callable[[Scene, list[WorldObject], np.random.Generator], WorldObject]


def random_picker(scene: Scene, candidates: list[WorldObject], rng: np.random.Generator) -> WorldObject:
    return candidates[int(rng.integers(len(candidates)))]


@dataclass
class TaskInstance:
    """One task instance: ``context`` refers to ``scenes[k-1]`` as ``{image#k}``.

    Attributes:
        focus: per scene, the objects the answer depends on (what a perfect visual prompt carries).
        subsets: evaluation tags of this instance (e.g. ``unchanged``, ``distractor``).
        target: the object the picker chose (None for captions).
        named: the object the instruction asks about, where a guided readout should look (default:
            ``target``). Differs for difference questions about an added object (the new one, in the second
            image) or about a region where nothing changed (the object there).
    """

    task: str
    instruction: str
    context: str
    scenes: list[Scene]
    response: str
    choices: list[str] | None = None
    meta: dict[str, Any] | None = None
    focus: list[list[WorldObject]] = field(default_factory=list)
    subsets: list[str] = field(default_factory=list)
    target: WorldObject | None = None
    named: WorldObject | None = None

    def __post_init__(self) -> None:
        if self.named is None:
            self.named = self.target


WHICH_FORMS = ("recolour", "remove", "alone")


def free_colours(scene: Scene, obj: WorldObject) -> list[str]:
    """Colours ``obj`` can take while every (colour, shape) pair of the scene stays unique."""
    used = {(o.colour, o.shape) for o in scene.objects}
    return [c for c in COLOURS if (c, obj.shape) not in used]


def recolourable(scene: Scene) -> list[WorldObject]:
    """Small objects that can change colour; if none can (rare: every colour of their shapes is taken),
    any object that can — some always can, as no scene holds six objects of two shapes each."""
    return [o for o in scene.details if free_colours(scene, o)] or [
        o for o in scene.objects if free_colours(scene, o)
    ]


def _pick(options: tuple[str, ...], rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]


def _shuffled(items: list[str], rng: np.random.Generator) -> list[str]:
    return [items[i] for i in rng.permutation(len(items))]


def caption_task(
    scene: Scene, rng: np.random.Generator, wording: Wording, pick: Picker = random_picker
) -> TaskInstance:
    return TaskInstance(
        "caption", _pick(wording.caption, rng), "{image#1}", [scene], salient_caption(scene, rng),
        focus=[list(scene.salient)],
    )  # fmt: skip


def detail_question_task(
    scene: Scene, rng: np.random.Generator, wording: Wording, pick: Picker = random_picker
) -> TaskInstance:
    target = pick(scene, list(scene.details) or list(scene.objects), rng)
    q = detail_question(scene, rng, wording, target)
    return TaskInstance(
        "detail_question", _pick(wording.question, rng), "{image#1} " + q.text, [scene], q.answer, q.choices,
        {"kind": q.kind}, focus=[[target]], subsets=[q.kind], target=target,
    )  # fmt: skip


# One wording per edit kind, so an answer is determined by what changed (the metric is ROUGE-L).
_CAPTIONER = DifferenceCaptioner({kind: TEMPLATES[kind][:1] for kind in ("modify", "delete", "add")})


def _edit_at(scene: Scene, obj: WorldObject | None, cell: int, kind: str, rng: np.random.Generator):
    """Edit ``obj`` (modify/delete) or add a small object in free ``cell``; returns (scene, meta, old, new)."""
    if kind == "add":
        edited, meta = edit_scene(scene, rng, kinds=("add",), cells=[cell])
        return edited, meta, None, edited.objects[-1]
    edited, meta = edit_scene(scene, rng, kinds=(kind,), target=obj)
    new = next((o for o in edited.objects if o.cell == obj.cell), None)
    return edited, meta, obj, new


def difference_task(
    scene: Scene, rng: np.random.Generator, wording: Wording, pick: Picker = random_picker
) -> TaskInstance:
    """Two edits in two regions; the instruction names one region (20%: a third, unchanged region)."""
    details = list(scene.details)
    target = pick(scene, details, rng)
    free = scene.free_cells()
    kinds = (["modify"] if free_colours(scene, target) else []) + ["delete"] + (["add"] if free else [])
    # first edit: the target (or an added object in a free cell); second edit: another small object
    kind = kinds[int(rng.integers(len(kinds)))]
    cell = target.cell if kind != "add" else free[int(rng.integers(len(free)))]
    edited, meta, old, new = _edit_at(scene, target if kind != "add" else None, cell, kind, rng)
    others = [o for o in edited.objects if not o.salient and o.cell != cell]
    other = others[int(rng.integers(len(others)))]
    second = "modify" if free_colours(edited, other) and rng.random() < 0.5 else "delete"
    edited, _, _, _ = _edit_at(edited, other, other.cell, second, rng)
    subsets, named = [kind], new if kind == "add" else target
    if rng.random() < 0.2:  # ask about a region where nothing changed
        still = [o for o in scene.objects if o.cell not in (cell, other.cell)]
        quiet = still[int(rng.integers(len(still)))]
        cell, old, new, subsets, named = quiet.cell, quiet, quiet, ["unchanged"], quiet
        response = NO_CHANGE.format(where=located(quiet.position))
    else:
        response = _CAPTIONER.caption(meta, rng)
    question = _pick(wording.difference_q, rng).format(position=POSITIONS[cell])
    return TaskInstance(
        "difference", _pick(wording.difference, rng), "{image#1} {image#2} " + question, [scene, edited], response,
        meta={"edit": meta}, focus=[[old] if old else [], [new] if new else []], subsets=subsets,
        target=target, named=named,
    )  # fmt: skip


def which_image_task(
    scene: Scene,
    rng: np.random.Generator,
    wording: Wording,
    pick: Picker = random_picker,
    form: str = "recolour",
) -> TaskInstance:
    """The scene and a variant whose named small object has another colour, in random order.

    ``form`` (easier forms are for the world LM's training only: mini-DEMON and the synthetic data always
    recolour): ``"remove"`` — the variant lacks the named object; ``"alone"`` — the named object alone
    against an empty image (the answer is the one image that shows anything)."""
    if form not in WHICH_FORMS:
        raise ValueError(f"which_image_task: form must be one of {WHICH_FORMS}, got {form!r}")
    target = pick(scene, recolourable(scene), rng)
    if form == "alone":
        scene = scene.with_objects([target])
    k = scene.objects.index(target)
    objects = list(scene.objects)
    if form == "recolour":
        colours = free_colours(scene, target)
        other = objects[k] = replace(target, colour=colours[int(rng.integers(len(colours)))])
    else:
        del objects[k]
        other = None
    variants = [(scene, [target]), (scene.with_objects(objects), [other] if other else [])]
    first = int(rng.integers(2))  # which position shows the named object: balanced
    shown = variants if first == 0 else variants[::-1]
    question = _pick(wording.which_q, rng).format(object="a " + noun_phrase(target))
    # each image is labelled in the text, so the answer can point at a label
    context = f"{ORDINALS[0]} image: {{image#1}} {ORDINALS[1]} image: {{image#2}} {question}"
    return TaskInstance(
        "which_image", _pick(wording.which, rng), context, [s for s, _ in shown], ORDINALS[first],
        list(ORDINALS[:2]), focus=[f for _, f in shown], target=target,
    )  # fmt: skip


def cloze_task(
    scene: Scene, rng: np.random.Generator, wording: Wording, pick: Picker = random_picker
) -> TaskInstance:
    """Two images; the same small object is described in each; its colour in the second is the blank.

    25% of pairs are unchanged (the answer is the stated colour); in half of the others the new colour is
    one that another object of the second image already has (a distractor visible elsewhere).
    """
    target = pick(scene, recolourable(scene), rng)
    k = scene.objects.index(target)
    subsets = []
    if rng.random() < 0.25:
        edited, answer = scene, target.colour
        subsets.append("unchanged")
    else:
        colours = free_colours(scene, target)
        visible = [c for c in colours if any(o.colour == c for o in scene.objects if o is not target)]
        pool = visible if visible and rng.random() < 0.5 else colours
        answer = pool[int(rng.integers(len(pool)))]
        objects = list(scene.objects)
        objects[k] = replace(target, colour=answer)
        edited = scene.with_objects(objects)
        subsets.append("changed")
    if any(o.colour == answer for o in edited.objects if o.cell != target.cell):
        subsets.append("distractor")
    line = _pick(wording.cloze_line, rng)
    fields = {"object": f"{target.size} {target.shape}", "where": located(target.position)}
    context = (
        "{image#1} " + line.format(colour=target.colour, **fields)
        + " {image#2} " + line.format(colour="___", **fields)
    )  # fmt: skip
    others = [c for c in COLOURS if c not in (answer, target.colour)]
    picked = [others[i] for i in rng.permutation(len(others))[: 4 - len({answer, target.colour})]]
    choices = _shuffled(list(dict.fromkeys([answer, target.colour, *picked])), rng)
    return TaskInstance(
        "cloze", _pick(wording.cloze, rng), context, [scene, edited], answer, choices,
        focus=[[target], [edited.objects[k]]], subsets=subsets, target=target,
    )  # fmt: skip


TASK_BUILDERS: dict[str, Callable[..., TaskInstance]] = {
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


def render_text(
    instance: TaskInstance, image_text: Callable[[Scene], str], label_images: bool = False
) -> str:
    """The user turn as ``read_demon`` writes it, with each ``{image#k}`` replaced by ``image_text(scene)``.

    ``label_images``: where the two images stand side by side unlabelled (``{image#1} {image#2}``, as in
    difference questions), write them as which-image questions do (``first image: … second image: …``),
    so that which image a slot is in can be read from the nearest label before it rather than only by
    counting the identical ``<Img>`` markers before it.
    """
    text = instance.context
    if label_images:
        text = text.replace(
            "{image#1} {image#2}", f"{ORDINALS[0]} image: {{image#1}} {ORDINALS[1]} image: {{image#2}}"
        )
    for k, scene in enumerate(instance.scenes, 1):
        placeholder = f"{{image#{k}}}"
        if placeholder in text:
            text = text.replace(placeholder, image_text(scene))
    text = instance.instruction + text
    if instance.choices is not None:
        text += choice_suffix(instance.choices)
    return text
