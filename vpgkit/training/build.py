"""Build the model and tokenizer a :class:`~vpgkit.config.TrainConfig` describes."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaForCausalLM, Qwen2ForCausalLM

from ..backbones import (
    Blip2VisionEncoderConfig,
    CLIPVisionEncoderConfig,
    EvaVisionConfig,
    HFBlip2VisionEncoder,
    HFCLIPVisionEncoder,
    TimmEvaEncoder,
    VisionEncoder,
)
from ..backbones.language import load_causal_lm, tiny_llama_config, tiny_qwen2_config
from ..config import ModelConfig
from ..data.tiny_tokenizer import build_tiny_tokenizer
from ..model import VisionLanguageModel
from ..modules import (
    VPGC,
    GatedCrossAttentionConfig,
    PerceiverConfig,
    PerceiverResampler,
    QFormer,
    QFormerConfig,
    VPGCConfig,
)
from ..tokens import AddedTokens

logger = logging.getLogger(__name__)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"model.backbone_dtype: expected one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


def build_vision(config: ModelConfig) -> VisionEncoder:
    """The frozen vision encoder of ``config.vision``."""
    v, dtype = config.vision, _dtype(config.backbone_dtype)
    if v.kind == "timm_eva":
        eva = EvaVisionConfig.preset(v.preset, **v.overrides)
        return (
            TimmEvaEncoder.from_checkpoint(v.checkpoint, eva, dtype=dtype)
            if v.checkpoint
            else _random(TimmEvaEncoder(eva, dtype), v.kind)
        )
    if v.kind == "hf_blip2":
        if v.checkpoint:
            return HFBlip2VisionEncoder.from_pretrained(v.checkpoint, dtype=dtype)
        return _random(
            HFBlip2VisionEncoder(Blip2VisionEncoderConfig.preset(v.preset, **v.overrides), dtype), v.kind
        )
    if v.kind == "hf_clip":
        clip = CLIPVisionEncoderConfig.preset(v.preset, **v.overrides)
        if not v.checkpoint:
            return _random(HFCLIPVisionEncoder(clip, dtype), v.kind)
        if Path(v.checkpoint).is_dir():  # a transformers CLIPVisionModel / CLIPModel directory (Otter)
            return HFCLIPVisionEncoder.from_pretrained(
                v.checkpoint, dtype, post_layernorm=clip.post_layernorm
            )
        # Otherwise an open_clip state dict with visual.* keys (OpenFlamingo's ViT-L/14).
        return HFCLIPVisionEncoder.from_open_clip(v.checkpoint, clip, dtype)
    raise ValueError(f"model.vision.kind: expected timm_eva, hf_blip2 or hf_clip, got {v.kind!r}")


def _random(encoder: VisionEncoder, kind: str) -> VisionEncoder:
    """Say that an encoder built without ``model.vision.checkpoint`` has random weights."""
    logger.warning(
        "model.vision: no checkpoint given, so the %s encoder has RANDOM weights (set model.vision.checkpoint "
        "to a real one)",
        kind,
    )
    return encoder


def build_llm_and_tokenizer(config: ModelConfig, seed: int = 0):
    """The frozen LM and its tokenizer (tiny kinds get vpgkit's built-in word-level tokenizer)."""
    llm_cfg, dtype = config.llm, _dtype(config.backbone_dtype)
    if llm_cfg.kind == "pretrained":
        if not llm_cfg.path:
            raise ValueError(
                "model.llm.path: required for model.llm.kind=pretrained (a local transformers directory)"
            )
        llm = load_causal_lm(llm_cfg.path, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(llm_cfg.path, local_files_only=True)
    elif llm_cfg.kind in ("tiny_llama", "tiny_qwen2"):
        cls, make = (
            (LlamaForCausalLM, tiny_llama_config)
            if llm_cfg.kind == "tiny_llama"
            else (Qwen2ForCausalLM, tiny_qwen2_config)
        )
        torch.manual_seed(seed)
        llm = cls(make(initializer_range=llm_cfg.init_std)).to(dtype)
        tokenizer = (
            AutoTokenizer.from_pretrained(llm_cfg.path, local_files_only=True)
            if llm_cfg.path
            else build_tiny_tokenizer()
        )
    else:
        raise ValueError(
            f"model.llm.kind: expected pretrained, tiny_llama or tiny_qwen2, got {llm_cfg.kind!r}"
        )
    missing = [t for t in config.added_tokens if t not in tokenizer.get_vocab()]
    if missing:  # their rows are created by AddedTokens in build_model
        tokenizer.add_special_tokens({"additional_special_tokens": missing})
    if config.image_token not in tokenizer.get_vocab():
        raise ValueError(
            f"model.image_token: {config.image_token!r} is not a token of the tokenizer; add it as a special token"
        )
    return llm, tokenizer


def build_model(config: ModelConfig, seed: int = 0):
    """(VisionLanguageModel, tokenizer) for ``config``; adapters initialised from ``seed``."""
    llm, tokenizer = build_llm_and_tokenizer(config, seed)
    vision = build_vision(config)
    dtype = _dtype(config.backbone_dtype)
    image_token_id = tokenizer.convert_tokens_to_ids(config.image_token)
    torch.manual_seed(seed + 1)
    kwargs = {}
    if config.vpg:
        vpg = QFormer(QFormerConfig.preset(config.vpg, **config.vpg_overrides))
        if config.vpg_checkpoint:
            from safetensors.torch import load_file

            vpg.load_state_dict(load_file(config.vpg_checkpoint))
        if config.vpgc:
            overrides = dict(config.vpgc_overrides)
            if config.vpgc_layer is not None:
                overrides["layer"] = config.vpgc_layer
            kwargs["vpgc"] = VPGC.from_qformer(vpg, VPGCConfig.preset(config.vpgc, **overrides))
        kwargs["vpg"] = vpg.to(dtype) if not config.train_vpg_projection else vpg
    if config.perceiver or config.cross_attention:
        if not (config.perceiver and config.cross_attention):
            raise ValueError(
                "model.perceiver and model.cross_attention: give both for a Flamingo-style model"
            )
        overrides = {} if config.cross_attention_every is None else {"every": config.cross_attention_every}
        kwargs["perceiver"] = PerceiverResampler(PerceiverConfig.preset(config.perceiver))
        kwargs["cross_attention"] = GatedCrossAttentionConfig.preset(config.cross_attention, **overrides)
    if config.added_tokens:
        ids = tokenizer.convert_tokens_to_ids(list(config.added_tokens))
        kwargs["added_tokens"] = AddedTokens.for_llm(
            llm, list(config.added_tokens), ids, output=config.added_tokens_output
        )
    model = VisionLanguageModel(
        llm, vision, image_token_id=image_token_id, train_vpg_projection=config.train_vpg_projection, **kwargs
    )
    if config.lora.r > 0:
        from peft import LoraConfig

        model.add_lora(
            LoraConfig(
                r=config.lora.r,
                lora_alpha=config.lora.alpha,
                lora_dropout=config.lora.dropout,
                target_modules=list(config.lora.target_modules),
            )
        )
    return model, tokenizer
