"""Command line: ``python -m synthetic.discriminative --help``.

Example::

    python -m synthetic.discriminative --images coco/val2017 --annotations coco/instances_val2017.json \\
        --vpg checkpoints/blip2-vpg --out runs/discriminative --count 64000 --workers 2 --seed 0

Rerunning the same command resumes: committed shards are skipped.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from vpgkit.threads import apply_thread_policy

from ..storage import InputError
from .editors import EDITORS
from .pipeline import (
    DiscriminativePipeline,
    PipelineConfig,
    format_summary,
    sources_from_captions,
    sources_from_folder,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m synthetic.discriminative",
        description="Attention-guided image edits + difference captions (VPG-C's discriminative data), "
        "written as vpgkit Samples. Deterministic per --seed; resumable. See docs/synthetic_discriminative.md.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", type=Path, help="folder of images (searched recursively)")
    src.add_argument(
        "--captions", type=Path, help="caption list JSONL: {image: path relative to the file, caption?}"
    )
    vpg = p.add_mutually_exclusive_group(required=True)
    vpg.add_argument("--vpg", type=Path, help="VPG directory (vpg_config.json + vpg.safetensors)")
    vpg.add_argument(
        "--random-tiny-vpg",
        action="store_true",
        help="untrained tiny VPG for demos/tests (meaningless attention)",
    )
    p.add_argument(
        "--out", type=Path, required=True, help="output directory (rerun the same command to resume)"
    )
    p.add_argument("--count", type=int, default=1000, help="kept edited pairs to produce (default 1000)")
    p.add_argument(
        "--workers", type=int, default=1, help="editing processes (default 1); output does not depend on it"
    )
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument(
        "--annotations", type=Path, help="COCO-style instance annotations: object masks/boxes and labels"
    )
    p.add_argument(
        "--editors",
        default="modify,swap,delete,add",
        help=f"comma-separated, from {sorted(EDITORS)} (default modify,swap,delete,add)",
    )
    p.add_argument(
        "--min-region", type=float, default=0.01, help="min region share of the image (default 0.01)"
    )
    p.add_argument(
        "--max-region", type=float, default=0.25, help="max region share of the image (default 0.25)"
    )
    p.add_argument(
        "--superpixels",
        choices=["slic", "felzenszwalb"],
        default="slic",
        help="proposals without annotations",
    )
    p.add_argument(
        "--sam", type=Path, help="local SAM model directory for proposals (instead of superpixels)"
    )
    p.add_argument(
        "--max-side", type=int, default=512, help="downscale images to this longer side (default 512)"
    )
    p.add_argument(
        "--negatives",
        type=float,
        default=0.1,
        help="share of pairs with an extra unedited negative (default 0.1)",
    )
    p.add_argument("--shard-size", type=int, default=64, help="jobs per shard / resume unit (default 64)")
    p.add_argument(
        "--min-change", type=float, default=0.08, help="min mean |Δ|/255 inside the region (default 0.08)"
    )
    p.add_argument(
        "--max-outside-change", type=float, default=0.01, help="max mean |Δ|/255 outside (default 0.01)"
    )
    p.add_argument(
        "--clip", type=Path, help="local CLIP model directory: also filter by image-image similarity"
    )
    p.add_argument(
        "--diffusion-model", type=Path, help="local diffusers inpainting pipeline for the 'diffusion' editor"
    )
    p.add_argument(
        "--bf16",
        action="store_true",
        help="run the vision encoder and the Q-Former in bfloat16 (much faster on AMX CPUs)",
    )
    p.add_argument(
        "--batch-size", type=int, default=16, help="images per attention forward pass (default 16)"
    )
    p.add_argument("--preview", type=int, default=8, help="pairs in preview.png (default 8, 0: none)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    apply_thread_policy()
    import torch

    from .attention import VPGAttention
    from .quality import ClipSimilarityFilter
    from .regions import CocoAnnotations
    from .vpg_loader import load_vpg, random_tiny_vpg

    try:
        editors = tuple(e.strip() for e in args.editors.split(",") if e.strip())
        unknown = [e for e in editors if e not in EDITORS]
        if unknown:
            raise InputError(f"--editors: unknown {unknown}; registered: {sorted(EDITORS)}")
        if args.count < 1 or args.workers < 1:
            raise InputError("--count and --workers must be at least 1")
        options = {"diffusion": {"model_dir": args.diffusion_model}} if "diffusion" in editors else {}
        config = PipelineConfig(
            seed=args.seed, editors=editors, editor_options=options, min_fraction=args.min_region,
            max_fraction=args.max_region, superpixels=args.superpixels, max_side=args.max_side,
            negative_fraction=args.negatives, shard_size=args.shard_size, min_region_change=args.min_change,
            max_outside_change=args.max_outside_change, preview=args.preview,
            sam_model=str(args.sam) if args.sam else None,
        )  # fmt: skip
        sources = sources_from_folder(args.images) if args.images else sources_from_captions(args.captions)
        vpg = (
            random_tiny_vpg(args.seed)
            if args.random_tiny_vpg
            else load_vpg(args.vpg, dtype=torch.bfloat16 if args.bf16 else torch.float32)
        )
        print(f"attention from: {vpg.description}", file=sys.stderr)
        pipeline = DiscriminativePipeline(
            VPGAttention(vpg, batch_size=args.batch_size, dtype=torch.bfloat16 if args.bf16 else None),
            config,
            annotations=CocoAnnotations.load(args.annotations) if args.annotations else None,
            clip_filter=ClipSimilarityFilter.from_pretrained(args.clip) if args.clip else None,
            description=vpg.description,
        )
        start = time.perf_counter()
        summary = pipeline.run(sources, args.out, args.count, workers=args.workers, progress=not args.quiet)
    except (InputError, FileNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    print(
        f"wrote {args.out} in {time.perf_counter() - start:.1f} s (summary.json, shards/, images/, preview.png)"
    )
    return 0
