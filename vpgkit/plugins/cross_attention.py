"""Gated cross-attention blocks (Flamingo) as a plug-in.

Slot ``cross_attention`` (an ``nn.ModuleDict`` of blocks keyed by decoder-layer index, so adapter keys
are ``cross_attention.<i>.*`` and OpenFlamingo's block ``i`` maps to ``cross_attention[str(i)]``). A
block goes before decoder layer i when (i + 1) % every == 0; it reads the media of a ``"media"`` plug-in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from ..attach import CrossAttentionHook
from ..backbones.language import hidden_size
from ..modules import GatedCrossAttentionBlock, GatedCrossAttentionConfig
from ..registry import register_plugin
from .base import Plugin, check_width, load_module_checkpoint

if TYPE_CHECKING:  # pragma: no cover
    from ..model import VisionLanguageModel


@register_plugin("cross_attention")
class CrossAttentionPlugin(Plugin):
    """One :class:`~vpgkit.modules.GatedCrossAttentionBlock` before every ``every``-th decoder layer.

    The blocks are created by :meth:`bind` (their number depends on the LLM's depth).

    Example:
        >>> plugin = CrossAttentionPlugin(GatedCrossAttentionConfig.preset("tiny", every=2))
        >>> plugin.module is None, plugin.requires
        (True, ('media',))
    """

    slot: ClassVar[str] = "cross_attention"
    config_class = GatedCrossAttentionConfig
    provides: ClassVar[tuple[str, ...]] = ("reads_media",)
    requires: ClassVar[tuple[str, ...]] = ("media",)
    shorthand_fields: ClassVar[dict[str, str]] = {"cross_attention_every": "overrides.every"}

    def __init__(
        self,
        config: GatedCrossAttentionConfig,
        module: nn.Module | None = None,
        trainable: bool | None = None,
    ):
        super().__init__(config, module, trainable)
        self._checkpoint: str | None = None
        self._dtype: torch.dtype | None = None

    @classmethod
    def build(
        cls,
        config: GatedCrossAttentionConfig,
        partners: Mapping[str, Plugin],
        *,
        trainable: bool | None = None,
        checkpoint: str | None = None,
    ) -> CrossAttentionPlugin:
        plugin = cls(config, None, trainable)
        plugin._checkpoint = checkpoint
        return plugin

    def cast_frozen(self, dtype: torch.dtype) -> None:
        if not self.trainable:
            self._dtype = dtype  # the blocks are made in bind

    @classmethod
    def from_module(cls, module: GatedCrossAttentionConfig, **options: Any) -> CrossAttentionPlugin:
        return cls(module)  # the keyword form passes the config; blocks are made in bind

    def bind(self, model: VisionLanguageModel, layers: nn.ModuleList) -> list:
        media = model.plugin_providing("media")
        check_width(
            "cross_attention.media_width",
            self.config.media_width,
            "media width",
            getattr(media.config, "width", None),
        )
        check_width("cross_attention.width", self.config.width, "LLM hidden size", hidden_size(model.llm))
        model.cross_attention_config = self.config  # the name it had before plug-ins (read by older code)
        self.module = nn.ModuleDict()
        handles = []
        for i, layer in enumerate(layers):
            if (i + 1) % self.config.every == 0:
                block = GatedCrossAttentionBlock(self.config)
                self.module[str(i)] = block
                hook = CrossAttentionHook(block, model.context_slot, layer=i)
                handles.append(layer.register_forward_pre_hook(hook, with_kwargs=True))
        load_module_checkpoint(self.module, self._checkpoint)
        if self._dtype is not None:
            self.module.to(self._dtype)
        return handles
