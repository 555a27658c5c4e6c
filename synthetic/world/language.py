"""The tiny world's language: web-style captions, full descriptions, questions, and a closed vocabulary.

* :func:`salient_caption` mentions only the salient (large/medium) objects, like a web alt-text: the
  small objects' colours and positions never appear in it.
* :func:`full_description` mentions every object with its size, colour, shape and position.
* :func:`detail_question` asks about a small object (its colour or its position) with a choice list.
* Instruction wordings come in two disjoint sets: :data:`TRAIN_WORDING` (captions data, the language
  model's corpus) and :data:`EVAL_WORDING` (mini-DEMON only), so no evaluation instruction is ever seen
  in training.
* :func:`world_corpus` is every word any of these (and the synthetic pipeline's tasks and difference
  captions, and vpgkit's prompt templates) can produce; :func:`build_world_tokenizer` makes the
  word-level tokenizer over it, so generated text never hits ``<unk>``.

Example:
    >>> import numpy as np
    >>> from synthetic.world.scene import make_scene
    >>> scene = make_scene(0, 0)
    >>> caption = salient_caption(scene, np.random.default_rng(0))
    >>> all(f"{o.colour} {o.shape}" not in caption for o in scene.details)
    True
    >>> text = full_description(scene, np.random.default_rng(0))
    >>> all(f"{o.colour} {o.shape}" in text for o in scene.objects)
    True
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from vpgkit.data.templates import VICUNA_V0_SYSTEM
from vpgkit.data.tiny_tokenizer import TINY_SPECIAL_TOKENS, build_tiny_tokenizer

from ..discriminative.captions import HUE_NAMES, TEMPLATES, located
from ..discriminative.tasks import NO_DIFFERENCE, ORDINAL, QUESTIONS
from .scene import COLOURS, POSITIONS, SHAPES, SIZES, Scene, WorldObject

__all__ = [
    "EVAL_WORDING",
    "NO_CHANGE",
    "NUMBERS",
    "ORDINALS",
    "PARAPHRASE_WORDING",
    "TRAIN_WORDING",
    "Wording",
    "article",
    "build_world_tokenizer",
    "choice_suffix",
    "detail_question",
    "full_description",
    "noun_phrase",
    "salient_caption",
    "unknown_words",
    "world_corpus",
]

NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# The difference task's answer when the named region did not change ({where}: "in the top left").
NO_CHANGE = "Nothing changed {where}."
ORDINALS = ("first", "second", "third")


def article(word: str) -> str:
    """'a' or 'an' for the word that follows."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def noun_phrase(obj: WorldObject, size: bool = True, colour: bool = True, where: bool = True) -> str:
    """'large red circle on the left' (parts optional; no article)."""
    words = [obj.size if size else "", obj.colour if colour else "", obj.shape]
    text = " ".join(w for w in words if w)
    return f"{text} {located(obj.position)}" if where else text


def _with_article(phrase: str) -> str:
    return f"{article(phrase)} {phrase}"


