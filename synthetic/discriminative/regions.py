"""Region proposals and the attention-guided choice of where to edit.

A :class:`Region` is a boolean pixel mask with an optional label. Proposals come from the dataset's own
annotations (COCO-style polygons, uncompressed RLE or boxes, see :class:`CocoAnnotations`), from
superpixels (:class:`SuperpixelProposer`, SLIC or Felzenszwalb from scikit-image: classical, no
weights), or from SAM through transformers (:class:`SamProposer`, for users with local weights). Each
region is scored by the mean attention inside it and the least-attended one within the size limits is
chosen (:func:`choose_least_attended`); ties go to the lower index, so the choice is deterministic.

Example:
    >>> import numpy as np
    >>> a = np.zeros((10, 10), bool); a[:5] = True
    >>> b = ~a
    >>> attention = np.zeros((10, 10)); attention[:5] = 1.0      # the top half is looked at
    >>> choose_least_attended([Region(a), Region(b)], attention, min_fraction=0.1, max_fraction=0.6)
    1
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image, ImageDraw


@dataclass
class Region:
    """A candidate edit region.

    Attributes:
        mask: (H, W) bool, True inside the region.
        label: object name from annotations (None for superpixels: captions say "region").
        source: where it came from: ``"annotation"``, ``"superpixel"`` or ``"sam"``.
    """

    mask: np.ndarray
    label: str | None = None
    source: str = "superpixel"

    @functools.cached_property
    def area(self) -> int:
        """Pixels inside the region (counted once: ranking and editing ask for it many times per job;
        masks are never changed in place)."""
        return int(self.mask.sum())

    @property
    def fraction(self) -> float:
        """Share of the image's pixels inside the region."""
        return self.area / self.mask.size

    @property
    def box(self) -> tuple[int, int, int, int]:
        """Tight box ``(x0, y0, x1, y1)``, exclusive ends."""
        ys, xs = np.nonzero(self.mask)
        if len(xs) == 0:
            return (0, 0, 0, 0)
        return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


class RegionProposer(Protocol):
    """Anything that proposes regions for an (H, W, 3) uint8 image."""

    def __call__(self, image: np.ndarray) -> list[Region]: ...


class SuperpixelProposer:
    """Superpixels as regions (no weights needed).

    Args:
        method: ``"slic"`` (compact, roughly equal-sized segments) or ``"felzenszwalb"`` (graph-based,
            follows colour edges).
        n_segments: SLIC's target segment count.
        compactness: SLIC's colour/space trade-off.
        scale, sigma, min_size: Felzenszwalb's parameters (``min_size`` in pixels).
    """

    def __init__(
        self,
        method: str = "slic",
        n_segments: int = 32,
        compactness: float = 10.0,
        scale: float = 100.0,
        sigma: float = 0.8,
        min_size: int = 50,
    ):
        if method not in ("slic", "felzenszwalb"):
            raise ValueError(f"SuperpixelProposer: method must be 'slic' or 'felzenszwalb', got {method!r}")
        self.method, self.n_segments, self.compactness = method, n_segments, compactness
        self.scale, self.sigma, self.min_size = scale, sigma, min_size

    def segments(self, image: np.ndarray) -> np.ndarray:
        """(H, W) int labels."""
        from skimage.segmentation import felzenszwalb, slic

        if self.method == "slic":
            return slic(image, n_segments=self.n_segments, compactness=self.compactness, start_label=0)
        return felzenszwalb(image, scale=self.scale, sigma=self.sigma, min_size=self.min_size)

    def __call__(self, image: np.ndarray) -> list[Region]:
        labels = self.segments(image)
        return [Region(labels == k, None, "superpixel") for k in np.unique(labels)]


