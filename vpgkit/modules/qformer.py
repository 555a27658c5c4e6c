"""Q-Former visual prompt generator (BLIP-2).

Learned queries read the frozen vision features through a BERT-style encoder that cross-attends every
``cross_attention_every`` layers; a linear layer maps the query outputs to the LLM width. The encoder is
transformers' ``Blip2QFormerModel`` (text branch off), so parameter names match HF BLIP-2 checkpoints:
``query_tokens``, ``qformer.*``, ``language_projection.*``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import Blip2QFormerConfig, Blip2QFormerModel

from .presets import PresetConfig
from .shapes import check_shape


@dataclass
class QFormerConfig(PresetConfig):
    """Configuration of :class:`QFormer`.

    Attributes:
        vision_width: D_v, width of the vision features the queries cross-attend to (1408 for EVA-CLIP-g).
        llm_width: D_llm, width of the LLM the visual prompts are fed to.
        num_queries: N_q, number of learned queries (visual prompts per image).
        hidden_size: Q-Former width (BERT-base: 768).
        num_layers: number of Q-Former layers.
        num_heads: attention heads in self- and cross-attention.
        intermediate_size: feed-forward width.
        cross_attention_every: a layer cross-attends to the vision features when ``index % this == 0``.
        layer_norm_eps: epsilon of every LayerNorm (BERT: 1e-12).
        dropout: hidden dropout (only active in train mode).
        attention_dropout: attention-probability dropout (only active in train mode).
        init_std: std of the normal init of the queries and linear weights.
        attn_implementation: transformers attention backend, ``"sdpa"`` (fast) or ``"eager"``.
            Cross-attention maps are computed exactly with either.
    """

    vision_width: int = 1408
    llm_width: int = 4096
    num_queries: int = 32
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    cross_attention_every: int = 2
    layer_norm_eps: float = 1e-12
    dropout: float = 0.1
    attention_dropout: float = 0.1
    init_std: float = 0.02
    attn_implementation: str = "sdpa"

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # BLIP-2 / InstructBLIP Q-Former on EVA-CLIP-g, projected to a 4096-wide Vicuna-7B (as Cheetah uses it).
        "blip2": {},
        "blip2_opt2.7b": {"llm_width": 2560},
        "tiny": {
            "vision_width": 32,
            "llm_width": 48,
            "num_queries": 4,
            "hidden_size": 32,
            "num_layers": 2,
            "num_heads": 4,
            "intermediate_size": 64,
        },
        # The shipped tiny-world Q-Former (vpgkit/assets/tiny_world/qformer.safetensors): reads the
        # 96-wide tiny-world ViT, 3 queries into the 128-wide tiny-world LLaMA; dropout off. Three prompts
        # for 7–8 objects: a readout that ignores the instruction cannot carry every small object.
        "tiny_world": {
            "vision_width": 96,
            "llm_width": 128,
            "num_queries": 3,
            "hidden_size": 64,
            "num_layers": 4,
            "num_heads": 4,
            "intermediate_size": 128,
            "dropout": 0.0,
            "attention_dropout": 0.0,
        },
    }

    def to_hf(self) -> Blip2QFormerConfig:
        """The equivalent transformers ``Blip2QFormerConfig`` (text branch off)."""
        return Blip2QFormerConfig(
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            intermediate_size=self.intermediate_size,
            hidden_dropout_prob=self.dropout,
            attention_probs_dropout_prob=self.attention_dropout,
            layer_norm_eps=self.layer_norm_eps,
            cross_attention_frequency=self.cross_attention_every,
            encoder_hidden_size=self.vision_width,
            initializer_range=self.init_std,
            use_qformer_text_input=False,
            attn_implementation=self.attn_implementation,
        )


@dataclass
class QFormerOutput:
    """Output of :class:`QFormer`.

    Attributes:
        prompts: (B, T_img, N_q, D_llm) visual prompts for the LLM.
        query_states: (B, T_img, N_q, H) Q-Former outputs before the projection.
        cross_attentions: (B, T_img, L_x, heads, N_q, N_v) cross-attention probabilities of the L_x
            cross-attention layers, or ``None`` unless requested.
        image_kv: the image-side keys and values of this call (:class:`ImageKV`), or ``None`` unless
            requested.
    """

    prompts: torch.Tensor
    query_states: torch.Tensor
    cross_attentions: torch.Tensor | None = None
    image_kv: ImageKV | None = None


@dataclass
class ImageKV:
    """The image side of a Q-Former's cross-attention for one set of vision features.

    Each cross-attention layer projects the vision features (M, N_v, D_v) to keys and values (M, N_v, H)
    with its frozen ``key`` / ``value`` layers; they depend on the image only, not on the queries. A second
    Q-Former pass over the same images with other queries (VPG-C's guided pass) can reuse them instead of
    recomputing them — bitwise the same tensors, since they are the same layers applied to the same input.

    Attributes:
        keys, values: one (M, N_v, H) tensor per cross-attention layer, in layer order.
        batch_shape: (M, N_v), the flattened vision features they were computed from.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    batch_shape: tuple[int, int]


class ImageSideLinear(nn.Linear):
    """The ``key`` / ``value`` layer of a Q-Former cross-attention: an ``nn.Linear`` (same weights, same state
    dict) that can record its outputs or return given ones.

    ``record``: a list its outputs are appended to. ``given``: a (..., H) tensor returned instead of
    computing ``x Wᵀ + b`` (its leading shape must be ``x``'s). Both are None outside a :class:`QFormer` call
    that sets them.
    """

    record: list[torch.Tensor] | None = None
    given: torch.Tensor | None = None

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> ImageSideLinear:
        """The same layer (its parameters, not copies) as an :class:`ImageSideLinear`."""
        out = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        out.weight, out.bias = linear.weight, linear.bias  # shared, not copied
        return out.train(linear.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.given is not None:
            if self.given.shape[:-1] != x.shape[:-1]:
                raise ValueError(
                    f"ImageSideLinear: given keys/values of shape {tuple(self.given.shape)} for input "
                    f"{tuple(x.shape)}; they must come from the same vision features"
                )
            return self.given
        out = super().forward(x)
        if self.record is not None:
            self.record.append(out)
        return out


class QFormer(nn.Module):
    """BLIP-2 Q-Former visual prompt generator.

    Example:
        >>> vpg = QFormer(QFormerConfig.preset("tiny"))
        >>> out = vpg(torch.randn(2, 3, 10, 32))   # (B, T_img, N_v, D_v)
        >>> out.prompts.shape                       # (B, T_img, N_q, D_llm)
        torch.Size([2, 3, 4, 48])
    """

    def __init__(self, config: QFormerConfig):
        super().__init__()
        self.config = config
        self.query_tokens = nn.Parameter(torch.empty(1, config.num_queries, config.hidden_size))
        self.qformer = Blip2QFormerModel(config.to_hf())
        self.language_projection = nn.Linear(config.hidden_size, config.llm_width)
        for attention in self.cross_attention_layers():
            attention.key = ImageSideLinear.from_linear(attention.key)
            attention.value = ImageSideLinear.from_linear(attention.value)
        nn.init.normal_(self.query_tokens, std=config.init_std)
        nn.init.normal_(self.language_projection.weight, std=config.init_std)
        nn.init.zeros_(self.language_projection.bias)

    def cross_attention_layers(self) -> list[nn.Module]:
        """The multi-head attention modules of the cross-attention layers, in layer order."""
        return [
            layer.crossattention.attention
            for layer in self.qformer.encoder.layer
            if layer.has_cross_attention
        ]

    def encode(
        self,
        query_embeds: torch.Tensor,
        vision: torch.Tensor,
        image_kv: ImageKV | None = None,
        attention_maps: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Run the Q-Former encoder (embedding LayerNorm, dropout, layers) on given query embeddings.

        Args:
            query_embeds: (M, N_q, H) queries, e.g. ``query_tokens`` or VPG-C's guided queries.
            vision: (M, N_v, D_v) vision features.
            image_kv: the cross-attention keys/values of ``vision`` from an earlier pass (see
                :class:`ImageKV`): used instead of recomputing them. The result is bitwise the same.
            attention_maps: a list to append each cross-attention layer's probabilities to, (M, heads, N_q,
                N_v) per layer in layer order; they stay in the autograd graph (e.g. for a loss on where
                the queries look). None: not computed.

        Returns:
            (M, N_q, H) query outputs.
        """
        sizes: dict[str, int] = {}
        check_shape("query_embeds", query_embeds, ("M", "N_q", self.config.hidden_size), sizes)
        check_shape("vision", vision, ("M", "N_v", self.config.vision_width), sizes)
        with (
            self._given_image_kv(image_kv) if image_kv is not None else contextlib.nullcontext(),
            self._record_cross_attention(attention_maps)
            if attention_maps is not None
            else contextlib.nullcontext(),
        ):
            return self.qformer(query_embeds=query_embeds, encoder_hidden_states=vision).last_hidden_state

    def forward(
        self, vision: torch.Tensor, return_attentions: bool = False, return_image_kv: bool = False
    ) -> QFormerOutput:
        """Turn vision features into visual prompts.

        Args:
            vision: (B, T_img, N_v, D_v) patch features of T_img images per sample.
            return_attentions: also return the cross-attention maps (B, T_img, L_x, heads, N_q, N_v).
            return_image_kv: also return the cross-attention keys/values of ``vision`` (:class:`ImageKV`,
                (B·T_img, N_v, H) per layer), for a second pass over the same images.
        """
        check_shape("vision", vision, ("B", "T_img", "N_v", self.config.vision_width))
        b, t, n_v, d_v = vision.shape
        flat = vision.reshape(b * t, n_v, d_v)
        queries = self.query_tokens.expand(b * t, -1, -1)
        maps: list[torch.Tensor] = []
        keys: list[torch.Tensor] = []
        values: list[torch.Tensor] = []
        with self._recorded_image_kv(keys, values) if return_image_kv else contextlib.nullcontext():
            states = self.encode(queries, flat, attention_maps=maps if return_attentions else None)
        prompts = self.language_projection(states)
        cross = None
        if return_attentions:
            cross = torch.stack(maps, dim=1)
            cross = cross.reshape(b, t, *cross.shape[1:])
        return QFormerOutput(
            prompts=prompts.reshape(b, t, *prompts.shape[1:]),
            query_states=states.reshape(b, t, *states.shape[1:]),
            cross_attentions=cross,
            image_kv=ImageKV(keys, values, (b * t, n_v)) if return_image_kv else None,
        )

    @contextlib.contextmanager
    def _recorded_image_kv(self, keys: list[torch.Tensor], values: list[torch.Tensor]) -> Iterator[None]:
        """Append every cross-attention layer's key / value outputs to ``keys`` / ``values`` during one call."""
        layers = self.cross_attention_layers()
        for attention in layers:
            attention.key.record, attention.value.record = keys, values
        try:
            yield
        finally:
            for attention in layers:
                attention.key.record = attention.value.record = None

    @contextlib.contextmanager
    def _given_image_kv(self, image_kv: ImageKV) -> Iterator[None]:
        """Make the cross-attention layers return ``image_kv``'s keys / values during one call."""
        layers = self.cross_attention_layers()
        if len(image_kv.keys) != len(layers) or len(image_kv.values) != len(layers):
            raise ValueError(
                f"QFormer.encode: image_kv has {len(image_kv.keys)} layers of keys, the Q-Former "
                f"{len(layers)} cross-attention layers"
            )
        for attention, k, v in zip(layers, image_kv.keys, image_kv.values, strict=True):
            attention.key.given, attention.value.given = k, v
        try:
            yield
        finally:
            for attention in layers:
                attention.key.given = attention.value.given = None

    @torch.no_grad()
    def cross_attention_maps(self, vision: torch.Tensor) -> torch.Tensor:
        """Only the cross-attention probabilities, for attention maps (no prompts).

        Runs the encoder until the last cross-attention layer has its probabilities and stops there: the
        rest of that layer (its values, attention output and feed-forward), the layers after it and the
        language projection cannot change the maps, so they are not computed (BLIP-2: the 11th of its 12 layers
        holds the last cross-attention; about 15% of the Q-Former's FLOPs are skipped). The result equals
        ``forward(vision, return_attentions=True).cross_attentions`` bitwise: the same operations on the
        same inputs.

        Args:
            vision: (B, T_img, N_v, D_v) patch features.

        Returns:
            (B, T_img, L_x, heads, N_q, N_v) cross-attention probabilities, in ``vision``'s compute dtype.
        """
        check_shape("vision", vision, ("B", "T_img", "N_v", self.config.vision_width))
        b, t, n_v, d_v = vision.shape
        flat = vision.reshape(b * t, n_v, d_v)
        maps: list[torch.Tensor] = []
        # suppress outside the hooks' context: the hooks are removed before the pass's end is swallowed
        with contextlib.suppress(_MapsComplete), self._record_cross_attention(maps, stop_after_last=True):
            self.encode(self.query_tokens.expand(b * t, -1, -1), flat)
        cross = torch.stack(maps, dim=1)
        return cross.reshape(b, t, *cross.shape[1:])

    @contextlib.contextmanager
    def _record_cross_attention(
        self, maps: list[torch.Tensor], stop_after_last: bool = False
    ) -> Iterator[None]:
        """Collect softmax(q kᵀ·scale) of every cross-attention layer during one call.

        Computed from the query and key projections the layer itself just ran (forward hooks on its
        ``query`` and ``key`` layers: no second projection), so it is exact whatever the attention backend
        (SDPA never materialises the probabilities). With ``stop_after_last`` the last cross-attention layer
        raises :class:`_MapsComplete` once its map is recorded (before its values are projected): the
        caller catches it. Hooks live only inside this context.
        """
        layers = self.cross_attention_layers()
        handles = []
        for index, module in enumerate(layers):
            keep_query, record_map = _map_hooks(
                module, maps, stop=stop_after_last and index == len(layers) - 1
            )
            handles.append(module.query.register_forward_hook(keep_query))
            handles.append(module.key.register_forward_hook(record_map))
        try:
            yield
        finally:
            for h in handles:
                h.remove()


_LinearHook = Callable[[nn.Module, tuple, torch.Tensor], None]  # a forward hook of a Linear layer


def _map_hooks(module: nn.Module, maps: list[torch.Tensor], stop: bool) -> tuple[_LinearHook, _LinearHook]:
    """Forward hooks for one cross-attention ``module``: one keeps its query projection (N, N_q, H), the
    other turns its key projection (N, N_v, H) and that query into (N, heads, N_q, N_v) probabilities,
    appends them to ``maps`` and, with ``stop``, ends the pass."""
    queries: list[torch.Tensor] = []

    def keep_query(_linear: nn.Module, _args: tuple, output: torch.Tensor) -> None:
        queries[:] = [output]

    def record_map(_linear: nn.Module, _args: tuple, keys: torch.Tensor) -> None:
        if not queries:  # transformers' Blip2QFormer projects the queries before the keys
            raise RuntimeError("QFormer: a cross-attention layer projected its keys before its queries")
        heads, d = module.num_attention_heads, module.attention_head_size
        q = queries.pop().unflatten(-1, (heads, d)).transpose(1, 2)
        k = keys.unflatten(-1, (heads, d)).transpose(1, 2)
        maps.append(torch.softmax((q @ k.transpose(-1, -2)) * module.scaling, dim=-1))
        if stop:
            raise _MapsComplete

    return keep_query, record_map


class _MapsComplete(Exception):
    """Raised inside :meth:`QFormer.cross_attention_maps` once the last map is recorded (ends the pass)."""
