"""The default job's data: world images + salient captions, attention-guided synthetic pairs, mini-DEMON.

:func:`make_default_data` writes, under ``out_dir``::

    images/000000.png …            the training scenes (56 px)
    annotations.json               their object masks (COCO, uncompressed RLE; labels = shape names)
    captions.jsonl                 vpgkit Samples: "<image> Describe the image briefly." → salient caption
    synthetic/                     the discriminative pipeline's run (images/src, images/edit, shards, summary)
    synthetic.jsonl                its Samples, image paths relative to out_dir
    mini_demon/<task>/core.json    the held-out benchmark (other seeds, evaluation wordings)
    prepare_config.json            what each part was made with

Both JSONL files use image paths relative to ``out_dir``, so a recipe sets ``images: <out_dir>`` for both.
The synthetic pairs come from :mod:`synthetic.discriminative`: the shipped tiny-world ViT + Q-Former is
the VPG whose cross-attention ranks the world's own object masks, and the least-attended object is
recoloured, deleted, swapped or a donor object added. Rerunning with the same arguments does no work;
a part whose settings changed is rebuilt.

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
import torch
from PIL import Image

from vpgkit.data import Sample, Turn, write_samples_jsonl

from ..storage import atomic_write_bytes, atomic_write_json
from .language import TRAIN_WORDING, salient_caption
from .mini_demon import make_mini_demon
from .scene import make_scene, render

__all__ = ["MIXES", "load_world_vpg", "make_default_data"]

PREPARE_STREAM = 200  # training scenes: make_scene(seed * 1000 + 200, i)
MIXES = ("captions+synthetic", "captions")
CONFIG_FILE = "prepare_config.json"
FORMAT_VERSION = 1


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
    min_edit_fraction: float = 0.004,
) -> dict[str, str]:
    """Write the default job's data under ``out_dir`` (idempotent) and return the paths.

    Args:
        out_dir: output folder.
        seed: seed of the scenes, captions, edits and mini-DEMON (mini-DEMON's scenes never overlap
            training scenes for any seed).
        n_images: training scenes (each gets one captions sample).
        n_edits: kept synthetic discriminative pairs wanted (``mix="captions+synthetic"`` only).
        mix: ``"captions+synthetic"`` or ``"captions"`` (the paper's ablation: no synthetic data).
        n_eval: mini-DEMON samples per task.
        progress: show progress bars.
        min_edit_fraction: smallest region (share of the image) the pipeline may edit. The default admits
            the small objects (a 6 px triangle is ~0.6% of the image); 0.03 leaves only medium and large
            (salient) objects — the "easy edits" ablation.

    Returns:
        ``root`` (= out_dir, the image root of both JSONL files), ``images``, ``captions``,
        ``synthetic`` (only with synthetic data) and ``mini_demon`` (its folder).
    """
    if mix not in MIXES:
        raise ValueError(f"make_default_data: mix must be one of {MIXES}, got {mix!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / CONFIG_FILE
    paths = {"root": str(out), "images": str(out / "images"), "captions": str(out / "captions.jsonl"),
             "mini_demon": str(out / "mini_demon")}  # fmt: skip

    # 1. scenes, annotations, captions
    wanted = {"version": FORMAT_VERSION, "seed": seed, "n_images": n_images}
    if not _done(config_path, "captions", wanted, [out / "captions.jsonl", out / "annotations.json"]):
        from tqdm.auto import tqdm

        if (out / "images").exists():
            shutil.rmtree(out / "images")
        samples, images, annotations, categories = [], [], [], {}
        for i in tqdm(range(n_images), desc="world images", disable=not progress):
            scene = make_scene(seed * 1000 + PREPARE_STREAM, i)
            image, masks = render(scene)
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
        wanted = {"version": FORMAT_VERSION, "seed": seed, "n_images": n_images, "n_edits": n_edits,
                  "assets": _assets_fingerprint(), "min_edit_fraction": min_edit_fraction}  # fmt: skip
        if not _done(config_path, "synthetic", wanted, [out / "synthetic.jsonl"]):
            _make_synthetic(out, seed, n_edits, progress, min_edit_fraction)
            _record(config_path, "synthetic", wanted)

    # 3. mini-DEMON
    wanted = {"version": FORMAT_VERSION, "seed": seed, "n_eval": n_eval}
    if not _done(config_path, "mini_demon", wanted, [out / "mini_demon" / "index.json"]):
        if (out / "mini_demon").exists():
            shutil.rmtree(out / "mini_demon")
        make_mini_demon(out / "mini_demon", seed=seed, per_task=n_eval, progress=progress)
        _record(config_path, "mini_demon", wanted)
    return paths


def _make_synthetic(out: Path, seed: int, n_edits: int, progress: bool, min_fraction: float) -> None:
    from ..discriminative import (
        CocoAnnotations,
        DiscriminativePipeline,
        PipelineConfig,
        VPGAttention,
        sources_from_folder,
    )

    run = out / "synthetic"
    if run.exists():  # settings changed (or a half-written run): start over
        shutil.rmtree(run)
    torch.manual_seed(seed)
    vpg = load_world_vpg()
    config = PipelineConfig(
        seed=seed,
        min_fraction=min_fraction,
        max_fraction=0.25,
        max_side=56,
        shard_size=256,
        preview=8,
    )
    pipeline = DiscriminativePipeline(
        VPGAttention(vpg, batch_size=256), config,
        annotations=CocoAnnotations.load(out / "annotations.json"), description=vpg.description,
    )  # fmt: skip
    pipeline.run(sources_from_folder(out / "images"), run, count=n_edits, progress=progress)
    samples = []
    for shard in sorted((run / "shards").glob("shard-*.jsonl")):
        for line in shard.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                rec["images"] = [f"synthetic/{p}" for p in rec["images"]]
                samples.append(Sample.from_json(rec, where=str(shard)))
    write_samples_jsonl(samples, out / "synthetic.jsonl")
