"""Registered builders of the frozen backbones: a recipe's ``model.vision.kind`` / ``model.llm.kind``.

Vision encoders: ``fn(config: VisionConfig, dtype) -> VisionEncoder``; LLM loaders:
``fn(config: LLMConfig, dtype, seed) -> (llm, tokenizer)``. Register more with
:func:`vpgkit.registry.register_vision_encoder` / :func:`~vpgkit.registry.register_llm_loader`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ..registry import register_llm_loader, register_vision_encoder
from .clip_vision import CLIPVisionEncoderConfig, HFCLIPVisionEncoder
from .vision import (
    Blip2VisionEncoderConfig,
    EvaVisionConfig,
    HFBlip2VisionEncoder,
    TimmEvaEncoder,
    VisionEncoder,
)

logger = logging.getLogger(__name__)


def _random(encoder: VisionEncoder, kind: str) -> VisionEncoder:
    """Say that an encoder built without ``model.vision.checkpoint`` has random weights."""
    logger.warning(
        "model.vision: no checkpoint given, so the %s encoder has RANDOM weights (set model.vision.checkpoint "
        "to a real one)",
        kind,
    )
    return encoder


@register_vision_encoder("timm_eva")
def timm_eva(v: Any, dtype: torch.dtype) -> VisionEncoder:
    """EVA-CLIP as BLIP-2 uses it (timm), from a LAVIS/timm ``.pth`` or safetensors checkpoint."""
    eva = EvaVisionConfig.preset(v.preset, **v.overrides)
    if v.checkpoint:
        return TimmEvaEncoder.from_checkpoint(v.checkpoint, eva, dtype=dtype)
    return _random(TimmEvaEncoder(eva, dtype), v.kind)


@register_vision_encoder("hf_blip2")
def hf_blip2(v: Any, dtype: torch.dtype) -> VisionEncoder:
    """transformers' BLIP-2 vision tower, from an HF directory."""
    if v.checkpoint:
        return HFBlip2VisionEncoder.from_pretrained(v.checkpoint, dtype=dtype)
    return _random(
        HFBlip2VisionEncoder(Blip2VisionEncoderConfig.preset(v.preset, **v.overrides), dtype), v.kind
    )


@register_vision_encoder("hf_clip")
def hf_clip(v: Any, dtype: torch.dtype) -> VisionEncoder:
    """CLIP ViT (Flamingo-style): an HF ``CLIPVisionModel``/``CLIPModel`` directory or an open_clip file."""
    clip = CLIPVisionEncoderConfig.preset(v.preset, **v.overrides)
    if not v.checkpoint:
        return _random(HFCLIPVisionEncoder(clip, dtype), v.kind)
    if Path(v.checkpoint).is_dir():  # a transformers CLIPVisionModel / CLIPModel directory (Otter)
        return HFCLIPVisionEncoder.from_pretrained(v.checkpoint, dtype, post_layernorm=clip.post_layernorm)
    # Otherwise an open_clip state dict with visual.* keys (OpenFlamingo's ViT-L/14).
    return HFCLIPVisionEncoder.from_open_clip(v.checkpoint, clip, dtype)


def _tokenizer(path: str | None):
    from transformers import AutoTokenizer

    from ..data.tiny_tokenizer import build_tiny_tokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True) if path else build_tiny_tokenizer()


@register_llm_loader("pretrained")
def pretrained(llm_cfg: Any, dtype: torch.dtype, seed: int = 0):
    """A local transformers causal-LM directory (``model.llm.path``) and its tokenizer."""
    from .language import load_causal_lm

    if not llm_cfg.path:
        raise ValueError(
            "model.llm.path: required for model.llm.kind=pretrained (a local transformers directory)"
        )
    return load_causal_lm(llm_cfg.path, dtype=dtype), _tokenizer(llm_cfg.path)


def _tiny(cls, make, llm_cfg: Any, dtype: torch.dtype, seed: int):
    torch.manual_seed(seed)
    return cls(make(initializer_range=llm_cfg.init_std)).to(dtype), _tokenizer(llm_cfg.path)


@register_llm_loader("tiny_llama")
def tiny_llama(llm_cfg: Any, dtype: torch.dtype, seed: int = 0):
    """A random tiny LLaMA (tests, demos) with vpgkit's word-level tokenizer (or ``path``'s)."""
    from transformers import LlamaForCausalLM

    from .language import tiny_llama_config

    return _tiny(LlamaForCausalLM, tiny_llama_config, llm_cfg, dtype, seed)


@register_llm_loader("tiny_qwen2")
def tiny_qwen2(llm_cfg: Any, dtype: torch.dtype, seed: int = 0):
    """A random tiny Qwen2 with vpgkit's word-level tokenizer (or ``path``'s)."""
    from transformers import Qwen2ForCausalLM

    from .language import tiny_qwen2_config

    return _tiny(Qwen2ForCausalLM, tiny_qwen2_config, llm_cfg, dtype, seed)
