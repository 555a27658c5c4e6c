"""Train the tiny world's frozen backbones: an EVA ViT, a 6-layer LLaMA, and a BLIP-2 Q-Former.

Three stages, each a function of (seed, steps) on scenes generated on the fly:

1. :func:`train_language_model` — a ``LlamaForCausalLM`` learns the world's tasks
   (:mod:`synthetic.world.tasks`, training wordings only) as chat documents in which every image is
   ``<Img>`` + :data:`NUM_SLOTS` ``<image>`` tokens + ``</Img>``: the image's *object slots*. A slot is the
   mean of the LM's own embeddings of one object's words (``small red square top left``); an image shows
   the objects its question needs (:attr:`TaskInstance.focus`) and a few others, in random slots, empty
   slots zero. In :data:`LAYERED_SHARE` of the documents the salient objects enter at the input and the
   small ones are **added to the hidden states at the input of decoder layer** :data:`INJECT_LAYER`
   (a forward pre-hook, the path VPG-C's residual takes; rescaled to the hidden state's norm there),
   sometimes on top of another object at the input; so layers ≥ k learn to read content injected there. Only the answers carry loss.
   With ``question_summary`` (0.1 in the shipped build) a :class:`QuestionSummaryHead` also reads what the
   question names about its object from the last prompt token at the input of layer k (VPG-C's guidance).
2. :func:`train_vision_encoder` — a :class:`~vpgkit.backbones.TimmEvaEncoder` (``tiny_world`` preset)
   learns to tell, for each of the 9 grid cells, whether it holds an object and that object's colour,
   shape and size, through an attention-pooling head per cell (discarded). It stands in for EVA-CLIP's
   pre-training: what the experiment needs is features that carry every object, small ones included.
3. :func:`train_qformer` — the BLIP-2 second stage: frozen ViT, frozen LM; a Q-Former + projection
   (``tiny_world`` preset: 3 queries, the whole Q-Former trainable) learns from SALIENT captions only,
   with the LM loss through :class:`vpgkit.VisionLanguageModel`. Three prompts cannot carry 7–8 objects,
   and captions teach it to carry the salient ones.

:mod:`synthetic.world.build` runs the three and writes the shipped files.
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from vpgkit.backbones import EvaVisionConfig, ImageProcessor, TimmEvaEncoder
from vpgkit.backbones.language import tiny_llama_config
from vpgkit.data import Sample, Turn
from vpgkit.data.collation import Collator
from vpgkit.data.templates import get_template
from vpgkit.data.tokenize import SampleTokenizer
from vpgkit.model import VisionLanguageModel
from vpgkit.modules import QFormer, QFormerConfig

from ..discriminative.captions import located
from .data_parallel import ONE_PROCESS, Shard, run_data_parallel
from .language import PARAPHRASE_WORDING, TRAIN_WORDING, Wording, noun_phrase, salient_caption
from .scene import COLOURS, COLS, POSITIONS, ROWS, SHAPES, SIZES, Scene, WorldObject, make_scene, render
from .tasks import TASK_BUILDERS, TaskInstance, render_text, which_image_task

__all__ = [
    "ASKED_ATTRIBUTES",
    "CELL_TASKS",
    "COMPARE_LAYER",
    "INJECT_LAYER",
    "LM_TASK_WEIGHTS",
    "NUM_SLOTS",
    "PAIR_COLOUR_TASKS",
    "QUESTION_TASKS",
    "SLOT_RELATIONS",
    "SUMMARY_TASKS",
    "AskedCellHead",
    "PairColourHead",
    "QuestionSummaryHead",
    "SlotBatch",
    "SlotImage",
    "SlotRelationHead",
    "StageResult",
    "TokenHead",
    "asked_cell_label",
    "asked_labels",
    "attribute_loss",
    "cell_labels",
    "cell_pooling",
    "encode_scenes",
    "lm_batch",
    "lm_document",
    "lm_example",
    "norm_scaled_addition",
    "object_slot_words",
    "pair_colour_labels",
    "slot_image",
    "slot_injection",
    "slot_relations",
    "slot_vectors",
    "slot_word_ids",
    "token_labels",
    "train_language_model",
    "train_qformer",
    "train_vision_encoder",
    "world_llama_config",
]

# Seed streams: scenes of each stage never coincide with another stage's or with mini-DEMON's.
LM_STREAM, VIT_STREAM, QFORMER_STREAM = 101, 102, 103
LM_PARAPHRASE_STREAM = 104  # which LM documents are asked in other words (``DocumentLayout.paraphrase``)
NUM_SLOTS = 3  # object slots per image in the LM's documents = the tiny-world Q-Former's queries
INJECT_LAYER = 3  # small objects of layered documents enter at the input of this decoder layer (of 6)
# The slot-relation head (train_language_model's ``compare``) reads the slots at the input of this layer: two
# layers after INJECT_LAYER, so that objects injected there can be compared too, one before the last.
COMPARE_LAYER = 5
LAYERED_SHARE = 0.5  # share of LM documents whose small objects are injected at INJECT_LAYER
# Injected slots are rescaled to the norm of the hidden state they are added to (at the input of layer 3 that
# norm is ~100, a slot's ~0.5): unscaled, they vanish and the LM never learns to read them; a fixed large gain
# (x50, tried) swamped early training and the LM learned to read no slot at all.
# The world's documents have no system prompt: sequences stay short (the VLM recipes set data.system: "").
WORLD_SYSTEM = ""
# The tasks whose questions name one object (the question-summary head's documents, by default).
SUMMARY_TASKS = ("detail_question", "which_image", "cloze")
# Every task whose question names what it asks about: difference questions name a region (its position only).
QUESTION_TASKS = (*SUMMARY_TASKS, "difference")

# The documents the asked-cell head reads by default: detail questions (position questions name no cell).
CELL_TASKS = ("detail_question",)

LM_TASK_WEIGHTS = {
    "caption": 0.15,
    "detail_question": 0.2,
    "difference": 0.2,
    "which_image": 0.25,
    "cloze": 0.2,
}


@dataclass
class StageResult:
    """What a training stage reports for the manifest."""

    steps: int
    final_loss: float
    seconds: float
    losses: list[float]


def world_llama_config(vocab_size: int, **overrides) -> LlamaConfig:
    """The shipped tiny LLaMA: 6 layers × 128 wide (D_llm = 128), 4 heads, 512 positions; ``overrides``:
    LlamaConfig fields to change (``benchmarks/lm_variants.py`` tries other shapes)."""
    shape = dict(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        initializer_range=0.05,
    )
    return tiny_llama_config(vocab_size, **{**shape, **overrides})


def _optimise(
    name: str,
    params: list[nn.Parameter],
    steps: int,
    step_loss: Callable[[int], tuple[torch.Tensor, str]],
    log: Callable[[str], None],
    shard: Shard = ONE_PROCESS,
    **adamw,
) -> StageResult:
    """AdamW + warmup/cosine, clipping at 1.0, through vpgkit's optimisation core
    (:func:`vpgkit.training.optim.optimise`); ``step_loss(step)`` returns (loss, extra log text) of this
    ``shard``'s rows, whose gradients are averaged over the data-parallel processes."""
    from vpgkit.training.optim import optimise

    start, warmup = time.perf_counter(), max(1, steps // 20)

    def report(step: int, losses: list[float], note: str) -> None:
        if step % 50 == 0 or step == steps - 1:
            log(f"[{name}] step {step + 1}/{steps} loss {np.mean(losses[-50:]):.4f}{note}")

    # The world keeps its own schedule formula: vpgkit's warmup_cosine computes pi * progress with
    # progress = (step - warmup) / (total - warmup), which differs from this one in the last bit for about
    # a fifth of (step, total) pairs, and the shipped assets must rebuild bit for bit.
    losses = optimise(
        params,
        steps,
        step_loss,
        warmup_steps=warmup,
        max_grad_norm=1.0,
        schedule=lambda s: _cosine(s, steps, warmup),
        on_step=report,
        reduce=shard.reduce if shard.world > 1 else None,
        **adamw,
    )
    return StageResult(steps, float(np.mean(losses[-20:])), time.perf_counter() - start, losses)


def _cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _scene(seed: int, stream: int, i: int) -> Scene:
    return make_scene(seed * 1000 + stream, i)


# ---------------------------------------------------------------------------------------- language


def object_slot_words(obj: WorldObject, row_column: bool = False) -> str:
    """The words whose embeddings make ``obj``'s slot: size, colour, shape, position (``small red square top left``).

    ``row_column``: the position always as a row word and a column word, ``center`` for the middle one
    (``center left`` for ``left``, ``center center`` for ``center``). A slot is the mean of its word
    embeddings, so by default a middle row or column is a word *missing* from the mean, and the LM must read
    "left" from a slot that holds no row word at all; here every slot holds two position words.

    Example:
        >>> from dataclasses import replace
        >>> from synthetic.world.scene import make_scene
        >>> obj = replace(make_scene(0, 0).objects[0], cell=3, size="small", colour="red", shape="square")
        >>> object_slot_words(obj), object_slot_words(obj, row_column=True)
        ('small red square left', 'small red square center left')
    """
    where = obj.position
    if row_column:
        row, column = divmod(obj.cell, len(COLS))
        where = f"{ROWS[row] or 'center'} {COLS[column] or 'center'}"
    return f"{obj.size} {obj.colour} {obj.shape} {where}"


@dataclass
class SlotImage:
    """What the LM is shown for one image: per slot, the object entering at the input and the object
    added at the input of :data:`INJECT_LAYER` (None: nothing)."""

    at_input: list[WorldObject | None]
    at_layer: list[WorldObject | None]

    @property
    def shown(self) -> list[WorldObject | None]:
        """Per slot, the object it shows: the one added at the layer where there are two."""
        return [lay or inp for inp, lay in zip(self.at_input, self.at_layer, strict=True)]


def slot_image(
    scene: Scene,
    focus: list[WorldObject],
    rng: np.random.Generator,
    layered: bool,
    order: np.ndarray | None = None,
) -> SlotImage:
    """The slots of one image: ``focus`` plus 0–2 other objects of ``scene`` (at most NUM_SLOTS), in
    random slots (``order``: the slots the focus and then the others take, instead of a random order).
    ``layered``: salient objects at the input, small ones at the layer (a third of them on top of another
    object at the input, as VPG-C's residual lands on the VPG's prompts)."""
    focus = list(dict.fromkeys(focus))[:NUM_SLOTS]
    others = [o for o in scene.objects if o not in focus]
    extra = int(rng.integers(0, NUM_SLOTS - len(focus) + 1))
    shown = focus + [others[i] for i in rng.permutation(len(others))[:extra]]
    slots = rng.permutation(NUM_SLOTS) if order is None else order
    image = SlotImage([None] * NUM_SLOTS, [None] * NUM_SLOTS)
    for obj, slot in zip(shown, slots, strict=False):
        if layered and not obj.salient:
            image.at_layer[slot] = obj
            if rng.random() < 1 / 3:
                hidden = [o for o in others if o not in shown]
                if hidden:
                    image.at_input[slot] = hidden[int(rng.integers(len(hidden)))]
        else:
            image.at_input[slot] = obj
    return image


@dataclass(frozen=True)
class DocumentLayout:
    """How the LM's documents and the diagnostics' prompts write a task instance's images; the build uses
    the defaults (``benchmarks/lm_variants.py`` tries the others).

    Attributes:
        label_images: ordinal labels before unlabelled image pairs (``render_text(label_images=True)``).
        align_slots: one slot order for all images of a document, so the object a question is about sits in
            the same slot in both images (as one VPG query would find it in both); default: a random order
            per image.
        row_column_slots: every slot names its object's row and column (:func:`object_slot_words`
            ``row_column``); default: the position as the language names it (``left``, ``center``).
        paraphrase: the share of documents asked in
            :data:`~synthetic.world.language.PARAPHRASE_WORDING` instead of the training wording (drawn
            from their own stream, so 0 leaves every document as it was).
    """

    label_images: bool = False
    align_slots: bool = False
    row_column_slots: bool = False
    paraphrase: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.paraphrase <= 1.0:
            raise ValueError(f"paraphrase: expected a share in [0, 1], got {self.paraphrase}")

    def wording(self, seed: int, i: int) -> Wording:
        """The wording document ``i`` is asked in."""
        if (
            self.paraphrase
            and np.random.default_rng([seed, LM_PARAPHRASE_STREAM, i]).random() < self.paraphrase
        ):
            return PARAPHRASE_WORDING
        return TRAIN_WORDING

    def slot_words(self, images: list[SlotImage], tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
        """(S, NUM_SLOTS, W) word ids of ``images``' objects at the input and at the layer (:func:`slot_word_ids`)."""
        return tuple(
            slot_word_ids(tokenizer, [getattr(im, part) for im in images], self.row_column_slots)
            for part in ("at_input", "at_layer")
        )

    def images(self, instance: TaskInstance, rng: np.random.Generator, layered: bool) -> list[SlotImage]:
        """The instance's images as slots (:func:`slot_image`), one per scene."""
        order = rng.permutation(NUM_SLOTS) if self.align_slots else None
        return [
            slot_image(s, f, rng, layered, order)
            for s, f in zip(instance.scenes, instance.focus, strict=True)
        ]

    def user_text(self, instance: TaskInstance) -> str:
        """The user turn, each image written as ``<Img>`` + NUM_SLOTS ``<image>`` + ``</Img>``."""
        return render_text(instance, lambda _: "<Img>" + "<image>" * NUM_SLOTS + "</Img>", self.label_images)


# the default documents (the build's up to world v9; world v10's adds row / column slots and paraphrase 0.5):
# images labelled only where their tasks label them, slots in a random order per image
BUILD_LAYOUT = DocumentLayout()


def lm_example(seed: int, i: int) -> tuple[list[tuple[str, bool]], list[SlotImage]]:
    """Training document ``i``: (text, carries loss) segments, and its images' slots in order.

    One task instance (:data:`LM_TASK_WEIGHTS`), images written as ``<Img>`` + NUM_SLOTS ``<image>`` +
    ``</Img>`` (half the time before the instruction, as the captions data writes it); the answer carries
    loss; no system prompt (:data:`WORLD_SYSTEM`).
    """
    segments, images, *_ = _lm_document(seed, i)
    return segments, images


def _lm_document(
    seed: int,
    i: int,
    summary_tasks: tuple[str, ...] = SUMMARY_TASKS,
    task_weights: dict[str, float] = LM_TASK_WEIGHTS,
    which_forms: dict[str, float] | None = None,
    layout: DocumentLayout = BUILD_LAYOUT,
    cell_tasks: tuple[str, ...] = CELL_TASKS,
) -> tuple[list[tuple[str, bool]], list[SlotImage], list[int], list[int], int]:
    """:func:`lm_example` plus the document's :func:`asked_labels`, :func:`pair_colour_labels` and
    :func:`asked_cell_label` (for ``cell_tasks``);
    ``task_weights``: how often each task is drawn (default :data:`LM_TASK_WEIGHTS`); ``which_forms``: the
    share of which-image documents in each easier form of ``which_image_task`` (``{"remove": 0.5}``: half lack the named object in the other image;
    ``"alone"``: the object alone against an empty image); the rest are recoloured, as in mini-DEMON.
    ``layout``: how the images are written (:class:`DocumentLayout`)."""
    rng = np.random.default_rng([seed, LM_STREAM, i])
    layered = bool(rng.random() < LAYERED_SHARE)
    scene = _scene(seed, LM_STREAM, i)
    names = list(task_weights)
    weights = np.array([task_weights[n] for n in names])
    task = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    builder = TASK_BUILDERS[task]
    if task == "which_image" and which_forms:  # no draw otherwise: the build's documents stay as they were
        u, edge = rng.random(), 0.0
        for form, share in which_forms.items():
            edge += share
            if u < edge:
                builder = functools.partial(which_image_task, form=form)
                break
    instance = builder(scene, rng, layout.wording(seed, i))
    images = layout.images(instance, rng, layered)
    placeholders = " ".join(f"{{image#{k}}}" for k in range(1, len(instance.scenes) + 1))
    if rng.random() < 0.5 and instance.context.startswith(placeholders):
        rest = instance.context[len(placeholders) :].strip()
        instance.context = f"{placeholders} {instance.instruction} {rest}".strip()
        instance.instruction = ""
    user = layout.user_text(instance)
    template = get_template("vicuna_v0", system=WORLD_SYSTEM)
    sample = Sample(f"lm{i}", [], [Turn("user", user), Turn("assistant", instance.response)])
    return (
        [(seg.text, seg.loss) for seg in template.segments(sample)],
        images,
        asked_labels(instance, summary_tasks),
        pair_colour_labels(instance),
        asked_cell_label(instance, cell_tasks),
    )


# What a question can name about the object it asks about, in this order (the summary head's outputs).
ASKED_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "size": tuple(SIZES),
    "colour": tuple(COLOURS),
    "shape": SHAPES,
    "position": POSITIONS,
}


def asked_labels(instance: TaskInstance, tasks: tuple[str, ...] = SUMMARY_TASKS) -> list[int]:
    """Per :data:`ASKED_ATTRIBUTES` entry, the index of the asked object's value if the question names it,
    else -100: what the last prompt token can know about the object from the text alone.

    The asked object is ``instance.named`` (``target`` but for difference questions) for the ``tasks`` that
    have one (default :data:`SUMMARY_TASKS`: detail questions, which-image and cloze; captions name nothing:
    all -100; difference questions, in :data:`QUESTION_TASKS`, name only the region of their ``named``
    object). Only the question (the context, not the options) counts, so a colour question's answer is
    never a label.

    Example:
        >>> import numpy as np
        >>> from synthetic.world.language import EVAL_WORDING
        >>> from synthetic.world.scene import make_scene
        >>> t = TASK_BUILDERS["which_image"](make_scene(0, 2), np.random.default_rng(0), EVAL_WORDING)
        >>> all(label >= 0 for label in asked_labels(t))  # "a small red square in the top left": all named
        True
    """
    obj = instance.named
    if obj is None or instance.task not in tasks:
        return [-100] * len(ASKED_ATTRIBUTES)
    words = set(re.findall(r"[a-z]+", instance.context.lower()))
    named = {
        "size": obj.size in words,
        "colour": obj.colour in words,
        "shape": obj.shape in words,
        # a difference question is written from its named object's cell ("in the top left of the image")
        "position": located(obj.position) in instance.context or instance.task == "difference",
    }
    values = {"size": obj.size, "colour": obj.colour, "shape": obj.shape, "position": obj.position}
    return [ASKED_ATTRIBUTES[a].index(values[a]) if named[a] else -100 for a in ASKED_ATTRIBUTES]


# The two-image tasks whose answer compares the asked object with its counterpart in the other image (the
# pair-colour head's documents).
PAIR_COLOUR_TASKS = ("which_image", "cloze", "difference")


def pair_colour_labels(instance: TaskInstance) -> list[int]:
    """Per image of a two-image :data:`PAIR_COLOUR_TASKS` document, the index in COLOURS of the colour of the
    object its answer depends on there (its ``focus``), else -100 (no such object, or another task).

    A recoloured which-image pair's answer is "first" exactly when the first image's colour is the one the
    question names, so these labels split the task into reading a colour per image and one comparison.

    Example:
        >>> import numpy as np
        >>> from synthetic.world.language import EVAL_WORDING
        >>> from synthetic.world.scene import make_scene
        >>> t = TASK_BUILDERS["which_image"](make_scene(0, 2), np.random.default_rng(0), EVAL_WORDING)
        >>> first, second = pair_colour_labels(t)
        >>> (list(COLOURS)[first] == t.target.colour) == (t.response == "first"), first != second
        (True, True)
    """
    if instance.task not in PAIR_COLOUR_TASKS or len(instance.focus) != 2:
        return [-100, -100]
    return [list(COLOURS).index(f[0].colour) if f else -100 for f in instance.focus]


def asked_cell_label(instance: TaskInstance, tasks: tuple[str, ...] = CELL_TASKS) -> int:
    """The grid cell (0–8) of the object a question of ``tasks`` asks about (``instance.named``), else -100
    (the asked-cell head's label). For a detail question, what the LM must find in the image to answer a
    position question, and where the object a colour question names is; for a difference question, the
    region it names.

    Example:
        >>> import numpy as np
        >>> from synthetic.world.language import EVAL_WORDING
        >>> from synthetic.world.scene import make_scene
        >>> t = TASK_BUILDERS["detail_question"](make_scene(0, 2), np.random.default_rng(0), EVAL_WORDING)
        >>> asked_cell_label(t) == t.target.cell
        True
    """
    return instance.named.cell if instance.task in tasks and instance.named is not None else -100


def lm_document(seed: int, i: int) -> str:
    """Training document ``i`` as plain text (see :func:`lm_example`)."""
    return "".join(text for text, _ in lm_example(seed, i)[0])


@dataclass
class SlotBatch:
    """Token ids and slot words of a batch of LM documents.

    Attributes:
        input_ids, labels: (B, L); labels are -100 except on answers and their EOS.
        input_words, layer_words: (S, NUM_SLOTS, W) word ids of each slot image's objects at the input
            and at :data:`INJECT_LAYER` (0 = padding; an all-padding row is an empty slot).
        asked: (B, len(ASKED_ATTRIBUTES)) :func:`asked_labels` of each document, or None.
        relations: (S, NUM_SLOTS) :func:`slot_relations` of each slot image, or None.
        colours: (B, 2) :func:`pair_colour_labels` of each document, or None.
        cells: (B,) :func:`asked_cell_label` of each document, or None.
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    input_words: torch.Tensor
    layer_words: torch.Tensor
    asked: torch.Tensor | None = None
    relations: torch.Tensor | None = None
    colours: torch.Tensor | None = None
    cells: torch.Tensor | None = None

    def by_length(self, groups: int, image_token_id: int, pad_token_id: int) -> list[SlotBatch]:
        """The batch as ``groups`` sub-batches of documents of similar length, each cut to its longest
        document: the same tokens with less padding (but four forward passes: in the build, 4 groups were
        slower, ``benchmarks/results/world_build_speed.json``). Documents keep their slots, ``asked`` and
        ``relations``; the order is by length.

        Example:
            >>> ids = torch.tensor([[1, 5, 0, 0], [1, 5, 6, 7]])
            >>> b = SlotBatch(ids, ids.clone(), torch.zeros(0, NUM_SLOTS, 6), torch.zeros(0, NUM_SLOTS, 6))
            >>> [g.input_ids.tolist() for g in b.by_length(2, image_token_id=9, pad_token_id=0)]
            [[[1, 5]], [[1, 5, 6, 7]]]
        """
        lengths = (self.input_ids != pad_token_id).sum(1)
        per_doc = (self.input_ids == image_token_id).sum(1) // NUM_SLOTS  # images of each document
        first_image = torch.cumsum(per_doc, 0) - per_doc
        out = []
        for docs in torch.tensor_split(torch.argsort(lengths, stable=True), groups):
            if len(docs) == 0:
                continue
            images = torch.cat(
                [torch.arange(first_image[d], first_image[d] + per_doc[d]) for d in docs.tolist()]
            )
            width = int(lengths[docs].max())
            out.append(
                SlotBatch(
                    self.input_ids[docs, :width],
                    self.labels[docs, :width],
                    self.input_words[images],
                    self.layer_words[images],
                    None if self.asked is None else self.asked[docs],
                    None if self.relations is None else self.relations[images],
                    None if self.colours is None else self.colours[docs],
                    None if self.cells is None else self.cells[docs],
                )
            )
        return out


def lm_batch(
    tokenizer,
    seed: int,
    first_doc: int,
    size: int,
    summary_tasks: tuple[str, ...] = SUMMARY_TASKS,
    task_weights: dict[str, float] = LM_TASK_WEIGHTS,
    which_forms: dict[str, float] | None = None,
    layout: DocumentLayout = BUILD_LAYOUT,
    cell_tasks: tuple[str, ...] = CELL_TASKS,
) -> SlotBatch:
    """Documents ``first_doc … first_doc + size - 1``: BOS + document, EOS after each answer, right-padded;
    ``asked`` labels only for documents of ``summary_tasks``; tasks drawn by ``task_weights``; see
    :func:`_lm_document` for ``which_forms`` and ``layout``."""
    if which_forms and sum(which_forms.values()) > 1:  # checked per batch, not per document
        raise ValueError(
            f"which_forms: shares of which-image documents must add up to at most 1, got {which_forms}"
        )
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    documents, images, asked, relations, colours, cells = [], [], [], [], [], []
    for d in range(first_doc, first_doc + size):
        segments, doc_images, doc_asked, doc_colours, doc_cell = _lm_document(
            seed, d, summary_tasks, task_weights, which_forms, layout, cell_tasks
        )
        documents.append(segments)
        images += doc_images
        asked.append(doc_asked)
        colours.append(doc_colours)
        cells.append(doc_cell)
        relations += slot_relations(doc_images)
    # one tokenizer call for the whole batch: the same ids as one call per segment, without its overhead
    pieces = iter(tokenizer([t for s in documents for t, _ in s], add_special_tokens=False)["input_ids"])
    rows = []
    for segments in documents:
        ids, labels = [bos], [-100]
        for _, loss in segments:
            piece = next(pieces) + ([eos] if loss else [])
            ids += piece
            labels += piece if loss else [-100] * len(piece)
        rows.append((ids, labels))
    length = max(len(r[0]) for r in rows)
    input_ids = torch.full((size, length), pad)
    target = torch.full((size, length), -100)
    for b, (ids, labels) in enumerate(rows):
        input_ids[b, : len(ids)] = torch.tensor(ids)
        target[b, : len(labels)] = torch.tensor(labels)
    return SlotBatch(
        input_ids,
        target,
        *layout.slot_words(images, tokenizer),
        torch.tensor(asked, dtype=torch.long),
        torch.tensor(relations, dtype=torch.long).reshape(len(images), NUM_SLOTS),
        torch.tensor(colours, dtype=torch.long),
        torch.tensor(cells, dtype=torch.long),
    )


# What a slot of a two-image document is to the other image (SlotRelationHead's classes): a slot of the first
# image; or a slot of the second whose position the first image's slots do not show, show with another object,
# or show with this same object. A difference answer is one of these read at the named region's slot
# (add / modify / unchanged; delete: only a first-image slot there), a which-image answer the first or not.
SLOT_RELATIONS = ("first_image", "second_new", "second_changed", "second_same")


def slot_relations(images: list[SlotImage]) -> list[list[int]]:
    """Per image, per slot: the index in :data:`SLOT_RELATIONS` of the object the slot shows
    (:attr:`SlotImage.shown`), or -100 for an empty slot or a document without exactly two images.

    Example:
        >>> from synthetic.world.scene import make_scene
        >>> a, b = make_scene(0, 0).objects[:2]
        >>> slot_relations([SlotImage([a, None, None], [None] * 3), SlotImage([None, a, b], [None] * 3)])
        [[0, -100, -100], [-100, 3, 1]]
    """
    if len(images) != 2:
        return [[-100] * NUM_SLOTS for _ in images]
    shown = [im.shown for im in images]
    first = {o.position: object_slot_words(o) for o in shown[0] if o is not None}

    def relation(o: WorldObject) -> int:
        if o.position not in first:
            return 1
        return 3 if first[o.position] == object_slot_words(o) else 2

    return [
        [-100 if o is None else 0 for o in shown[0]],
        [-100 if o is None else relation(o) for o in shown[1]],
    ]


def slot_word_ids(
    tokenizer, images: list[list[WorldObject | None]], row_column: bool = False
) -> torch.Tensor:
    """(S, NUM_SLOTS, W) word ids of each image's slot objects (0 = padding; None → an empty slot);
    ``row_column``: positions as a row and a column word (:func:`object_slot_words`)."""
    shown = [
        (n, j, object_slot_words(o, row_column))
        for n, image in enumerate(images)
        for j, o in enumerate(image)
        if o is not None
    ]
    out = torch.zeros(len(images), NUM_SLOTS, 6, dtype=torch.long)
    if shown:  # one tokenizer call for all slots
        words = tokenizer([w for _, _, w in shown], add_special_tokens=False)["input_ids"]
        for (n, j, _), ids in zip(shown, words, strict=True):
            out[n, j, : len(ids)] = torch.tensor(ids)
    return out


def slot_vectors(embed: nn.Embedding, slot_words: torch.Tensor) -> torch.Tensor:
    """(S, NUM_SLOTS, W) word ids → (S·NUM_SLOTS, D) slot vectors: the mean word embedding, empty → 0."""
    mask = (slot_words != 0).unsqueeze(-1).to(embed.weight.dtype)
    vectors = (embed(slot_words) * mask).sum(2) / mask.sum(2).clamp(min=1)
    return vectors.reshape(-1, vectors.shape[-1])


@contextlib.contextmanager
def slot_injection(llm: LlamaForCausalLM, batch: SlotBatch, image_token_id: int, layer: int = INJECT_LAYER):
    """Run the LM on ``batch`` with its slots: yields the (B, L, D) input embeddings (input slots in place)
    while a forward pre-hook adds the layer slots at the input of decoder ``layer``, each rescaled to the norm
    of the hidden state it is added to.

    Example (shapes only)::

        with slot_injection(llm, batch, image_token_id) as embeds:
            loss = llm(inputs_embeds=embeds, attention_mask=mask, labels=batch.labels).loss
    """
    embed = llm.get_input_embeddings()
    positions = (batch.input_ids == image_token_id).unsqueeze(-1)
    x = embed(batch.input_ids)
    if int(positions.sum()) != batch.input_words.shape[0] * NUM_SLOTS:
        raise ValueError("slot_injection: the <image> tokens and the slot images of the batch disagree")
    if batch.input_words.numel() == 0:
        yield x
        return
    x = x.masked_scatter(positions, slot_vectors(embed, batch.input_words).to(x.dtype))
    layer_slots = slot_vectors(embed, batch.layer_words)
    layer_slots = layer_slots / layer_slots.norm(dim=-1, keepdim=True).clamp(min=1e-6)  # unit (empty: 0)
    injected = torch.zeros_like(x).masked_scatter(positions, layer_slots.to(x.dtype))
    with norm_scaled_addition(llm, layer, injected):
        yield x


@contextlib.contextmanager
def norm_scaled_addition(llm: LlamaForCausalLM, layer: int, injected: torch.Tensor):
    """While active, a forward pre-hook adds ``injected`` (B, L, D) times the hidden state's norm at each
    position to the input of decoder ``layer`` — a unit vector there becomes as large as the hidden state;
    zero rows leave positions as they are. Cached decoding steps (another length than L) pass unchanged:
    the positions lie in the cache.

    Example (shapes only)::

        with norm_scaled_addition(llm, 3, injected):  # injected: (1, L, D)
            logits = llm(inputs_embeds=embeds).logits  # embeds: (1, L, D)
    """

    def hook(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        if hidden.shape[1] != injected.shape[1]:  # a cached decoding step
            return args, kwargs
        hidden = hidden + injected * hidden.norm(dim=-1, keepdim=True)
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    handle = llm.model.layers[layer].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


class QuestionSummaryHead(nn.Module):
    """Linear heads from the last prompt token's hidden state to what the question names about the asked
    object (:data:`ASKED_ATTRIBUTES`); trained with the LM when ``question_summary`` is on, then discarded."""

    def __init__(self, width: int):
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(width, len(v)) for v in ASKED_ATTRIBUTES.values())

    def loss(self, hidden: torch.Tensor, asked: torch.Tensor) -> torch.Tensor:
        """hidden (B, D) at the last prompt token, asked (B, A) labels (-100: not named) → mean CE."""
        losses = [
            F.cross_entropy(head(hidden), asked[:, a], reduction="sum") for a, head in enumerate(self.heads)
        ]
        return torch.stack(losses).sum() / (asked >= 0).sum().clamp(min=1)


class SlotRelationHead(nn.Module):
    """A linear read of :data:`SLOT_RELATIONS` from a slot's hidden state; trained with the LM when
    ``compare`` is on (a signal for comparing the two images' slots), then discarded."""

    def __init__(self, width: int):
        super().__init__()
        self.out = nn.Linear(width, len(SLOT_RELATIONS))

    def loss(self, hidden: torch.Tensor, relations: torch.Tensor) -> tuple[torch.Tensor, float, float]:
        """hidden (N, D) at the slots' ``<image>`` tokens, relations (N,) (-100: none) → (mean CE, accuracy
        on first-image slots, accuracy on second-image slots: the comparison)."""
        logits = self.out(hidden)
        right = logits.argmax(-1) == relations
        first, second = relations == 0, relations > 0
        accuracy = [float(right[m].float().mean()) if m.any() else 0.0 for m in (first, second)]
        return F.cross_entropy(logits, relations, ignore_index=-100), *accuracy


class PairColourHead(nn.Module):
    """Linear reads, from the last prompt token's hidden state, of the asked object's colour in the first and
    in the second image (:func:`pair_colour_labels`); trained with the LM when ``pair_colours`` is on, then
    discarded."""

    def __init__(self, width: int):
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(width, len(COLOURS)) for _ in range(2))

    def loss(self, hidden: torch.Tensor, colours: torch.Tensor) -> tuple[torch.Tensor, float]:
        """hidden (B, D), colours (B, 2) labels (-100: none) → (mean CE over the labelled images, accuracy)."""
        logits = torch.stack([head(hidden) for head in self.heads], 1).flatten(0, 1)
        labels = colours.reshape(-1)
        known = labels >= 0
        right = float((logits.argmax(-1) == labels)[known].float().mean()) if known.any() else 0.0
        return F.cross_entropy(logits, labels, reduction="sum") / known.sum().clamp(min=1), right


class AskedCellHead(nn.Module):
    """A linear read, from the last prompt token's hidden state, of the grid cell of the object a detail
    question asks about (:func:`asked_cell_label`); trained with the LM when ``asked_cells`` is on, then
    discarded."""

    def __init__(self, width: int, cells: int = len(POSITIONS)):
        super().__init__()
        self.out = nn.Linear(width, cells)

    def loss(self, hidden: torch.Tensor, cells: torch.Tensor) -> tuple[torch.Tensor, float]:
        """hidden (B, D), cells (B,) labels (-100: none) → (mean CE over the labelled documents, accuracy)."""
        logits = self.out(hidden)
        known = cells >= 0
        right = float((logits.argmax(-1) == cells)[known].float().mean()) if known.any() else 0.0
        return F.cross_entropy(logits, cells, reduction="sum") / known.sum().clamp(min=1), right


@contextlib.contextmanager
def layer_input_states(llm: LlamaForCausalLM, layer: int, select: Callable[[torch.Tensor], torch.Tensor]):
    """Yields a list that, after a forward pass, holds ``select(hidden)`` of the (B, L, D) hidden states at
    the input of decoder ``layer``."""
    captured: list[torch.Tensor] = []

    def hook(module, args, kwargs):
        captured.append(select(args[0] if args else kwargs["hidden_states"]))

    handle = llm.model.layers[layer].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield captured
    finally:
        handle.remove()


def last_prompt_states(llm: LlamaForCausalLM, labels: torch.Tensor, layer: int):
    """Yields a list that, after a forward pass, holds the (B, D) hidden states at the input of decoder
    ``layer`` of each row's last prompt token (the token before its first label: VPG-C's guidance)."""
    rows = torch.arange(labels.shape[0])
    index = (labels != -100).int().argmax(dim=1) - 1
    return layer_input_states(llm, layer, lambda hidden: hidden[rows, index])


def train_language_model(
    tokenizer,
    seed: int,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    log: Callable[[str], None] = print,
    question_summary: float = 0.0,
    summary_tasks: tuple[str, ...] = SUMMARY_TASKS,
    task_weights: dict[str, float] = LM_TASK_WEIGHTS,
    which_forms: dict[str, float] | None = None,
    layout: DocumentLayout = BUILD_LAYOUT,
    compare: float = 0.0,
    length_groups: int = 1,
    pair_colours: float = 0.0,
    asked_cells: float = 0.0,
    asked_cell_tasks: tuple[str, ...] = CELL_TASKS,
    processes: int = 1,
    llm_shape: dict[str, int] | None = None,
) -> tuple[LlamaForCausalLM, StageResult]:
    """Train the tiny LLaMA on :func:`lm_example` documents (loss on the answers).

    lr 1e-3, not world v3's 3e-3: at 3e-3 the last prompt token's hidden state at layer 3 had norm 143.5
    (13.6 at 1e-3) and the asked object's shape could not be read from it (probe 25%, majority 27%;
    at 1e-3: 65%), so VPG-C's guidance carried nothing (``benchmarks/results/vpgc_stages*.json``).

    ``question_summary`` > 0 adds, with that weight, :class:`QuestionSummaryHead`'s loss on the last prompt
    token's hidden state at the input of :data:`INJECT_LAYER`: the LM must have gathered what the question
    names by then. Trained on answers alone, the tiny LM leaves that to the object words and copies late
    (the shape is readable from the last token at ~60% at every layer, from the question's tokens at 92%);
    VPG-C's design (guidance = the last prompt token at a middle layer) assumes a large LLM's summary there.
    ``summary_tasks``: the documents whose questions the head reads (the others add no summary loss).
    ``task_weights``: how often each task's documents are drawn (the build uses :data:`LM_TASK_WEIGHTS`;
    ``benchmarks/lm_variants.py`` tries others). ``which_forms``: shares of which-image documents in easier forms
    (none in the build; see :func:`_lm_document`). ``layout``: how the documents write their images
    (:class:`DocumentLayout`; set by the build's options, :func:`~synthetic.world.build.build`).
    ``compare`` > 0 adds, with that weight, :class:`SlotRelationHead`'s loss on the slots of two-image
    documents at the input of :data:`COMPARE_LAYER` (worlds v8 to v10 use 1). ``length_groups`` > 1 runs each step's documents in that many groups of
    similar length (:meth:`SlotBatch.by_length`): the same loss up to float rounding, less padding; faster
    with one thread per process (worlds v9 and v10 use 4 with ``processes=2``;
    ``benchmarks/results/world_build_speed_length_groups.json``), slower with 2 threads in one process
    (``benchmarks/results/world_build_speed.json``); 1 (whole batches, one process) rebuilds world v8's LM
    bit for bit. ``pair_colours`` > 0 adds, with that weight, :class:`PairColourHead`'s loss on the last
    prompt token at the input of :data:`COMPARE_LAYER` (two-image question documents: the asked object's
    colour in each image), so that a which-image answer is one comparison away. ``asked_cells`` > 0 adds,
    with that weight, :class:`AskedCellHead`'s loss at the same token and layer (detail-question documents:
    the asked object's grid cell): binding the question's object to its slot, which position questions
    need and which the answer loss alone learns poorly when several objects are shown; ``asked_cell_tasks``:
    the documents it reads (:func:`asked_cell_label`).
    ``processes`` > 1 trains data-parallel (:mod:`synthetic.world.data_parallel`: each process one thread
    and ``batch_size / processes`` documents of each batch): the mean of the processes' losses, other bits
    than one process. ``llm_shape``: :func:`world_llama_config` overrides (None: the shipped shape).
    """
    options = dict(
        tokenizer=tokenizer, seed=seed, steps=steps, batch_size=batch_size, lr=lr, log=log,
        question_summary=question_summary, summary_tasks=summary_tasks, task_weights=task_weights,
        which_forms=which_forms, layout=layout, compare=compare, length_groups=length_groups,
        pair_colours=pair_colours, asked_cells=asked_cells, asked_cell_tasks=asked_cell_tasks,
        llm_shape=llm_shape,
    )  # fmt: skip
    fresh = functools.partial(LlamaForCausalLM, world_llama_config(len(tokenizer), **(llm_shape or {})))
    model, result = _run_stage(_train_language_model, processes, fresh, **options)
    return model.eval().requires_grad_(False), result


def _run_stage(
    train: Callable[..., tuple[nn.Module, StageResult]],
    processes: int,
    fresh: Callable[[], nn.Module],
    **options,
) -> tuple[nn.Module, StageResult]:
    """``train(shard, **options)`` in one process, or data-parallel in ``processes``: then process 0's
    weights are loaded into ``fresh()``."""
    if processes == 1:
        return train(ONE_PROCESS, **options)
    state, result = run_data_parallel(_stage_process, processes, train=train, **options)
    module = fresh()
    module.load_state_dict(state)
    # seconds: process 0's own, as one process counts them; starting the processes is in the build's wall time
    return module, StageResult(**result)


def _stage_process(shard: Shard, train: Callable[..., tuple[nn.Module, StageResult]], **options):
    module, result = train(shard, **options)
    return module, asdict(result)


def _train_language_model(
    shard: Shard,
    tokenizer,
    seed: int,
    steps: int,
    batch_size: int,
    lr: float,
    log: Callable[[str], None],
    question_summary: float,
    summary_tasks: tuple[str, ...],
    task_weights: dict[str, float],
    which_forms: dict[str, float] | None,
    layout: DocumentLayout,
    compare: float,
    length_groups: int,
    pair_colours: float,
    asked_cells: float,
    asked_cell_tasks: tuple[str, ...],
    llm_shape: dict[str, int] | None,
) -> tuple[LlamaForCausalLM, StageResult]:
    """:func:`train_language_model` on this ``shard``'s documents of each batch."""
    offset, count = shard.rows(batch_size)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(world_llama_config(len(tokenizer), **(llm_shape or {})))
    model.train()
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    summary = QuestionSummaryHead(model.config.hidden_size) if question_summary > 0 else None
    relation = SlotRelationHead(model.config.hidden_size) if compare > 0 else None
    colour = PairColourHead(model.config.hidden_size) if pair_colours > 0 else None
    cell = AskedCellHead(model.config.hidden_size) if asked_cells > 0 else None

    def group_forward(batch: SlotBatch, answer_tokens: int | None) -> tuple[torch.Tensor, list, list, list]:
        """Answer CE of ``batch`` summed / ``answer_tokens`` (None: the mean) and its captured states
        (summary, slots, the last prompt token at COMPARE_LAYER)."""
        mask = (batch.input_ids != tokenizer.pad_token_id).long()
        slots = batch.input_ids == image_token_id
        states, slot_states, late_states = [], [], []
        with contextlib.ExitStack() as stack:
            if summary is not None:
                states = stack.enter_context(last_prompt_states(model, batch.labels, INJECT_LAYER))
            if colour is not None or cell is not None:
                late_states = stack.enter_context(last_prompt_states(model, batch.labels, COMPARE_LAYER))
            if relation is not None:
                slot_states = stack.enter_context(
                    layer_input_states(model, COMPARE_LAYER, lambda h: h[slots])
                )
            embeds = stack.enter_context(slot_injection(model, batch, image_token_id))
            loss = model(
                inputs_embeds=embeds,
                attention_mask=mask,
                labels=batch.labels,
                num_items_in_batch=answer_tokens,
            ).loss
        return loss, states, slot_states, late_states

    def step_loss(step: int) -> tuple[torch.Tensor, str]:
        batch = lm_batch(
            tokenizer, seed, step * batch_size + offset, count, summary_tasks, task_weights, which_forms,
            layout, asked_cell_tasks,
        )  # fmt: skip
        groups, answer_tokens = [batch], None  # whole: HF's mean, as the shipped build computed it
        if length_groups > 1:  # the same mean over all the batch's answer tokens (HF shifts labels by one)
            groups = batch.by_length(length_groups, image_token_id, tokenizer.pad_token_id)
            answer_tokens = int((batch.labels[:, 1:] != -100).sum())
        runs = [group_forward(g, answer_tokens) for g in groups]
        loss = sum(r[0] for r in runs)
        note = ""
        if summary is not None:
            aux = summary.loss(torch.cat([r[1][0] for r in runs]), torch.cat([g.asked for g in groups]))
            loss, note = loss + question_summary * aux, f" summary {aux.item():.3f}"
        if relation is not None:  # the slots in the order slot_injection fills them: the relations' order
            aux, first, second = relation.loss(
                torch.cat([r[2][0] for r in runs]), torch.cat([g.relations.reshape(-1) for g in groups])
            )
            loss = loss + compare * aux
            note += f" compare {aux.item():.3f} first {first:.2f} second {second:.2f}"
        if colour is not None:
            aux, right = colour.loss(
                torch.cat([r[3][0] for r in runs]), torch.cat([g.colours for g in groups])
            )
            loss = loss + pair_colours * aux
            note += f" colours {aux.item():.3f} right {right:.2f}"
        if cell is not None:
            aux, right = cell.loss(torch.cat([r[3][0] for r in runs]), torch.cat([g.cells for g in groups]))
            loss = loss + asked_cells * aux
            note += f" cells {aux.item():.3f} right {right:.2f}"
        return loss, note

    heads = [h for h in (summary, relation, colour, cell) if h is not None]
    params = list(model.parameters()) + [p for h in heads for p in h.parameters()]
    result = _optimise(
        "lm", params, steps, step_loss, log, shard, lr=lr, weight_decay=0.01, betas=(0.9, 0.98)
    )
    model.eval().requires_grad_(False)
    return model, result


# ------------------------------------------------------------------------------------------ vision


def _pixels(scenes: list[Scene], processor: ImageProcessor) -> torch.Tensor:
    """(N, 3, S, S) normalised pixels, exactly as vpgkit's ImageProcessor prepares them."""
    return processor([[render(s)[0]] for s in scenes])[:, 0]


def cell_pooling(image_size: int, patch_size: int) -> torch.Tensor:
    """(9, grid²) weights averaging the patch tokens whose centres lie in each 3×3 grid cell (row-major)."""
    grid = image_size // patch_size
    centres = (torch.arange(grid) + 0.5) * patch_size
    cell = (centres * 3 / image_size).long().clamp(max=2)  # (grid,) cell row/column of each patch row/column
    member = (cell[:, None] * 3 + cell[None, :]).reshape(-1)  # (grid²,) cell of each patch
    pool = (member[None, :] == torch.arange(9)[:, None]).float()
    return pool / pool.sum(1, keepdim=True)


class CellHead(nn.Module):
    """Per-cell attribute classifier over ViT tokens (the ViT's training partner; not shipped).

    Each of the 9 grid cells pools the patch tokens whose centres lie inside it (a fixed average), so the
    ViT must keep every object's attributes in the tokens where the object is — where a Q-Former's
    cross-attention can find them. A small MLP reads presence (2), colour, shape and size logits.
    """

    def __init__(self, width: int, image_size: int, patch_size: int):
        super().__init__()
        self.register_buffer("pool", cell_pooling(image_size, patch_size), persistent=False)  # (9, grid²)
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU())
        self.out = nn.Linear(2 * width, 2 + len(COLOURS) + len(SHAPES) + len(SIZES))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, 1 + grid², D) tokens (CLS first) → (N, 9, 2 + colours + shapes + sizes) logits."""
        return self.out(self.mlp(self.norm(self.pool @ tokens[:, 1:])))


def cell_labels(scenes: list[Scene]) -> torch.Tensor:
    """(N, 9, 4) long: presence, colour, shape, size index per cell (-100 where a cell is empty)."""
    labels = torch.full((len(scenes), 9, 4), -100, dtype=torch.long)
    labels[..., 0] = 0
    colours, sizes = list(COLOURS), list(SIZES)
    for n, scene in enumerate(scenes):
        for o in scene.objects:
            labels[n, o.cell] = torch.tensor(
                [1, colours.index(o.colour), SHAPES.index(o.shape), sizes.index(o.size)]
            )
    return labels


class TokenHead(nn.Module):
    """Per-patch attribute classifier (the ViT's second training partner; not shipped).

    A *linear* read of each patch token: the colour, shape, size and grid cell of the object covering the
    patch most. Without it the cell-averaged head lets the ViT spread an object over its cell's tokens in a
    form only that head decodes; a free cross-attention reader then found the asked small object's colour
    at 53% and its position at 15% (``benchmarks/vpgc_stages.py``), so no guided query could either.
    """

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, len(COLOURS) + len(SHAPES) + len(SIZES) + 9)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, 1 + grid², D) tokens (CLS first) → (N, grid², colours + shapes + sizes + 9) logits."""
        return self.out(self.norm(tokens[:, 1:]))


def token_labels(scenes: list[Scene], patch_size: int) -> torch.Tensor:
    """(N, grid², 4) long: colour, shape, size, cell of the object overlapping each patch most (-100: none)."""
    colours, sizes = list(COLOURS), list(SIZES)
    grid = scenes[0].size // patch_size
    edges = np.arange(grid + 1) * patch_size
    labels = torch.full((len(scenes), grid * grid, 4), -100, dtype=torch.long)
    for n, scene in enumerate(scenes):
        boxes = np.array([o.box for o in scene.objects])  # (K, 4) x0, y0, x1, y1
        wx = np.clip(
            np.minimum(boxes[:, 2:3], edges[None, 1:]) - np.maximum(boxes[:, 0:1], edges[None, :-1]), 0, None
        )
        wy = np.clip(
            np.minimum(boxes[:, 3:4], edges[None, 1:]) - np.maximum(boxes[:, 1:2], edges[None, :-1]), 0, None
        )
        overlap = (wy[:, :, None] * wx[:, None, :]).reshape(len(boxes), -1)  # (K, grid²), row-major patches
        best = overlap.argmax(0)
        attrs = torch.tensor(
            [
                [colours.index(o.colour), SHAPES.index(o.shape), sizes.index(o.size), o.cell]
                for o in scene.objects
            ]
        )
        covered = torch.from_numpy(overlap.max(0) > 0)
        labels[n, covered] = attrs[torch.from_numpy(best)][covered]
    return labels  # fmt: skip


def attribute_loss(
    logits: torch.Tensor, labels: torch.Tensor, classes: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropies of consecutive attribute blocks of ``logits`` (sizes ``classes``) against the
    (..., len(classes)) ``labels`` (-100: none); and the (len(classes),) accuracies where labelled."""
    edges = np.cumsum([0, *classes])
    losses, accs = [], []
    for j in range(len(classes)):
        part = logits[..., edges[j] : edges[j + 1]].reshape(-1, edges[j + 1] - edges[j])
        target = labels[..., j].reshape(-1)
        losses.append(F.cross_entropy(part, target, ignore_index=-100))
        keep = target != -100
        accs.append((part.argmax(-1)[keep] == target[keep]).float().mean())
    return sum(losses), torch.stack(accs).detach()


def cell_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropies of presence, colour, shape and size; and (4,) accuracies on present cells."""
    return attribute_loss(logits, labels, [2, len(COLOURS), len(SHAPES), len(SIZES)])


def train_vision_encoder(
    seed: int,
    steps: int,
    batch_size: int = 64,
    lr: float = 2e-3,
    log: Callable[[str], None] = print,
    processes: int = 1,
) -> tuple[TimmEvaEncoder, StageResult]:
    """Supervised training of the ``tiny_world`` EVA: every object's colour, shape and size per grid cell
    (:class:`CellHead`) and per patch it covers (:class:`TokenHead`). ``processes`` > 1: data-parallel,
    as :func:`train_language_model`."""
    fresh = functools.partial(TimmEvaEncoder, EvaVisionConfig.preset("tiny_world"))
    options = dict(seed=seed, steps=steps, batch_size=batch_size, lr=lr, log=log)
    vit, result = _run_stage(_train_vision_encoder, processes, fresh, **options)
    vit._freeze()
    return vit, result


def _train_vision_encoder(
    shard: Shard, seed: int, steps: int, batch_size: int, lr: float, log: Callable[[str], None]
) -> tuple[TimmEvaEncoder, StageResult]:
    offset, count = shard.rows(batch_size)
    torch.manual_seed(seed)
    config = EvaVisionConfig.preset("tiny_world")
    vit = TimmEvaEncoder(config)
    vit.requires_grad_(True)
    head = CellHead(config.width, config.image_size, config.patch_size)
    token_head = TokenHead(config.width)
    token_classes = [len(COLOURS), len(SHAPES), len(SIZES), 9]
    processor = ImageProcessor(size=config.image_size)

    def step_loss(step: int) -> tuple[torch.Tensor, str]:
        scenes = [_scene(seed, VIT_STREAM, step * batch_size + b) for b in range(offset, offset + count)]
        tokens = vit.encode_images(_pixels(scenes, processor))
        loss, accs = cell_loss(head(tokens), cell_labels(scenes))
        token_loss, token_accs = attribute_loss(
            token_head(tokens), token_labels(scenes, config.patch_size), token_classes
        )
        return loss + token_loss, (
            " cell acc presence/colour/shape/size " + "/".join(f"{a:.2f}" for a in accs.tolist())
            + " token acc colour/shape/size/cell " + "/".join(f"{a:.2f}" for a in token_accs.tolist())
        )  # fmt: skip

    params = [*vit.parameters(), *head.parameters(), *token_head.parameters()]
    result = _optimise(
        "vit", params, steps, step_loss, log, shard, lr=lr, weight_decay=0.05, betas=(0.9, 0.98)
    )
    return vit, result


@torch.no_grad()
def encode_scenes(vit: TimmEvaEncoder, scenes: list[Scene], batch: int = 256) -> torch.Tensor:
    """(N, 1, N_v, D_v) frozen features of ``scenes``."""
    processor = ImageProcessor(size=vit.image_size)
    out = [vit(_pixels(scenes[i : i + batch], processor)[:, None]) for i in range(0, len(scenes), batch)]
    return torch.cat(out)


# ----------------------------------------------------------------------------------------- Q-Former


def grounding_phrase(scene: Scene, obj: WorldObject, rng: np.random.Generator) -> str:
    """A noun phrase naming ``obj`` the way the world's questions do: size + shape and a random choice of
    colour and position, with position added when the phrase would fit another object of ``scene`` too."""
    colour, where = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
    matches = [o for o in scene.objects if o.shape == obj.shape and o.size == obj.size
               and (not colour or o.colour == obj.colour)]  # fmt: skip
    return noun_phrase(obj, colour=colour, where=where or len(matches) > 1)


def phrase_vectors(embed: nn.Embedding, tokenizer, phrases: list[str]) -> torch.Tensor:
    """(B, D_llm) mean of the LM's input embeddings of each phrase's tokens (frozen: no gradient)."""
    with torch.no_grad():
        return torch.stack([embed(torch.tensor(tokenizer.encode(p, add_special_tokens=False))).mean(0)
                            for p in phrases])  # fmt: skip


def object_targets(obj: WorldObject) -> torch.Tensor:
    """(4,) class of ``obj``'s cell, colour, shape and size (the grounding head's four groups)."""
    return torch.tensor(
        [obj.cell, list(COLOURS).index(obj.colour), SHAPES.index(obj.shape), list(SIZES).index(obj.size)]
    )


class GroundingHead(nn.Module):
    """Stage-1 stand-in (discarded after the build): a phrase vector conditions the queries, additively, and
    the mean query output must give the named object's cell, colour, shape and size.

    BLIP-2's stage 1 lets text into the queries through shared self-attention (ITM), so a pre-trained
    Q-Former's query outputs depend on the text; here the text enters the way VPG-C's guidance does.
    """

    GROUPS = (9, len(COLOURS), len(SHAPES), len(SIZES))

    def __init__(self, llm_width: int, width: int):
        super().__init__()
        self.condition = nn.Linear(llm_width, width)
        self.head = nn.Linear(width, sum(self.GROUPS))

    def loss(self, qformer: QFormer, phrases: torch.Tensor, vision: torch.Tensor, targets: torch.Tensor):
        """phrases (B, D_llm), vision (B, N_v, D_v), targets (B, 4) → (mean cross-entropy, accuracy per group)."""
        queries = qformer.query_tokens + self.condition(phrases)[:, None]
        logits = self.head(qformer.encode(queries, vision).mean(1)).split(self.GROUPS, dim=-1)
        losses = [F.cross_entropy(lg, targets[:, g]) for g, lg in enumerate(logits)]
        accuracy = [float((lg.argmax(-1) == targets[:, g]).float().mean()) for g, lg in enumerate(logits)]
        return torch.stack(losses).mean(), accuracy


def check_grounding_weight(grounding: bool, weight: float) -> None:
    """Refuse a grounding-loss weight that is not positive, or that is set while grounding is off."""
    if weight <= 0:
        raise ValueError(f"grounding_weight must be > 0, got {weight:g}")
    if weight != 1.0 and not grounding:
        raise ValueError(
            f"grounding_weight={weight:g} weights a loss that is off: it needs grounding (--qformer-grounding)"
        )


def train_qformer(
    vit: TimmEvaEncoder,
    llm: LlamaForCausalLM,
    tokenizer,
    seed: int,
    steps: int,
    batch_size: int = 32,
    num_images: int = 2048,
    lr: float = 1e-3,
    log: Callable[[str], None] = print,
    grounding: bool = False,
    grounding_weight: float = 1.0,
    processes: int = 1,
) -> tuple[QFormer, StageResult]:
    """BLIP-2 stage 2 on salient captions: frozen ViT and LM, the whole Q-Former + projection trained.

    With ``grounding``, each step also trains :class:`GroundingHead`'s objective on the same scenes (one
    random object named per scene): the stand-in for BLIP-2's stage 1, which is what makes a real
    Q-Former's queries follow text — and so lets VPG-C steer the frozen Q-Former at all.
    ``grounding_weight`` scales that loss against the caption loss (4 since world v7: at 1, VPG-C's parts
    read position through the frozen Q-Former at ~45–53% even with oracle guidance, at 4 at ~63–70%).
    ``processes`` > 1: data-parallel, as :func:`train_language_model`.
    """
    check_grounding_weight(grounding, grounding_weight)
    fresh = functools.partial(QFormer, QFormerConfig.preset("tiny_world"))
    options = dict(
        vit=vit, llm=llm, tokenizer=tokenizer, seed=seed, steps=steps, batch_size=batch_size,
        num_images=num_images, lr=lr, log=log, grounding=grounding, grounding_weight=grounding_weight,
    )  # fmt: skip
    qformer, result = _run_stage(_train_qformer, processes, fresh, **options)
    return qformer.eval().requires_grad_(False), result


def _train_qformer(
    shard: Shard,
    vit: TimmEvaEncoder,
    llm: LlamaForCausalLM,
    tokenizer,
    seed: int,
    steps: int,
    batch_size: int,
    num_images: int,
    lr: float,
    log: Callable[[str], None],
    grounding: bool,
    grounding_weight: float,
) -> tuple[QFormer, StageResult]:
    offset, count = shard.rows(batch_size)
    mine = slice(offset, offset + count)
    torch.manual_seed(seed)
    qformer = QFormer(QFormerConfig.preset("tiny_world"))
    head = GroundingHead(llm.config.hidden_size, qformer.config.hidden_size) if grounding else None
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    model = VisionLanguageModel(llm, image_token_id=image_token_id, vpg=qformer, train_vpg_projection=True)
    qformer.requires_grad_(True)  # the whole Q-Former learns in this stage, not only the projection
    model.train()
    scenes = [_scene(seed, QFORMER_STREAM, i) for i in range(num_images)]
    features = encode_scenes(vit, scenes)
    st = SampleTokenizer(tokenizer, "vicuna_v0", system=WORLD_SYSTEM, image_token_id=image_token_id, slots_policy="query_tokens",
                         num_queries=qformer.config.num_queries, max_length=256)  # fmt: skip
    collate = Collator(tokenizer.pad_token_id, vit.image_size)
    params = [p for p in model.parameters() if p.requires_grad] + (list(head.parameters()) if head else [])
    embed = llm.get_input_embeddings()

    def step_loss(step: int) -> tuple[torch.Tensor, str]:
        rng = np.random.default_rng([seed, QFORMER_STREAM, step])
        # the whole batch's random draws in their order, so that every shard sees the same batch
        idx = rng.integers(num_images, size=batch_size)
        turns = []
        for i in idx:
            instruction = TRAIN_WORDING.caption[int(rng.integers(len(TRAIN_WORDING.caption)))]
            caption = salient_caption(scenes[i], rng)
            turns.append([Turn("user", f"<image> {instruction}"), Turn("assistant", caption)])
        items = []
        for i, sample_turns in zip(idx[mine], turns[mine], strict=True):
            items.append(st(Sample(f"q{i}", [None], sample_turns)) | {"vision_features": features[i]})
        batch = collate(items)
        out = model(batch["input_ids"], batch["attention_mask"], batch["labels"],
                    vision_features=batch["vision_features"], loss_only=True)  # fmt: skip
        if head is None:
            return out.loss, ""
        named = [scenes[i].objects[int(rng.integers(len(scenes[i].objects)))] for i in idx]
        texts = [grounding_phrase(scenes[i], o, rng) for i, o in zip(idx, named, strict=True)]
        phrases = phrase_vectors(embed, tokenizer, texts[mine])
        targets = torch.stack([object_targets(o) for o in named[mine]])
        loss, accuracy = head.loss(qformer, phrases, features[idx[mine], 0], targets)
        return out.loss + grounding_weight * loss, " grounding " + "/".join(
            f"{100 * a:.0f}" for a in accuracy
        )

    result = _optimise("qformer", params, steps, step_loss, log, shard, lr=lr, weight_decay=0.05)
    model.remove_hooks()
    return qformer, result
