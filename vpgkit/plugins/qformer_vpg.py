"""The Q-Former visual prompt generator (BLIP-2 / InstructBLIP) as a plug-in.

Slot ``vpg``; the Q-Former stays frozen, its language projection trains when ``trainable`` (BLIP-2's
stage 2). Provides ``"prompts"`` and ``"qformer"`` (VPG-C re-runs this Q-Former).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from ..backbones.language import hidden_size
from ..modules import QFormer, QFormerConfig
from ..registry import register_plugin
from .base import Plugin, check_width, load_module_checkpoint
from .image_inputs import PromptPlugin

if TYPE_CHECKING:  # pragma: no cover
    from ..attach import VisualContext
    from ..model import VisionLanguageModel


@register_plugin("qformer")
class QFormerVPG(PromptPlugin):
    """BLIP-2's Q-Former: N_q learned queries read the vision features; prompts (B, T_img, N_q, D_llm).

    ``trainable`` trains only the projection to the LM (the Q-Former itself stays frozen).

    Example:
        >>> vpg = QFormerVPG(QFormerConfig.preset("tiny"), QFormer(QFormerConfig.preset("tiny")))
        >>> vpg.prompts(torch.randn(2, 1, 10, 32)).shape   # (B, T_img, N_q, D_llm)
        torch.Size([2, 1, 4, 48])
    """

    slot: ClassVar[str] = "vpg"
    config_class = QFormerConfig
    provides: ClassVar[tuple[str, ...]] = ("prompts", "qformer")
    default_trainable: ClassVar[bool] = False
    shorthand_fields: ClassVar[dict[str, str]] = {"train_vpg_projection": "trainable"}

    @classmethod
    def build(
        cls,
        config: QFormerConfig,
        partners: Mapping[str, Plugin],
        *,
        trainable: bool | None = None,
        checkpoint: str | None = None,
    ) -> QFormerVPG:
        return cls(config, load_module_checkpoint(QFormer(config), checkpoint), trainable)

    @classmethod
    def from_module(cls, module: QFormer, **options: Any) -> QFormerVPG:
        return cls(module.config, module, trainable=bool(options.get("train_vpg_projection", False)))

    @property
    def qformer(self) -> QFormer:
        """The Q-Former module (what VPG-C re-runs)."""
        return self.module

    @property
    def tokens_per_image(self) -> int:
        return self.config.num_queries

    def prompts(self, vision: torch.Tensor) -> torch.Tensor:
        return self.module(vision).prompts

    def context_prompts(
        self, model: VisionLanguageModel, vision: torch.Tensor, context: VisualContext
    ) -> torch.Tensor:
        """The prompts; with ``model.reuse_image_kv`` the pass's image-side keys/values go to
        ``context.image_kv`` so that VPG-C's second pass over the same images reuses them."""
        if not model.reuse_image_kv:
            return self.prompts(vision)
        out = self.module(vision, return_image_kv=True)
        context.image_kv = out.image_kv
        return out.prompts

    def bind(self, model: VisionLanguageModel, layers: nn.ModuleList) -> list:
        check_width(
            "vpg input (QFormerConfig.vision_width)",
            self.config.vision_width,
            "vision encoder",
            getattr(model.vision, "width", None),
        )
        check_width(
            "vpg output (QFormerConfig.llm_width)",
            self.config.llm_width,
            "LLM hidden size",
            hidden_size(model.llm),
        )
        return []

    def apply_trainable(self) -> None:
        self.module.requires_grad_(False)
        self.module.language_projection.requires_grad_(self.trainable)

    def frozen_modules(self) -> list[nn.Module]:
        return [self.module.qformer]

    def on_train(self, model: VisionLanguageModel, mode: bool) -> None:
        if model.reference_path:
            self.module.qformer.train(mode)  # as the original code did: frozen Q-Former with dropout on
