"""Where the VPG looks: Q-Former cross-attention turned into a per-pixel map.

``QFormer(vision, return_attentions=True).cross_attentions`` has shape (B, T_img, L_x, heads, N_q, N_v)
with the CLS token first among the N_v = 1 + grid² vision tokens. :func:`attention_to_pixels` averages
over layers, heads and queries, drops CLS, reshapes to the patch grid and upsamples bilinearly to the
image's pixels. :class:`VPGAttention` runs a vision encoder + Q-Former on images; anything with the same
``maps(images) -> list[(H, W)]`` method (an :class:`AttentionSource`) can replace it, e.g. a hand-made
map in tests (:class:`FunctionAttention`).

Example:
    >>> import torch
    >>> cross = torch.rand(1, 1, 2, 4, 3, 5).softmax(-1)           # (B, T_img, L_x, heads, N_q, 1 + 2²)
    >>> attention_to_pixels(cross, sizes=[(10, 12)])[0].shape       # one (H, W) map per image
    (10, 12)
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F


class AttentionSource(Protocol):
    """Gives one (H, W) float32 attention map per (H, W, 3) uint8 image (higher = looked at more)."""

    def maps(self, images: Sequence[np.ndarray]) -> list[np.ndarray]: ...


def attention_to_pixels(cross_attentions: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """Average Q-Former cross-attention to one pixel map per image.

    Args:
        cross_attentions: (B, T_img, L_x, heads, N_q, N_v), N_v = 1 + grid² (CLS first).
        sizes: (H, W) of each of the B·T_img images, in order.

    Returns:
        B·T_img float32 arrays (H, W); each is the mean attention of its patch, interpolated bilinearly.
    """
    if cross_attentions.dim() != 6:
        raise ValueError(
            f"cross_attentions: expected (B, T_img, L_x, heads, N_q, N_v), got shape {tuple(cross_attentions.shape)}"
        )
    b, t, _, _, _, n_v = cross_attentions.shape
    grid = math.isqrt(n_v - 1)
    if grid * grid != n_v - 1:
        raise ValueError(f"cross_attentions: N_v = {n_v} is not 1 CLS + a square grid of patches")
    if len(sizes) != b * t:
        raise ValueError(f"attention_to_pixels: {len(sizes)} sizes for {b * t} images")
    patches = cross_attentions.float().mean(dim=(2, 3, 4))[..., 1:].reshape(b * t, 1, grid, grid)
    return [
        F.interpolate(patches[i : i + 1], size=size, mode="bilinear", align_corners=False)[0, 0].numpy()
        for i, size in enumerate(sizes)
    ]


class VPGAttention:
    """Attention maps of a frozen vision encoder + Q-Former.

    Args:
        vpg: a :class:`~synthetic.discriminative.vpg_loader.VPG` (vision encoder, Q-Former, processor).
        batch_size: images per forward pass.
        dtype: run both the vision encoder and the Q-Former in this dtype (copies converted once, e.g.
            ``torch.bfloat16``: several times faster on CPUs with AMX; maps differ slightly from fp32).
            Default: as loaded — the maps are then exactly those of earlier versions.
    """

    def __init__(self, vpg, batch_size: int = 16, dtype: torch.dtype | None = None):
        if dtype is not None:
            vpg = dataclasses.replace(
                vpg, vision=_in_dtype(vpg.vision, dtype), qformer=_in_dtype(vpg.qformer, dtype)
            )
        self.vpg = vpg
        self.batch_size = batch_size

    @torch.no_grad()
    def maps(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One (H, W) float32 map per (H, W, 3) uint8 image, ``batch_size`` images per forward pass.

        A map does not depend on the other images of its batch (tested: equal to one image at a time).
        Only the part of the Q-Former the maps need runs (:meth:`~vpgkit.modules.QFormer.cross_attention_maps`:
        up to the last cross-attention layer's probabilities), with the same maps as a full pass.
        """
        out: list[np.ndarray] = []
        qformer_dtype = next(self.vpg.qformer.parameters()).dtype
        for start in range(0, len(images), self.batch_size):
            batch = list(images[start : start + self.batch_size])
            pixels = self.vpg.processor([[img] for img in batch])  # (M, 1, 3, S, S) float32
            vision = self.vpg.vision(pixels).to(qformer_dtype)  # (M, 1, N_v, D_v); no copy if same dtype
            cross = self.vpg.qformer.cross_attention_maps(vision)  # (M, 1, L_x, heads, N_q, N_v)
            out.extend(attention_to_pixels(cross, [img.shape[:2] for img in batch]))
        return out


def _in_dtype(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """``module`` itself if its weights are already ``dtype``, else a converted copy."""
    if next(module.parameters()).dtype == dtype:
        return module
    return copy.deepcopy(module).to(dtype)


class FunctionAttention:
    """An :class:`AttentionSource` from a function ``image -> (H, W) map`` (tests, saliency models …)."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray]):
        self.fn = fn

    def maps(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = []
        for i, img in enumerate(images):
            m = np.asarray(self.fn(img), dtype=np.float32)
            if m.shape != img.shape[:2]:
                raise ValueError(f"FunctionAttention: map {i} has shape {m.shape}, image is {img.shape[:2]}")
            out.append(m)
        return out


def overlay(image: np.ndarray, attention: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8 image with the min-max-normalised attention blended in as a red-to-yellow heat map."""
    a = attention.astype(np.float64)
    a = (a - a.min()) / max(a.max() - a.min(), 1e-12)
    heat = np.stack([np.full_like(a, 255.0), 255.0 * a, np.zeros_like(a)], -1)
    return ((1 - alpha) * image.astype(np.float64) + alpha * heat).clip(0, 255).astype(np.uint8)