class SamProposer:
    """Masks from a local SAM checkpoint through transformers' ``mask-generation`` pipeline.

    Args:
        model_dir: a ``save_pretrained`` directory of a SAM model (nothing is downloaded).
        points_per_batch: prompt points per forward pass.
    """

    def __init__(self, model_dir: str | Path, points_per_batch: int = 64):
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(
                f"SamProposer: {model_dir} is not a local SAM model directory (no config.json); "
                "save one with SamModel.save_pretrained + SamProcessor.save_pretrained, or use superpixels"
            )
        from transformers import pipeline

        self.generator = pipeline("mask-generation", model=str(model_dir), local_files_only=True)
        self.points_per_batch = points_per_batch

    def __call__(self, image: np.ndarray) -> list[Region]:
        out = self.generator(Image.fromarray(image), points_per_batch=self.points_per_batch)
        return [Region(np.asarray(m, dtype=bool), None, "sam") for m in out["masks"]]


def score_regions(regions: Sequence[Region], attention: np.ndarray) -> np.ndarray:
    """Mean attention inside each region: (R,) float64 (NaN for an empty region)."""
    return np.array(
        [float(attention[r.mask].mean()) if r.area else np.nan for r in regions], dtype=np.float64
    )


def choose_least_attended(
    regions: Sequence[Region],
    attention: np.ndarray,
    min_fraction: float = 0.01,
    max_fraction: float = 0.25,
    exclude: Sequence[int] = (),
    scores: np.ndarray | None = None,
) -> int | None:
    """Index of the least-attended region whose size lies in [min_fraction, max_fraction] of the image.

    Args:
        regions: proposals for one image.
        attention: (H, W) attention map of that image.
        exclude: indices not to choose (e.g. the first region of a swap) — nor any region overlapping them.
        scores: precomputed :func:`score_regions` output.

    Returns:
        The index, or None when no region fits.
    """
    scores = score_regions(regions, attention) if scores is None else scores
    taken = np.zeros(attention.shape, bool)
    for i in exclude:
        taken |= regions[i].mask
    best, best_score = None, np.inf
    for i, (region, score) in enumerate(zip(regions, scores, strict=True)):
        if i in exclude or not (min_fraction <= region.fraction <= max_fraction) or np.isnan(score):
            continue
        if (region.mask & taken).any():
            continue
        if score < best_score:  # strict: ties keep the lower index
            best, best_score = i, score
    return best


def ranked_regions(
    regions: Sequence[Region], scores: np.ndarray, min_fraction: float = 0.01, max_fraction: float = 0.25
) -> list[int]:
    """Indices of the regions within the size limits, least-attended first (ties: lower index first)."""
    ok = [
        i
        for i, r in enumerate(regions)
        if min_fraction <= r.fraction <= max_fraction and not np.isnan(scores[i])
    ]
    return sorted(ok, key=lambda i: (scores[i], i))


# ------------------------------------------------------------------------------------ COCO annotations


@dataclass
class CocoObject:
    """One annotated object in the annotation file's pixel coordinates."""

    label: str
    bbox: tuple[float, float, float, float]  # x, y, w, h
    segmentation: Any = None


