"""VPG-C over the Perceiver resampler: guided completion for Flamingo-style models.

Config, module, hook and plug-in in one file. At the input of decoder layer k (a forward pre-hook, on a
pass that covers the whole prompt) the hidden state of each row's last prompt token, g (B, D_llm), is
projected to the media width by a zero-initialised linear layer and **joins the latents as an extra
query**: the frozen Perceiver re-reads the same vision features with queries cat(latents', proj(g))
(latents' trainable, initialised from the Perceiver's). A zero-initialised linear layer maps the outputs
at the latent positions to a residual (B, T_img, num_latents, D_v) on the media: the gated
cross-attention blocks before layers i > k read media + residual (``VisualContext.media_at``). Both
projections start at zero, so at init the model's output is exactly the base model's; cached decode steps
keep reading the prefill's corrected media.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from ..attach import ContextSlot
from ..backbones.language import hidden_size
from ..modules import PerceiverResampler
from ..modules.presets import PresetConfig
from ..modules.shapes import check_shape
from ..registry import register_plugin
from .base import Plugin, check_width, load_module_checkpoint

if TYPE_CHECKING:  # pragma: no cover
    from ..model import VisionLanguageModel


@dataclass
class PerceiverVPGCConfig(PresetConfig):
    """Configuration of :class:`PerceiverVPGC`.

    Attributes:
        llm_width: D_llm, hidden width of the LLM (the guidance input).
        media_width: D_v, width of the Perceiver (its latents and media tokens).
        num_latents: the Perceiver's latents = media tokens per image that receive the residual.
        layer: k, the 0-based decoder layer whose input gives the guidance; blocks before layers i > k
            read the corrected media.
        guidance: False holds the guidance at zero (the no-guidance ablation).
    """

    llm_width: int = 4096
    media_width: int = 1024
    num_latents: int = 64
    layer: int = 16
    guidance: bool = True

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # OpenFlamingo-9B / Otter: a 4096-wide, 32-layer LM, Perceiver on CLIP ViT-L/14 (1024), k = 16.
        "openflamingo9b": {},
        "tiny": {"llm_width": 48, "media_width": 32, "num_latents": 8, "layer": 2},
    }


class PerceiverVPGC(nn.Module):
    """Trainable part of VPG-C over the Perceiver (the frozen Perceiver is passed to ``forward``).

    Example:
        >>> from vpgkit.modules import PerceiverConfig
        >>> perceiver = PerceiverResampler(PerceiverConfig.preset("tiny")).requires_grad_(False)
        >>> vpgc = PerceiverVPGC.from_perceiver(perceiver, PerceiverVPGCConfig.preset("tiny"))
        >>> residual = vpgc(torch.randn(2, 48), torch.randn(2, 3, 10, 32), perceiver)  # g (B, D_llm), vision
        >>> residual.shape, bool(residual.eq(0).all())   # (B, T_img, num_latents, D_v), zero at init
        (torch.Size([2, 3, 8, 32]), True)
    """

    def __init__(self, config: PerceiverVPGCConfig):
        super().__init__()
        self.config = config
        self.guidance_proj = nn.Linear(config.llm_width, config.media_width)
        self.latents = nn.Parameter(torch.zeros(config.num_latents, config.media_width))
        self.output_proj = nn.Linear(config.media_width, config.media_width)
        for p in (*self.guidance_proj.parameters(), *self.output_proj.parameters()):
            nn.init.zeros_(p)

    @classmethod
    def from_perceiver(cls, perceiver: PerceiverResampler, config: PerceiverVPGCConfig) -> PerceiverVPGC:
        """A completer whose latents start as a copy of ``perceiver``'s; widths must agree."""
        if (config.media_width, config.num_latents) != (perceiver.config.width, perceiver.config.num_latents):
            raise ValueError(
                f"PerceiverVPGC.from_perceiver: config has media_width={config.media_width}, num_latents="
                f"{config.num_latents} but the Perceiver has width={perceiver.config.width}, "
                f"num_latents={perceiver.config.num_latents}"
            )
        with torch.device(perceiver.latents.device):
            module = cls(config)
        with torch.no_grad():
            module.latents.copy_(perceiver.latents.detach())
        return module

    def forward(
        self, guidance: torch.Tensor, vision: torch.Tensor, perceiver: PerceiverResampler
    ) -> torch.Tensor:
        """Residual on the media of every image of every row.

        Args:
            guidance: (B, D_llm) hidden state of each row's last prompt token at the input of layer k.
            vision: (B, T_img, N_v, D_v) the vision features the Perceiver read (one frame per image).
            perceiver: the frozen Perceiver to re-run (not registered in this module).

        Returns:
            (B, T_img, num_latents, D_v), exactly zero at init.
        """
        sizes: dict[str, int] = {}
        check_shape("guidance", guidance, ("B", self.config.llm_width), sizes)
        check_shape("vision", vision, ("B", "T_img", "N_v", self.config.media_width), sizes)
        b, t, n_v, d = vision.shape
        if not self.config.guidance:
            guidance = torch.zeros_like(guidance)
        extra = self.guidance_proj(guidance.to(self.guidance_proj.weight.dtype))  # (B, D_v)
        queries = torch.cat([self.latents.expand(b, -1, -1), extra[:, None]], dim=1)  # (B, L + 1, D_v)
        queries = queries[:, None].expand(b, t, -1, -1).reshape(b * t, -1, d)
        dtype = perceiver.latents.dtype
        out = perceiver.resample(vision.reshape(b * t, n_v, d).to(dtype), queries.to(dtype))
        residual = self.output_proj(out[:, : self.config.num_latents].to(self.output_proj.weight.dtype))
        return residual.reshape(b, t, self.config.num_latents, d)


