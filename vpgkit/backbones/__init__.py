"""Frozen backbones: vision encoders (timm EVA, HF BLIP-2 vision, HF CLIP) and their image preprocessing.

Names load on first use (:mod:`vpgkit.lazy_exports`): importing :mod:`vpgkit.backbones.language` does
not import timm or transformers' CLIP.
"""

# ruff: noqa: F401 (the TYPE_CHECKING imports are re-exports)

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy_exports import lazy_exports

if TYPE_CHECKING:  # the names, for type checkers and IDEs
    from .clip_vision import CLIPVisionEncoderConfig, HFCLIPVisionEncoder
    from .image_processor import CLIP_MEAN, CLIP_STD, ImageProcessor
    from .vision import (
        Blip2VisionEncoderConfig,
        EvaVisionConfig,
        HFBlip2VisionEncoder,
        TimmEvaEncoder,
        VisionEncoder,
        load_state_dict_file,
        timm_eva_to_hf_blip2_vision,
    )

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "clip_vision": ("CLIPVisionEncoderConfig", "HFCLIPVisionEncoder"),
        "image_processor": ("CLIP_MEAN", "CLIP_STD", "ImageProcessor"),
        "vision": (
            "Blip2VisionEncoderConfig",
            "EvaVisionConfig",
            "HFBlip2VisionEncoder",
            "TimmEvaEncoder",
            "VisionEncoder",
            "load_state_dict_file",
            "timm_eva_to_hf_blip2_vision",
        ),
    },
)
