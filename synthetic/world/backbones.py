"""Train the tiny world's frozen backbones: an EVA ViT (CLIP-style), a tiny LLaMA, and a BLIP-2 Q-Former.

Three stages, each a function of (seed, steps) on scenes generated on the fly:

1. :func:`train_language_model` — a ``LlamaForCausalLM`` learns the world's text: chat-formatted task
   instances (:mod:`synthetic.world.tasks`, training wordings only) in which every image sits between
   ``<Img>`` and ``</Img>``, so the LM learns to caption, describe, answer detail questions, pick images,
   fill cloze blanks and state differences *from what sits between the image tags*. In half of the
   documents an image is its full description in words; in the other half it is
   :data:`NUM_SLOTS` *object slots* at ``<image>`` positions, one per object in reading order, each the
   mean of the LM's own embeddings of that object's words (``small red square top left``), empty slots
   zero. Why: a 4-layer LM trained on words alone read soft prompts poorly (with such a build, VPG-C at
   k = 1 trained directly on full descriptions got colour and shape right for 6% of small objects in
   its descriptions). With exact slots this LM answers 75% of held-out detail questions (57% from words);
   writing the slots from pixels is still the Q-Former's job.
2. :func:`train_vision_encoder` — a :class:`~vpgkit.backbones.TimmEvaEncoder` (``tiny_world`` preset) is
   trained contrastively (symmetric InfoNCE) against a small text encoder on FULL descriptions. Every
   batch holds each scene next to an edited twin that differs in one small object, so the features must
   carry small-object colours and positions.
3. :func:`train_qformer` — the BLIP-2 second stage: frozen ViT, frozen LM; a Q-Former + projection
   (``tiny_world`` preset, the whole Q-Former trainable) learns from SALIENT captions only, with the LM
   loss through :class:`vpgkit.VisionLanguageModel`. It therefore learns to pass on what captions talk
   about, not the details.

:mod:`synthetic.world.build` runs the three and writes the shipped files.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from vpgkit.backbones import EvaVisionConfig, ImageProcessor, TimmEvaEncoder
from vpgkit.backbones.language import tiny_llama_config
from vpgkit.data import Sample, Turn
from vpgkit.data.collation import Collator
from vpgkit.data.templates import VICUNA_V0_SYSTEM, get_template
from vpgkit.data.tokenize import SampleTokenizer
from vpgkit.model import VisionLanguageModel
from vpgkit.modules import QFormer, QFormerConfig

from .edits import edit_scene
from .language import TRAIN_WORDING, full_description, salient_caption
from .scene import SHAPES, Scene, WorldObject, make_scene, render
from .tasks import TASK_BUILDERS, detail_description_task, render_text

__all__ = [
    "LM_TASK_WEIGHTS",
    "StageResult",
    "encode_scenes",
    "lm_batch",
    "lm_document",
    "lm_example",
    "object_slot_words",
    "slot_inputs_embeds",
    "slot_word_ids",
    "train_language_model",
    "train_qformer",
    "train_vision_encoder",
    "world_llama_config",
]

# Seed streams: scenes of each stage never coincide with another stage's or with mini-DEMON's.
LM_STREAM, VIT_STREAM, QFORMER_STREAM = 101, 102, 103
NUM_SLOTS = 8  # object slots per image in the LM's slot documents = the tiny-world Q-Former's queries
SLOT_SHARE = 0.5  # share of LM documents whose images are object slots instead of words
LM_TASK_WEIGHTS = {
    "caption": 0.2,
    "detail_description": 0.2,
    "detail_question": 0.2,
    "difference": 0.2,
    "which_image": 0.1,
    "cloze": 0.1,
}


@dataclass
class StageResult:
    """What a training stage reports for the manifest."""

    steps: int
    final_loss: float
    seconds: float
    losses: list[float]


def world_llama_config(vocab_size: int) -> LlamaConfig:
    """The shipped tiny LLaMA: vpgkit's 4-layer tiny LLaMA at 128 wide (D_llm = 128), 512 positions."""
    return tiny_llama_config(
        vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_key_value_heads=4,
        max_position_embeddings=512,
        initializer_range=0.05,
    )