class PerceiverVPGCHook:
    """Forward pre-hook on decoder layer k: writes ``context.media_residuals[k]`` on full passes."""

    def __init__(self, module: PerceiverVPGC, perceiver: PerceiverResampler, slot: ContextSlot, layer: int):
        self.module, self.perceiver, self.slot, self.layer = module, perceiver, slot, layer

    def __call__(self, layer: nn.Module, args: tuple, kwargs: dict):
        context = self.slot.resolve(kwargs)
        hidden = args[0] if args else kwargs["hidden_states"]
        if context is None or context.media is None or hidden.shape[1] < context.seq_len:
            return None  # cached decode steps keep the prefill's residual
        if context.media.shape[1] == 0:
            return None  # no row of the batch has an image
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        guidance = hidden[rows, context.guidance_index]  # (B, D_llm)
        context.media_residuals[self.layer] = self.module(guidance, context.vision, self.perceiver)
        return None


@register_plugin("perceiver_vpgc")
class PerceiverVPGCPlugin(Plugin):
    """VPG-C for Flamingo-style models (slot ``perceiver_vpgc``); needs a ``"perceiver"`` plug-in.

    Example:
        >>> from vpgkit.modules import PerceiverConfig
        >>> perceiver = PerceiverResampler(PerceiverConfig.preset("tiny"))
        >>> plugin = PerceiverVPGCPlugin.from_module(
        ...     PerceiverVPGC.from_perceiver(perceiver, PerceiverVPGCConfig.preset("tiny")))
        >>> plugin.requires, sum(p.numel() for p in plugin.module.parameters())
        (('perceiver', 'reads_media'), 2880)
    """

    slot: ClassVar[str] = "perceiver_vpgc"
    config_class = PerceiverVPGCConfig
    requires: ClassVar[tuple[str, ...]] = ("perceiver", "reads_media")
    uses_guidance: ClassVar[bool] = True

    @classmethod
    def build(
        cls,
        config: PerceiverVPGCConfig,
        partners: Mapping[str, Plugin],
        *,
        trainable: bool | None = None,
        checkpoint: str | None = None,
    ) -> PerceiverVPGCPlugin:
        if "perceiver" not in partners:
            raise ValueError("plug-in perceiver_vpgc: needs a perceiver plug-in listed before it")
        module = PerceiverVPGC.from_perceiver(partners["perceiver"].resampler, config)
        return cls(config, load_module_checkpoint(module, checkpoint), trainable)

    def bind(self, model: VisionLanguageModel, layers: nn.ModuleList) -> list:
        check_width(
            "perceiver_vpgc (PerceiverVPGCConfig.llm_width)",
            self.config.llm_width,
            "LLM hidden size",
            hidden_size(model.llm),
        )
        if not 0 <= self.config.layer < len(layers):
            raise ValueError(
                f"perceiver_vpgc: layer k={self.config.layer} is outside the LLM's {len(layers)} layers"
            )
        perceiver = model.plugin_providing("perceiver").resampler
        hook = PerceiverVPGCHook(self.module, perceiver, model.context_slot, self.config.layer)
        return [layers[self.config.layer].register_forward_pre_hook(hook, with_kwargs=True)]
