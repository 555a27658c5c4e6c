"""VPG-C (Cheetah) as a plug-in: completes the prompts of any plug-in that provides a Q-Former.

Slot ``vpgc``; a forward pre-hook on decoder layer ``config.layer`` (:class:`~vpgkit.attach.VPGCHook`).
It needs the ``"qformer"`` capability — an object with ``.qformer`` exposing ``encode(queries, vision)``
and ``query_tokens`` — and the prompt slots of a ``"prompts"`` plug-in (the residual lands on them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from torch import nn

from ..attach import VPGCHook
from ..backbones.language import hidden_size
from ..modules import VPGC, VPGCConfig
from ..registry import register_plugin
from .base import Plugin, check_width, load_module_checkpoint

if TYPE_CHECKING:  # pragma: no cover
    from ..model import VisionLanguageModel


@register_plugin("vpgc")
class VPGCPlugin(Plugin):
    """Guided residual completion of a Q-Former's prompts at decoder layer k (see :class:`~vpgkit.modules.VPGC`).

    Example:
        >>> from vpgkit.modules import QFormer, QFormerConfig
        >>> qformer = QFormer(QFormerConfig.preset("tiny"))
        >>> plugin = VPGCPlugin.from_module(VPGC.from_qformer(qformer, VPGCConfig.preset("tiny")))
        >>> plugin.slot, plugin.requires
        ('vpgc', ('qformer', 'prompts'))
    """

    slot: ClassVar[str] = "vpgc"
    config_class = VPGCConfig
    requires: ClassVar[tuple[str, ...]] = ("qformer", "prompts")
    uses_guidance: ClassVar[bool] = True
    shorthand_fields: ClassVar[dict[str, str]] = {"vpgc_layer": "overrides.layer"}

    @classmethod
    def build(
        cls,
        config: VPGCConfig,
        partners: Mapping[str, Plugin],
        *,
        trainable: bool | None = None,
        checkpoint: str | None = None,
    ) -> VPGCPlugin:
        if "qformer" not in partners:
            raise ValueError(
                "plug-in vpgc: needs a plug-in providing a Q-Former (e.g. qformer) listed before it"
            )
        module = VPGC.from_qformer(partners["qformer"].qformer, config)
        return cls(config, load_module_checkpoint(module, checkpoint), trainable)

    def bind(self, model: VisionLanguageModel, layers: nn.ModuleList) -> list:
        check_width(
            "vpgc (VPGCConfig.llm_width)", self.config.llm_width, "LLM hidden size", hidden_size(model.llm)
        )
        if not 0 <= self.config.layer < len(layers):
            raise ValueError(f"vpgc: layer k={self.config.layer} is outside the LLM's {len(layers)} layers")
        hook = VPGCHook(self.module, model.plugin_providing("qformer").qformer, model.context_slot)
        return [layers[self.config.layer].register_forward_pre_hook(hook, with_kwargs=True)]

    @classmethod
    def from_module(cls, module: VPGC, **options: Any) -> VPGCPlugin:
        return cls(module.config, module)
