"""The two ways a plug-in can bring images into the LM: a prompt splice, or media for cross-attention.

* :class:`PromptPlugin` — each image is ``tokens_per_image`` placeholder tokens in the text; the plug-in's
  prompts (B, T_img, N, D_llm) replace their embeddings (BLIP-2's Q-Former, LLaVA's projector). The slots
  carry no loss. Sets ``context.vision``, ``slot_positions`` and ``image_valid`` for completers (VPG-C).
* :class:`MediaPlugin` — each image is one real ``<image>`` token; the plug-in's media tokens
  (B, T_img, N, D_v) go to ``context.media`` with the Flamingo media mask, for gated cross-attention.

A model has exactly one plug-in of either kind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch

from ..attach import image_slot_positions, splice_prompts
from ..backbones.language import base_causal_lm
from ..modules import media_attention_mask
from .base import ModelInputs, Plugin

if TYPE_CHECKING:  # pragma: no cover
    from ..attach import VisualContext
    from ..model import VisionLanguageModel


class PromptPlugin(Plugin):
    """A visual prompt generator whose prompts are spliced into the input embeddings.

    Subclasses implement :meth:`prompts` and :attr:`tokens_per_image`.
    """

    image_tokens: ClassVar[str | None] = "slots"
    provides: ClassVar[tuple[str, ...]] = ("prompts",)

    @property
    def tokens_per_image(self) -> int:
        """N, placeholder tokens (= prompts) per image."""
        raise NotImplementedError

    def prompts(self, vision: torch.Tensor) -> torch.Tensor:
        """(B, T_img, N_v, D_v) vision features → (B, T_img, N, D_llm) prompts."""
        raise NotImplementedError

    def context_prompts(
        self, model: VisionLanguageModel, vision: torch.Tensor, context: VisualContext
    ) -> torch.Tensor:
        """:meth:`prompts` of one forward call; a subclass may also leave what later hooks can reuse in
        ``context`` (the Q-Former leaves its image-side keys/values for VPG-C)."""
        return self.prompts(vision)

    def prepare(self, model: VisionLanguageModel, inputs: ModelInputs) -> None:
        is_slot = inputs.input_ids == model.image_token_id
        embed = base_causal_lm(model.llm).get_input_embeddings()
        # Slot tokens are placeholders (their id may lie outside the vocabulary); prompts replace them.
        embeds = embed(inputs.input_ids.masked_fill(is_slot, 0))
        slots = image_slot_positions(
            inputs.input_ids, model.image_token_id, self.tokens_per_image, inputs.num_images
        )
        if inputs.vision.shape[1] == 0:  # no row has an image: nothing to encode, nothing to splice
            inputs.embeds = embeds
            return
        prompts = self.context_prompts(model, inputs.vision, inputs.context)
        inputs.embeds = splice_prompts(embeds, prompts, slots, inputs.image_valid)
        context = inputs.context
        context.vision, context.slot_positions, context.image_valid = (
            inputs.vision,
            slots,
            inputs.image_valid,
        )
        inputs.no_loss = is_slot


class MediaPlugin(Plugin):
    """A resampler whose media tokens are read by cross-attention plug-ins (Flamingo).

    Subclasses implement :meth:`media` and :attr:`only_immediate` is read from the cross-attention config.
    """

    image_tokens: ClassVar[str | None] = "marker"
    provides: ClassVar[tuple[str, ...]] = ("media",)

    def media(self, vision: torch.Tensor) -> torch.Tensor:
        """(B, T_img, N_v, D_v) vision features → (B, T_img, N, D_v) media tokens."""
        raise NotImplementedError

    def prepare(self, model: VisionLanguageModel, inputs: ModelInputs) -> None:
        context = inputs.context
        context.vision, context.image_valid = inputs.vision, inputs.image_valid
        context.media = self.media(inputs.vision)
        readers = [p for p in model.plugins if "reads_media" in p.provides]
        only_immediate = all(getattr(p.config, "only_immediate", True) for p in readers)
        context.media_mask = media_attention_mask(
            inputs.input_ids, model.image_token_id, inputs.num_images, only_immediate
        )
