"""Perceiver resampler (Flamingo / OpenFlamingo / Otter).

A fixed set of learned latents repeatedly cross-attends to the vision tokens of one image (all of its
frames) and to themselves, compressing a variable number of patch features into ``num_latents`` tokens.
Parameter names follow OpenFlamingo's ``perceiver.*`` layout, so its checkpoints map by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from .attention import multihead_attention
from .presets import PresetConfig
from .shapes import check_shape


@dataclass
class PerceiverConfig(PresetConfig):
    """Configuration of :class:`PerceiverResampler`.

    Attributes:
        width: D_v, width of the vision tokens (and of the latents and the output).
        depth: number of (attention, feed-forward) layers.
        num_latents: number of learned latents = output tokens per image.
        heads: attention heads.
        head_dim: width of one head.
        ff_mult: feed-forward hidden width as a multiple of ``width`` (bias-free linear layers).
    """

    width: int = 1024
    depth: int = 6
    num_latents: int = 64
    heads: int = 8
    head_dim: int = 64
    ff_mult: int = 4

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # OpenFlamingo-9B / Otter: CLIP ViT-L/14 features (1024 wide).
        "openflamingo9b": {},
        "tiny": {"width": 32, "depth": 2, "num_latents": 8, "heads": 2, "head_dim": 8, "ff_mult": 2},
    }


def feed_forward(width: int, mult: int) -> nn.Sequential:
    """Flamingo's pre-norm feed-forward: LayerNorm → Linear → GELU → Linear, bias-free linears."""
    return nn.Sequential(
        nn.LayerNorm(width),
        nn.Linear(width, width * mult, bias=False),
        nn.GELU(),
        nn.Linear(width * mult, width, bias=False),
    )


class PerceiverAttention(nn.Module):
    """Latents attend to cat(LN(media), LN(latents))."""

    def __init__(self, config: PerceiverConfig):
        super().__init__()
        inner = config.heads * config.head_dim
        self.heads = config.heads
        self.norm_media = nn.LayerNorm(config.width)
        self.norm_latents = nn.LayerNorm(config.width)
        self.to_q = nn.Linear(config.width, inner, bias=False)
        self.to_kv = nn.Linear(config.width, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, config.width, bias=False)

    def forward(self, media: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """media (M, N, D), latents (M, L, D) → (M, L, D) update for the latents."""
        latents = self.norm_latents(latents)
        kv_input = torch.cat((self.norm_media(media), latents), dim=-2)
        k, v = self.to_kv(kv_input).chunk(2, dim=-1)
        return self.to_out(multihead_attention(self.to_q(latents), k, v, self.heads))


class PerceiverResampler(nn.Module):
    """Resample each image's vision tokens into ``num_latents`` tokens.

    Example:
        >>> resampler = PerceiverResampler(PerceiverConfig.preset("tiny"))
        >>> media = torch.randn(2, 3, 1, 10, 32)   # (B, T_img, F, N_v, D_v)
        >>> resampler(media).shape                 # (B, T_img, num_latents, D_v)
        torch.Size([2, 3, 8, 32])
    """

    def __init__(self, config: PerceiverConfig):
        super().__init__()
        self.config = config
        self.latents = nn.Parameter(torch.randn(config.num_latents, config.width))
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(config), feed_forward(config.width, config.ff_mult)])
            for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(config.width)

    def forward(self, media: torch.Tensor) -> torch.Tensor:
        """(B, T_img, F, N_v, D_v) vision tokens (F frames per image) → (B, T_img, num_latents, D_v)."""
        check_shape("media", media, ("B", "T_img", "F", "N_v", self.config.width))
        b, t, f, n, d = media.shape
        latents = self.latents.expand(b * t, -1, -1)
        return self.resample(media.reshape(b * t, f * n, d), latents).reshape(
            b, t, self.config.num_latents, d
        )

    def resample(self, media: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """Run the layers and final norm with given queries: media (M, N, D), latents (M, L, D) → (M, L, D).

        :meth:`forward` passes the learned latents; VPG-C over the Perceiver passes its own (guided) set.
        """
        for attn, ff in self.layers:
            latents = attn(media, latents) + latents
            latents = ff(latents) + latents
        return self.norm(latents)