class CocoAnnotations:
    """COCO-style instance annotations: ``images[{id, file_name, width, height}]``,
    ``annotations[{image_id, category_id, bbox, segmentation?}]``, ``categories[{id, name}]``.

    Masks come from polygons or uncompressed RLE (``{"counts": [ints], "size": [h, w]}``); objects with
    compressed RLE (a string, which needs pycocotools) or no segmentation use their box.

    Example:
        >>> ann = CocoAnnotations.from_dict({"images": [{"id": 1, "file_name": "a.png", "width": 4, "height": 4}],
        ...     "annotations": [{"image_id": 1, "category_id": 7, "bbox": [0, 0, 2, 2]}],
        ...     "categories": [{"id": 7, "name": "cup"}]})
        >>> [(r.label, r.area) for r in ann.regions("a.png", height=4, width=4)]
        [('cup', 4)]
    """

    def __init__(self, objects: dict[str, list[CocoObject]], sizes: dict[str, tuple[int, int]]):
        self.objects = objects
        self.sizes = sizes  # file_name -> (height, width) of the annotated image

    @classmethod
    def load(cls, path: str | Path) -> CocoAnnotations:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(
                f"annotations file {path} does not exist (expected COCO-style JSON)"
            ) from None
        except json.JSONDecodeError as e:
            raise ValueError(f"annotations file {path} is not valid JSON: {e}") from e
        return cls.from_dict(data, where=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "annotations") -> CocoAnnotations:
        try:
            names = {c["id"]: str(c["name"]) for c in data.get("categories", [])}
            files = {im["id"]: str(im["file_name"]) for im in data["images"]}
            sizes = {str(im["file_name"]): (int(im["height"]), int(im["width"])) for im in data["images"]}
            objects: dict[str, list[CocoObject]] = {f: [] for f in files.values()}
            for k, a in enumerate(data.get("annotations", [])):
                if a["image_id"] not in files:
                    raise ValueError(f"annotations[{k}]: image_id {a['image_id']!r} is not in images")
                label = names.get(a.get("category_id"), "object")
                x, y, w, h = (float(v) for v in a["bbox"])
                objects[files[a["image_id"]]].append(CocoObject(label, (x, y, w, h), a.get("segmentation")))
        except KeyError as e:
            raise ValueError(
                f"{where}: missing key {e.args[0]!r} (expected images[id, file_name, width, height], "
                "annotations[image_id, category_id, bbox], categories[id, name])"
            ) from None
        return cls(objects, sizes)

    def __contains__(self, file_name: str) -> bool:
        return file_name in self.objects

    def regions(self, file_name: str, height: int, width: int) -> list[Region]:
        """Object masks of ``file_name`` rasterised at (height, width) (scaled from the annotated size)."""
        src_h, src_w = self.sizes.get(file_name, (height, width))
        sy, sx = height / src_h, width / src_w
        out = []
        for obj in self.objects.get(file_name, []):
            mask = _rasterise(obj, src_h, src_w)
            if (src_h, src_w) != (height, width):
                mask = np.asarray(Image.fromarray(mask).resize((width, height), Image.Resampling.NEAREST))
            if not mask.any():  # degenerate polygon: fall back to the scaled box
                x, y, w, h = obj.bbox
                mask = np.zeros((height, width), bool)
                mask[int(y * sy) : int(np.ceil((y + h) * sy)), int(x * sx) : int(np.ceil((x + w) * sx))] = (
                    True
                )
            out.append(Region(mask.astype(bool), obj.label, "annotation"))
        return out


def _rasterise(obj: CocoObject, height: int, width: int) -> np.ndarray:
    seg = obj.segmentation
    if isinstance(seg, list) and seg:  # polygons [[x0, y0, x1, y1, ...], ...]
        canvas = Image.new("L", (width, height), 0)
        draw = ImageDraw.Draw(canvas)
        for poly in seg:
            if len(poly) >= 6:
                draw.polygon(
                    [(float(poly[i]), float(poly[i + 1])) for i in range(0, len(poly) - 1, 2)], fill=1
                )
        return np.asarray(canvas, dtype=bool)
    if isinstance(seg, dict) and isinstance(seg.get("counts"), list):  # uncompressed RLE, column-major
        h, w = seg.get("size", (height, width))
        flat = np.zeros(h * w, bool)
        pos, value = 0, False
        for run in seg["counts"]:
            flat[pos : pos + int(run)] = value
            pos, value = pos + int(run), not value
        mask = flat.reshape(w, h).T
        if (h, w) != (height, width):
            mask = np.asarray(Image.fromarray(mask).resize((width, height), Image.Resampling.NEAREST))
        return mask
    x, y, w, h = obj.bbox  # no or compressed segmentation: the box
    mask = np.zeros((height, width), bool)
    mask[int(y) : int(np.ceil(y + h)), int(x) : int(np.ceil(x + w))] = True
    return mask
