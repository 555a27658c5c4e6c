"""A torch Dataset over Samples: tokenised on access, images loaded lazily and checked.

Items are ``{"id", "input_ids" (L,), "labels" (L,), "num_images", "dropped_turns", "pixel_values"
(T, 3, S, S)}`` — or ``"vision_features"`` (T, N_v, D_v) read from a :class:`FeatureCache` instead of
pixels — plus ``"image_hashes"`` when asked and ``"skipped"`` when skipping bad samples. Collate them
with :class:`~vpgkit.data.Collator`. The dataset pickles (no lambdas), so ``DataLoader(num_workers=2)``
works.

Bad samples (missing or corrupt image, marker/image mismatch, too long) raise
:class:`~vpgkit.data.DataError` naming the dataset, index and sample. With ``skip_bad_samples=True`` the
item is replaced by the next good one (keeping batch sizes fixed), the skip is counted in
:attr:`SampleDataset.report` and travels with the item as a ``"skipped"`` record (DataLoader workers have
their own copies of the report: feed ``batch["skipped"]`` to a main-process ``SkipReport``).
:meth:`SampleDataset.scan` checks everything up front instead.

Example:
    >>> import numpy as np
    >>> from vpgkit.data import Sample, SampleTokenizer, Turn, build_tiny_tokenizer
    >>> tok = build_tiny_tokenizer()
    >>> st = SampleTokenizer(tok, "vicuna_v0", image_token_id=3, num_queries=4, max_length=128)
    >>> img = np.zeros((32, 32, 3), dtype=np.uint8)
    >>> ds = SampleDataset([Sample("a", [img], [Turn("user", "<image> hi"), Turn("assistant", "a cat .")])],
    ...                    st, image_size=28)
    >>> item = ds[0]
    >>> item["pixel_values"].shape, item["num_images"]
    (torch.Size([1, 3, 28, 28]), 1)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .errors import DataError, SkipReport
from .images import ImageStore, load_image, open_image_store
from .sample import Sample
from .tokenize import SampleTokenizer

__all__ = ["SampleDataset"]


class SampleDataset(Dataset):
    """Samples → model inputs, lazily.

    Args:
        samples: the samples (e.g. from a reader).
        tokenizer: a :class:`SampleTokenizer`.
        image_size: S for the default ``ImageProcessor`` (CLIP mean/std, direct resize); or give
            ``image_processor``.
        images: image store for string references: a folder (default: current directory, so absolute
            paths work), a MIMIC-IT base64 JSON, or an :class:`ImageStore`.
        skip_bad_samples: replace bad samples by the next good one and count them instead of raising.
        report: the :class:`SkipReport` to count into (e.g. shared with the reader); a new one if None.
        feature_cache: a :class:`FeatureCache`: items carry ``vision_features`` from it instead of
            ``pixel_values`` (images are hashed, not decoded); a miss is a ``feature_cache_miss`` error.
        return_image_hashes: add ``image_hashes`` (content hash per image) to items.
        name: how errors name this dataset.
        max_replacements: consecutive bad samples tolerated when skipping before giving up.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        tokenizer: SampleTokenizer,
        image_size: int | None = None,
        image_processor: Any = None,
        images: ImageStore | str | os.PathLike | None = None,
        skip_bad_samples: bool = False,
        report: SkipReport | None = None,
        feature_cache: Any = None,
        return_image_hashes: bool = False,
        name: str = "dataset",
        max_replacements: int = 32,
    ):
        if image_processor is None and feature_cache is None:
            if image_size is None:
                raise ValueError("SampleDataset: give image_size or image_processor")
            from ..backbones.image_processor import ImageProcessor

            image_processor = ImageProcessor(size=image_size)
        self.samples = list(samples)
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.store = open_image_store(images)
        self.skip_bad_samples = skip_bad_samples
        self.report = report if report is not None else SkipReport()
        self.feature_cache = feature_cache
        self.return_image_hashes = return_image_hashes
        self.name = name
        self.max_replacements = max_replacements
        self._order = list(range(len(self.samples)))  # narrowed by scan()

    def __len__(self) -> int:
        return len(self._order)

    def __repr__(self) -> str:
        return f"SampleDataset({self.name!r}, {len(self)} samples, store={self.store}, skip_bad_samples={self.skip_bad_samples})"

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"{self.name}: index {index} out of range for {len(self)} samples")
        skipped: list[dict[str, Any]] = []
        for attempt in range(min(self.max_replacements, len(self) - 1) + 1):
            j = self._order[(index + attempt) % len(self)]
            try:
                item = self.load(j)
            except DataError as e:
                if not self.skip_bad_samples:
                    raise DataError(e.reason, f"{self.name}[{j}]: {e}", e.sample_id) from None
                self.report.add(e)
                skipped.append(e.record())
                continue
            if self.skip_bad_samples:
                item["skipped"] = skipped
            return item
        raise DataError(
            skipped[-1]["reason"] if skipped else "invalid_value",
            f"{self.name}: {len(skipped)} consecutive bad samples from index {index}; {self.report}",
        )

    def load(self, j: int) -> dict[str, Any]:
        """Item of sample ``j`` (raw index, no replacement); raises DataError for a bad sample."""
        sample = self.samples[j]
        try:
            sample.validate()
        except ValueError as e:
            raise DataError("image_count_mismatch", str(e), sample.id) from None
        out = self.tokenizer(sample)
        refs = [ref for e in sample.in_context for ref in e.images] + list(sample.images)
        refs = refs[: out["num_images"]]  # right truncation may have dropped trailing images
        use_cache = self.feature_cache is not None
        pixels, hashes = [], []
        for t, ref in enumerate(refs):
            try:
                image, key = load_image(ref, self.store, decode=not use_cache)
            except DataError as e:
                raise DataError(e.reason, f"sample {sample.id!r}, image {t}: {e}", sample.id) from None
            hashes.append(key)
            if image is not None:
                pixels.append(self.image_processor.preprocess(image))
        item: dict[str, Any] = {"id": sample.id, **out}
        if "fetch_box" in sample.meta:
            item["fetch_box"] = _fetch_box(sample)
        if use_cache:
            item["vision_features"] = self._cached_features(sample, hashes)
        else:
            size = self.image_processor.size
            item["pixel_values"] = torch.stack(pixels) if pixels else torch.zeros(0, 3, size, size)
        if self.return_image_hashes:
            item["image_hashes"] = hashes
        return item

    def _cached_features(self, sample: Sample, hashes: list[str]) -> torch.Tensor:
        features = []
        for t, key in enumerate(hashes):
            if not self.feature_cache.contains(key):
                raise DataError(
                    "feature_cache_miss",
                    f"sample {sample.id!r}, image {t}: no cached features for hash {key[:12]}… in "
                    f"{self.feature_cache}; precompute features for this dataset first",
                    sample.id,
                )
            features.append(self.feature_cache.get(key))
        if features:
            return torch.stack(features)
        shape = self.feature_cache.feature_shape
        return torch.zeros(0, *(shape or (0, 0)))

    def scan(self, progress: bool = True) -> SkipReport:
        """Load every sample once (tokenise, read and decode every image).

        With ``skip_bad_samples`` the bad ones are removed from the index, so iteration never has to
        replace them; otherwise the first bad sample raises. Returns :attr:`report`.
        """
        good = []
        for j in tqdm(self._order, desc=f"checking {self.name}", disable=not progress):
            try:
                self.load(j)
                good.append(j)
            except DataError as e:
                if not self.skip_bad_samples:
                    raise DataError(e.reason, f"{self.name}[{j}]: {e}", e.sample_id) from None
                self.report.add(e)
        if not good:
            raise DataError("invalid_value", f"{self.name}: no usable samples; {self.report}")
        self._order = good
        return self.report


def _fetch_box(sample: Sample) -> torch.Tensor:
    """``sample.meta["fetch_box"]`` as a (4,) float tensor, checked: x0 < x1 and y0 < y1 within [0, 1]."""
    box = sample.meta["fetch_box"]
    ok = isinstance(box, (list, tuple)) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)
    if not ok or not (0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1):
        raise DataError(
            "invalid_value",
            f"sample {sample.id!r}: meta.fetch_box must be [x0, y0, x1, y1] with 0 <= x0 < x1 <= 1 and "
            f"0 <= y0 < y1 <= 1, got {box!r}",
            sample.id,
        )
    return torch.tensor([float(v) for v in box])
