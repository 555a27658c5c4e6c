"""Fetch supervision: a loss that pulls VPG-C's guided cross-attention onto the region a sample is about.

Not part of Cheetah's recipe (its VPG-C is trained by the LM loss alone). Synthetic discriminative samples
know which region their instruction is about (the edited region, or the object asked about), so they can
also teach VPG-C *where* to look: for every image of a sample with a ``fetch_box``, the guided queries'
attention (averaged over Q-Former cross-attention layers, heads and queries) is scored by the mass it puts
on the patches inside the box, and the loss is ``-log`` of that mass. It reaches the guidance projection
and the queries directly, from the first step — under the LM loss alone, no gradient reaches the guidance
projection until the zero-initialised output projection has grown.

Boxes are ``(x0, y0, x1, y1)`` in [0, 1] image coordinates (fractions of the width and height of the image
as the model sees it; vpgkit's processor resizes without cropping, so these are the file's fractions too).

Example:
    >>> import torch
    >>> attention = torch.zeros(1, 1, 1, 1, 1, 5)               # (B, T_img, L_x, heads, N_q, 1 + 2²)
    >>> attention[..., 1] = attention[..., 4] = 0.5             # top-left and bottom-right patches
    >>> boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5]])            # the top-left quarter
    >>> total, count = fetch_loss(attention, boxes, torch.tensor([1]))
    >>> round(float(total), 4), int(count)                      # -log(0.5)
    (0.6931, 1)
"""

from __future__ import annotations

import math

import torch

__all__ = ["box_patch_mask", "fetch_loss"]


def box_patch_mask(boxes: torch.Tensor, n_v: int) -> torch.Tensor:
    """Which vision tokens lie inside each box.

    Args:
        boxes: (B, 4) float (x0, y0, x1, y1) in [0, 1].
        n_v: N_v vision tokens, a CLS token first and a square grid of patches in row-major order.

    Returns:
        (B, N_v) bool: patches whose centre is inside the box (CLS never); a box too small to contain any
        patch centre selects the patch holding its centre.
    """
    grid = math.isqrt(n_v - 1)
    if grid * grid != n_v - 1:
        raise ValueError(f"box_patch_mask: N_v = {n_v} is not 1 CLS token + a square grid of patches")
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"box_patch_mask: boxes must be (B, 4), got {tuple(boxes.shape)}")
    centres = (torch.arange(grid, device=boxes.device, dtype=boxes.dtype) + 0.5) / grid
    x0, y0, x1, y1 = boxes.unbind(-1)
    cols = (centres[None] >= x0[:, None]) & (centres[None] < x1[:, None])  # (B, grid)
    rows = (centres[None] >= y0[:, None]) & (centres[None] < y1[:, None])
    inside = rows[:, :, None] & cols[:, None, :]  # (B, grid, grid)
    centre_col = ((x0 + x1) / 2 * grid).long().clamp(0, grid - 1)
    centre_row = ((y0 + y1) / 2 * grid).long().clamp(0, grid - 1)
    empty = ~inside.flatten(1).any(-1)
    inside[empty, centre_row[empty], centre_col[empty]] = True
    return torch.cat([torch.zeros_like(inside[:, :1, 0]), inside.flatten(1)], dim=1)


def fetch_loss(
    attention: torch.Tensor, boxes: torch.Tensor, num_images: torch.Tensor, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed ``-log`` attention mass inside each sample's box, over the images of rows that have a box.

    Args:
        attention: (B, T_img, L_x, heads, N_q, N_v) cross-attention probabilities (e.g. the model's
            ``vpgc_attention``).
        boxes: (B, 4) one box per row, used for each of the row's images; a row of NaN has no box.
        num_images: (B,) real images per row (padding images are not scored).
        eps: floor of the mass inside the box, so that the loss stays finite.

    Returns:
        (sum of the per-image losses, number of images scored): the caller normalises, e.g. over a
        global batch split across processes.
    """
    if attention.dim() != 6:
        raise ValueError(
            f"fetch_loss: attention must be (B, T_img, L_x, heads, N_q, N_v), got {tuple(attention.shape)}"
        )
    b, t, n_v = attention.shape[0], attention.shape[1], attention.shape[-1]
    if tuple(boxes.shape) != (b, 4) or tuple(num_images.shape) != (b,):
        raise ValueError(
            f"fetch_loss: boxes must be ({b}, 4) and num_images ({b},), got {tuple(boxes.shape)} and "
            f"{tuple(num_images.shape)}"
        )
    has_box = ~boxes.isnan().any(-1)  # (B,)
    scored = has_box[:, None] & (
        torch.arange(t, device=boxes.device)[None] < num_images[:, None]
    )  # (B, T_img)
    mask = box_patch_mask(boxes.nan_to_num(0.0), n_v).to(attention.dtype)  # (B, N_v)
    mean = attention.float().mean(dim=(2, 3, 4))  # (B, T_img, N_v)
    inside = (mean * mask[:, None].float()).sum(-1)  # (B, T_img)
    losses = -inside.clamp_min(eps).log()
    return losses[scored].sum(), scored.sum()
