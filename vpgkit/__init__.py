"""vpgkit: parameter-efficient finetuning of multimodal LLMs with plug-in visual modules.

Names load on first use (:mod:`vpgkit.lazy_exports`), so ``import vpgkit`` and every command's
``--help`` skip torch's model libraries until they are needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .threads import prefer_passive_waiting

prefer_passive_waiting()  # before torch loads OpenMP (see vpgkit.threads)

# ruff: noqa: E402, F401 (the TYPE_CHECKING imports are re-exports)

from .lazy_exports import lazy_exports

if TYPE_CHECKING:  # the names, for type checkers and IDEs
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

_all, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "checkpoints": ("load_adapter", "push_to_hub", "save_adapter"),
        "model": ("VisionLanguageModel", "VisionLanguageOutput"),
        "modules": (
            "VPGC",
            "GatedCrossAttentionBlock",
            "GatedCrossAttentionConfig",
            "PerceiverConfig",
            "PerceiverResampler",
            "QFormer",
            "QFormerConfig",
            "VPGCConfig",
            "media_attention_mask",
        ),
        "parameters": ("count_parameters",),
        "plugins": ("Plugin",),
        "registry": ("register_plugin",),
    },
)
__all__ = sorted([*_all, "__version__"])