def _optimise(
    name: str,
    params: list[nn.Parameter],
    steps: int,
    step_loss: Callable[[int], tuple[torch.Tensor, str]],
    log: Callable[[str], None],
    **adamw,
) -> StageResult:
    """AdamW + warmup/cosine, clipping at 1.0; ``step_loss(step)`` returns (loss, extra log text)."""
    opt = torch.optim.AdamW(params, **adamw)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _cosine(s, steps, max(1, steps // 20)))
    losses, start = [], time.perf_counter()
    for step in range(steps):
        loss, note = step_loss(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 50 == 0 or step == steps - 1:
            log(f"[{name}] step {step + 1}/{steps} loss {np.mean(losses[-50:]):.4f}{note}")
    return StageResult(steps, float(np.mean(losses[-20:])), time.perf_counter() - start, losses)


def _cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _scene(seed: int, stream: int, i: int) -> Scene:
    return make_scene(seed * 1000 + stream, i)


# ---------------------------------------------------------------------------------------- language


SINGLE_IMAGE_TASKS = ("caption", "detail_description", "detail_question")


def _instance(task: str, scene: Scene, rng: np.random.Generator):
    build = detail_description_task if task == "detail_description" else TASK_BUILDERS[task]
    return build(scene, rng, TRAIN_WORDING)


def object_slot_words(obj: WorldObject) -> str:
    """The words whose embeddings make ``obj``'s slot: size, colour, shape, position (``small red square top left``)."""
    return f"{obj.size} {obj.colour} {obj.shape} {obj.position}"


def lm_example(seed: int, i: int) -> tuple[list[tuple[str, bool]], list[Scene]]:
    """Training document ``i``: (text, carries loss) segments, and the scenes written as object slots.

    An image is ``<Img> full description </Img>`` in words, or, in a :data:`SLOT_SHARE` of the documents,
    ``<Img>`` + :data:`NUM_SLOTS` ``<image>`` tokens + ``</Img>``, whose embeddings :func:`lm_batch`'s
    caller replaces by the scene's object slots (the returned scenes, in order). Only the assistant answers
    carry loss (each followed by EOS), so the model learns to answer from the image span. Single-image
    documents are conversations of 3 turns about the same image (more answers per image); the system
    prompt is present in half of the documents.
    """
    rng = np.random.default_rng([seed, LM_STREAM, i])
    as_slots = bool(rng.random() < SLOT_SHARE)
    slot_scenes: list[Scene] = []
    scene = _scene(seed, LM_STREAM, i)
    names = list(LM_TASK_WEIGHTS)
    weights = np.array([LM_TASK_WEIGHTS[n] for n in names])
    task = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    tasks = [task]
    if task in SINGLE_IMAGE_TASKS:
        tasks += [SINGLE_IMAGE_TASKS[int(k)] for k in rng.choice(3, size=2, p=[0.2, 0.2, 0.6])]

    def describe(scene: Scene) -> str:
        if as_slots:
            slot_scenes.append(scene)
            return "<Img>" + "<image>" * NUM_SLOTS + "</Img>"
        return "<Img>" + full_description(scene, rng) + "</Img>"

    turns = []
    for n, name in enumerate(tasks):
        instance = _instance(name, scene, rng)
        images = " ".join(f"{{image#{k}}}" for k in range(1, len(instance.scenes) + 1))
        if n > 0:  # later turns talk about the same image without repeating it
            instance.context = instance.context.replace(images, "").strip()
        elif rng.random() < 0.5 and instance.context.startswith(images):
            # image(s) before the instruction, as the captions and synthetic data write it
            rest = instance.context[len(images) :].strip()
            instance.context = f"{images} {instance.instruction} {rest}".strip()
            instance.instruction = ""
        user = render_text(instance, describe)
        turns += [Turn("user", user), Turn("assistant", instance.response)]
    system = VICUNA_V0_SYSTEM if rng.random() < 0.5 else ""
    template = get_template("vicuna_v0", system=system)
    sample = Sample(f"lm{i}", [], turns, meta={"system": system})
    return [(seg.text, seg.loss) for seg in template.segments(sample)], slot_scenes


def lm_document(seed: int, i: int) -> str:
    """Training document ``i`` as plain text (see :func:`lm_example`)."""
    return "".join(text for text, _ in lm_example(seed, i)[0])


def lm_batch(
    tokenizer, seed: int, first_doc: int, size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, labels, slot_words) of documents ``first_doc …``.

    ``input_ids`` and ``labels`` are (size, L): BOS + document, EOS after each answer, right-padded;
    labels are -100 except on answers and their EOS. ``slot_words`` is (S, NUM_SLOTS, W): for each of
    the batch's S slot images in order of appearance, the word ids of each object's slot (0 = padding;
    an all-padding row is an empty slot). :func:`slot_inputs_embeds` turns them into the LM's inputs.
    """
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    rows, scenes = [], []
    for d in range(first_doc, first_doc + size):
        ids, labels = [bos], [-100]
        segments, slot_scenes = lm_example(seed, d)
        scenes += slot_scenes
        for text, loss in segments:
            piece = tokenizer(text, add_special_tokens=False)["input_ids"] + ([eos] if loss else [])
            ids += piece
            labels += piece if loss else [-100] * len(piece)
        rows.append((ids, labels))
    length = max(len(r[0]) for r in rows)
    input_ids = torch.full((size, length), pad)
    target = torch.full((size, length), -100)
    for b, (ids, labels) in enumerate(rows):
        input_ids[b, : len(ids)] = torch.tensor(ids)
        target[b, : len(labels)] = torch.tensor(labels)
    return input_ids, target, slot_word_ids(tokenizer, scenes)


def slot_word_ids(tokenizer, scenes: list[Scene]) -> torch.Tensor:
    """(S, NUM_SLOTS, W) word ids of each scene's object slots, objects in reading order (0 = padding)."""
    slots = [
        [
            tokenizer(object_slot_words(o), add_special_tokens=False)["input_ids"]
            for o in sorted(scene.objects, key=lambda o: o.cell)
        ]
        for scene in scenes
    ]
    width = max((len(w) for image in slots for w in image), default=1)
    out = torch.zeros(len(slots), NUM_SLOTS, width, dtype=torch.long)
    for n, image in enumerate(slots):
        for j, words in enumerate(image):
            out[n, j, : len(words)] = torch.tensor(words)
    return out


def slot_inputs_embeds(
    embed: nn.Embedding, input_ids: torch.Tensor, slot_words: torch.Tensor, image_token_id: int
) -> torch.Tensor:
    """(B, L, D) input embeddings with each run of ``<image>`` tokens replaced by object slots.

    Args:
        embed: the LM's input embedding table.
        input_ids: (B, L); slot images are runs of NUM_SLOTS ``image_token_id``.
        slot_words: (S, NUM_SLOTS, W) word ids per slot (0 = padding), as :func:`lm_batch` returns.
    """
    x = embed(input_ids)
    positions = input_ids == image_token_id
    if slot_words.numel() == 0:
        return x
    mask = (slot_words != 0).unsqueeze(-1).to(x.dtype)  # (S, NUM_SLOTS, W, 1)
    slots = (embed(slot_words) * mask).sum(2) / mask.sum(2).clamp(min=1)  # empty slot → 0
    assert int(positions.sum()) == slots.shape[0] * NUM_SLOTS, "slot tokens and slot scenes disagree"
    return x.masked_scatter(positions.unsqueeze(-1), slots.reshape(-1, x.shape[-1]))


def train_language_model(
    tokenizer,
    seed: int,
    steps: int,
    batch_size: int = 32,
    lr: float = 3e-3,
    log: Callable[[str], None] = print,
) -> tuple[LlamaForCausalLM, StageResult]:
    """Train the tiny LLaMA on :func:`lm_example` documents (loss on the answers)."""
    torch.manual_seed(seed)
    model = LlamaForCausalLM(world_llama_config(len(tokenizer)))
    model.train()
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")

    def step_loss(step: int) -> tuple[torch.Tensor, str]:
        input_ids, labels, slot_words = lm_batch(tokenizer, seed, step * batch_size, batch_size)
        mask = (input_ids != tokenizer.pad_token_id).long()
        embeds = slot_inputs_embeds(model.get_input_embeddings(), input_ids, slot_words, image_token_id)
        return model(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss, ""

    params = list(model.parameters())
    result = _optimise("lm", params, steps, step_loss, log, lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    model.eval().requires_grad_(False)
    return model, result


# ------------------------------------------------------------------------------------------ vision


class TextEncoder(nn.Module):
    """A small transformer over token ids, mean-pooled: the contrastive partner of the ViT (not shipped)."""

    def __init__(self, vocab_size: int, width: int, depth: int = 2, heads: int = 4, max_len: int = 128):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width, padding_idx=0)
        self.pos = nn.Parameter(torch.randn(1, max_len, width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            width, heads, 2 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) ids (0 = padding) → (B, width)."""
        mask = ids != 0
        x = self.encoder(self.embed(ids) + self.pos[:, : ids.shape[1]], src_key_padding_mask=~mask)
        x = self.norm(x)
        return (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)


def _pixels(scenes: list[Scene], processor: ImageProcessor) -> torch.Tensor:
    """(N, 3, S, S) normalised pixels, exactly as vpgkit's ImageProcessor prepares them."""
    return processor([[render(s)[0]] for s in scenes])[:, 0]


def reshape_scene(scene: Scene, rng: np.random.Generator) -> Scene:
    """``scene`` with one object (any size) given another shape, same colour, cell and box."""
    used = {(o.colour, o.shape) for o in scene.objects}
    k = int(rng.integers(len(scene.objects)))
    obj = scene.objects[k]
    shapes = [s for s in SHAPES if (obj.colour, s) not in used]
    if not shapes:  # every shape of this colour is taken: recolour instead
        return edit_scene(scene, rng, kinds=("modify",), small_only=False)[0]
    objects = list(scene.objects)
    objects[k] = replace(obj, shape=shapes[int(rng.integers(len(shapes)))])
    return scene.with_objects(objects)


def _hard_negative(scene: Scene, rng: np.random.Generator) -> Scene:
    """The edited twin a scene meets in its batch: half the time one object changes shape, else a small
    object is recoloured, removed or added. Colour and position alone would tell most scenes apart."""
    if rng.random() < 0.5:
        return reshape_scene(scene, rng)
    return edit_scene(scene, rng, kinds=("modify", "delete", "add"))[0]


def train_vision_encoder(
    tokenizer,
    seed: int,
    steps: int,
    pairs_per_batch: int = 32,
    lr: float = 2e-3,
    log: Callable[[str], None] = print,
) -> tuple[TimmEvaEncoder, StageResult]:
    """CLIP-style training of the ``tiny_world`` EVA on full descriptions, with edited-twin hard negatives."""
    torch.manual_seed(seed)
    config = EvaVisionConfig.preset("tiny_world")
    vit = TimmEvaEncoder(config)
    vit.requires_grad_(True)
    text = TextEncoder(len(tokenizer), config.width)
    image_proj, text_proj = nn.Linear(config.width, 128, bias=False), nn.Linear(config.width, 128, bias=False)
    logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    params = [
        *vit.parameters(),
        *text.parameters(),
        *image_proj.parameters(),
        *text_proj.parameters(),
        logit_scale,
    ]
    processor = ImageProcessor(size=config.image_size)

    def step_loss(step: int) -> tuple[torch.Tensor, str]:
        rng = np.random.default_rng([seed, VIT_STREAM, step])
        scenes: list[Scene] = []
        for b in range(pairs_per_batch):
            scene = _scene(seed, VIT_STREAM, step * pairs_per_batch + b)
            scenes += [scene, _hard_negative(scene, rng)]
        texts = [full_description(s, rng) for s in scenes]
        enc = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")["input_ids"]
        feats = vit.encode_images(_pixels(scenes, processor))  # (N, N_v, D_v), with autograd
        img = F.normalize(image_proj(feats.mean(1)), dim=-1)
        txt = F.normalize(text_proj(text(enc)), dim=-1)
        logits = logit_scale.exp().clamp(max=100) * img @ txt.T
        target = torch.arange(len(scenes))
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        return loss, f" batch acc {float((logits.argmax(1) == target).float().mean()):.2f}"

    result = _optimise("vit", params, steps, step_loss, log, lr=lr, weight_decay=0.05, betas=(0.9, 0.98))
    vit._freeze()
    return vit, result


@torch.no_grad()
def encode_scenes(vit: TimmEvaEncoder, scenes: list[Scene], batch: int = 256) -> torch.Tensor:
    """(N, 1, N_v, D_v) frozen features of ``scenes``."""
    processor = ImageProcessor(size=vit.image_size)
    out = [vit(_pixels(scenes[i : i + batch], processor)[:, None]) for i in range(0, len(scenes), batch)]
    return torch.cat(out)


# ----------------------------------------------------------------------------------------- Q-Former


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
) -> tuple[QFormer, StageResult]:
    """BLIP-2 stage 2 on salient captions: frozen ViT and LM, the whole Q-Former + projection trained."""
    torch.manual_seed(seed)
    qformer = QFormer(QFormerConfig.preset("tiny_world"))
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    model = VisionLanguageModel(llm, image_token_id=image_token_id, vpg=qformer, train_vpg_projection=True)
    qformer.requires_grad_(True)  # the whole Q-Former learns in this stage, not only the projection
    model.train()
    scenes = [_scene(seed, QFORMER_STREAM, i) for i in range(num_images)]
    features = encode_scenes(vit, scenes)
    st = SampleTokenizer(tokenizer, "vicuna_v0", image_token_id=image_token_id, slots_policy="query_tokens",
                         num_queries=qformer.config.num_queries, max_length=256)  # fmt: skip
    collate = Collator(tokenizer.pad_token_id, vit.image_size)
    params = [p for p in model.parameters() if p.requires_grad]

    def step_loss(step: int) -> tuple[torch.Tensor, str]:
        rng = np.random.default_rng([seed, QFORMER_STREAM, step])
        idx = rng.integers(num_images, size=batch_size)
        items = []
        for i in idx:
            instruction = TRAIN_WORDING.caption[int(rng.integers(len(TRAIN_WORDING.caption)))]
            caption = salient_caption(scenes[i], rng)
            turns = [Turn("user", f"<image> {instruction}"), Turn("assistant", caption)]
            item = st(Sample(f"q{i}", [None], turns))
            item["vision_features"] = features[i]
            items.append(item)
        batch = collate(items)
        out = model(batch["input_ids"], batch["attention_mask"], batch["labels"],
                    vision_features=batch["vision_features"], loss_only=True)  # fmt: skip
        return out.loss, ""

    result = _optimise("qformer", params, steps, step_loss, log, lr=lr, weight_decay=0.05)
    model.remove_hooks()
    qformer.eval().requires_grad_(False)
    return qformer, result