def _join(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


# --------------------------------------------------------------------------------------------- captions

SALIENT_ONE = (
    "{a}.",
    "A photo of {a}.",
    "There is {a}.",
    "{a} on a dark background.",
    "A picture of {a_short}.",
)
SALIENT_TWO = (
    "{a} and {b}.",
    "A photo of {a} and {b}.",
    "There is {a} and {b}.",
    "A picture of {a_short} and {b_short}.",
    "{a} next to {b}.",
)


def salient_caption(scene: Scene, rng: np.random.Generator) -> str:
    """A short caption naming only the salient objects (never a small object, never the word 'small')."""
    big = list(scene.salient)
    rng.shuffle(big)
    full = [
        _with_article(noun_phrase(o, size=bool(rng.random() < 0.6), where=bool(rng.random() < 0.7)))
        for o in big
    ]
    short = [_with_article(noun_phrase(o, size=False, where=False)) for o in big]
    templates = SALIENT_ONE if len(big) == 1 else SALIENT_TWO
    fields = {"a": full[0], "a_short": short[0]}
    if len(big) > 1:
        fields.update(b=full[1], b_short=short[1])
    return _cap(templates[int(rng.integers(len(templates)))].format(**fields))


DESCRIPTION_TEMPLATES = (
    "There are {n} objects: {list}.",
    "The image shows {list}.",
    "{n_cap} objects on a dark background: {list}.",
    "In the image there is {list}.",
)


def full_description(scene: Scene, rng: np.random.Generator) -> str:
    """Every object with size, colour, shape and position; order and template vary with ``rng``."""
    objects = list(scene.objects)
    if rng.random() < 0.5:
        objects.sort(key=lambda o: (o.salient is False, o.cell))  # salient first
    else:
        objects.sort(key=lambda o: o.cell)  # reading order
    items = [_with_article(noun_phrase(o)) for o in objects]
    n = NUMBERS[len(objects)]
    template = DESCRIPTION_TEMPLATES[int(rng.integers(len(DESCRIPTION_TEMPLATES)))]
    return _cap(template.format(n=n, n_cap=_cap(n), list=_join(items)))


# ----------------------------------------------------------------------------------------- wordings


@dataclass(frozen=True)
class Wording:
    """Instruction and question wordings of one split (training or evaluation).

    Attributes:
        caption: instructions asking for a brief caption.
        detail: instructions asking for a full description (language-model corpus only).
        difference: instructions of the difference task (two images).
        difference_q: its question naming a region ({position}).
        which: instructions for "which image shows X" (a choice list follows).
        question: instructions for questions about small details (a choice list follows).
        cloze: instructions for multi-image cloze (a choice list follows).
        colour_q, position_q: question templates about one object ({object} is filled in).
        which_q: question template of the which-image task ({object}).
        cloze_line: the sentence said about each image of a cloze ({object_no_colour}, {where}, {colour}).
    """

    caption: tuple[str, ...]
    detail: tuple[str, ...]
    difference: tuple[str, ...]
    difference_q: tuple[str, ...]
    which: tuple[str, ...]
    question: tuple[str, ...]
    cloze: tuple[str, ...]
    colour_q: tuple[str, ...]
    position_q: tuple[str, ...]
    which_q: tuple[str, ...]
    cloze_line: tuple[str, ...]

    def instructions(self) -> set[str]:
        """Every instruction and question template of this wording."""
        return {t for name in self.__dataclass_fields__ for t in getattr(self, name)}


TRAIN_WORDING = Wording(
    caption=(
        "Describe the image briefly.",
        "Write a short caption for the image.",
        "What is in the picture?",
    ),
    detail=(
        "Describe the image in detail.",
        "List every object in the image.",
        "What objects are in the image?",
    ),
    difference=("Compare the two images.", "Look at both images."),
    difference_q=(
        "What changed in the {position} of the image?",
        "What is different in the {position} of the second image?",
    ),
    which=("Which image is it?", "Answer with the image that fits."),
    question=("Answer the question.", "Answer with one word from the list."),
    cloze=("Fill in the blank.", "What word goes in the blank?"),
    colour_q=(
        "What colour is the {object}?",
        "Which colour does the {object} have?",
        "The {object} is which colour?",
    ),
    position_q=(
        "Where is the {object}?",
        "Where in the image is the {object}?",
        "In which part of the image is the {object}?",
    ),
    which_q=("Which image has {object}?", "In which image is there {object}?"),
    cloze_line=("The {object} {where} is {colour}.", "In this image the {object} {where} is {colour}."),
)

EVAL_WORDING = Wording(
    caption=("Give a one sentence summary of this picture.", "Summarize the picture in a few words."),
    detail=("Tell me everything you can see in the picture.",),
    difference=("Compare the two pictures.", "Look closely at both pictures."),
    difference_q=(
        "Tell me what was changed in the {position} part of the second picture.",
        "What is not the same in the {position} of the pictures?",
    ),
    which=("Pick the picture that matches the description.", "Find the picture that fits the question."),
    question=(
        "Look closely at the picture and answer the question.",
        "Answer the question about the small objects in the picture.",
    ),
    cloze=("Choose the word that completes the last sentence.", "Complete the story with the right word."),
    colour_q=("What is the colour of the {object}?", "Tell me the colour of the {object}."),
    position_q=("In what part of the picture is the {object}?", "Where can you see the {object}?"),
    which_q=("Which picture shows {object}?", "In which picture can you find {object}?"),
    cloze_line=("Here the {object} {where} is {colour}.", "Now the {object} {where} is {colour}."),
)


# More ways to ask the synthetic tasks, for the adapter's data (``make_default_data(paraphrase=...)``) and,
# with ``--lm-paraphrase``, the LM's documents (half of them in world v10's build; none up to world v9).
# Written with the evaluation wording in view, so held to rules that keep that wording held out (tested):
# no sentence of it, and no word or word pair of it that the LM's corpus lacks; every word is the tokenizer's.
# The fields no synthetic task asks with are the training wording's.
PARAPHRASE_WORDING = Wording(
    caption=TRAIN_WORDING.caption,
    detail=TRAIN_WORDING.detail,
    difference=("Look at the two images.", "Compare both images."),
    difference_q=(
        "What is different in the {position} of the image?",
        "In the {position} of the second image, what changed?",
    ),
    which=("Which of the two images is it?", "Answer with the image that has it."),
    question=("Answer with a word from the list.", "Look at the image. Answer the question."),
    cloze=TRAIN_WORDING.cloze,
    colour_q=(
        "Which colour is the {object}?",
        "What colour does the {object} have?",
        "The {object} has which colour?",
    ),
    position_q=(
        "Which part of the image has the {object}?",
        "Where is the {object} in the image?",
        "The {object} is in which part of the image?",
    ),
    which_q=("There is {object} in which image?", "In which of the two images is there {object}?"),
    cloze_line=TRAIN_WORDING.cloze_line,
)


def unknown_words(wording: Wording, rate: float, rng: np.random.Generator) -> Wording:
    """``wording`` with each word of its templates (not the ``{fields}``, not punctuation) replaced by the
    tokenizer's ``<unk>`` with probability ``rate``: word dropout, so that an adapter trained on it learns to
    answer questions with words it does not know (the evaluation wording has words the LM never read).

    Example:
        >>> w = unknown_words(TRAIN_WORDING, 1.0, np.random.default_rng(0))
        >>> w.position_q[0]
        '<unk> <unk> <unk> {object}?'
    """

    def noisy(template: str) -> str:
        return re.sub(
            r"(?<!{)\b[A-Za-z]+\b(?![^{]*})", lambda m: "<unk>" if rng.random() < rate else m[0], template
        )

    return Wording(
        **{name: tuple(noisy(t) for t in getattr(wording, name)) for name in wording.__dataclass_fields__}
    )


def choice_suffix(choices: list[str]) -> str:
    """The choice-list suffix :func:`vpgkit.data.readers.read_demon` appends (kept identical here)."""
    return "Choice list:[" + ", ".join(repr(str(c)) for c in choices) + "]. Your answer is:"


@dataclass(frozen=True)
class Question:
    """A question about one image, its options (the answer among them) and the answer."""

    text: str
    choices: list[str]
    answer: str
    kind: str
    target: WorldObject


def _options(answer: str, pool: list[str], rng: np.random.Generator, k: int = 4) -> list[str]:
    others = [p for p in pool if p != answer]
    picked = [others[i] for i in rng.permutation(len(others))[: k - 1]]
    options = [answer, *picked]
    return [options[i] for i in rng.permutation(len(options))]


def detail_question(
    scene: Scene, rng: np.random.Generator, wording: Wording, target: WorldObject | None = None
) -> Question:
    """A colour or position question about ``target`` (default: a random small object), 4 options."""
    details = list(scene.details) or list(scene.objects)
    obj = target if target is not None else details[int(rng.integers(len(details)))]
    if rng.random() < 0.5:
        same_shape = [o for o in scene.objects if o.shape == obj.shape and o.size == obj.size]
        where = len(same_shape) > 1  # "the small square" must name one object
        phrase = noun_phrase(obj, colour=False, where=where)
        template = wording.colour_q[int(rng.integers(len(wording.colour_q)))]
        return Question(
            template.format(object=phrase),
            _options(obj.colour, list(COLOURS), rng),
            obj.colour,
            "colour",
            obj,
        )
    phrase = noun_phrase(obj, where=False)
    template = wording.position_q[int(rng.integers(len(wording.position_q)))]
    return Question(
        template.format(object=phrase),
        _options(obj.position, list(POSITIONS), rng),
        obj.position,
        "position",
        obj,
    )


# ------------------------------------------------------------------------------------------- corpus


def world_corpus() -> str:
    """All text the world, its tasks, the synthetic pipeline and vpgkit's templates can produce."""
    parts = [
        VICUNA_V0_SYSTEM,
        "###Human: ###Assistant: [INST] [/INST] <<SYS>> <</SYS>> User: GPT: <answer> Answer: Question:",
        choice_suffix(["a", "b"]),
        " ".join(COLOURS),
        " ".join(SHAPES),
        " ".join(SIZES),
        " ".join(POSITIONS),
        " ".join(NUMBERS),
        " ".join(_cap(n) for n in NUMBERS),
        " ".join(ORDINALS),
        " ".join(ORDINAL),
        " ".join(n for _, n in HUE_NAMES),
        "black white gray brown orange cyan pink region object",
        " ".join(located(p) for p in POSITIONS),
        "A An a an The the",
        *SALIENT_ONE,
        *SALIENT_TWO,
        *DESCRIPTION_TEMPLATES,
        *(t for v in TEMPLATES.values() for t in v),
        *(t for v in QUESTIONS.values() for t in v),
        *(t for v in NO_DIFFERENCE.values() for t in v),
        NO_CHANGE,
        "Yes. The first image was edited. Compared with the second one: The second image was edited. "
        "Compared with the first one:",
        *sorted(TRAIN_WORDING.instructions()),  # sorted: token ids must not depend on hash order
        *sorted(EVAL_WORDING.instructions()),
        "Image 0 1 2 3 4 5 6 7 8 9 ___ _ ' \" , . ? ! : ; ( ) [ ] { } # - / * +",
    ]
    return "\n".join(parts)


def corpus_words(text: str | None = None) -> list[str]:
    """The corpus split the way the tokenizer splits (words and single punctuation characters)."""
    return re.findall(r"\w+|[^\w\s]", world_corpus() if text is None else text)


def build_world_tokenizer():
    """The world's word-level ``PreTrainedTokenizerFast``: vpgkit's special tokens, then every corpus word.

    Ids 0–8 are :data:`vpgkit.data.tiny_tokenizer.TINY_SPECIAL_TOKENS` (``<image>`` = 3). Its size is
    ``len(tokenizer)`` (a few hundred).

    Example:
        >>> tok = build_world_tokenizer()
        >>> tok.unk_token_id in tok("A small cyan diamond has been added at the top.")["input_ids"]
        False
    """
    words = corpus_words()
    vocab_size = len(TINY_SPECIAL_TOKENS) + len(dict.fromkeys(words))
    return build_tiny_tokenizer(" ".join(words), vocab_size=vocab_size)
