"""The Perceiver resampler (Flamingo / OpenFlamingo / Otter) as a plug-in.

Slot ``perceiver``; provides ``"media"`` (its latents, read by gated cross-attention) and
``"perceiver"`` (VPG-C over the Perceiver re-runs it). Trains by default, as in OpenFlamingo.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from ..modules import PerceiverConfig, PerceiverResampler
from ..registry import register_plugin
from .base import Plugin, check_width, load_module_checkpoint
from .image_inputs import MediaPlugin

if TYPE_CHECKING:  # pragma: no cover
    from ..model import VisionLanguageModel


@register_plugin("perceiver")
class PerceiverPlugin(MediaPlugin):
    """Resamples each image's (N_v, D_v) features into ``num_latents`` media tokens (one frame per image).

    Example:
        >>> plugin = PerceiverPlugin.from_module(PerceiverResampler(PerceiverConfig.preset("tiny")))
        >>> plugin.media(torch.randn(2, 3, 10, 32)).shape   # (B, T_img, num_latents, D_v)
        torch.Size([2, 3, 8, 32])
    """

    slot: ClassVar[str] = "perceiver"
    config_class = PerceiverConfig
    provides: ClassVar[tuple[str, ...]] = ("media", "perceiver")
    requires: ClassVar[tuple[str, ...]] = ("reads_media",)  # media nothing reads would be a silent no-op

    @classmethod
    def build(
        cls,
        config: PerceiverConfig,
        partners: Mapping[str, Plugin],
        *,
        trainable: bool | None = None,
        checkpoint: str | None = None,
    ) -> PerceiverPlugin:
        return cls(config, load_module_checkpoint(PerceiverResampler(config), checkpoint), trainable)

    @classmethod
    def from_module(cls, module: PerceiverResampler, **options: Any) -> PerceiverPlugin:
        return cls(module.config, module)

    @property
    def resampler(self) -> PerceiverResampler:
        """The resampler module (what VPG-C over the Perceiver re-runs)."""
        return self.module

    def media(self, vision: torch.Tensor) -> torch.Tensor:
        return self.module(vision[:, :, None])  # one frame per image

    def bind(self, model: VisionLanguageModel, layers: nn.ModuleList) -> list:
        check_width(
            "perceiver (PerceiverConfig.width)",
            self.config.width,
            "vision encoder",
            getattr(model.vision, "width", None),
        )
        return []
