"""The discriminative-data pipeline: choose where the VPG looks least, edit there, filter, caption, write.

Work is split into jobs ``0, 1, 2, …``; everything about job ``i`` (source image, editor, donor, task,
random draws) is derived from ``(seed, i)`` alone, so the output does not depend on the number of
workers. Jobs are grouped into shards of ``shard_size``; per shard the main process loads the images and
computes attention maps in batches, worker processes propose regions, edit, check quality and write the
caption, and the main process writes the PNGs, then the shard's JSONL, then its progress record (each
file atomically). A rerun skips every shard that has a progress record, so a killed run resumes to the
same output as an uninterrupted one. The run stops once ``count`` edited pairs are kept.

Output layout::

    OUT/run_config.json          settings that must match on resume
    OUT/images/src/000012.png    originals (resized to max_side)
    OUT/images/edit/<pair>.png   edited images
    OUT/shards/shard-00000.jsonl vpgkit Samples, one JSON object per line
    OUT/progress/shard-00000.json per-job outcomes (kept / rejected with reason / corrupt image)
    OUT/summary.json             counts (kept / rejected per reason / skipped images)
    OUT/preview.png              original | edited | attention overlay for the first pairs

Example:
    >>> import pathlib, tempfile, numpy as np
    >>> from PIL import Image
    >>> src = pathlib.Path(tempfile.mkdtemp())
    >>> for k in range(3):
    ...     img = np.full((64, 64, 3), 40 + 60 * k, np.uint8); img[8:30, 30:60] = (200, 30, 30)
    ...     Image.fromarray(img).save(src / f"{k}.png")
    >>> attention = FunctionAttention(lambda im: np.ones(im.shape[:2], np.float32))
    >>> pipe = DiscriminativePipeline(attention, PipelineConfig(seed=0, shard_size=4, preview=0))
    >>> summary = pipe.run(sources_from_folder(src), pathlib.Path(tempfile.mkdtemp()), count=2, progress=False)
    >>> summary["kept"]
    2
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import multiprocessing
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from vpgkit.data.sample import Sample

from ..storage import InputError, atomic_write_bytes, atomic_write_json, atomic_write_jsonl, read_jsonl
from .attention import AttentionSource, FunctionAttention, overlay
from .captions import DifferenceCaptioner
from .editors import DonorObject, EditContext, EditSkipped, build_editor
from .quality import ClipSimilarityFilter, QualityFilter
from .regions import (
    CocoAnnotations,
    Region,
    SamProposer,
    SuperpixelProposer,
    ranked_regions,
    score_regions,
)
from .tasks import TASKS, difference_sample, no_difference_sample

__all__ = [
    "IMAGE_EXTENSIONS",
    "DiscriminativePipeline",
    "FunctionAttention",
    "ImageSources",
    "PipelineConfig",
    "sources_from_captions",
    "sources_from_folder",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
DEFAULT_TASKS = {"describe_difference": 0.7, "which_edited": 0.15, "any_difference": 0.15}


@dataclass
class PipelineConfig:
    """Settings of a run (all of them except ``workers``/``count`` must match when resuming).

    Attributes:
        seed: everything random derives from (seed, job index).
        editors: editor names drawn uniformly per job (see :data:`~synthetic.discriminative.editors.EDITORS`).
        editor_options: per-editor constructor keyword arguments.
        min_fraction, max_fraction: size limits of an edit region, as shares of the image.
        superpixels: ``"slic"`` or ``"felzenszwalb"``, used when an image has no annotations.
        n_segments: SLIC's segment count.
        sam_model: local SAM directory; when set, SAM masks replace superpixels.
        max_side: images are downscaled so that their longer side is at most this (pixels).
        negative_fraction: share of kept pairs that also yield an unedited negative sample.
        task_weights: probability of each task per kept pair.
        shard_size: jobs per shard (the resume granularity).
        min_region_change, max_outside_change: :class:`QualityFilter` thresholds.
        preview: number of pairs in ``preview.png`` (0: none).
        max_candidates: regions tried per job, least-attended first: if the edit of the least-attended
            region fails the quality filter, the next one is tried, up to this many. Candidates the
            editor rules out cheaply (:meth:`~synthetic.discriminative.editors.Editor.viable`, e.g. a
            deletion of plain background) are skipped without counting.
        edits_per_source: consecutive jobs that edit the same source image (one attention map serves
            them all); the k-th of them starts at the k-th viable candidate, so they edit different
            regions. The paper made ~64k edits from 30k images.
    """

    seed: int = 0
    editors: tuple[str, ...] = ("modify", "swap", "delete", "add")
    editor_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    min_fraction: float = 0.01
    max_fraction: float = 0.25
    superpixels: str = "slic"
    n_segments: int = 32
    sam_model: str | None = None
    max_side: int = 512
    negative_fraction: float = 0.1
    task_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TASKS))
    shard_size: int = 64
    min_region_change: float = 0.08
    max_outside_change: float = 0.01
    preview: int = 8
    max_candidates: int = 3
    edits_per_source: int = 2

    def __post_init__(self):
        self.editors = tuple(self.editors)
        if self.edits_per_source < 1:
            raise ValueError(f"PipelineConfig.edits_per_source: must be >= 1, got {self.edits_per_source}")
        if not self.editors:
            raise ValueError("PipelineConfig.editors: give at least one editor")
        unknown = sorted(set(self.task_weights) - set(TASKS))
        if unknown or not self.task_weights:
            raise ValueError(
                f"PipelineConfig.task_weights: unknown tasks {unknown}; expected keys from {TASKS}"
            )
        if not 0 < self.min_fraction <= self.max_fraction <= 1:
            raise ValueError(
                f"PipelineConfig: need 0 < min_fraction <= max_fraction <= 1, got {self.min_fraction}, {self.max_fraction}"
            )


# ------------------------------------------------------------------------------------------- sources


@dataclass
class ImageSources:
    """Input images: ``keys`` (relative names, matched against annotation ``file_name``s), their paths,
    optional source captions, and files skipped up front (unsupported type, missing)."""

    keys: list[str]
    paths: list[Path]
    captions: list[str | None]
    skipped: dict[str, list[str]] = field(default_factory=dict)

    def fingerprint(self) -> str:
        return hashlib.sha256("\n".join(self.keys).encode()).hexdigest()[:16]


def sources_from_folder(directory: str | Path) -> ImageSources:
    """Every image file under ``directory`` (recursive, sorted); other files are listed as unsupported."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"--images {directory}: not a directory")
    keys, paths, unsupported = [], [], []
    for p in sorted(q for q in directory.rglob("*") if q.is_file() and not q.name.startswith(".")):
        rel = p.relative_to(directory).as_posix()
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            keys.append(rel)
            paths.append(p)
        else:
            unsupported.append(rel)
    if not keys:
        raise InputError(f"--images {directory}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return ImageSources(keys, paths, [None] * len(keys), {"unsupported": unsupported} if unsupported else {})


def sources_from_captions(path: str | Path) -> ImageSources:
    """A caption list: JSONL of ``{"image": path relative to the file, "caption"?: text}``."""
    path = Path(path)
    records = read_jsonl(path, what="caption list")
    keys, paths, captions, skipped = [], [], [], {"missing": [], "unsupported": []}
    for line, rec in enumerate(records, 1):
        if "image" not in rec:
            raise InputError(
                f"caption list {path}, record {line}: missing key 'image' (expected {{image, caption?}})"
            )
        p = path.parent / str(rec["image"])
        if p.suffix.lower() not in IMAGE_EXTENSIONS:
            skipped["unsupported"].append(str(rec["image"]))
        elif not p.is_file():
            skipped["missing"].append(str(rec["image"]))
        else:
            keys.append(str(rec["image"]))
            paths.append(p)
            captions.append(rec.get("caption"))
    if not keys:
        raise InputError(f"caption list {path}: no usable images")
    return ImageSources(keys, paths, captions, {k: v for k, v in skipped.items() if v})


class CorruptImage(Exception):
    pass


def load_image(path: Path, max_side: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB, downscaled so that max(H, W) <= max_side; :class:`CorruptImage` if unreadable."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if max(im.size) > max_side:
                s = max_side / max(im.size)
                im = im.resize(
                    (max(1, round(im.width * s)), max(1, round(im.height * s))), Image.Resampling.BICUBIC
                )
            return np.asarray(im, dtype=np.uint8).copy()
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as e:
        raise CorruptImage(f"{path}: {e}") from None


def png_bytes(image: np.ndarray) -> bytes:
    """Lossless PNG bytes of an (H, W, 3) uint8 image; zlib level 1 (~4× faster than the default 6,
    files ~15% larger)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- jobs


@dataclass
class Job:
    """Everything decided about job ``index`` before any pixel is read (pure function of seed and index)."""

    index: int
    pair_id: str
    source: int
    editor: str
    donor: int | None
    task: str
    negative: bool
    negative_task: str
    repeat: int = 0  # this job is the repeat-th edit of its source image (see edits_per_source)


def plan_job(config: PipelineConfig, num_sources: int, index: int) -> Job:
    group, repeat = divmod(index, config.edits_per_source)
    epoch, slot = divmod(group, num_sources)
    source = int(np.random.default_rng([config.seed, 0x5EED, epoch]).permutation(num_sources)[slot])
    rng = np.random.default_rng([config.seed, index, 0])
    editor = config.editors[int(rng.integers(len(config.editors)))]
    donor = None
    if num_sources > 1:
        donor = (source + 1 + int(rng.integers(num_sources - 1))) % num_sources
    names = list(config.task_weights)
    weights = np.array([config.task_weights[n] for n in names], dtype=np.float64)
    task = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    negative = bool(rng.random() < config.negative_fraction)
    negative_task = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    return Job(
        index, f"s{config.seed}-{index:07d}", source, editor, donor, task, negative, negative_task, repeat
    )


@dataclass
class JobInput:
    job: Job
    image: np.ndarray
    attention: np.ndarray
    annotated: list[Region] | None
    donor_image: np.ndarray | None
    donor_annotated: list[Region] | None


@dataclass
class JobOutcome:
    index: int
    kept: bool
    reason: str | None
    edited: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    caption: str | None = None
    edited_png: bytes | None = None  # encoded in the worker
    cpu_seconds: float = 0.0  # the worker's CPU time for this job (for throughput reports)


class Worker:
    """Per-process state: editors, proposer, quality filter and captioner built once from the config."""

    def __init__(self, config: PipelineConfig):
        self.config = config
        self.editors = {n: build_editor(n, **config.editor_options.get(n, {})) for n in config.editors}
        self.proposer = (
            SamProposer(config.sam_model)
            if config.sam_model
            else SuperpixelProposer(config.superpixels, n_segments=config.n_segments)
        )
        self.quality = QualityFilter(config.min_region_change, config.max_outside_change)
        self.captioner = DifferenceCaptioner()
        self._cache: dict[int, list[Region]] | None = None  # region proposals by source index, in run_group

    def regions(
        self, image: np.ndarray, annotated: list[Region] | None, key: int | None = None
    ) -> list[Region]:
        """The image's annotated regions, else its proposals; ``key`` (a source index) reuses the proposals
        made for that image earlier in the same :meth:`run_group` (proposers are deterministic and no
        editor changes a region, so sharing them changes nothing but the time)."""
        if annotated:
            return annotated
        if key is None or self._cache is None:
            return self.proposer(image)
        if key not in self._cache:
            self._cache[key] = self.proposer(image)
        return self._cache[key]

    def donor(self, inp: JobInput, rng: np.random.Generator) -> DonorObject | None:
        if inp.donor_image is None:
            return None
        cfg = self.config
        regions = [
            r
            for r in self.regions(inp.donor_image, inp.donor_annotated, inp.job.donor)
            if cfg.min_fraction <= r.fraction <= cfg.max_fraction
        ]
        if not regions:
            return None
        return DonorObject.from_region(inp.donor_image, regions[int(rng.integers(len(regions)))])

    def run_group(self, inputs: Sequence[JobInput]) -> list[JobOutcome]:
        """Run jobs that share a source image (its ``edits_per_source`` edits), proposing its regions once."""
        self._cache = {}
        try:
            return [self(inp) for inp in inputs]
        finally:
            self._cache = None

    def __call__(self, inp: JobInput) -> JobOutcome:
        start = time.process_time()
        outcome = self._edit(inp)
        if outcome.kept:
            outcome.edited_png = png_bytes(outcome.edited)
        outcome.cpu_seconds = time.process_time() - start
        return outcome

    def _edit(self, inp: JobInput) -> JobOutcome:
        cfg, job = self.config, inp.job
        rng = np.random.default_rng([cfg.seed, job.index, 1])
        regions = self.regions(inp.image, inp.annotated, job.source)
        scores = score_regions(regions, inp.attention)
        ranked = ranked_regions(regions, scores, cfg.min_fraction, cfg.max_fraction)
        if inp.annotated:  # paste only where no annotated object is
            background = ~np.any([r.mask for r in inp.annotated], axis=0)
        else:  # no object masks: the less-attended half of the image
            background = inp.attention <= np.median(inp.attention)
        donor = self.donor(inp, rng) if job.editor == "add" else None
        editor = self.editors[job.editor]
        reason, meta = "no_region", {}
        if job.editor == "add" or not ranked:
            # "add" does not edit a proposed region (it pastes where attention is lowest): one attempt.
            attempts = [None] if not ranked else ranked[:1]
        else:
            base = EditContext(
                inp.image, inp.attention, regions, None, scores, background, donor,
                cfg.min_fraction, cfg.max_fraction,
            )  # fmt: skip
            viable = (i for i in ranked if editor.viable(base, i))
            attempts = list(itertools.islice(viable, job.repeat, job.repeat + cfg.max_candidates))
            reason = "no_viable_region"
        for target in attempts:
            ctx = EditContext(
                inp.image, inp.attention, regions, target, scores, background, donor,
                cfg.min_fraction, cfg.max_fraction,
            )  # fmt: skip
            try:
                result = editor.edit(ctx, rng)
            except EditSkipped as e:
                reason, meta = e.reason, {}
                continue
            verdict = self.quality.check(inp.image, result.image, result.changed)
            meta = {**result.meta, "editor": job.editor, **verdict.stats}
            if target is not None:
                meta.update(
                    attention_score=round(float(scores[target]), 6), attention_rank=ranked.index(target)
                )
            if verdict.keep:
                break
            reason = verdict.reason
        else:
            return JobOutcome(job.index, False, reason, meta=meta)
        caption = self.captioner.caption(meta, np.random.default_rng([cfg.seed, job.index, 2]))
        return JobOutcome(job.index, True, None, result.image, meta, caption)


_WORKER: Worker | None = None


def _init_worker(config: PipelineConfig) -> None:
    global _WORKER
    import torch

    torch.set_num_threads(1)  # workers do numpy/OpenCV work; keep torch from oversubscribing cores
    _WORKER = Worker(config)


def _run_in_worker(group: list[JobInput]) -> list[JobOutcome]:
    assert _WORKER is not None
    return _WORKER.run_group(group)


# ------------------------------------------------------------------------------------------ pipeline


class DiscriminativePipeline:
    """Attention-guided edits + difference captions, written as vpgkit Samples.

    Args:
        attention: an :class:`~synthetic.discriminative.attention.AttentionSource` (a VPG, or a hand-made map).
        config: :class:`PipelineConfig`.
        annotations: optional COCO-style annotations (object masks and labels) keyed by file name.
        rewriter: optional ``caption -> caption`` hook (e.g. an LLM paraphraser), run in the main process.
        clip_filter: optional :class:`ClipSimilarityFilter`.
        description: what produced the attention maps (stored in the summary).
    """

    def __init__(
        self,
        attention: AttentionSource,
        config: PipelineConfig | None = None,
        annotations: CocoAnnotations | None = None,
        rewriter: Callable[[str], str] | None = None,
        clip_filter: ClipSimilarityFilter | None = None,
        description: str = "custom attention source",
    ):
        self.attention = attention
        self.config = config or PipelineConfig()
        self.annotations = annotations
        self.rewriter = rewriter
        self.clip_filter = clip_filter
        self.description = description
        # wall seconds per stage in this process (load, attention, edit_wait, write), CPU seconds of the
        # thread running a stage (attention_cpu: all of it at 1 torch thread; write_cpu) and the workers'
        # CPU seconds (edit_cpu): for throughput reports, never written to the output
        self.stage_seconds: Counter = Counter()
        self.stage_counts: Counter = Counter()

    # -- per-image helpers
    def annotated_regions(self, sources: ImageSources, i: int, image: np.ndarray) -> list[Region] | None:
        if self.annotations is None:
            return None
        key = sources.keys[i]
        name = key if key in self.annotations else Path(key).name
        if name not in self.annotations:
            return None
        return self.annotations.regions(name, *image.shape[:2]) or None

    def run_config(self, sources: ImageSources) -> dict[str, Any]:
        cfg = asdict(self.config)
        cfg.pop("preview")
        return {"config": cfg, "sources": sources.fingerprint(), "num_sources": len(sources.keys)}

    # -- main loop
    def run(
        self,
        sources: ImageSources,
        out: str | Path,
        count: int,
        workers: int = 1,
        progress: bool = True,
        max_jobs: int | None = None,
        on_shard: Callable[[int], None] | None = None,
        attention_threads: int | None = None,
    ) -> dict[str, Any]:
        """Produce ``count`` kept pairs in ``out`` (resuming whatever is there); returns the summary.

        Args:
            sources: input images.
            out: output directory.
            count: kept edited pairs wanted.
            workers: editing processes (1: in this process). The output does not depend on it.
            progress: show a tqdm bar.
            max_jobs: give up after this many jobs (default ``20 * count + 100``), e.g. if every edit fails.
            on_shard: called with the shard index after each shard is committed.
            attention_threads: torch threads of this process while it computes attention maps (default:
                as set, e.g. by the command line's thread policy). With idle OpenMP threads sleeping
                (``OMP_WAIT_POLICY=PASSIVE``, what ``import synthetic`` sets before torch loads) the
                attention's threads and the workers share the cores well: on 2 cores with 2 workers, 2
                attention threads were faster than 1 on a quiet machine and beside a busy process
                (benchmarks/README.md). The maps do not depend on it (tested).
        """
        threads_before = torch.get_num_threads()
        if attention_threads is not None:
            torch.set_num_threads(attention_threads)
        try:
            return self._run(sources, Path(out), count, workers, progress, max_jobs, on_shard)
        finally:
            torch.set_num_threads(threads_before)

    def _run(
        self,
        sources: ImageSources,
        out: Path,
        count: int,
        workers: int,
        progress: bool,
        max_jobs: int | None,
        on_shard: Callable[[int], None] | None,
    ) -> dict[str, Any]:
        from tqdm.auto import tqdm

        out = Path(out)
        cfg = self.config
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.rglob(".*.tmp"):  # left by a killed writer
            stale.unlink()
        wanted = self.run_config(sources)
        cfg_path = out / "run_config.json"
        if cfg_path.is_file():
            have = json.loads(cfg_path.read_text(encoding="utf-8"))
            if have != json.loads(json.dumps(wanted)):
                raise InputError(
                    f"{cfg_path}: this output directory was made with different settings or inputs; "
                    "use a new --out or the same settings to resume"
                )
        else:
            atomic_write_json(cfg_path, wanted)
        max_jobs = 20 * count + 100 if max_jobs is None else max_jobs
        n = len(sources.keys)
        kept, shard = 0, 0
        bar = tqdm(total=count, desc="kept pairs", disable=not progress, unit="pair")
        pool, prepared, outcomes = None, None, None
        # Files are written by one writer thread, in shard order (PNGs, then JSONL, then the progress
        # record), while this thread computes the next shards' attention: its disk waits (fsync) and PNG
        # encoding overlap the attention instead of adding to it. At most one shard is being written; the
        # next waits for it, so a failed write stops the run before any later shard is written.
        writer = ThreadPoolExecutor(1, thread_name_prefix="discriminative-writer")
        writing: tuple[int, Future] | None = None
        try:
            while kept < count and shard * cfg.shard_size < max_jobs:
                record = self._load_progress(out, shard)
                first = shard * cfg.shard_size
                full = min(cfg.shard_size, max_jobs - first)
                if record is not None and (record["complete"] or kept + record["kept"] >= count):
                    kept += record["kept"]
                    bar.update(record["kept"])
                    shard += 1
                    continue
                if pool is None and workers > 1:
                    pool = ProcessPoolExecutor(
                        workers, mp_context=multiprocessing.get_context("spawn"),
                        initializer=_init_worker, initargs=(cfg,),
                    )  # fmt: skip
                elif pool is None:
                    pool = _InlinePool(Worker(cfg))
                if prepared is None or prepared.shard != shard:
                    jobs = [plan_job(cfg, n, first + k) for k in range(full)]
                    prepared = self._prepare_shard(sources, shard, jobs)
                    outcomes = None
                if outcomes is None:
                    outcomes = self._submit(pool, prepared)
                upcoming, upcoming_outcomes, nxt = None, None, shard + 1
                if workers > 1 and nxt * cfg.shard_size < max_jobs and self._load_progress(out, nxt) is None:
                    # the next shard's images and attention, while the workers edit this one; its edits
                    # are queued behind this shard's, so the workers go on while this one is written
                    size = min(cfg.shard_size, max_jobs - nxt * cfg.shard_size)
                    upcoming = self._prepare_shard(
                        sources, nxt, [plan_job(cfg, n, nxt * cfg.shard_size + k) for k in range(size)]
                    )
                    upcoming_outcomes = self._submit(pool, upcoming)
                record, pairs = self._collect_shard(sources, prepared, outcomes, count - kept)
                self._written(writing, on_shard)
                writing = (shard, writer.submit(self._write_shard, out, prepared, record, pairs))
                prepared, outcomes = upcoming, upcoming_outcomes
                kept += record["kept"]
                bar.update(record["kept"])
                shard += 1
            self._written(writing, on_shard)
            writing = None
        finally:
            bar.close()
            if writing is not None:  # the run failed: let the shard being written finish (or fail) first
                wait([writing[1]])
            writer.shutdown()
            if isinstance(pool, ProcessPoolExecutor):
                pool.shutdown(cancel_futures=True)  # e.g. the next shard's edits when the target is reached
        summary = self.summarise(out, sources, count)
        atomic_write_json(out / "summary.json", summary)
        if cfg.preview:
            self.write_preview(out, cfg.preview)
        return summary

    @staticmethod
    def _load_progress(out: Path, shard: int) -> dict[str, Any] | None:
        path = out / "progress" / f"shard-{shard:05d}.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def _prepare_shard(self, sources: ImageSources, shard: int, jobs: list[Job]) -> _PreparedShard:
        """Load a shard's images and compute their attention maps (one per source image), in this process."""
        cfg = self.config
        start = time.perf_counter()
        images: dict[int, np.ndarray] = {}
        corrupt: dict[int, str] = {}
        for i in sorted(
            {j.source for j in jobs} | {j.donor for j in jobs if j.editor == "add" and j.donor is not None}
        ):
            try:
                images[i] = load_image(sources.paths[i], cfg.max_side)
            except CorruptImage:
                corrupt[i] = sources.keys[i]
        loaded, cpu = time.perf_counter(), time.thread_time()
        needing = sorted({j.source for j in jobs if j.source in images})
        maps = dict(zip(needing, self.attention.maps([images[i] for i in needing]), strict=True))
        self.stage_seconds["load"] += loaded - start
        self.stage_seconds["attention"] += time.perf_counter() - loaded
        self.stage_seconds["attention_cpu"] += time.thread_time() - cpu
        self.stage_counts["attention_maps"] += len(needing)
        annotated = {i: self.annotated_regions(sources, i, images[i]) for i in images}
        inputs, early = [], {}
        for j in jobs:
            if j.source in corrupt:
                early[j.index] = JobOutcome(j.index, False, "corrupt_image")
                continue
            donor = j.donor if j.editor == "add" and j.donor in images else None
            inputs.append(
                JobInput(
                    j, images[j.source], maps[j.source], annotated[j.source],
                    images[donor] if donor is not None else None,
                    annotated[donor] if donor is not None else None,
                )
            )  # fmt: skip
        return _PreparedShard(shard, jobs, images, corrupt, inputs, early)

    @staticmethod
    def _submit(pool: ProcessPoolExecutor | _InlinePool, prepared: _PreparedShard) -> Iterator[JobOutcome]:
        """Start a shard's edits: one task per source image (its edits share one region proposal). A
        process pool starts them now; the outcomes come back in job order."""
        return itertools.chain.from_iterable(pool.map(_run_in_worker, prepared.groups()))

    def _written(self, writing: tuple[int, Future] | None, on_shard: Callable[[int], None] | None) -> None:
        """Wait until the shard being written is committed (re-raising its error), then report it."""
        if writing is None:
            return
        shard, future = writing
        future.result()
        if on_shard is not None:
            on_shard(shard)

    def _collect_shard(
        self,
        sources: ImageSources,
        prepared: _PreparedShard,
        outcomes: Iterator[JobOutcome],
        still_needed: int,
    ) -> tuple[dict[str, Any], list[tuple[Job, JobOutcome, list[Sample]]]]:
        """Collect the workers' outcomes and decide what the shard keeps: its progress record and the kept
        pairs with their samples (nothing is written here)."""
        cfg, jobs, images = self.config, prepared.jobs, prepared.images
        start = time.perf_counter()
        outcomes_by_index = dict(prepared.early)
        for o in outcomes:
            outcomes_by_index[o.index] = o
            self.stage_seconds["edit_cpu"] += o.cpu_seconds
        self.stage_seconds["edit_wait"] += time.perf_counter() - start
        pairs, records, kept, last = [], [], 0, jobs[-1].index + 1 if jobs else 0
        for j in jobs:
            o = outcomes_by_index[j.index]
            if o.kept and self.clip_filter is not None:
                verdict = self.clip_filter.check(images[j.source], o.edited)
                o.meta.update(verdict.stats)
                if not verdict.keep:
                    o.kept, o.reason = False, verdict.reason
            records.append({"id": j.pair_id, "editor": j.editor, "kept": o.kept, "reason": o.reason})
            if not o.kept:
                continue
            pairs.append((j, o, self._pair_samples(sources, j, o)))
            kept += 1
            if kept >= still_needed:
                last = j.index + 1
                break
        record = {
            "shard": prepared.shard,
            "first_job": jobs[0].index if jobs else 0,
            "end_job": last,
            # Complete: every job of a full-size shard ran. A shard cut short because the target was
            # reached is recomputed if a later run asks for more.
            "complete": kept < still_needed and len(jobs) == cfg.shard_size,
            "kept": kept,
            "samples": sum(len(samples) for _, _, samples in pairs),
            "corrupt_images": sorted(prepared.corrupt.values()),
            "jobs": records,
        }
        return record, pairs

    def _write_shard(
        self,
        out: Path,
        prepared: _PreparedShard,
        record: dict[str, Any],
        pairs: list[tuple[Job, JobOutcome, list[Sample]]],
    ) -> None:
        """Write a shard's kept pairs (source and edited PNGs), then its JSONL, then its progress record,
        each file atomically (in the writer thread)."""
        start, cpu = time.perf_counter(), time.thread_time()
        for job, o, _ in pairs:
            src = out / _source_path(job)
            if not src.is_file():
                atomic_write_bytes(src, png_bytes(prepared.images[job.source]))
            atomic_write_bytes(
                out / _edit_path(job), o.edited_png if o.edited_png is not None else png_bytes(o.edited)
            )
        name = f"shard-{prepared.shard:05d}"
        atomic_write_jsonl(out / "shards" / f"{name}.jsonl", [s.to_json() for _, _, ss in pairs for s in ss])
        atomic_write_json(out / "progress" / f"{name}.json", record)
        self.stage_seconds["write"] += time.perf_counter() - start
        self.stage_seconds["write_cpu"] += time.thread_time() - cpu

    def _pair_samples(self, sources: ImageSources, job: Job, o: JobOutcome) -> list[Sample]:
        """The samples of a kept pair (its difference task, and the unedited negative if drawn)."""
        src_rel, edit_rel = _source_path(job), _edit_path(job)
        caption = self.rewriter(o.caption) if self.rewriter else o.caption
        meta = {
            "pair": job.pair_id,
            "source": sources.keys[job.source],
            "edit": o.meta,
            "original_caption": caption if self.rewriter else None,
        }
        if self.rewriter:
            meta["template_caption"] = o.caption
        if sources.captions[job.source]:
            meta["source_caption"] = sources.captions[job.source]
        meta = {k: v for k, v in meta.items() if v is not None}
        task_rng = np.random.default_rng([self.config.seed, job.index, 3])
        samples = [
            difference_sample(
                job.task, f"{job.pair_id}-{job.task}", src_rel, edit_rel, caption, task_rng, meta
            )
        ]
        if job.negative:
            neg_meta = {"pair": job.pair_id, "source": sources.keys[job.source]}
            samples.append(
                no_difference_sample(
                    job.negative_task, f"{job.pair_id}-same-{job.negative_task}", src_rel, task_rng, neg_meta
                )
            )
        return samples

    # -- reporting
    def summarise(self, out: Path, sources: ImageSources, count: int) -> dict[str, Any]:
        """Counts over every committed shard (a pure function of the output directory)."""
        per_editor: dict[str, Counter] = {}
        reasons: Counter = Counter()
        corrupt: set[str] = set()
        kept = samples = negatives = jobs = 0
        for path in sorted((out / "progress").glob("shard-*.json")):
            rec = json.loads(path.read_text(encoding="utf-8"))
            corrupt.update(rec["corrupt_images"])
            samples += rec["samples"]
            for r in rec["jobs"]:
                jobs += 1
                c = per_editor.setdefault(r["editor"], Counter())
                if r["kept"]:
                    kept += 1
                    c["kept"] += 1
                else:
                    reasons[r["reason"]] += 1
                    c[r["reason"]] += 1
        for path in sorted((out / "shards").glob("shard-*.jsonl")):
            negatives += sum(
                '"negative": true' in line for line in path.read_text(encoding="utf-8").splitlines()
            )
        skipped = {k: sorted(v) for k, v in sources.skipped.items()}
        if corrupt:
            skipped["corrupt"] = sorted(corrupt)
        return {
            "requested": count,
            "kept": kept,
            "jobs": jobs,
            "samples": samples,
            "negatives": negatives,
            "rejected": dict(sorted(reasons.items())),
            "by_editor": {e: dict(sorted(c.items())) for e, c in sorted(per_editor.items())},
            "skipped_images": {k: len(v) for k, v in skipped.items()},
            "skipped_files": skipped,
            "attention": self.description,
            "seed": self.config.seed,
        }

    def iter_pairs(self, out: Path) -> Iterator[dict[str, Any]]:
        """The written describe/which/any samples with an edit, in order (negatives excluded)."""
        for path in sorted((Path(out) / "shards").glob("shard-*.jsonl")):
            for rec in read_jsonl(path, what="shard"):
                if not rec["meta"].get("negative"):
                    yield rec

    def write_preview(self, out: Path, limit: int, thumb: int = 160) -> Path | None:
        """``preview.png``: one row per pair — original | edited | attention overlay (box = edited region)."""
        rows = []
        for rec in self.iter_pairs(out):
            if len(rows) >= limit:
                break
            edit_rel = next(p for p in rec["images"] if p.startswith("images/edit/"))
            src_rel = next(p for p in rec["images"] if p.startswith("images/src/"))
            src = Path(out) / src_rel
            original = np.asarray(Image.open(src).convert("RGB"))
            edited = np.asarray(Image.open(Path(out) / edit_rel).convert("RGB"))
            heat = overlay(original, self.attention.maps([original])[0])
            tiles = [
                Image.fromarray(a).resize((thumb, thumb), Image.Resampling.BILINEAR)
                for a in (original, edited, heat)
            ]
            h, w = original.shape[:2]
            x0, y0, x1, y1 = rec["meta"]["edit"]["box"]
            ImageDraw.Draw(tiles[2]).rectangle(
                (x0 * thumb / w, y0 * thumb / h, x1 * thumb / w - 1, y1 * thumb / h - 1),
                outline=(0, 255, 255),
                width=2,
            )
            caption = rec["conversation"][-1]["text"]
            rows.append((tiles, caption))
        if not rows:
            return None
        text_h = 28
        grid = Image.new("RGB", (3 * thumb, len(rows) * (thumb + text_h)), (255, 255, 255))
        draw = ImageDraw.Draw(grid)
        for r, (tiles, caption) in enumerate(rows):
            top = r * (thumb + text_h)
            for c, tile in enumerate(tiles):
                grid.paste(tile, (c * thumb, top))
            draw.text((4, top + thumb + 2), caption[:90], fill=(0, 0, 0))
            draw.text((4, top + thumb + 14), caption[90:180], fill=(0, 0, 0))
        buf = io.BytesIO()
        grid.save(buf, format="PNG")
        atomic_write_bytes(Path(out) / "preview.png", buf.getvalue())
        return Path(out) / "preview.png"


def _source_path(job: Job) -> str:
    return f"images/src/{job.source:06d}.png"


def _edit_path(job: Job) -> str:
    return f"images/edit/{job.pair_id}.png"


@dataclass
class _PreparedShard:
    """A shard's jobs with their loaded images and attention maps, ready for the workers."""

    shard: int
    jobs: list[Job]
    images: dict[int, np.ndarray]
    corrupt: dict[int, str]
    inputs: list[JobInput]
    early: dict[int, JobOutcome]  # outcomes known without editing (corrupt source image)

    def groups(self) -> list[list[JobInput]]:
        """``inputs`` cut into runs of consecutive jobs with the same source image, in job order."""
        return [list(g) for _, g in itertools.groupby(self.inputs, key=lambda inp: inp.job.source)]


class _InlinePool:
    """The ``map`` of a process pool, run in this process (workers = 1)."""

    def __init__(self, worker: Worker):
        self.worker = worker

    def map(self, _fn, groups: Sequence[list[JobInput]]) -> Iterator[list[JobOutcome]]:
        return (self.worker.run_group(g) for g in groups)


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a plain-text table (kept / rejected per reason, per editor)."""
    reasons = sorted(summary["rejected"])
    header = ["editor", "kept", *reasons]
    rows = [
        [e, str(c.get("kept", 0)), *(str(c.get(r, 0)) for r in reasons)]
        for e, c in summary["by_editor"].items()
    ]
    rows.append(["total", str(summary["kept"]), *(str(summary["rejected"][r]) for r in reasons)])
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    lines = [line(header), line(["-" * w for w in widths]), *map(line, rows)]
    lines.append(
        f"jobs {summary['jobs']}, kept pairs {summary['kept']}/{summary['requested']}, samples {summary['samples']} "
        f"(negatives {summary['negatives']})"
    )
    for kind, names in summary["skipped_files"].items():
        shown = ", ".join(names[:10]) + (f", … ({len(names) - 10} more)" if len(names) > 10 else "")
        lines.append(f"skipped {kind} images: {len(names)}: {shown}")
    return "\n".join(lines)
