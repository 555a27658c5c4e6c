"""How plug-in modules enter a frozen transformers decoder — without changing any class.

Three mechanisms:

* **Prompt splice** (:func:`splice_prompts`): visual prompts replace the input embeddings at the image
  slots, N_q placeholder tokens per image (BLIP-2 / InstructBLIP / Cheetah).
* **VPG-C** (:class:`VPGCHook`): a forward pre-hook on decoder layer k. On a pass that covers the whole
  prompt it reads each row's guidance token from the layer's input hidden states, runs VPG-C and adds
  the residual at that row's image slots. Cached decoding steps pass through untouched.
* **Gated cross-attention** (:class:`CrossAttentionHook`): a forward pre-hook on each chosen decoder layer
  runs a :class:`~vpgkit.modules.GatedCrossAttentionBlock` on the layer's input.

The per-call tensors the hooks need travel in a :class:`VisualContext`, passed to the LM call as the
keyword ``vpgkit_context`` (transformers forwards extra keywords to every decoder layer, so gradient
checkpointing recomputes the same thing). ``generate`` rejects unknown keywords, so there the context is
bound to a :class:`ContextSlot` for the duration of the call instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from .modules import VPGC, GatedCrossAttentionBlock, ImageKV, QFormer

CONTEXT_KEY = "vpgkit_context"


@dataclass
class VisualContext:
    """Per-call inputs of the layer hooks.

    Attributes:
        seq_len: L, length of the (padded) prompt the context was built for. A pass over ≥ L positions is a
            full pass (prefill, training, or uncached generation); shorter passes are cached decode steps.
        vision: (B, T_img, N_v, D_v) vision features, for VPG-C.
        slot_positions: (B, T_img, N_q) long positions of each image's prompt slots, for VPG-C.
        image_valid: (B, T_img) bool, False for padding images (no slots in the text).
        guidance_index: (B,) long position of each row's last prompt token, for VPG-C.
        image_kv: the Q-Former's image-side cross-attention keys/values of ``vision`` from the prompt pass
            (:class:`~vpgkit.modules.ImageKV`), reused by VPG-C's second pass; None: VPG-C recomputes them.
        media: (B, T_img, N, D_v) media tokens, for gated cross-attention.
        media_mask: (B, L, T_img) bool, which images each prompt position may attend to.
        media_residuals: decoder layer k → (B, T_img, N, D_v) correction of ``media`` written at the input
            of layer k on a full pass (VPG-C over the Perceiver); blocks before layers i > k read
            ``media`` plus it (:meth:`media_at`).
        owner: the :class:`ContextSlot` of the model that built the context; hooks of other models
            attached to the same LM ignore it.
        vpgc_attention: a list when the caller asks for VPG-C's cross-attention: its hook appends the guided
            queries' probabilities, (B·T_img, heads, N_q, N_v) per Q-Former cross-attention layer. None:
            not computed.
    """

    seq_len: int
    owner: ContextSlot | None = None
    vision: torch.Tensor | None = None
    slot_positions: torch.Tensor | None = None
    image_valid: torch.Tensor | None = None
    guidance_index: torch.Tensor | None = None
    image_kv: ImageKV | None = None
    media: torch.Tensor | None = None
    media_mask: torch.Tensor | None = None
    media_residuals: dict[int, torch.Tensor] = field(default_factory=dict)
    vpgc_attention: list[torch.Tensor] | None = None

    def media_at(self, layer: int | None) -> torch.Tensor:
        """(B, T_img, N, D_v) media as the block before decoder layer ``layer`` reads it: ``media`` plus the
        residuals written at layers k < ``layer`` (None: ``media`` alone)."""
        assert self.media is not None
        media = self.media
        for k, residual in sorted(self.media_residuals.items()):
            if layer is not None and k < layer:
                media = media + residual.to(media.dtype)
        return media

    def media_mask_for(self, length: int) -> torch.Tensor:
        """(B, length, T_img) mask for a pass over ``length`` positions.

        Positions past the prompt (generated tokens) attend like the prompt's last position: they follow
        the row's latest image. A short pass is a cached decode step and lies wholly past the prompt.
        """
        assert self.media_mask is not None
        last = self.media_mask[:, -1:]
        if length < self.seq_len:
            return last.expand(-1, length, -1)
        return torch.cat([self.media_mask, last.expand(-1, length - self.seq_len, -1)], dim=1)


class ContextSlot:
    """Holds a :class:`VisualContext` while a ``generate`` call runs (its keywords cannot carry one)."""

    def __init__(self):
        self._current: VisualContext | None = None

    @contextlib.contextmanager
    def bind(self, context: VisualContext) -> Iterator[None]:
        if self._current is not None:
            raise RuntimeError("ContextSlot.bind: a generate call is already running on this model")
        self._current = context
        try:
            yield
        finally:
            self._current = None

    def resolve(self, kwargs: dict) -> VisualContext | None:
        """This model's context: passed as a keyword, else the bound one, else None."""
        context = kwargs.get(CONTEXT_KEY) or self._current
        return context if context is not None and context.owner is self else None


