"""Build the model and tokenizer a :class:`~vpgkit.config.TrainConfig` describes.

Every recipe line reaches code through a registry: ``model.vision.kind`` → a vision-encoder builder,
``model.llm.kind`` → an LLM loader, each ``model.plugins`` entry (and each plug-in shorthand field such as
``model.vpgc: tiny``) → a :class:`~vpgkit.plugins.Plugin` class (by ``name``, or ``_target_`` for a class
outside vpgkit). See :mod:`vpgkit.registry`.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch

from ..backbones import VisionEncoder
from ..backbones import builders as _builders  # noqa: F401 (registers the built-in backbone builders)
from ..config import ModelConfig, PluginSpec
from ..model import VisionLanguageModel
from ..plugins import Plugin, plugin_class, plugin_for_slot, plugin_slots
from ..registry import LLM_LOADERS, VISION_ENCODERS, import_object
from ..tokens import AddedTokens

logger = logging.getLogger(__name__)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"model.backbone_dtype: expected one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


def build_vision(config: ModelConfig) -> VisionEncoder:
    """The frozen vision encoder of ``config.vision`` (its ``kind`` names a registered builder)."""
    v = config.vision
    if v.kind not in VISION_ENCODERS:
        raise ValueError(f"model.vision.kind: expected one of {VISION_ENCODERS.names()}, got {v.kind!r}")
    return VISION_ENCODERS.get(v.kind)(v, _dtype(config.backbone_dtype))


def build_llm_and_tokenizer(config: ModelConfig, seed: int = 0):
    """The frozen LM and its tokenizer (tiny kinds get vpgkit's built-in word-level tokenizer)."""
    llm_cfg = config.llm
    if llm_cfg.kind not in LLM_LOADERS:
        raise ValueError(f"model.llm.kind: expected one of {LLM_LOADERS.names()}, got {llm_cfg.kind!r}")
    llm, tokenizer = LLM_LOADERS.get(llm_cfg.kind)(llm_cfg, _dtype(config.backbone_dtype), seed)
    missing = [t for t in config.added_tokens if t not in tokenizer.get_vocab()]
    if missing:  # their rows are created by AddedTokens in build_model
        tokenizer.add_special_tokens({"additional_special_tokens": missing})
    if config.image_token not in tokenizer.get_vocab():
        raise ValueError(
            f"model.image_token: {config.image_token!r} is not a token of the tokenizer; add it as a special token"
        )
    return llm, tokenizer


def plugin_specs(config: ModelConfig) -> list[PluginSpec]:
    """The recipe's plug-ins in order: the shorthand fields (``<slot>: preset`` for each registered slot
    that ``ModelConfig`` has a field for, with ``<slot>_overrides``, ``<slot>_checkpoint`` and the plug-in's
    ``shorthand_fields``), then ``config.plugins``."""
    specs = []
    slots = plugin_slots()
    for f in dataclasses.fields(config):
        preset = getattr(config, f.name)
        if f.name not in slots or preset is None:
            continue
        cls = plugin_for_slot(f.name)
        spec = PluginSpec(
            name=cls.name,
            preset=preset,
            overrides=dict(getattr(config, f"{f.name}_overrides", None) or {}),
            checkpoint=getattr(config, f"{f.name}_checkpoint", None),
        )
        for field_name, target in cls.shorthand_fields.items():
            value = getattr(config, field_name)
            if value is None:
                continue
            if target == "trainable":
                spec.trainable = bool(value)
            else:
                spec.overrides[target.removeprefix("overrides.")] = value
        specs.append(spec)
    return specs + list(config.plugins)


def resolve_plugin_class(spec: PluginSpec, where: str = "model.plugins") -> type[Plugin]:
    """The class a spec names: a registered ``name`` or an imported ``_target_``."""
    if (spec.name is None) == (spec._target_ is None):
        raise ValueError(
            f"{where}: give exactly one of name (a registered plug-in) or _target_ (a class path)"
        )
    if spec.name is not None:
        try:
            return plugin_class(spec.name)
        except KeyError as err:
            raise ValueError(f"{where}: {err.args[0]}") from None
    cls = import_object(spec._target_)
    if not (isinstance(cls, type) and issubclass(cls, Plugin)):
        raise TypeError(f"{where}: _target_ {spec._target_!r} is not a vpgkit.plugins.Plugin subclass")
    return cls


def plugin_configs(config: ModelConfig) -> list[tuple[PluginSpec, type[Plugin], Any]]:
    """(spec, plug-in class, its config) for every plug-in of ``config``, without building a module.

    This is the recipe validation the plug-ins give: an unknown name or ``_target_``, an unknown preset and
    an unknown or ill-typed config field fail here, naming the plug-in, in the run's first second.
    """
    out = []
    specs = plugin_specs(config)
    shorthands = len(specs) - len(config.plugins)
    for i, spec in enumerate(specs):
        where = "model" if i < shorthands else f"model.plugins[{i - shorthands}]"
        cls = resolve_plugin_class(spec, where)
        try:
            cfg = (
                cls.config_class.preset(spec.preset, **spec.overrides)
                if spec.preset
                else cls.config_class(**spec.overrides)
            )
        except (KeyError, TypeError, ValueError) as err:
            message = err.args[0] if err.args else err
            raise ValueError(f"{where}: plug-in {cls.name or cls.__name__!r}: {message}") from None
        out.append((spec, cls, cfg))
    return out


def build_plugins(config: ModelConfig) -> list[Plugin]:
    """Build every plug-in of ``config`` (in order, each seeing the capabilities of those before it)."""
    plugins: list[Plugin] = []
    partners: dict[str, Plugin] = {}
    for spec, cls, cfg in plugin_configs(config):
        plugin = cls.build(cfg, partners, trainable=spec.trainable, checkpoint=spec.checkpoint)
        plugins.append(plugin)
        partners.update({c: plugin for c in plugin.provides if c not in partners})
    dtype = _dtype(config.backbone_dtype)
    for plugin in plugins:
        plugin.cast_frozen(dtype)
    return plugins


def build_model(config: ModelConfig, seed: int = 0):
    """(VisionLanguageModel, tokenizer) for ``config``; adapters initialised from ``seed``."""
    llm, tokenizer = build_llm_and_tokenizer(config, seed)
    vision = build_vision(config)
    image_token_id = tokenizer.convert_tokens_to_ids(config.image_token)
    torch.manual_seed(seed + 1)
    plugins = build_plugins(config)
    added_tokens = None
    if config.added_tokens:
        ids = tokenizer.convert_tokens_to_ids(list(config.added_tokens))
        added_tokens = AddedTokens.for_llm(
            llm, list(config.added_tokens), ids, output=config.added_tokens_output
        )
    model = VisionLanguageModel(
        llm, vision, image_token_id=image_token_id, plugins=plugins, added_tokens=added_tokens
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
    if config.init_adapter:
        from ..checkpoints import load_adapter

        load_adapter(model, config.init_adapter)  # strict: raises naming what does not fit
    return model, tokenizer
