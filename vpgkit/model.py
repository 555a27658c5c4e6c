"""VisionLanguageModel: a frozen vision encoder and a frozen causal LM joined by plug-in modules.

Two compositions:

* **prompt splice** — ``vpg`` (Q-Former) prompts spliced into the LM input at the image slots, optionally
  completed by ``vpgc`` at decoder layer k (BLIP-2 / InstructBLIP / Cheetah);
* **cross-attention** — ``perceiver`` latents read by gated cross-attention blocks before every
  ``every``-th decoder layer (Flamingo / OpenFlamingo / Otter).

Only the adapters train; every component without trainable weights stays in eval mode (dropout off).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .attach import (
    CONTEXT_KEY,
    ContextSlot,
    CrossAttentionHook,
    VisualContext,
    VPGCHook,
    image_slot_positions,
    splice_prompts,
)
from .backbones.language import base_causal_lm, decoder_layers, freeze, hidden_size, max_positions
from .modules import (
    VPGC,
    GatedCrossAttentionBlock,
    GatedCrossAttentionConfig,
    PerceiverResampler,
    QFormer,
    media_attention_mask,
)
from .parameters import count_parameters
from .tokens import AddedTokens

IGNORE_INDEX = -100


@dataclass
class VisionLanguageOutput:
    """``loss``: mean cross-entropy over answer tokens (None without labels); ``logits``: (B, L, V), or
    None when computed with ``loss_only``."""

    loss: torch.Tensor | None
    logits: torch.Tensor | None


class VisionLanguageModel(nn.Module):
    """A frozen vision encoder + frozen causal LM with trainable plug-in modules.

    Args:
        llm: a transformers causal LM (frozen here).
        vision: a frozen vision encoder mapping (B, T_img, 3, H, W) → (B, T_img, N_v, D_v) with a ``width``
            attribute; may be None when callers always pass ``vision_features``.
        image_token_id: the token id of an image slot. Prompt splice: each image is written as N_q
            consecutive slot tokens. Cross-attention: each image is one ``<image>`` token.
        vpg: Q-Former visual prompt generator (frozen unless ``train_vpg_projection``).
        vpgc: VPG-C completer hooked at decoder layer ``vpgc.config.layer`` (trainable).
        perceiver: Perceiver resampler for the cross-attention composition (trainable).
        cross_attention: config of the gated blocks, placed before decoder layer i when
            (i + 1) % every == 0 (trainable).
        added_tokens: special tokens added to the LLM (``<image>``, ``<|endofchunk|>`` …) whose
            embedding rows train while the vocabulary stays frozen (:class:`vpgkit.tokens.AddedTokens`);
            the LLM's vocabulary is grown to hold them.
        train_vpg_projection: train the Q-Former's projection to the LM (the BLIP-2 stage-2 recipe).
        reference_path: compute VPG-C the way the original code did — autograd through every LM layer
            and the frozen Q-Former in train mode (dropout on) — for comparisons only.

    Example:
        >>> from transformers import LlamaForCausalLM
        >>> from vpgkit.backbones.language import tiny_llama_config
        >>> from vpgkit.modules import QFormerConfig, VPGCConfig
        >>> llm = LlamaForCausalLM(tiny_llama_config())
        >>> vpg = QFormer(QFormerConfig.preset("tiny"))
        >>> model = VisionLanguageModel(llm, image_token_id=3, vpg=vpg,
        ...                             vpgc=VPGC.from_qformer(vpg, VPGCConfig.preset("tiny")))
        >>> ids = torch.tensor([[1, 3, 3, 3, 3, 7, 8, 9]])             # one image = 4 slot tokens
        >>> out = model(ids, vision_features=torch.randn(1, 1, 10, 32))  # (B, T_img, N_v, D_v)
        >>> out.logits.shape
        torch.Size([1, 8, 128])
    """

    def __init__(
        self,
        llm: nn.Module,
        vision: nn.Module | None = None,
        *,
        image_token_id: int,
        vpg: QFormer | None = None,
        vpgc: VPGC | None = None,
        perceiver: PerceiverResampler | None = None,
        cross_attention: GatedCrossAttentionConfig | None = None,
        added_tokens: AddedTokens | None = None,
        train_vpg_projection: bool = False,
        reference_path: bool = False,
    ):
        super().__init__()
        if (vpg is None) == (perceiver is None):
            raise ValueError(
                "VisionLanguageModel: give either vpg (prompt splice) or perceiver (cross-attention)"
            )
        if vpgc is not None and vpg is None:
            raise ValueError("VisionLanguageModel: vpgc needs the vpg whose Q-Former it re-runs")
        if (perceiver is None) != (cross_attention is None):
            raise ValueError("VisionLanguageModel: perceiver and cross_attention go together")
        self.llm = freeze(llm)
        self.vision = freeze(vision) if vision is not None else None
        self.image_token_id = image_token_id
        self.reference_path = reference_path
        self.vpg, self.vpgc, self.perceiver = vpg, vpgc, perceiver
        width, layers = hidden_size(llm), decoder_layers(llm)
        vision_width = getattr(vision, "width", None)
        self._slot = ContextSlot()
        self._hooks = []
        self.added_tokens = added_tokens
        if added_tokens is not None:
            self._hooks.extend(added_tokens.attach(llm))
        if vpg is not None:
            _check_width(
                "vpg input (QFormerConfig.vision_width)",
                vpg.config.vision_width,
                "vision encoder",
                vision_width,
            )
            _check_width(
                "vpg output (QFormerConfig.llm_width)", vpg.config.llm_width, "LLM hidden size", width
            )
            freeze(vpg)
            vpg.language_projection.requires_grad_(train_vpg_projection)
        if vpgc is not None:
            _check_width("vpgc (VPGCConfig.llm_width)", vpgc.config.llm_width, "LLM hidden size", width)
            if not 0 <= vpgc.config.layer < len(layers):
                raise ValueError(
                    f"vpgc: layer k={vpgc.config.layer} is outside the LLM's {len(layers)} layers"
                )
            hook = VPGCHook(vpgc, vpg, self._slot)
            self._hooks.append(layers[vpgc.config.layer].register_forward_pre_hook(hook, with_kwargs=True))
        self.cross_attention = nn.ModuleDict()
        if perceiver is not None:
            _check_width(
                "perceiver (PerceiverConfig.width)", perceiver.config.width, "vision encoder", vision_width
            )
            _check_width(
                "cross_attention.media_width",
                cross_attention.media_width,
                "perceiver width",
                perceiver.config.width,
            )
            _check_width("cross_attention.width", cross_attention.width, "LLM hidden size", width)
            for i, layer in enumerate(layers):
                if (i + 1) % cross_attention.every == 0:
                    block = GatedCrossAttentionBlock(cross_attention)
                    self.cross_attention[str(i)] = block
                    hook = CrossAttentionHook(block, self._slot)
                    self._hooks.append(layer.register_forward_pre_hook(hook, with_kwargs=True))
            self.cross_attention_config = cross_attention
        self.train(False)

    # --- modes and parameters ------------------------------------------------------------------------

    def train(self, mode: bool = True) -> VisionLanguageModel:
        """Train mode for the adapters only: components without trainable weights stay in eval mode."""
        super().train(mode)
        frozen = [self.llm, self.vision, self.vpg.qformer if self.vpg is not None else None]
        for part in frozen:
            if part is not None and not any(p.requires_grad for p in part.parameters()):
                part.eval()
        if self.reference_path and self.vpg is not None:
            self.vpg.qformer.train(mode)  # as the original code did: frozen Q-Former with dropout on
        return self

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """Name → parameter of every weight that requires grad (the adapters, and LoRA if added)."""
        return {n: p for n, p in self.named_parameters() if p.requires_grad}

    def parameter_report(self) -> dict:
        """:func:`vpgkit.count_parameters` plus ``llm_total`` and ``trainable_share_of_llm`` (a fraction)."""
        report = count_parameters(self)
        report["llm_total"] = count_parameters(self.llm)["total"]
        report["trainable_share_of_llm"] = report["trainable"] / report["llm_total"]
        return report

    def remove_hooks(self) -> None:
        """Detach this model's hooks from the LM's layers (e.g. before reusing the LM in another model)."""
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()

    def add_lora(self, lora_config) -> VisionLanguageModel:
        """Wrap the LM with peft LoRA; the hooks stay on the same decoder layers and keep firing."""
        from peft import get_peft_model

        self.llm = get_peft_model(self.llm, lora_config)
        return self.train(self.training)

    # --- inputs --------------------------------------------------------------------------------------

    def encode_images(
        self, pixel_values: torch.Tensor | None, vision_features: torch.Tensor | None
    ) -> torch.Tensor:
        """(B, T_img, 3, H, W) pixels through the frozen encoder, or precomputed (B, T_img, N_v, D_v) features."""
        if vision_features is not None:
            return vision_features
        if pixel_values is None:
            raise ValueError("VisionLanguageModel: give pixel_values (B, T_img, 3, H, W) or vision_features")
        if self.vision is None:
            raise ValueError(
                "VisionLanguageModel: built without a vision encoder; pass vision_features instead"
            )
        return self.vision(pixel_values)

    def build_inputs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        vision: torch.Tensor,
        labels: torch.Tensor | None = None,
        num_images: torch.Tensor | None = None,
        guidance_index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, VisualContext, torch.Tensor | None]:
        """Input embeddings, the hooks' context and cleaned labels for one batch.

        Args:
            input_ids, attention_mask: (B, L).
            vision: (B, T_img, N_v, D_v) vision features.
            labels: (B, L) target ids with -100 where no loss is taken, or None.
            num_images: (B,) images per row (default: all T_img).
            guidance_index: (B,) position of each row's last prompt token for VPG-C (default: just before
                the first labelled token, else the last attended token).
        """
        b, length = input_ids.shape
        limit = max_positions(self.llm)
        if limit is not None and length > limit:
            raise ValueError(
                f"input_ids: sequence length {length} exceeds the LLM's context of {limit} positions; "
                "shorten or truncate the text before batching (vpgkit does not truncate silently)"
            )
        if vision.shape[0] != b:
            raise ValueError(f"vision: batch size {vision.shape[0]} but input_ids has {b} rows")
        if num_images is None:
            num_images = torch.full((b,), vision.shape[1], dtype=torch.long, device=input_ids.device)
        image_valid = torch.arange(vision.shape[1], device=input_ids.device)[None] < num_images[:, None]
        is_slot = input_ids == self.image_token_id
        embed = base_causal_lm(self.llm).get_input_embeddings()
        context = VisualContext(seq_len=length, owner=self._slot)
        if self.vpg is not None:
            # Slot tokens are placeholders (their id may lie outside the vocabulary); prompts replace them.
            embeds = embed(input_ids.masked_fill(is_slot, 0))
            slots = image_slot_positions(
                input_ids, self.image_token_id, self.vpg.config.num_queries, num_images
            )
            embeds = splice_prompts(embeds, self.vpg(vision).prompts, slots, image_valid)
            context.vision, context.slot_positions, context.image_valid = vision, slots, image_valid
        else:
            embeds = embed(input_ids)  # Flamingo's <image> is a real token of the vocabulary
            context.media = self.perceiver(vision[:, :, None])  # one frame per image
            context.media_mask = media_attention_mask(
                input_ids, self.image_token_id, num_images, self.cross_attention_config.only_immediate
            )
        if labels is not None:
            no_loss = (attention_mask == 0) | (is_slot if self.vpg is not None else False)
            labels = labels.masked_fill(no_loss, IGNORE_INDEX)
        if self.vpgc is not None:
            context.guidance_index = (
                guidance_index if guidance_index is not None else _last_prompt_index(attention_mask, labels)
            )
        if self.reference_path and not embeds.requires_grad:
            embeds.requires_grad_(True)  # the original code's autograd through the whole LM
        return embeds, context, labels

    # --- forward and generate ------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        vision_features: torch.Tensor | None = None,
        num_images: torch.Tensor | None = None,
        guidance_index: torch.Tensor | None = None,
        loss_only: bool = False,
        loss_reduction: str = "mean",
    ) -> VisionLanguageOutput:
        """Logits, and the loss on labelled (answer) tokens when ``labels`` are given.

        Args:
            input_ids: (B, L) with image slots (see ``image_token_id``).
            attention_mask: (B, L), 1 for real tokens (left or right padding).
            labels: (B, L) targets, -100 where no loss is taken.
            pixel_values: (B, T_img, 3, H, W), or ``vision_features`` (B, T_img, N_v, D_v).
            num_images: (B,) images per row when rows have fewer than T_img.
            guidance_index: (B,) VPG-C guidance positions (default: each row's last prompt token).
            loss_only: apply the LM head only where a label is taken (the same loss; ``logits`` is None).
                Saves the (B, L, V) logits and their backward, for training.
            loss_reduction: with ``loss_only``, ``"mean"`` over labelled tokens or their ``"sum"`` (the
                training loop normalises by the global token count itself, so that any split of a
                batch over processes and accumulation steps gives the same gradient).
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if loss_only and labels is None:
            raise ValueError("forward: loss_only=True needs labels")
        if loss_reduction not in ("mean", "sum") or (loss_reduction == "sum" and not loss_only):
            raise ValueError(f"forward: loss_reduction={loss_reduction!r}; 'sum' needs loss_only=True")
        vision = self.encode_images(pixel_values, vision_features)
        embeds, context, labels = self.build_inputs(
            input_ids, attention_mask, vision, labels, num_images, guidance_index
        )
        # Positions count real tokens only, so left padding gives the same positions as generate() uses.
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        inputs = dict(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
            **{CONTEXT_KEY: context},
        )
        if not loss_only:
            out = self.llm(**inputs, labels=labels)
            return VisionLanguageOutput(loss=out.loss, logits=out.logits)
        lm = base_causal_lm(self.llm)
        if getattr(lm.config.get_text_config(), "final_logit_softcapping", None):
            raise NotImplementedError(
                f"loss_only: {type(lm).__name__} transforms its logits; use loss_only=False"
            )
        hidden = lm.get_decoder()(**inputs).last_hidden_state
        targets = labels[:, 1:]  # position t predicts token t + 1
        keep = targets != IGNORE_INDEX
        logits = lm.get_output_embeddings()(hidden[:, :-1][keep])
        return VisionLanguageOutput(
            loss=nn.functional.cross_entropy(logits.float(), targets[keep], reduction=loss_reduction),
            logits=None,
        )

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        vision_features: torch.Tensor | None = None,
        num_images: torch.Tensor | None = None,
        **generate_kwargs,
    ) -> torch.Tensor:
        """Generate continuations of prompts with images, through transformers' ``generate`` (KV cache on).

        Prompts should be left-padded; VPG-C takes each row's last attended token as guidance.

        Returns:
            (B, new_tokens) generated ids (transformers returns only new tokens for embedding inputs).
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        vision = self.encode_images(pixel_values, vision_features)
        embeds, context, _ = self.build_inputs(input_ids, attention_mask, vision, None, num_images)
        with self._slot.bind(context):
            return self.llm.generate(inputs_embeds=embeds, attention_mask=attention_mask, **generate_kwargs)


def _last_prompt_index(attention_mask: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """(B,) position of each row's last prompt token: before its first labelled token, else its last real token."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    last_real = torch.where(attention_mask.bool(), positions, -1).amax(dim=1)
    if labels is None:
        return last_real
    labelled = labels != IGNORE_INDEX
    first_label = torch.where(labelled, positions, attention_mask.shape[1]).amin(dim=1)
    return torch.where(labelled.any(dim=1), first_label - 1, last_real)


def _check_width(name: str, value: int, other_name: str, other: int | None) -> None:
    if other is not None and value != other:
        raise ValueError(f"{name} is {value} but the {other_name} is {other}; they must be equal")
