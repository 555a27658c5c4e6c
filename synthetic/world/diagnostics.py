"""What the tiny world's frozen backbones can do on their own: the ceilings behind the mini-DEMON table.

* :func:`lm_ceilings` — the language model on held-out task instances (evaluation wordings, unseen
  scenes) when each image is given *perfectly*: the objects its question needs, as object slots
  (:func:`synthetic.world.backbones.slot_image`), either all at the input (``input``) or the small ones
  added at the input of layer :data:`~synthetic.world.backbones.INJECT_LAYER` (``layered``, the path
  VPG-C's residual takes). No VPG is involved: this is the best any visual prompt can do with this LM.
  Its control (``blank``): the same prompts with every slot empty, the score this LM reaches from the
  text alone; a ceiling counts as visual only by how far it rises above it.
* :func:`vit_probe` — what the frozen ViT's tokens carry: an MLP probe (trained on 1500 scenes, tested
  on 500 others) predicts each object's colour and shape from the mean of the patch tokens in its grid
  cell, for salient and small objects separately.

The build prints both (``python -m synthetic.world.build``); ``benchmarks/world_diagnostics.py`` runs
them on any build and writes ``benchmarks/results/world_diagnostics.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vpgkit.data import Sample, Turn
from vpgkit.data.templates import get_template
from vpgkit.evaluation.metrics import choice_accuracy, map_to_choice, rouge_l

from .backbones import (
    BUILD_LAYOUT,
    NUM_SLOTS,
    WORLD_SYSTEM,
    DocumentLayout,
    SlotBatch,
    SlotImage,
    cell_pooling,
    encode_scenes,
    slot_injection,
)
from .language import EVAL_WORDING
from .scene import COLOURS, SHAPES, make_scene
from .tasks import TASK_BUILDERS, TASK_INFO, TaskInstance

__all__ = [
    "DIAGNOSTICS_STREAM",
    "MODES",
    "answer_score",
    "format_diagnostics",
    "lm_answers",
    "lm_ceilings",
    "posed_instance",
    "vit_probe",
]

DIAGNOSTICS_STREAM = 5500  # scene seeds no build stage and no mini-DEMON uses
# perfect slots at the input / small objects at layer k / every slot empty (the text-only control)
MODES = ("input", "layered", "blank")
# ceilings also per question kind / changed or unchanged cloze pair / kind of edit in the named region
SUBSET_TASKS = ("detail_question", "cloze", "difference")


@torch.no_grad()
def _generate(
    llm,
    tokenizer,
    prompts: list[str],
    images: list,
    image_token_id: int,
    max_new_tokens: int,
    layout: DocumentLayout = BUILD_LAYOUT,
) -> list[str]:
    """Greedy answers to left-padded ``prompts`` whose ``<image>`` slots show ``images`` (SlotImages), their
    slot words as ``layout`` writes them."""
    pad = tokenizer.pad_token_id
    rows = [[tokenizer.bos_token_id, *tokenizer(p, add_special_tokens=False)["input_ids"]] for p in prompts]
    length = max(map(len, rows))
    ids = torch.full((len(rows), length), pad)
    mask = torch.zeros_like(ids)
    for b, row in enumerate(rows):
        ids[b, length - len(row) :] = torch.tensor(row)
        mask[b, length - len(row) :] = 1
    batch = SlotBatch(ids, ids, *layout.slot_words(images, tokenizer))
    with slot_injection(llm, batch, image_token_id) as embeds:
        out = llm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens,
                           do_sample=False, eos_token_id=tokenizer.eos_token_id, pad_token_id=pad)  # fmt: skip
    return [tokenizer.decode(row, skip_special_tokens=True).split("###")[0].strip() for row in out]


def posed_instance(
    task: str,
    i: int,
    mode: str,
    builder: Callable | None = None,
    layout: DocumentLayout = BUILD_LAYOUT,
) -> tuple[TaskInstance, list[SlotImage]]:
    """Held-out instance ``i`` of ``task`` as :func:`lm_answers` poses it: the instance (evaluation wording,
    the diagnostics' scenes) and its images' slots in ``mode`` (every slot empty for ``"blank"``).

    Example:
        >>> instance, images = posed_instance("detail_question", 0, "input")
        >>> len(images) == len(instance.scenes) and instance.target in images[0].shown
        True
    """
    t = list(TASK_BUILDERS).index(task)
    rng = np.random.default_rng([DIAGNOSTICS_STREAM, t, i])
    instance = (builder or TASK_BUILDERS[task])(make_scene(DIAGNOSTICS_STREAM + t, i), rng, EVAL_WORDING)
    if mode == "blank":
        return instance, [SlotImage([None] * NUM_SLOTS, [None] * NUM_SLOTS) for _ in instance.scenes]
    return instance, layout.images(instance, rng, mode == "layered")


def lm_answers(
    llm,
    tokenizer,
    task: str,
    mode: str,
    n: int = 100,
    batch_size: int = 50,
    builder: Callable | None = None,
    layout: DocumentLayout = BUILD_LAYOUT,
) -> list[tuple[str, TaskInstance]]:
    """The LM's greedy answers to ``n`` held-out instances of ``task`` (evaluation wording, the diagnostics'
    own scenes) with perfect slots, all at the input (``mode="input"``) or the small objects added at layer
    k (``"layered"``), or with every slot empty (``"blank"``: the same prompts, no visual information):
    (answer, instance) pairs. ``builder``: another builder of the task's instances from
    the same scenes and draws (e.g. an easier which-image form); default ``TASK_BUILDERS[task]``.
    ``layout``: how the prompts write the images (:class:`DocumentLayout`), as the LM was trained.

    Example::

        answers = lm_answers(llm, tokenizer, "which_image", "input", n=10)
        share_first = sum(a == "first" for a, _ in answers) / len(answers)
    """
    if mode not in MODES:
        raise ValueError(f"lm_answers: mode must be one of {MODES}, got {mode!r}")
    if task not in TASK_BUILDERS:
        raise ValueError(f"lm_answers: task must be one of {tuple(TASK_BUILDERS)}, got {task!r}")
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    template = get_template("vicuna_v0", system=WORLD_SYSTEM)
    out: list[tuple[str, TaskInstance]] = []
    for start in range(0, n, batch_size):
        prompts, images, instances = [], [], []
        for i in range(start, min(n, start + batch_size)):
            instance, shown = posed_instance(task, i, mode, builder, layout)
            images += shown
            sample = Sample("d", [], [Turn("user", layout.user_text(instance))])
            prompts.append("".join(seg.text for seg in template.segments(sample, generation=True)))
            instances.append(instance)
        answers = _generate(llm, tokenizer, prompts, images, image_token_id, 24, layout)
        out += list(zip(answers, instances, strict=True))
    return out


def answer_score(answer: str, instance: TaskInstance) -> float:
    """One answer's score in [0, 1] by its task's metric (ROUGE-L or choice accuracy)."""
    if TASK_INFO[instance.task]["metric"] == "rouge_l":
        return rouge_l(answer, instance.response)
    return choice_accuracy(answer, instance.response, instance.choices)


def lm_ceilings(
    llm, tokenizer, n: int = 100, batch_size: int = 50, layout: DocumentLayout = BUILD_LAYOUT
) -> dict[str, dict[str, Any]]:
    """Per task and mode (:data:`MODES`): the LM's score (percent) with perfect slots, or with every slot
    empty for ``blank`` (:func:`lm_answers`, ``layout`` passed on); for tasks whose instances have subsets (a detail
    question's kind, a cloze pair changed or not, a difference question's edit), also ``subsets`` → mode →
    subset → score. For choice tasks, ``off_choice`` → mode → percent of answers that name none of the
    options (a wrong kind of answer, e.g. a colour to a which-image question, rather than a wrong option)."""
    scores: dict[str, dict[str, Any]] = {}
    for task in TASK_BUILDERS:
        scores[task] = {}
        choice_task = TASK_INFO[task]["metric"] != "rouge_l"
        for mode in MODES:
            values, subsets, off = [], {}, []
            for answer, instance in lm_answers(llm, tokenizer, task, mode, n, batch_size, layout=layout):
                values.append(answer_score(answer, instance))
                if task in SUBSET_TASKS:
                    subsets.setdefault(instance.subsets[0], []).append(values[-1])
                if choice_task:
                    off.append(map_to_choice(answer, instance.choices).index is None)
            scores[task][mode] = 100 * float(np.mean(values))
            if choice_task:
                scores[task].setdefault("off_choice", {})[mode] = 100 * float(np.mean(off))
            if subsets:
                scores[task].setdefault("subsets", {})[mode] = {
                    k: 100 * float(np.mean(v)) for k, v in sorted(subsets.items())
                }
    return scores


def _features(vit, seed: int, n: int):
    """Per object: the mean of the ViT's patch tokens in the object's grid cell (where the ViT was trained to
    keep it), its colour and shape indices, and whether it is small."""
    scenes = [make_scene(seed, i) for i in range(n)]
    pooled = (
        cell_pooling(vit.image_size, vit.config.patch_size) @ encode_scenes(vit, scenes)[:, 0, 1:]
    )  # (n, 9, D)
    rows, colour, shape, small = [], [], [], []
    for scene, cells in zip(scenes, pooled.numpy(), strict=True):
        for obj in scene.objects:
            rows.append(cells[obj.cell])
            colour.append(list(COLOURS).index(obj.colour))
            shape.append(SHAPES.index(obj.shape))
            small.append(not obj.salient)
    return np.stack(rows).astype(np.float32), np.array(colour), np.array(shape), np.array(small)


def vit_probe(vit, epochs: int = 30) -> dict[str, dict[str, float]]:
    """Probe accuracy (%) of colour and shape from the frozen ViT's tokens, salient vs small objects."""
    x_train, c_train, s_train, _ = _features(vit, DIAGNOSTICS_STREAM + 50, 1500)
    x_test, c_test, s_test, small = _features(vit, DIAGNOSTICS_STREAM + 51, 500)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-5
    x_train, x_test = torch.tensor((x_train - mean) / std), torch.tensor((x_test - mean) / std)
    result = {}
    generator = torch.Generator().manual_seed(0)
    for name, y_train, y_test in (("colour", c_train, c_test), ("shape", s_train, s_test)):
        torch.manual_seed(0)
        probe = torch.nn.Sequential(
            torch.nn.Linear(x_train.shape[1], 256),
            torch.nn.GELU(),
            torch.nn.Linear(256, int(y_train.max()) + 1),
        )
        opt = torch.optim.Adam(probe.parameters(), 1e-3, weight_decay=1e-4)
        target = torch.tensor(y_train)
        for _ in range(epochs):
            for idx in torch.randperm(len(x_train), generator=generator).split(256):
                loss = F.cross_entropy(probe(x_train[idx]), target[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            hit = probe(x_test).argmax(1).numpy() == y_test
        result[name] = {
            "salient": 100 * float(hit[~small].mean()),
            "small": 100 * float(hit[small].mean()),
            "chance": 100 / (int(y_train.max()) + 1),
        }
    return result


def format_diagnostics(diagnostics: dict[str, Any]) -> str:
    """Markdown tables of :func:`lm_ceilings` and :func:`vit_probe` results."""
    lines = ["| task (metric) | LM, perfect slots at the input | LM, small objects injected at layer k | "
             "LM, every slot empty (text only) |", "| --- | --- | --- | --- |"]  # fmt: skip
    for task, s in diagnostics["lm_ceilings"].items():
        # "–": a build from before the blank control, or a subset no instance fell into
        cells = " | ".join(f"{s[mode]:.1f}" if mode in s else "–" for mode in MODES)
        lines.append(f"| {task} ({TASK_INFO[task]['metric']}) | {cells} |")
        for name in s.get("subsets", {}).get("input", {}):
            per_mode = [s["subsets"].get(mode, {}).get(name) for mode in MODES]
            cells = " | ".join("–" if v is None else f"{v:.1f}" for v in per_mode)
            lines.append(f"| &nbsp;&nbsp;{task}: {name} | {cells} |")
        if "off_choice" in s:  # builds measured before it have no such row
            cells = " | ".join(f"{s['off_choice'][mode]:.1f}" for mode in MODES)
            lines.append(f"| &nbsp;&nbsp;{task}: answers naming no option (%) | {cells} |")
    lines += ["", "| ViT probe (%) | salient objects | small objects | chance |", "| --- | --- | --- | --- |"]
    for name, r in diagnostics["vit_probe"].items():
        lines.append(f"| {name} | {r['salient']:.1f} | {r['small']:.1f} | {r['chance']:.1f} |")
    return "\n".join(lines)
