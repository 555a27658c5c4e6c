"""LLaVA-style MLP projector: every vision patch becomes one visual prompt (LLaVA / LLaVA-1.5).

Config, module and plug-in in one file. Each image is ``num_tokens`` placeholder tokens in the text (one
per patch feature); the projector maps (B, T_img, N_v, D_v) patch features to (B, T_img, N_v, D_llm)
prompts spliced there. LLaVA-1.5's ``mlp2x_gelu`` is Linear(D_v → D_llm), GELU, Linear(D_llm → D_llm);
``depth=1`` is LLaVA-1's single linear layer. Parameter names (``0.*``, ``2.*``) follow LLaVA's
``mm_projector``. The projector trains (LLaVA's stage 1); the LM and vision encoder stay frozen.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from ..backbones.language import hidden_size
from ..modules.presets import PresetConfig
from ..modules.shapes import check_shape
from ..registry import register_plugin
from .base import Plugin, check_width, load_module_checkpoint
from .image_inputs import PromptPlugin

if TYPE_CHECKING:  # pragma: no cover
    from ..model import VisionLanguageModel


@dataclass
class MLPProjectorConfig(PresetConfig):
    """Configuration of :class:`MLPProjector`.

    Attributes:
        vision_width: D_v, width of the patch features (1024 for CLIP ViT-L/14).
        llm_width: D_llm, hidden width of the LLM.
        num_tokens: N_v, patch features per image = visual prompts per image (576 for ViT-L/14 at 336 px).
        depth: linear layers, GELU between them (2: LLaVA-1.5's ``mlp2x_gelu``; 1: LLaVA-1's linear).
    """

    vision_width: int = 1024
    llm_width: int = 4096
    num_tokens: int = 576
    depth: int = 2

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # LLaVA-1.5-7B: CLIP ViT-L/14-336 (576 patches × 1024) into Vicuna-7B (4096).
        "llava15_7b": {},
        "llava15_13b": {"llm_width": 5120},
        "tiny": {"vision_width": 32, "llm_width": 48, "num_tokens": 10},
    }

    def __post_init__(self):
        if self.depth < 1:
            raise ValueError(f"MLPProjectorConfig.depth: expected ≥ 1, got {self.depth}")


class MLPProjector(nn.Module):
    """Linear layers with GELU between them, applied to every patch feature.

    Example:
        >>> projector = MLPProjector(MLPProjectorConfig.preset("tiny"))
        >>> projector(torch.randn(2, 1, 10, 32)).shape   # (B, T_img, N_v, D_v) → (B, T_img, N_v, D_llm)
        torch.Size([2, 1, 10, 48])
    """

    def __init__(self, config: MLPProjectorConfig):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = [nn.Linear(config.vision_width, config.llm_width)]
        for _ in range(config.depth - 1):
            layers += [nn.GELU(), nn.Linear(config.llm_width, config.llm_width)]
        self.layers = nn.Sequential(*layers)

    def forward(self, vision: torch.Tensor) -> torch.Tensor:
        """(B, T_img, N_v, D_v) patch features → (B, T_img, N_v, D_llm) prompts."""
        check_shape("vision", vision, ("B", "T_img", self.config.num_tokens, self.config.vision_width))
        return self.layers(vision.to(self.layers[0].weight.dtype))


@register_plugin("mlp_projector")
class MLPProjectorPlugin(PromptPlugin):
    """Splices one projected prompt per patch feature (slot ``projector``; trains by default).

    Example:
        >>> plugin = MLPProjectorPlugin.build(MLPProjectorConfig.preset("tiny"), {})
        >>> plugin.tokens_per_image, plugin.slot
        (10, 'projector')
    """

    slot: ClassVar[str] = "projector"
    config_class = MLPProjectorConfig

    @classmethod
    def build(
        cls,
        config: MLPProjectorConfig,
        partners: Mapping[str, Plugin],
        *,
        trainable: bool | None = None,
        checkpoint: str | None = None,
    ) -> MLPProjectorPlugin:
        return cls(config, load_module_checkpoint(MLPProjector(config), checkpoint), trainable)

    @property
    def tokens_per_image(self) -> int:
        return self.config.num_tokens

    def prompts(self, vision: torch.Tensor) -> torch.Tensor:
        return self.module(vision)

    def bind(self, model: VisionLanguageModel, layers: nn.ModuleList) -> list:
        vision = model.vision
        check_width(
            "projector input (MLPProjectorConfig.vision_width)",
            self.config.vision_width,
            "vision encoder",
            getattr(vision, "width", None),
        )
        check_width(
            "projector input (MLPProjectorConfig.num_tokens)",
            self.config.num_tokens,
            "vision encoder's token count",
            getattr(vision, "num_tokens", None),
        )
        check_width(
            "projector output (MLPProjectorConfig.llm_width)",
            self.config.llm_width,
            "LLM hidden size",
            hidden_size(model.llm),
        )
        return []
