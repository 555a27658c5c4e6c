"""VPG-C: a residual visual-prompt completer guided by an intermediate LLM layer (Cheetah).

At the input of decoder layer k the hidden state of each row's last prompt token, g (B, D_llm), is
projected to the Q-Former width by a zero-initialised linear layer and added to a new set of trainable
queries (initialised from the VPG's queries). The *frozen* Q-Former re-reads the same vision features
with these guided queries, and a zero-initialised linear layer maps its outputs to a residual
(B, T_img, N_q, D_llm) that the attachment code adds to the hidden states at the image's N_q prompt
positions. Both projections start at zero, so at init the residual is exactly zero and the model's output
is exactly the base model's.

This module owns only its trainable weights; the frozen Q-Former is passed to ``forward`` rather than
registered here, so it is never registered (or saved) twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from .presets import PresetConfig
from .qformer import ImageKV, QFormer
from .shapes import check_shape


@dataclass
class VPGCConfig(PresetConfig):
    """Configuration of :class:`VPGC`.

    Attributes:
        llm_width: D_llm, hidden width of the LLM (guidance input and residual output).
        qformer_width: H, width of the Q-Former whose queries are guided.
        num_queries: N_q, number of guided queries (= visual prompts per image).
        layer: k, the 0-based decoder layer whose *input* provides the guidance and receives the
            residual. Used by the attachment code; the module itself does not look at it.
        guidance: False holds the guidance input at zero — the no-guidance ablation: the queries are
            then ``query_tokens + guidance_proj.bias``, the same for every prompt.
        guidance_init_std: 0 (Cheetah's init) starts ``guidance_proj`` at zero like ``output_proj``; the
            guided queries then equal the plain ones until ``output_proj`` has grown, since no gradient
            reaches ``guidance_proj`` through a zero ``output_proj``. A positive value draws its weight
            from N(0, std²) instead, so that the queries depend on the guidance from the first step. The
            residual is zero at init either way (``output_proj`` stays zero). Not Cheetah's: for experiments.
    """

    llm_width: int = 4096
    qformer_width: int = 768
    num_queries: int = 32
    layer: int = 16
    guidance: bool = True
    guidance_init_std: float = 0.0

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # Cheetah on Vicuna-7B: 32 layers, guidance at the input of layer 16.
        "vicuna7b": {},
        "vicuna13b": {"llm_width": 5120, "layer": 20},
        "tiny": {"llm_width": 48, "qformer_width": 32, "num_queries": 4, "layer": 1},
        # On the tiny-world backbones: half depth, the input of layer 3 of the LLaMA's 6 (its pre-training
        # taught layers ≥ 3 to read visual content injected there, as VPG-C adds it).
        "tiny_world": {"llm_width": 128, "qformer_width": 64, "num_queries": 3, "layer": 3},
    }


class VPGC(nn.Module):
    """Visual prompt completer.

    Example:
        >>> from vpgkit.modules import QFormer, QFormerConfig
        >>> vpg = QFormer(QFormerConfig.preset("tiny")).eval().requires_grad_(False)
        >>> vpgc = VPGC.from_qformer(vpg, VPGCConfig.preset("tiny"))
        >>> vision = torch.randn(2, 3, 10, 32)           # (B, T_img, N_v, D_v)
        >>> guidance = torch.randn(2, 48)                # (B, D_llm)
        >>> residual = vpgc(guidance, vision, vpg)       # (B, T_img, N_q, D_llm)
        >>> residual.shape, bool(residual.eq(0).all())
        (torch.Size([2, 3, 4, 48]), True)
    """

    def __init__(self, config: VPGCConfig, init_queries: torch.Tensor | None = None):
        super().__init__()
        self.config = config
        self.guidance_proj = nn.Linear(config.llm_width, config.qformer_width)
        self.query_tokens = nn.Parameter(torch.zeros(1, config.num_queries, config.qformer_width))
        self.output_proj = nn.Linear(config.qformer_width, config.llm_width)
        for p in (*self.guidance_proj.parameters(), *self.output_proj.parameters()):
            nn.init.zeros_(p)
        if config.guidance_init_std < 0:
            raise ValueError(f"VPGCConfig.guidance_init_std={config.guidance_init_std}: expected >= 0")
        if config.guidance_init_std > 0:
            nn.init.normal_(self.guidance_proj.weight, std=config.guidance_init_std)
        if init_queries is not None:
            check_shape("init_queries", init_queries, (1, config.num_queries, config.qformer_width))
            with torch.no_grad():
                self.query_tokens.copy_(init_queries)

    @classmethod
    def from_qformer(cls, qformer: QFormer, config: VPGCConfig) -> VPGC:
        """Build a VPG-C whose queries start as a copy of ``qformer``'s; widths must agree."""
        if (config.qformer_width, config.num_queries) != (
            qformer.config.hidden_size,
            qformer.config.num_queries,
        ):
            raise ValueError(
                f"VPGC.from_qformer: config has qformer_width={config.qformer_width}, num_queries="
                f"{config.num_queries} but the Q-Former has hidden_size={qformer.config.hidden_size}, "
                f"num_queries={qformer.config.num_queries}"
            )
        if config.llm_width != qformer.config.llm_width:
            raise ValueError(
                f"VPGC.from_qformer: config.llm_width={config.llm_width} but the Q-Former projects to "
                f"llm_width={qformer.config.llm_width}"
            )
        with torch.device(qformer.query_tokens.device):
            module = cls(config)
        with torch.no_grad():
            module.query_tokens.copy_(qformer.query_tokens.detach())
        return module

    def guided_queries(self, guidance: torch.Tensor) -> torch.Tensor:
        """(B, D_llm) guidance → (B, N_q, H) queries: query_tokens + guidance_proj(g)."""
        check_shape("guidance", guidance, ("B", self.config.llm_width))
        if not self.config.guidance:
            guidance = torch.zeros_like(guidance)
        return (
            self.query_tokens + self.guidance_proj(guidance.to(self.guidance_proj.weight.dtype))[:, None, :]
        )

    def forward(
        self,
        guidance: torch.Tensor,
        vision: torch.Tensor,
        qformer: QFormer,
        image_kv: ImageKV | None = None,
        attention_maps: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Compute the residual for every image of every row.

        Args:
            guidance: (B, D_llm) hidden state of each row's last prompt token at the input of layer k.
            vision: (B, T_img, N_v, D_v) the same vision features the VPG read; one g serves every image.
            qformer: the frozen Q-Former to re-run (its ``encode``; not registered in this module).
            image_kv: the Q-Former's cross-attention keys/values of ``vision`` ((B·T_img, N_v, H) per layer,
                from the VPG's own pass: :class:`~vpgkit.modules.ImageKV`), reused instead of recomputed;
                the residual is bitwise the same.
            attention_maps: a list to append the guided queries' cross-attention probabilities to,
                (B·T_img, heads, N_q, N_v) per cross-attention layer (see :meth:`QFormer.encode`), in the
                autograd graph. None: not computed.

        Returns:
            (B, T_img, N_q, D_llm) residual, exactly zero at init.
        """
        sizes: dict[str, int] = {}
        check_shape("guidance", guidance, ("B", self.config.llm_width), sizes)
        check_shape("vision", vision, ("B", "T_img", "N_v", qformer.config.vision_width), sizes)
        b, t, n_v, d_v = vision.shape
        queries = self.guided_queries(guidance)  # (B, N_q, H)
        queries = queries[:, None].expand(b, t, -1, -1).reshape(b * t, *queries.shape[1:])
        # other Q-Formers: the 2-argument contract unless these are asked for
        kv = {"image_kv": image_kv} if image_kv is not None else {}
        if attention_maps is not None:
            kv["attention_maps"] = attention_maps
        states = qformer.encode(queries.to(qformer.query_tokens.dtype), vision.reshape(b * t, n_v, d_v), **kv)
        residual = self.output_proj(states.to(self.output_proj.weight.dtype))
        return residual.reshape(b, t, *residual.shape[1:])
