"""Tiny instances of every plug-in module with matching inputs, for the parametrised test matrix."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from vpgkit.modules import (
    VPGC,
    GatedCrossAttentionBlock,
    GatedCrossAttentionConfig,
    PerceiverConfig,
    PerceiverResampler,
    QFormer,
    QFormerConfig,
    VPGCConfig,
    media_attention_mask,
)
from vpgkit.plugins.mlp_projector import MLPProjector, MLPProjectorConfig
from vpgkit.plugins.perceiver_vpgc import PerceiverVPGC, PerceiverVPGCConfig

IMAGE = 9  # <image> token id in the hand-made text


@dataclass
class Case:
    """A module, a batch of inputs, and how to call the module on rows ``rows`` of that batch."""

    module: nn.Module
    inputs: dict[str, torch.Tensor]
    call: Callable[[dict[str, torch.Tensor]], torch.Tensor]

    def run(self, rows: slice | None = None) -> torch.Tensor:
        inputs = self.inputs if rows is None else {k: v[rows] for k, v in self.inputs.items()}
        return self.call(inputs)


def randomize(module: nn.Module, std: float = 0.2) -> nn.Module:
    """Give zero-initialised weights (VPG-C projections, gates) non-trivial values."""
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad and p.eq(0).all():
                p.normal_(std=std)
    return module


def qformer_case(dtype=torch.float32) -> Case:
    vpg = QFormer(QFormerConfig.preset("tiny", dropout=0.0, attention_dropout=0.0)).to(dtype)
    vision = torch.randn(3, 2, 10, 32, dtype=dtype)
    return Case(vpg, {"vision": vision}, lambda x: vpg(x["vision"]).prompts)


def vpgc_case(dtype=torch.float32) -> Case:
    vpg = QFormer(QFormerConfig.preset("tiny")).to(dtype).eval().requires_grad_(False)
    vpgc = VPGC.from_qformer(vpg, VPGCConfig.preset("tiny")).to(dtype)
    inputs = {"guidance": torch.randn(3, 48, dtype=dtype), "vision": torch.randn(3, 2, 10, 32, dtype=dtype)}
    return Case(vpgc, inputs, lambda x: vpgc(x["guidance"], x["vision"], vpg))


def perceiver_case(dtype=torch.float32) -> Case:
    resampler = PerceiverResampler(PerceiverConfig.preset("tiny")).to(dtype)
    media = torch.randn(3, 2, 1, 10, 32, dtype=dtype)
    return Case(resampler, {"media": media}, lambda x: resampler(x["media"]))


def xattn_case(dtype=torch.float32) -> Case:
    block = GatedCrossAttentionBlock(GatedCrossAttentionConfig.preset("tiny")).to(dtype)
    # Row 0: text before the first image; row 1: two images; row 2: one image, then right padding (0).
    ids = torch.tensor([[1, 2, IMAGE, 3, 4, IMAGE], [IMAGE, 1, 2, IMAGE, 3, 4], [IMAGE, 5, 6, 0, 0, 0]])
    inputs = {
        "x": torch.randn(3, 6, 48, dtype=dtype),
        "media": torch.randn(3, 2, 8, 32, dtype=dtype),
        "media_mask": media_attention_mask(ids, IMAGE),
    }
    return Case(block, inputs, lambda x: block(x["x"], x["media"], x["media_mask"]))


def mlp_projector_case(dtype=torch.float32) -> Case:
    projector = MLPProjector(MLPProjectorConfig.preset("tiny")).to(dtype)
    return Case(
        projector, {"vision": torch.randn(3, 2, 10, 32, dtype=dtype)}, lambda x: projector(x["vision"])
    )


def perceiver_vpgc_case(dtype=torch.float32) -> Case:
    perceiver = PerceiverResampler(PerceiverConfig.preset("tiny")).to(dtype).requires_grad_(False)
    vpgc = PerceiverVPGC.from_perceiver(perceiver, PerceiverVPGCConfig.preset("tiny")).to(dtype)
    inputs = {"guidance": torch.randn(3, 48, dtype=dtype), "vision": torch.randn(3, 2, 10, 32, dtype=dtype)}
    return Case(vpgc, inputs, lambda x: vpgc(x["guidance"], x["vision"], perceiver))


CASES = {
    "qformer": qformer_case,
    "vpgc": vpgc_case,
    "perceiver": perceiver_case,
    "xattn": xattn_case,
    "mlp_projector": mlp_projector_case,
    "perceiver_vpgc": perceiver_vpgc_case,
}
