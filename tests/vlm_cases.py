"""Tiny VisionLanguageModels (LLaMA or Qwen2, 48 wide) for the attachment tests."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import LlamaForCausalLM, Qwen2ForCausalLM

from vpgkit.backbones.language import tiny_llama_config, tiny_qwen2_config
from vpgkit.config import ModelConfig, PluginSpec
from vpgkit.model import VisionLanguageModel
from vpgkit.modules import (
    VPGC,
    GatedCrossAttentionConfig,
    PerceiverConfig,
    PerceiverResampler,
    QFormer,
    QFormerConfig,
    VPGCConfig,
)
from vpgkit.training.build import build_plugins

SLOT = 3  # image slot / <image> token id in the tiny vocabulary
N_Q = 4  # queries of the tiny Q-Former
FAMILIES = {"llama": (LlamaForCausalLM, tiny_llama_config), "qwen2": (Qwen2ForCausalLM, tiny_qwen2_config)}


def tiny_llm(family: str = "llama", seed: int = 0):
    cls, config = FAMILIES[family]
    torch.manual_seed(seed)
    return cls(config())


def randomize_(*modules, std: float = 0.05) -> None:
    """Give zero-initialised adapter weights (VPG-C projections, gates) non-trivial values."""
    with torch.no_grad():
        for module in modules:
            for p in module.parameters():
                if p.requires_grad and p.eq(0).all():
                    p.normal_(std=std) if p.numel() > 1 else p.fill_(0.5)


def vpgc_model(family: str = "llama", with_vpgc: bool = True, reference_path: bool = False, layer: int = 2):
    llm = tiny_llm(family)
    torch.manual_seed(1)
    vpg = QFormer(QFormerConfig.preset("tiny", dropout=0.0, attention_dropout=0.0))
    vpgc = VPGC.from_qformer(vpg, VPGCConfig.preset("tiny", layer=layer)) if with_vpgc else None
    return VisionLanguageModel(llm, image_token_id=SLOT, vpg=vpg, vpgc=vpgc, reference_path=reference_path)


def xattn_model(family: str = "llama", only_immediate: bool = True):
    llm = tiny_llm(family)
    torch.manual_seed(1)
    perceiver = PerceiverResampler(PerceiverConfig.preset("tiny"))
    config = GatedCrossAttentionConfig.preset("tiny", every=2, only_immediate=only_immediate)
    return VisionLanguageModel(llm, image_token_id=SLOT, perceiver=perceiver, cross_attention=config)


def vpgc_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """Two right-padded rows: one image each, prompt then answer; labels on the answers only."""
    g = torch.Generator().manual_seed(seed)
    text = lambda n: torch.randint(10, 128, (n,), generator=g).tolist()  # noqa: E731
    rows = [
        [1, *text(2), *[SLOT] * N_Q, *text(5)],
        [1, *[SLOT] * N_Q, *text(3)],
    ]
    answers = [3, 2]  # answer tokens at the end of each row
    input_ids, attention_mask = right_padded(rows)
    labels = torch.full_like(input_ids, -100)
    for i, row in enumerate(rows):
        labels[i, len(row) - answers[i] : len(row)] = input_ids[i, len(row) - answers[i] : len(row)]
    vision = torch.randn(2, 1, 10, 32, generator=g)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "vision_features": vision,
    }


def xattn_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """Two right-padded rows with two <image> markers each; text before the first image in row 0."""
    g = torch.Generator().manual_seed(seed)
    text = lambda n: torch.randint(10, 128, (n,), generator=g).tolist()  # noqa: E731
    rows = [[1, *text(2), SLOT, *text(3), SLOT, *text(3)], [1, SLOT, *text(2), SLOT, *text(2)]]
    input_ids, attention_mask = right_padded(rows)
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    vision = torch.randn(2, 2, 10, 32, generator=g)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "vision_features": vision,
    }


def _padded(rows: list[list[int]], left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(map(len, rows))
    input_ids = torch.zeros(len(rows), length, dtype=torch.long)
    attention_mask = torch.zeros(len(rows), length, dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(length - len(row), length) if left else slice(0, len(row))
        input_ids[i, span] = torch.tensor(row)
        attention_mask[i, span] = 1
    return input_ids, attention_mask


def right_padded(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of token rows padded with 0 on the right."""
    return _padded(rows, left=False)


