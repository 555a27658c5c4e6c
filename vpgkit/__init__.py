"""vpgkit: parameter-efficient finetuning of multimodal LLMs with plug-in visual modules."""

from .threads import prefer_passive_waiting

prefer_passive_waiting()  # before torch loads OpenMP (see vpgkit.threads)

# ruff: noqa: E402

from .checkpoints import load_adapter, push_to_hub, save_adapter
from .model import VisionLanguageModel, VisionLanguageOutput
from .modules import (
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
from .parameters import count_parameters
from .plugins import Plugin
from .registry import register_plugin

__version__ = "0.1.0.dev0"

__all__ = [
    "VPGC",
    "GatedCrossAttentionBlock",
    "GatedCrossAttentionConfig",
    "PerceiverConfig",
    "PerceiverResampler",
    "Plugin",
    "QFormer",
    "QFormerConfig",
    "VPGCConfig",
    "VisionLanguageModel",
    "VisionLanguageOutput",
    "__version__",
    "count_parameters",
    "load_adapter",
    "media_attention_mask",
    "push_to_hub",
    "register_plugin",
    "save_adapter",
]
