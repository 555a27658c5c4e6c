"""Typed (structured) training configuration: the schema every Hydra recipe is checked against.

Recipes are YAML files under ``recipes/`` (shipped in the wheel as ``vpgkit.recipes``). Merged onto these
dataclasses, an unknown key or a value of the wrong type fails before anything runs, naming the key.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf


@dataclass
class VisionConfig:
    """Frozen vision encoder.

    Attributes:
        kind: a registered vision encoder: ``timm_eva`` (EVA-CLIP as BLIP-2 uses it), ``hf_blip2`` or
            ``hf_clip`` (Flamingo-style); see :func:`vpgkit.registry.register_vision_encoder`.
        preset: the encoder config preset (``tiny``, ``eva_clip_g``, ``blip2``, ``vit_l_14``).
        checkpoint: local weights (LAVIS/timm ``.pth`` or safetensors for ``timm_eva``; an HF directory for
            ``hf_blip2``; for ``hf_clip`` an HF ``CLIPVisionModel``/``CLIPModel`` directory (Otter) or an
            open_clip checkpoint file with ``visual.*`` keys (OpenFlamingo)); None keeps random weights
            (and the build says so).
        overrides: fields of the encoder config that differ from the preset (e.g. ``{depth: 12}``).
    """

    kind: str = "timm_eva"
    preset: str = "tiny"
    checkpoint: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class LLMConfig:
    """Frozen causal LM.

    Attributes:
        kind: a registered LLM loader: ``pretrained`` (a local transformers directory at ``path``),
            ``tiny_llama`` or ``tiny_qwen2`` (random weights, for tests and demos); see
            :func:`vpgkit.registry.register_llm_loader`.
        path: the local model directory for ``pretrained``; for tiny kinds, an optional tokenizer
            directory (default: vpgkit's built-in tiny word-level tokenizer).
        init_std: weight init std of the tiny kinds (transformers' default 0.02 gives a random LM whose
            output hardly depends on its input; the tiny recipes use 0.2 so that training shows).
    """

    kind: str = "tiny_llama"
    path: str | None = None
    init_std: float = 0.02


@dataclass
class LoraSettings:
    """peft LoRA on the LM (off when ``r`` is 0)."""

    r: int = 0
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])


@dataclass
class PluginSpec:
    """One plug-in of ``model.plugins``: a registered name or a ``_target_`` class, and its config.

    Attributes:
        name: a registered plug-in (``qformer``, ``vpgc``, ``perceiver``, ``cross_attention``,
            ``mlp_projector``, ``perceiver_vpgc``, or one your package registers).
        _target_: instead of ``name``, ``package.module.Class`` of a :class:`vpgkit.plugins.Plugin`
            subclass; imported at build time, so it may live outside vpgkit.
        preset: a preset of the plug-in's config class (None: the class defaults).
        overrides: config fields that differ from the preset (e.g. ``{layer: 2}``).
        checkpoint: safetensors state dict of the plug-in's module, or None.
        trainable: train its weights (None: the plug-in's default — adapters train, VPGs stay frozen).
    """

    name: str | None = None
    _target_: str | None = None
    preset: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    trainable: bool | None = None


@dataclass
class ModelConfig:
    """What to build.

    The plug-ins are the shorthand fields (``vpg``, ``vpgc``, ``perceiver``, ``cross_attention`` and their
    ``*_overrides`` / ``*_checkpoint`` / ``vpgc_layer`` / ``cross_attention_every`` /
    ``train_vpg_projection``: each a ``<slot>: preset`` line for the plug-in registered on that slot,
    kept so that existing recipes and command lines work) followed by ``plugins``, a list of
    :class:`PluginSpec` for any registered or user plug-in.

    Attributes:
        vision, llm: the frozen backbones (``kind`` is a registered builder, see ``vpgkit.registry``).
        plugins: further plug-ins, in order (see :class:`PluginSpec`).
        vpg: Q-Former preset (prompt-splice models), or None; ``vpg_overrides`` changes its fields.
        vpg_checkpoint: safetensors of a trained ``QFormer`` state dict (e.g. a BLIP-2 stage), or None.
        vpgc: VPG-C preset, or None; ``vpgc_layer`` overrides its layer k, ``vpgc_overrides`` any field
            (e.g. ``{guidance: false}``, the no-guidance ablation).
        perceiver, cross_attention: presets for Flamingo-style models, or None.
        train_vpg_projection: train the Q-Former's projection (the ``blip2`` recipe).
        backbone_dtype: dtype of the frozen parts (``float32`` or ``bfloat16``); trainable weights stay fp32.
        image_token: the tokenizer's image token (slot for Q-Former models, marker for Flamingo-style).
        added_tokens: special tokens whose embedding rows train while the vocabulary stays frozen
            (:class:`vpgkit.tokens.AddedTokens`); tokens the tokenizer lacks are added to it and the LLM's
            vocabulary grows. The ``otter`` recipe trains ``<image>`` and ``<|endofchunk|>`` as OpenFlamingo does.
        added_tokens_output: LM-head rows of the added tokens: ``tied``, ``trained`` or ``frozen``
            (default: ``tied`` for LMs that tie their embeddings, else ``frozen`` as in OpenFlamingo).
        lora: LoRA settings.
        init_adapter: an adapter directory (or hub repo id) whose weights initialise the trainable
            modules instead of their own init — to finetune a published adapter further, or a warm start.
            Loaded strictly: the same base, plug-ins and module configs, every key present.
    """

    vision: VisionConfig = field(default_factory=VisionConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    plugins: list[PluginSpec] = field(default_factory=list)
    vpg: str | None = "tiny"
    vpg_overrides: dict[str, Any] = field(default_factory=dict)
    vpg_checkpoint: str | None = None
    vpgc: str | None = None
    vpgc_layer: int | None = None
    vpgc_overrides: dict[str, Any] = field(default_factory=dict)
    perceiver: str | None = None
    cross_attention: str | None = None
    cross_attention_every: int | None = None
    train_vpg_projection: bool = False
    backbone_dtype: str = "float32"
    image_token: str = "<image>"
    added_tokens: list[str] = field(default_factory=list)
    added_tokens_output: str | None = None
    lora: LoraSettings = field(default_factory=LoraSettings)
    init_adapter: str | None = None


@dataclass
class SourceConfig:
    """One dataset.

    Attributes:
        name: name used in logs and in the mixture (``per_batch``).
        format: ``jsonl`` (vpgkit samples), ``llava``, ``mimicit``, ``demon``, ``captions`` (JSONL/TSV),
            or ``toy`` (generated coloured shapes, no files; for demos and tests).
        path: the dataset file (or folder, per format).
        images: image root for relative paths.
        per_batch: samples of this source in each global batch (a mixture when several sources).
        options: format-specific options (e.g. ``train_config`` for MIMIC-IT, ``count`` for ``toy``).
    """

    name: str = "train"
    format: str = "toy"
    path: str | None = None
    images: str | None = None
    per_batch: int = 0
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """Data: sources, template and tokenisation.

    Attributes:
        train, eval: sources; eval may be empty.
        template: ``vicuna_v0``, ``llama2_chat`` or ``otter``.
        system: the template's system prompt (None: the format's default; ``""``: none).
        max_length: longest sequence (tokens, image slots included).
        truncation: ``error`` or ``right`` (drop whole trailing turns).
        skip_bad_samples: skip (and count, and report) unreadable samples instead of stopping.
        num_workers: DataLoader worker processes.
        feature_cache: directory of the frozen-feature cache, or None.
        prepare: a callable that writes the data files before training, as a Hydra call spec
            (``{_target_: package.module.function, **kwargs}``), or None. vpgkit imports it by name at
            run time, so data generators (e.g. ``synthetic``) can live outside vpgkit.
    """

    train: list[SourceConfig] = field(default_factory=lambda: [SourceConfig()])
    eval: list[SourceConfig] = field(default_factory=list)
    template: str = "vicuna_v0"
    system: str | None = None
    max_length: int = 256
    truncation: str = "error"
    skip_bad_samples: bool = False
    num_workers: int = 0
    feature_cache: str | None = None
    prepare: dict[str, Any] | None = None


@dataclass
class OptimConfig:
    """AdamW on the trainable weights, linear warmup then cosine decay."""

    lr: float = 2e-5
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    warmup_steps: int = 2000
    min_lr_ratio: float = 0.0
    max_grad_norm: float | None = 1.0


@dataclass
class TrainerConfig:
    """The loop.

    Attributes:
        max_steps: optimiser steps.
        global_batch_size: samples per optimiser step over all processes and accumulation steps.
        gradient_accumulation_steps: micro-batches per optimiser step (per process).
        mixed_precision: accelerate's ``no``, ``bf16`` or ``fp16`` (autocast; fp16 needs a GPU).
        gradient_checkpointing: recompute LM activations in the backward pass.
        log_every, eval_every, save_every: in optimiser steps (0 = never, except a final save).
        keep_checkpoints: how many training checkpoints to keep.
        log_with: accelerate tracker (``tensorboard``) or None.
        fetch_loss_weight: weight of the fetch loss (:mod:`vpgkit.training.fetch`) added to the LM loss on
            samples whose ``meta`` has a ``fetch_box``: VPG-C's guided queries are taught to look at the
            region the instruction is about. 0 (default, Cheetah's recipe): the LM loss alone. Needs a
            ``vpgc`` plug-in.
    """

    max_steps: int = 18000
    global_batch_size: int = 88
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    log_every: int = 10
    eval_every: int = 0
    save_every: int = 500
    keep_checkpoints: int = 2
    log_with: str | None = "tensorboard"
    fetch_loss_weight: float = 0.0


@dataclass
class EvalConfig:
    """DEMON-format evaluation after training (see ``vpgkit.evaluation``).

    Attributes:
        demon: DEMON task folders / ``core.json`` files (empty: no evaluation).
        max_new_tokens, batch_size: greedy generation settings.
        limit: first samples per task (None: all).

    ``python -m vpgkit.evaluate --run OUTPUT_DIR --base-only`` evaluates the same run without its adapter.
    """

    demon: list[str] = field(default_factory=list)
    max_new_tokens: int = 24
    batch_size: int = 16
    limit: int | None = None


@dataclass
class TrainConfig:
    """Everything ``python -m vpgkit.train`` reads.

    Attributes:
        recipe: the recipe's name (for logs and the adapter card).
        output_dir: where checkpoints, logs and the adapter go.
        resume: ``none``, ``auto`` (the newest checkpoint in ``output_dir``, if any) or a checkpoint path.
        seed: seeds data order and initialisation.
    """

    recipe: str = "vpgc"
    output_dir: str = "outputs/vpgc"
    resume: str = "none"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)


def register_schema() -> None:
    """Register :class:`TrainConfig` with Hydra's ConfigStore as ``train_schema``, and the ``asset``
    resolver: ``${asset:tiny_world/eva.safetensors}`` is the path of a file shipped in ``vpgkit.assets``."""
    from .assets import asset_path

    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
    if not OmegaConf.has_resolver("asset"):
        OmegaConf.register_new_resolver("asset", asset_path)


def to_train_config(cfg: DictConfig) -> TrainConfig:
    """The composed Hydra config as a :class:`TrainConfig`, refusing keys the schema does not have.

    Hydra already refuses ``key=value`` for unknown keys; this also catches keys added with ``+key=`` or
    by a user recipe, which OmegaConf would otherwise drop silently.
    """
    _check_keys(cfg, TrainConfig, "")
    return OmegaConf.to_object(cfg)


def _check_keys(node: Any, schema: type, path: str) -> None:
    if not dataclasses.is_dataclass(schema) or not isinstance(node, DictConfig):
        return
    hints = typing.get_type_hints(schema)
    fields = {f.name for f in dataclasses.fields(schema)}
    for key in node:
        where = f"{path}{key}"
        if key not in fields:
            raise ValueError(f"unknown config key {where!r}; {schema.__name__} has {sorted(fields)}")
        child, hint = node._get_node(key), hints[key]
        if isinstance(child, ListConfig):
            item = next((a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)), None)
            for i, element in enumerate(child):
                _check_keys(element, item, f"{where}.{i}.") if item else None
        else:
            target = next((a for a in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(a)), None)
            _check_keys(child, target, f"{where}.") if target else None