def left_padded_prompts(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of prompts padded with 0 on the left, for generation."""
    return _padded(rows, left=True)


# --- the shared plug-in matrix -------------------------------------------------------------------------
# One line per plug-in composition: the recipe's plug-in list, and which slots train. ``completer``: the
# slot whose plug-in must leave the model exactly as it was at init (tests/test_plugins.py runs them all).
NO_DROPOUT = {"dropout": 0.0, "attention_dropout": 0.0}


@dataclass(frozen=True)
class PluginCase:
    plugins: tuple[PluginSpec, ...]
    trains: tuple[str, ...]
    completer: str | None = None


def spec(name: str, preset: str = "tiny", trainable: bool | None = None, **overrides) -> PluginSpec:
    return PluginSpec(name=name, preset=preset, overrides=overrides, trainable=trainable)


PLUGIN_CASES = {
    "qformer_vpgc": PluginCase((spec("qformer", **NO_DROPOUT), spec("vpgc", layer=2)), ("vpgc",), "vpgc"),
    "perceiver_xattn": PluginCase(
        (spec("perceiver"), spec("cross_attention", every=2)), ("cross_attention", "perceiver")
    ),
    "mlp_projector": PluginCase((spec("mlp_projector"),), ("projector",)),
    "perceiver_vpgc": PluginCase(
        (
            spec("perceiver", trainable=False),
            spec("cross_attention", trainable=False, every=2),
            spec("perceiver_vpgc"),
        ),
        ("perceiver_vpgc",),
        "perceiver_vpgc",
    ),
}


def randomize_all_(module, std: float = 0.3, seed: int = 7) -> None:
    """Give every all-zero weight (gates, zero-initialised projections) of ``module`` values, trainable or not,
    so that a frozen base is a non-trivial pretrained one."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.eq(0).all():
                p.copy_(torch.randn(p.shape, generator=g) * std if p.numel() > 1 else torch.full_like(p, 0.5))


def plugin_model(case: PluginCase, without: str | None = None, family: str = "llama") -> VisionLanguageModel:
    """The case's tiny model (LM seed 0, plug-ins seed 1, frozen plug-ins randomised), optionally without
    the plug-in of slot ``without`` (everything else identical)."""
    llm = tiny_llm(family)
    torch.manual_seed(1)
    plugins = build_plugins(ModelConfig(vpg=None, plugins=list(case.plugins)))
    plugins = [p for p in plugins if p.slot != without]
    torch.manual_seed(2)  # blocks made when binding get the same values with or without the completer
    model = VisionLanguageModel(llm, image_token_id=SLOT, plugins=plugins)
    for plugin in model.plugins:
        if plugin.slot not in case.trains:
            randomize_all_(plugin.module)
    return model


def plugin_batch(model: VisionLanguageModel, seed: int = 0) -> dict[str, torch.Tensor]:
    """Two right-padded rows in the model's image convention (N slots per image, or one marker), one image
    each, answers labelled."""
    g = torch.Generator().manual_seed(seed)
    text = lambda n: torch.randint(10, 128, (n,), generator=g).tolist()  # noqa: E731
    image = [SLOT] * (model.image_slots_per_image or 1)
    rows = [[1, *text(2), *image, *text(5)], [1, *image, *text(3)]]
    input_ids, attention_mask = right_padded(rows)
    labels = torch.full_like(input_ids, -100)
    for i, (row, answer) in enumerate(zip(rows, [3, 2], strict=True)):
        labels[i, len(row) - answer : len(row)] = input_ids[i, len(row) - answer : len(row)]
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "vision_features": torch.randn(2, 1, 10, 32, generator=g),
    }


def plugin_prompts(model: VisionLanguageModel, seed: int = 0):
    """(input_ids, attention_mask, vision, rows): two left-padded prompts with one image each."""
    g = torch.Generator().manual_seed(seed)
    image = [SLOT] * (model.image_slots_per_image or 1)
    rows = [[1, 20, *image, 30, 31, 32], [1, *image, 40]]
    return (*left_padded_prompts(rows), torch.randn(2, 1, 10, 32, generator=g), rows)


def greedy_without_cache(model, input_ids, attention_mask, vision, steps: int) -> torch.Tensor:
    """Greedy decoding by full forward passes over the whole sequence (no KV cache), guidance fixed at
    each row's last prompt token."""
    guidance = torch.full((input_ids.shape[0],), input_ids.shape[1] - 1)  # left padding
    ids, mask = input_ids, attention_mask
    for _ in range(steps):
        logits = model(ids, mask, vision_features=vision, guidance_index=guidance).logits
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    return ids[:, input_ids.shape[1] :]


# Tiny transformers BLIP-2 / InstructBLIP sub-configs (vision tower, Q-Former) for HF-format tests.
HF_VISION = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=28,
    patch_size=14,
)
HF_QFORMER = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, encoder_hidden_size=32
)
