"""Collation: tokenised samples with their images → one right-padded batch.

Example:
    >>> import torch
    >>> items = [
    ...     {"id": "a", "input_ids": torch.tensor([1, 3, 5]), "labels": torch.tensor([-100, -100, 5]),
    ...      "num_images": 1, "pixel_values": torch.ones(1, 3, 28, 28)},
    ...     {"id": "b", "input_ids": torch.tensor([1, 6]), "labels": torch.tensor([-100, 6]),
    ...      "num_images": 0, "pixel_values": torch.zeros(0, 3, 28, 28)},
    ... ]
    >>> batch = collate(items, pad_token_id=0, image_size=28)
    >>> batch["input_ids"].tolist(), batch["attention_mask"].tolist()
    ([[1, 3, 5], [1, 6, 0]], [[1, 1, 1], [1, 1, 0]])
    >>> batch["labels"][1].tolist(), tuple(batch["pixel_values"].shape), batch["num_images"].tolist()
    ([-100, 6, -100], (2, 1, 3, 28, 28), [1, 0])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .tokenize import IGNORE_INDEX

__all__ = ["Collator", "collate"]


def collate(batch: Sequence[Mapping[str, Any]], pad_token_id: int, image_size: int) -> dict[str, Any]:
    """Pad a list of dataset items into a batch.

    Args:
        batch: items with ``input_ids`` (L_i,), ``labels`` (L_i,), ``num_images`` int, ``id``, and
            either ``pixel_values`` (T_i, 3, S, S) or ``vision_features`` (T_i, N_v, D_v) (cached
            features); optional ``dropped_turns`` int, ``skipped`` list, ``image_hashes`` list,
            ``fetch_box`` (4,).
        pad_token_id: id written at padded positions of ``input_ids``.
        image_size: S; checked against the items and used when the batch holds no image at all.

    Returns:
        ``input_ids`` (B, L) right-padded, ``attention_mask`` (B, L), ``labels`` (B, L) with -100 on
        padding, ``pixel_values`` (B, T_img, 3, S, S) float zero-padded for rows with fewer images
        (T_img = the batch's largest image count) — or ``vision_features`` (B, T_img, N_v, D_v) —,
        ``num_images`` (B,) long, ``ids`` list[str], ``dropped_turns`` (B,) long, ``skipped`` (list of
        skip records of the replaced samples), ``image_hashes`` (list of lists) and ``fetch_boxes`` (B, 4),
        NaN rows for items without a box, when items have them.
    """
    if not batch:
        raise ValueError("collate: got an empty batch")
    lengths = [int(item["input_ids"].shape[0]) for item in batch]
    B, L = len(batch), max(lengths)
    input_ids = torch.full((B, L), pad_token_id, dtype=torch.long)
    labels = torch.full((B, L), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((B, L), dtype=torch.long)
    for b, (item, n) in enumerate(zip(batch, lengths, strict=True)):
        if item["labels"].shape != item["input_ids"].shape:
            raise ValueError(
                f"collate: item {item.get('id', b)!r} has labels {tuple(item['labels'].shape)} "
                f"but input_ids {tuple(item['input_ids'].shape)}"
            )
        input_ids[b, :n] = item["input_ids"]
        labels[b, :n] = item["labels"]
        attention_mask[b, :n] = 1
    num_images = torch.tensor([int(item["num_images"]) for item in batch], dtype=torch.long)
    out: dict[str, Any] = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "num_images": num_images,
        "ids": [str(item.get("id", b)) for b, item in enumerate(batch)],
        "dropped_turns": torch.tensor(
            [int(item.get("dropped_turns", 0)) for item in batch], dtype=torch.long
        ),
    }
    if all("vision_features" in item for item in batch):
        out["vision_features"] = _pad_images(batch, "vision_features", num_images, None)
    else:
        out["pixel_values"] = _pad_images(batch, "pixel_values", num_images, (3, image_size, image_size))
    if any("fetch_box" in item for item in batch):
        nan = torch.full((4,), float("nan"))
        out["fetch_boxes"] = torch.stack([item.get("fetch_box", nan) for item in batch])
    if any("skipped" in item for item in batch):
        out["skipped"] = [record for item in batch for record in item.get("skipped", [])]
    if any("image_hashes" in item for item in batch):
        out["image_hashes"] = [list(item.get("image_hashes", [])) for item in batch]
    return out


def _pad_images(batch, key: str, num_images: torch.Tensor, shape: tuple[int, ...] | None) -> torch.Tensor:
    tensors = []
    for b, item in enumerate(batch):
        if key not in item:
            raise ValueError(f"collate: item {item.get('id', b)!r} has no {key!r}")
        t = item[key]
        if t.shape[0] != num_images[b]:
            raise ValueError(
                f"collate: item {item.get('id', b)!r} has {t.shape[0]} images in {key!r} "
                f"but num_images {int(num_images[b])}"
            )
        if shape is not None and t.dim() == 5:  # (T_i, F, 3, S, S): videos of F frames
            if tuple(t.shape[2:]) != shape:
                raise ValueError(
                    f"collate: item {item.get('id', b)!r} {key} has per-frame shape {tuple(t.shape[2:])}, "
                    f"expected {shape} (image_size {shape[-1]})"
                )
        elif shape is not None and tuple(t.shape[1:]) != shape:
            raise ValueError(
                f"collate: item {item.get('id', b)!r} {key} has per-image shape {tuple(t.shape[1:])}, "
                f"expected {shape} (image_size {shape[-1]})"
            )
        tensors.append(t)
    video = (len(shape) if shape is not None else 2) + 2  # dims of an item with a frame axis
    frames = {t.shape[1] for t in tensors if t.shape[0] and t.dim() == video}
    if frames:  # a frame axis: every row with images must have the same F (an image is F = 1)
        plain = [b for b, t in enumerate(tensors) if t.shape[0] and t.dim() != video]
        if len(frames) > 1 or (plain and frames != {1}):
            raise ValueError(
                f"collate: {key} with different frame counts in one batch ({sorted(frames)} frames"
                f"{', and single images' if plain else ''}); sample the same number of frames for every "
                "video of a batch (an image is one frame: give it the frame axis (T_i, 1, ...))"
            )
        f = frames.pop()
        tensors = [t if t.dim() == video else t.reshape(t.shape[0], f, *t.shape[1:]) for t in tensors]
        if shape is not None:
            shape = (f, *shape)
    if shape is None:
        shapes = {tuple(t.shape[1:]) for t in tensors if t.shape[0]}
        if len(shapes) > 1:
            raise ValueError(f"collate: {key} of different shapes in one batch: {sorted(shapes)}")
        shape = shapes.pop() if shapes else tuple(tensors[0].shape[1:])
    T = int(num_images.max())
    dtype = next((t.dtype for t in tensors if t.shape[0]), torch.float32)
    out = torch.zeros((len(batch), T, *shape), dtype=dtype)
    for b, t in enumerate(tensors):
        out[b, : t.shape[0]] = t
    return out


class Collator:
    """Picklable ``collate_fn`` for ``torch.utils.data.DataLoader`` (works with ``num_workers > 0``).

    Example:
        >>> loader_kwargs = {"collate_fn": Collator(pad_token_id=0, image_size=28)}
    """

    def __init__(self, pad_token_id: int, image_size: int):
        self.pad_token_id = pad_token_id
        self.image_size = image_size

    def __call__(self, batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return collate(batch, self.pad_token_id, self.image_size)

    def __repr__(self) -> str:
        return f"Collator(pad_token_id={self.pad_token_id}, image_size={self.image_size})"