def layer_input(args: tuple, kwargs: dict) -> tuple[torch.Tensor, bool]:
    """(hidden states (B, L, D), passed positionally?) of a decoder layer's forward pre-hook call."""
    if args:
        return args[0], True
    return kwargs["hidden_states"], False


def replace_layer_input(args: tuple, kwargs: dict, hidden: torch.Tensor, positional: bool):
    """The (args, kwargs) a forward pre-hook returns to run the layer on ``hidden`` instead."""
    if positional:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


_hidden_states, _replace_hidden = layer_input, replace_layer_input


class VPGCHook:
    """Forward pre-hook on decoder layer k applying VPG-C.

    Holds references to modules owned elsewhere (the model registers them); it is not a module itself,
    so nothing is registered twice.
    """

    def __init__(self, vpgc: VPGC, qformer: QFormer, slot: ContextSlot):
        self.vpgc, self.qformer, self.slot = vpgc, qformer, slot

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict):
        context = self.slot.resolve(kwargs)
        hidden, positional = _hidden_states(args, kwargs)
        if context is None or context.vision is None or hidden.shape[1] < context.seq_len:
            return args, kwargs
        if context.vision.shape[1] == 0:  # no row of the batch has an image: nothing to complete
            return args, kwargs
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        guidance = hidden[rows, context.guidance_index]  # (B, D_llm)
        kv = {"image_kv": context.image_kv} if context.image_kv is not None else {}
        if context.vpgc_attention is not None:
            kv["attention_maps"] = context.vpgc_attention
        residual = self.vpgc(guidance, context.vision, self.qformer, **kv)  # (B, T_img, N_q, D_llm)
        valid = context.image_valid  # padding images have no slots
        b_idx = rows[:, None, None].expand_as(context.slot_positions)[valid]
        hidden = hidden.index_put(
            (b_idx, context.slot_positions[valid]), residual[valid].to(hidden.dtype), accumulate=True
        )
        return _replace_hidden(args, kwargs, hidden, positional)


class CrossAttentionHook:
    """Forward pre-hook running a gated cross-attention block before a decoder layer."""

    def __init__(self, block: GatedCrossAttentionBlock, slot: ContextSlot, layer: int | None = None):
        self.block, self.slot, self.layer = block, slot, layer

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict):
        context = self.slot.resolve(kwargs)
        if context is None or context.media is None:
            return args, kwargs
        hidden, positional = _hidden_states(args, kwargs)
        mask = context.media_mask_for(hidden.shape[1])
        media = context.media_at(self.layer)
        out = self.block(hidden.to(self.block.ff_gate.dtype), media, mask).to(hidden.dtype)
        return _replace_hidden(args, kwargs, out, positional)


def splice_prompts(
    embeds: torch.Tensor, prompts: torch.Tensor, slot_positions: torch.Tensor, image_valid: torch.Tensor
) -> torch.Tensor:
    """Write visual prompts into the input embeddings at their slots.

    Args:
        embeds: (B, L, D) text embeddings.
        prompts: (B, T_img, N_q, D) visual prompts.
        slot_positions: (B, T_img, N_q) long positions of each image's slots.
        image_valid: (B, T_img) bool, False for padding images.

    Returns:
        (B, L, D) embeddings with the prompts in place (out of place: ``embeds`` is not modified).
    """
    rows = torch.arange(embeds.shape[0], device=embeds.device)[:, None, None].expand_as(slot_positions)
    return embeds.index_put(
        (rows[image_valid], slot_positions[image_valid]), prompts[image_valid].to(embeds.dtype)
    )


def image_slot_positions(
    input_ids: torch.Tensor, image_token_id: int, num_queries: int, num_images: torch.Tensor
) -> torch.Tensor:
    """Positions of each image's N_q placeholder tokens.

    Each image is written in the text as ``num_queries`` consecutive ``image_token_id`` tokens; image i of a
    row owns the i-th such run.

    Args:
        input_ids: (B, L) token ids.
        image_token_id: id of the placeholder token.
        num_queries: N_q, placeholders per image.
        num_images: (B,) images per row (the rest of T_img is padding).

    Returns:
        (B, T_img, N_q) long, with T_img = max(num_images); entries of padding images are 0.

    Raises:
        ValueError: naming the sample, if a row's placeholder count is not num_images × N_q.
    """
    is_slot = input_ids == image_token_id
    counts = is_slot.sum(dim=1)
    expected = num_images * num_queries
    for row in (counts != expected).nonzero().flatten().tolist():
        raise ValueError(
            f"sample {row}: the text has {int(counts[row])} image placeholder tokens (id {image_token_id}) but "
            f"{int(num_images[row])} images × {num_queries} queries = {int(expected[row])} were expected; "
            "write each image as one image marker and give exactly as many images as markers"
        )
    t_img = int(num_images.max()) if num_images.numel() else 0
    positions = torch.zeros(
        input_ids.shape[0], t_img * num_queries, dtype=torch.long, device=input_ids.device
    )
    for row in range(input_ids.shape[0]):
        found = is_slot[row].nonzero().flatten()
        positions[row, : found.numel()] = found
    return positions.view(input_ids.shape[0], t_img, num_queries)
