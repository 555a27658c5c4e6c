"""The default job's data: world images + salient captions, attention-guided discriminative samples, mini-DEMON.

:func:`make_default_data` writes, under ``out_dir``::

    images/000000.png …            the training scenes (56 px)
    annotations.json               their object masks (COCO, uncompressed RLE; labels = shape names)
    captions.jsonl                 vpgkit Samples: "<image> Describe the image briefly." → salient caption
    synthetic/000000_2.png …       the edited images of the discriminative samples
    synthetic.jsonl                the discriminative samples, image paths relative to out_dir
    mini_demon/<task>/core.json    the held-out benchmark with its controls (other seeds, evaluation wordings)
    prepare_config.json            what each part was made with

The discriminative samples follow the VPG-C paper's recipe on the world: the shipped tiny-world ViT +
Q-Former is the VPG, its cross-attention (:class:`synthetic.discriminative.VPGAttention`, averaged over
layers, heads and queries) is scored on each object's mask, and the small object it attends to *least*
is the one the sample is about: a difference in that region (two edits per pair; the instruction names
the region), which of two images shows it in its colour, or its colour/position. Every instruction
names what it asks about, so an instruction-guided readout (VPG-C's guidance) can find it, and its
``meta.fetch_box`` is that object's box (for the optional fetch loss, ``trainer.fetch_loss_weight``). Edits use
only the world's colours and shapes. Rerunning with the same arguments does no work; a part whose
settings changed is rebuilt.

Example:
    >>> import tempfile
    >>> paths = make_default_data(tempfile.mkdtemp(), n_images=8, n_edits=4, n_eval=2, progress=False)
    >>> sorted(paths)
    ['captions', 'images', 'mini_demon', 'root', 'synthetic']
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vpgkit.data import Sample, Turn, write_samples_jsonl

from ..storage import atomic_write_bytes, atomic_write_json
from .language import PARAPHRASE_WORDING, TRAIN_WORDING, salient_caption, unknown_words
from .mini_demon import make_mini_demon
from .scene import Scene, WorldObject, make_scene, render
from .tasks import TASK_BUILDERS, render_text

__all__ = [
    "MIXES",
    "SYNTHETIC_TASKS",
    "least_attended",
    "load_world_vpg",
    "make_default_data",
    "object_attention",
]

PREPARE_STREAM = 200  # training scenes: make_scene(seed * 1000 + 200, i)
SYNTHETIC_STREAM = 201  # random choices of the discriminative samples
BLANK_STREAM = 202  # which discriminative samples are drawn blank (``blank_fraction``)
PARAPHRASE_STREAM = 203  # which discriminative samples are asked in other words (``paraphrase``)
UNKNOWN_WORDS_STREAM = 204  # which instruction words become <unk> (``word_dropout``)
MIXES = ("captions+synthetic", "captions")
CONFIG_FILE = "prepare_config.json"
FORMAT_VERSION = 2
# 3: samples' meta has a fetch_box; 4: a difference question's box is its named region's object
SYNTHETIC_FORMAT_VERSION = 4


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _rle(mask: np.ndarray) -> dict[str, Any]:
    """Uncompressed COCO RLE (column-major runs, starting with background)."""
    flat = mask.T.reshape(-1).astype(np.uint8)
    change = np.flatnonzero(np.diff(flat)) + 1
    edges = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(edges).tolist()
    if flat[0]:
        counts = [0, *counts]
    return {"counts": counts, "size": list(mask.shape)}


def load_world_vpg():
    """The shipped tiny-world ViT + Q-Former as a :class:`synthetic.discriminative.VPG` (fp32, frozen)."""
    from safetensors.torch import load_file

    from vpgkit.assets import asset_path
    from vpgkit.backbones import EvaVisionConfig, ImageProcessor, TimmEvaEncoder
    from vpgkit.modules import QFormer, QFormerConfig

    from ..discriminative.vpg_loader import VPG

    vision = TimmEvaEncoder.from_checkpoint(
        asset_path("tiny_world/eva.safetensors"), EvaVisionConfig.preset("tiny_world")
    )
    qformer = QFormer(QFormerConfig.preset("tiny_world"))
    qformer.load_state_dict(
        {k: v.float() for k, v in load_file(asset_path("tiny_world/qformer.safetensors")).items()}
    )
    qformer.eval().requires_grad_(False)
    return VPG(
        vision, qformer, ImageProcessor(size=vision.image_size), "tiny-world VPG (vpgkit/assets/tiny_world)"
    )


def _assets_fingerprint() -> str:
    from vpgkit.assets import asset_path

    manifest = Path(asset_path("tiny_world/manifest.json")).read_bytes()
    return hashlib.sha256(manifest).hexdigest()[:16]


def _done(config_path: Path, part: str, wanted: dict[str, Any], outputs: list[Path]) -> bool:
    if not config_path.is_file() or not all(p.exists() for p in outputs):
        return False
    have = json.loads(config_path.read_text(encoding="utf-8")).get(part)
    return have == json.loads(json.dumps(wanted))


def _record(config_path: Path, part: str, wanted: dict[str, Any]) -> None:
    have = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    have[part] = wanted
    atomic_write_json(config_path, have)


def make_default_data(
    out_dir: str,
    seed: int = 0,
    n_images: int = 1000,
    n_edits: int = 1000,
    mix: str = "captions+synthetic",
    n_eval: int = 40,
    progress: bool = True,
    tasks: dict[str, float] | None = None,
    blank_images: bool = False,
    blank_fraction: float = 0.0,
    paraphrase: float = 0.0,
    word_dropout: float = 0.0,
) -> dict[str, str]:
    """Write the default job's data under ``out_dir`` (idempotent) and return the paths.

    Args:
        out_dir: output folder.
        seed: seed of the scenes, captions, edits and mini-DEMON (mini-DEMON's scenes never overlap
            training scenes for any seed).
        n_images: training scenes (each gets one captions sample).
        n_edits: attention-guided discriminative samples (``mix="captions+synthetic"`` only).
        mix: ``"captions+synthetic"`` or ``"captions"`` (the paper's ablation: no synthetic data).
        n_eval: mini-DEMON samples per task.
        progress: show progress bars.
        tasks: the synthetic samples' task mix, task name → weight (default :data:`SYNTHETIC_TASKS`);
            e.g. ``{"detail_question": 1.0}`` for detail questions only.
        blank_images: a control: every training image (captions and synthetic pairs) is drawn with its
            objects removed, the texts unchanged, so a model trained on it learns what the text alone
            teaches. mini-DEMON keeps its real images.
        blank_fraction: this fraction of the discriminative samples (drawn per sample, independently of
            the other choices, so the rest are the same samples as without it) show every image blank,
            with the same texts and no ``fetch_box``. With nothing to see, the target answer is
            unpredictable from the pixels, so these samples teach the adapter only how to answer when it
            sees nothing: with the question's own options, not another task's answers.
        paraphrase: this fraction of the discriminative samples (drawn per sample, independently of the
            other choices) is asked in :data:`~synthetic.world.language.PARAPHRASE_WORDING`, more ways to
            ask the same questions than the training wording has (the LM never read them), the same
            scenes, edits and answers otherwise.
        word_dropout: each word of a discriminative sample's instruction and question templates (never the
            object, region or options) becomes ``<unk>`` with this probability
            (:func:`~synthetic.world.language.unknown_words`).

    Returns:
        ``root`` (= out_dir, the image root of both JSONL files), ``images``, ``captions``,
        ``synthetic`` (only with synthetic data) and ``mini_demon`` (its folder).
    """
    if mix not in MIXES:
        raise ValueError(f"make_default_data: mix must be one of {MIXES}, got {mix!r}")
    tasks = dict(tasks) if tasks is not None else SYNTHETIC_TASKS
    if not tasks or any(t not in SYNTHETIC_TASKS or w <= 0 for t, w in tasks.items()):
        raise ValueError(
            f"make_default_data: tasks must map some of {sorted(SYNTHETIC_TASKS)} to positive weights, got {tasks}"
        )
    if not 0.0 <= blank_fraction < 1.0:
        raise ValueError(f"make_default_data: blank_fraction must be in [0, 1), got {blank_fraction!r}")
    if not 0.0 <= paraphrase <= 1.0:
        raise ValueError(f"make_default_data: paraphrase must be in [0, 1], got {paraphrase!r}")
    if not 0.0 <= word_dropout < 1.0:
        raise ValueError(f"make_default_data: word_dropout must be in [0, 1), got {word_dropout!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / CONFIG_FILE
    paths = {"root": str(out), "images": str(out / "images"), "captions": str(out / "captions.jsonl"),
             "mini_demon": str(out / "mini_demon")}  # fmt: skip

    # 1. scenes, annotations, captions
    wanted = {"version": FORMAT_VERSION, "seed": seed, "n_images": n_images}
    if blank_images:  # only when set, so the default's record stays as it was and existing data is reused
        wanted["blank_images"] = True
    if not _done(config_path, "captions", wanted, [out / "captions.jsonl", out / "annotations.json"]):
        from tqdm.auto import tqdm

        if (out / "images").exists():
            shutil.rmtree(out / "images")
        samples, images, annotations, categories = [], [], [], {}
        for i in tqdm(range(n_images), desc="world images", disable=not progress):
            scene = make_scene(seed * 1000 + PREPARE_STREAM, i)
            image, masks = render(scene)
            if blank_images:
                image = render(scene.with_objects(()))[0]
            name = f"{i:06d}.png"
            atomic_write_bytes(out / "images" / name, _png(image))
            rng = np.random.default_rng([seed, PREPARE_STREAM, i])
            instruction = TRAIN_WORDING.caption[int(rng.integers(len(TRAIN_WORDING.caption)))]
            samples.append(Sample(f"caption-{i:06d}", [f"images/{name}"],
                                  [Turn("user", f"<image> {instruction}"), Turn("assistant", salient_caption(scene, rng))],
                                  meta={"task": "caption", "scene": scene.to_json()}))  # fmt: skip
            images.append({"id": i, "file_name": name, "height": scene.size, "width": scene.size})
            for obj, mask in zip(scene.objects, masks, strict=True):
                cat = categories.setdefault(obj.shape, len(categories) + 1)
                x0, y0, x1, y1 = obj.box
                annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": cat,
                                    "bbox": [x0, y0, x1 - x0, y1 - y0], "segmentation": _rle(mask)})  # fmt: skip
        cats = [{"id": v, "name": k} for k, v in categories.items()]
        atomic_write_json(
            out / "annotations.json", {"images": images, "annotations": annotations, "categories": cats}
        )
        write_samples_jsonl(samples, out / "captions.jsonl")
        _record(config_path, "captions", wanted)

    # 2. synthetic discriminative pairs
    if mix == "captions+synthetic":
        paths["synthetic"] = str(out / "synthetic.jsonl")
        wanted = {"version": SYNTHETIC_FORMAT_VERSION, "seed": seed, "n_images": n_images, "n_edits": n_edits,
                  "assets": _assets_fingerprint()}  # fmt: skip
        if tasks != SYNTHETIC_TASKS:  # the default's record stays as it was, so existing data is reused
            wanted["tasks"] = tasks
        # options only when set, so the default's record stays as it was
        options = {"blank_images": blank_images, "blank_fraction": blank_fraction, "paraphrase": paraphrase,
                   "word_dropout": word_dropout}  # fmt: skip
        wanted |= {k: v for k, v in options.items() if v}
        if not _done(config_path, "synthetic", wanted, [out / "synthetic.jsonl"]):
            _make_synthetic(out, seed, n_images, n_edits, progress, tasks, **options)
            _record(config_path, "synthetic", wanted)

    # 3. mini-DEMON
    wanted = {"version": FORMAT_VERSION, "seed": seed, "n_eval": n_eval}
    if not _done(config_path, "mini_demon", wanted, [out / "mini_demon" / "index.json"]):
        if (out / "mini_demon").exists():
            shutil.rmtree(out / "mini_demon")
        make_mini_demon(out / "mini_demon", seed=seed, per_task=n_eval, progress=progress)
        _record(config_path, "mini_demon", wanted)
    return paths


# Discriminative task mix of the synthetic data (the paper's difference captions + discriminative questions).
SYNTHETIC_TASKS = {"difference": 0.4, "which_image": 0.3, "detail_question": 0.3}


def least_attended(scores: dict[int, dict[int, float]]):
    """A task picker: among the candidates, the object of the lowest VPG attention (``scores`` as
    :func:`object_attention` returns them; ties: the lower cell)."""

    def pick(scene: Scene, candidates: list[WorldObject], rng: np.random.Generator) -> WorldObject:
        return min(candidates, key=lambda o: (scores[scene.index][o.cell], o.cell))

    return pick


def object_attention(vpg, scenes: list[Scene], batch_size: int = 256) -> dict[int, dict[int, float]]:
    """Scene index → {cell: mean VPG attention inside that object's mask}."""
    from ..discriminative import VPGAttention
    from ..discriminative.regions import Region, score_regions

    attention = VPGAttention(vpg, batch_size=batch_size)
    out = {}
    rendered = [render(s) for s in scenes]
    maps = attention.maps([image for image, _ in rendered])
    for scene, (_, masks), amap in zip(scenes, rendered, maps, strict=True):
        values = score_regions(
            [Region(m, o.shape, "annotation") for o, m in zip(scene.objects, masks, strict=True)], amap
        )
        out[scene.index] = {o.cell: float(v) for o, v in zip(scene.objects, values, strict=True)}
    return out


def _make_synthetic(
    out: Path,
    seed: int,
    n_images: int,
    n_edits: int,
    progress: bool,
    tasks: dict[str, float],
    blank_images: bool = False,
    blank_fraction: float = 0.0,
    paraphrase: float = 0.0,
    word_dropout: float = 0.0,
) -> None:
    from tqdm.auto import tqdm

    if (out / "synthetic").exists():  # settings changed (or a half-written run): start over
        shutil.rmtree(out / "synthetic")
    scenes = [make_scene(seed * 1000 + PREPARE_STREAM, i) for i in range(n_images)]
    pick = least_attended(object_attention(load_world_vpg(), scenes))
    names = list(tasks)
    weights = np.array([tasks[n] for n in names])
    samples = []
    for j in tqdm(range(n_edits), desc="discriminative samples", disable=not progress):
        rng = np.random.default_rng([seed, SYNTHETIC_STREAM, j])
        scene = scenes[j % n_images]
        task = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        # separate streams, so that each option leaves every other choice of the sample as it was
        draw = np.random.default_rng([seed, PARAPHRASE_STREAM, j]).random() if paraphrase else 1.0
        wording = PARAPHRASE_WORDING if draw < paraphrase else TRAIN_WORDING
        if word_dropout:
            wording = unknown_words(
                wording, word_dropout, np.random.default_rng([seed, UNKNOWN_WORDS_STREAM, j])
            )
        instance = TASK_BUILDERS[task](scene, rng, wording, pick)
        draw = np.random.default_rng([seed, BLANK_STREAM, j]).random() if blank_fraction else 1.0
        blank_pair = draw < blank_fraction
        images = []
        for k, shown in enumerate(instance.scenes, 1):
            if shown == scene and not blank_pair:  # the unedited training image
                images.append(f"images/{scene.index:06d}.png")
            else:
                images.append(f"synthetic/{j:06d}_{k}.png")
                drawn = shown.with_objects(()) if blank_images or blank_pair else shown
                atomic_write_bytes(out / images[-1], _png(render(drawn)[0]))
        user = render_text(instance, lambda _: "<image>")
        meta = {"task": task, "subsets": instance.subsets, "scene": scene.index,
                "target_cell": instance.target.cell}  # fmt: skip
        if blank_pair:  # nothing to fetch: no fetch_box
            meta["blank"] = True
        else:  # the object the instruction asks about
            meta["fetch_box"] = [round(v / scene.size, 6) for v in instance.named.box]
        samples.append(Sample(f"{task}-{j:06d}", images, [Turn("user", user), Turn("assistant", instance.response)],
                              meta=meta))  # fmt: skip
    write_samples_jsonl(samples, out / "synthetic.jsonl")
