"""Plug-in visual modules: each a config dataclass plus a standalone ``nn.Module``.

They know nothing of backbones; ``vpgkit.attach`` places them in a frozen LLM.
"""

from .media import media_attention_mask
from .perceiver import PerceiverConfig, PerceiverResampler
from .qformer import ImageKV, ImageSideLinear, QFormer, QFormerConfig, QFormerOutput
from .shapes import check_shape
from .vpgc import VPGC, VPGCConfig
from .xattn import GatedCrossAttentionBlock, GatedCrossAttentionConfig

__all__ = [
    "VPGC",
    "GatedCrossAttentionBlock",
    "GatedCrossAttentionConfig",
    "ImageKV",
    "ImageSideLinear",
    "PerceiverConfig",
    "PerceiverResampler",
    "QFormer",
    "QFormerConfig",
    "QFormerOutput",
    "VPGCConfig",
    "check_shape",
    "media_attention_mask",
]
