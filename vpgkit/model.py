"""VisionLanguageModel: a frozen vision encoder and a frozen causal LM joined by plug-in modules.

A model is a list of :class:`~vpgkit.plugins.Plugin` objects. Exactly one of them brings the images into
the LM — a **prompt splice** (prompts replace the image slots' embeddings: BLIP-2's Q-Former, LLaVA's MLP
projector) or **media** for cross-attention (Flamingo's Perceiver) — and the others attach through hooks
on decoder layers (VPG-C at layer k, gated cross-attention blocks, VPG-C over the Perceiver).
Compositions: BLIP-2 / InstructBLIP / Cheetah (``qformer`` [+ ``vpgc``]), LLaVA (``mlp_projector``),
Flamingo / OpenFlamingo / Otter (``perceiver`` + ``cross_attention`` [+ ``perceiver_vpgc``]).

Only the adapters train; every component without trainable weights stays in eval mode (dropout off).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .attach import CONTEXT_KEY, ContextSlot, VisualContext
from .backbones.language import base_causal_lm, decoder_layers, freeze, max_positions
from .parameters import count_parameters
from .plugins import ModelInputs, Plugin, plugin_for_slot, plugin_slots
from .tokens import AddedTokens

IGNORE_INDEX = -100


@dataclass
class VisionLanguageOutput:
    """``loss``: mean cross-entropy over answer tokens (None without labels); ``logits``: (B, L, V), or
    None when computed with ``loss_only``; ``vpgc_attention``: (B, T_img, L_x, heads, N_q, N_v) VPG-C's
    guided-query cross-attention probabilities (in the autograd graph), only when asked for."""

    loss: torch.Tensor | None
    logits: torch.Tensor | None
    vpgc_attention: torch.Tensor | None = None


class VisionLanguageModel(nn.Module):
    """A frozen vision encoder + frozen causal LM with trainable plug-in modules.

    Args:
        llm: a transformers causal LM (frozen here).
        vision: a frozen vision encoder mapping (B, T_img, 3, H, W) → (B, T_img, N_v, D_v) with a ``width``
            attribute; may be None when callers always pass ``vision_features``.
        image_token_id: the token id of an image slot. Prompt splice: each image is written as N
            consecutive slot tokens. Media (cross-attention): each image is one ``<image>`` token.
        plugins: the visual plug-ins, in order (see :mod:`vpgkit.plugins`); exactly one encodes images.
        added_tokens: special tokens added to the LLM (``<image>``, ``<|endofchunk|>`` …) whose
            embedding rows train while the vocabulary stays frozen (:class:`vpgkit.tokens.AddedTokens`);
            the LLM's vocabulary is grown to hold them.
        train_vpg_projection: keyword form only: train the Q-Former's projection to the LM (BLIP-2 stage 2).
        reference_path: compute VPG-C the way the original code did — autograd through every LM layer
            and the frozen Q-Former in train mode (dropout on) — for comparisons only.
        reuse_image_kv: VPG-C's second Q-Former pass reuses the image-side cross-attention keys/values of
            the prompt pass (:class:`~vpgkit.modules.ImageKV`) instead of recomputing them — bitwise the
            same outputs and gradients (off with ``reference_path``, as the original code recomputes them,
            and without a ``vpgc``, where nothing reads them).
        **modules: the keyword form: ``<slot>=module`` for registered plug-ins (``vpg=QFormer(...)``,
            ``vpgc=VPGC(...)``, ``perceiver=PerceiverResampler(...)``, ``cross_attention=
            GatedCrossAttentionConfig(...)``), each wrapped by the plug-in registered for that slot.

    The plug-ins' modules are attributes named by their slots (``model.vpg``, ``model.vpgc`` …); a
    registered slot the model lacks reads as None.

    Example:
        >>> from transformers import LlamaForCausalLM
        >>> from vpgkit.backbones.language import tiny_llama_config
        >>> from vpgkit.modules import QFormer, QFormerConfig, VPGC, VPGCConfig
        >>> llm = LlamaForCausalLM(tiny_llama_config())
        >>> vpg = QFormer(QFormerConfig.preset("tiny"))
        >>> model = VisionLanguageModel(llm, image_token_id=3, vpg=vpg,
        ...                             vpgc=VPGC.from_qformer(vpg, VPGCConfig.preset("tiny")))
        >>> ids = torch.tensor([[1, 3, 3, 3, 3, 7, 8, 9]])             # one image = 4 slot tokens
        >>> out = model(ids, vision_features=torch.randn(1, 1, 10, 32))  # (B, T_img, N_v, D_v)
        >>> out.logits.shape
        torch.Size([1, 8, 128])
        >>> [p.name for p in model.plugins]
        ['qformer', 'vpgc']
    """

    def __init__(
        self,
        llm: nn.Module,
        vision: nn.Module | None = None,
        *,
        image_token_id: int,
        plugins: Sequence[Plugin] = (),
        added_tokens: AddedTokens | None = None,
        train_vpg_projection: bool = False,
        reference_path: bool = False,
        reuse_image_kv: bool = True,
        **modules,
    ):
        super().__init__()
        plugins = [*plugins]
        for slot, module in modules.items():
            if module is not None:
                plugins.append(
                    plugin_for_slot(slot).from_module(module, train_vpg_projection=train_vpg_projection)
                )
        # The plug-in that encodes images comes first: the others may read what it puts in the context.
        plugins.sort(key=lambda p: p.image_tokens is None)
        _check_composition(plugins)
        self.llm = freeze(llm)
        self.vision = freeze(vision) if vision is not None else None
        self.image_token_id = image_token_id
        self.reference_path = reference_path
        self.plugins: list[Plugin] = plugins
        self.context_slot = ContextSlot()
        self._hooks = []
        self.added_tokens = added_tokens
        if added_tokens is not None:
            self._hooks.extend(added_tokens.attach(llm))
        layers = decoder_layers(llm)
        for plugin in plugins:
            self._hooks.extend(plugin.bind(self, layers))
            plugin.apply_trainable()
            setattr(self, plugin.slot, plugin.module)
        # Only VPG-C's second pass reads the keys/values: without it, keeping them would only hold memory.
        self.reuse_image_kv = reuse_image_kv and not reference_path and self.vpgc is not None
        self.train(False)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in plugin_slots():
                return None  # a registered plug-in slot this model does not use
            raise

    # --- plug-ins ------------------------------------------------------------------------------------

    @property
    def image_encoder(self) -> Plugin:
        """The plug-in that brings images into the LM (prompt splice or media)."""
        return next(p for p in self.plugins if p.image_tokens is not None)

    @property
    def image_slots_per_image(self) -> int | None:
        """Placeholder tokens per image for a prompt splice (N), or None when an image is one ``<image>`` marker."""
        encoder = self.image_encoder
        return encoder.tokens_per_image if encoder.image_tokens == "slots" else None

    def plugin_providing(self, capability: str) -> Plugin:
        """The plug-in that provides ``capability`` (e.g. ``"qformer"``, ``"media"``)."""
        for plugin in self.plugins:
            if capability in plugin.provides:
                return plugin
        raise LookupError(f"VisionLanguageModel: no plug-in provides {capability!r}")

    def plugin_modules(self) -> dict[str, nn.Module]:
        """Slot → module of every plug-in (what adapters and converters address as ``<slot>.*``)."""
        return {p.slot: p.module for p in self.plugins if p.module is not None}

    # --- modes and parameters ------------------------------------------------------------------------

    def train(self, mode: bool = True) -> VisionLanguageModel:
        """Train mode for the adapters only: components without trainable weights stay in eval mode."""
        super().train(mode)
        frozen = [self.llm, self.vision, *(m for p in self.plugins for m in p.frozen_modules())]
        for part in frozen:
            if part is not None and not any(p.requires_grad for p in part.parameters()):
                part.eval()
        for plugin in self.plugins:
            plugin.on_train(self, mode)
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
        if pixel_values.dim() == 6:  # (B, T_img, F, 3, H, W): F frames per visual input (video)
            b, t, f = pixel_values.shape[:3]
            features = self.vision(pixel_values.reshape(b, t * f, *pixel_values.shape[3:]))
            return features.reshape(b, t, f, *features.shape[2:])
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
        if vision.dim() == 5:  # (B, T_img, F, N_v, D_v): a video's F frames are read together
            if self.image_encoder.image_tokens == "slots" and vision.shape[2] != 1:
                raise ValueError(
                    f"vision: {vision.shape[2]} frames per visual input, but plug-in {self.image_encoder.name!r} "
                    "splices prompts of one image; write each frame as an image (F = 1) or use a Perceiver"
                )
            # The Perceiver reads a video's F·N_v frame tokens as one set: the same as (B, T_img, F·N_v, D_v).
            vision = vision.flatten(2, 3)
        if num_images is None:
            num_images = torch.full((b,), vision.shape[1], dtype=torch.long, device=input_ids.device)
        image_valid = torch.arange(vision.shape[1], device=input_ids.device)[None] < num_images[:, None]
        context = VisualContext(seq_len=length, owner=self.context_slot)
        inputs = ModelInputs(input_ids, attention_mask, vision, num_images, image_valid, context)
        for plugin in self.plugins:
            plugin.prepare(self, inputs)
        embeds = inputs.embeds
        if embeds is None:
            embeds = base_causal_lm(self.llm).get_input_embeddings()(input_ids)
        if labels is not None:
            no_loss = attention_mask == 0
            if inputs.no_loss is not None:
                no_loss = no_loss | inputs.no_loss
            labels = labels.masked_fill(no_loss, IGNORE_INDEX)
        if any(p.uses_guidance for p in self.plugins):
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
        return_vpgc_attention: bool = False,
    ) -> VisionLanguageOutput:
        """Logits, and the loss on labelled (answer) tokens when ``labels`` are given.

        Args:
            input_ids: (B, L) with image slots (see ``image_token_id``).
            attention_mask: (B, L), 1 for real tokens (left or right padding).
            labels: (B, L) targets, -100 where no loss is taken.
            pixel_values: (B, T_img, 3, H, W), or (B, T_img, F, 3, H, W) with F frames per input (video; media
                plug-ins only), or ``vision_features`` (B, T_img, N_v, D_v) or (B, T_img, F, N_v, D_v).
            num_images: (B,) images per row when rows have fewer than T_img.
            guidance_index: (B,) VPG-C guidance positions (default: each row's last prompt token).
            loss_only: apply the LM head only where a label is taken (the same loss; ``logits`` is None).
                Saves the (B, L, V) logits and their backward, for training.
            loss_reduction: with ``loss_only``, ``"mean"`` over labelled tokens or their ``"sum"`` (the
                training loop normalises by the global token count itself, so that any split of a
                batch over processes and accumulation steps gives the same gradient).
            return_vpgc_attention: also return where VPG-C's guided queries look (``vpgc_attention``),
                e.g. for :func:`vpgkit.training.fetch.fetch_loss`. Needs a ``vpgc`` plug-in.
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
        if return_vpgc_attention:
            if "vpgc" not in self.plugin_modules():
                raise ValueError(
                    f"forward: return_vpgc_attention=True needs a 'vpgc' plug-in; this model has "
                    f"{sorted(self.plugin_modules())}"
                )
            context.vpgc_attention = []
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
            return VisionLanguageOutput(
                loss=self._with_every_trainable(out.loss),
                logits=out.logits,
                vpgc_attention=_maps(context, vision),
            )
        lm = base_causal_lm(self.llm)
        if getattr(lm.config.get_text_config(), "final_logit_softcapping", None):
            raise NotImplementedError(
                f"loss_only: {type(lm).__name__} transforms its logits; use loss_only=False"
            )
        hidden = lm.get_decoder()(**inputs).last_hidden_state
        targets = labels[:, 1:]  # position t predicts token t + 1
        keep = targets != IGNORE_INDEX
        logits = lm.get_output_embeddings()(hidden[:, :-1][keep])
        loss = nn.functional.cross_entropy(logits.float(), targets[keep], reduction=loss_reduction)
        return VisionLanguageOutput(
            loss=self._with_every_trainable(loss), logits=None, vpgc_attention=_maps(context, vision)
        )

    def _with_every_trainable(self, loss: torch.Tensor | None) -> torch.Tensor | None:
        """``loss + 0 · Σ p`` over the trainable weights when autograd records: the same loss and gradients
        (bitwise), but every trainable weight is in the graph even when the batch does not use it (a batch
        without images leaves VPG-C, the Perceiver and the blocks' attention unused), so DDP's reducer gets a
        gradient for each on every process and needs no ``find_unused_parameters``."""
        if loss is None or not torch.is_grad_enabled():
            return loss
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            return loss
        touch = torch.stack([p.sum().to(loss.dtype) for p in params]).sum()
        return loss + touch * 0.0

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
        with self.context_slot.bind(context):
            return self.llm.generate(inputs_embeds=embeds, attention_mask=attention_mask, **generate_kwargs)


def _maps(context: VisualContext, vision: torch.Tensor) -> torch.Tensor | None:
    """VPG-C's recorded cross-attention as (B, T_img, L_x, heads, N_q, N_v), or None when not asked for."""
    if context.vpgc_attention is None:
        return None
    if not context.vpgc_attention:  # e.g. no row of the batch has an image
        raise ValueError(
            "forward: return_vpgc_attention=True but VPG-C did not run on this batch (no images?)"
        )
    b, t = vision.shape[:2]
    maps = torch.stack(context.vpgc_attention, dim=1)  # (B·T_img, L_x, heads, N_q, N_v)
    return maps.reshape(b, t, *maps.shape[1:])


def _last_prompt_index(attention_mask: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """(B,) position of each row's last prompt token: before its first labelled token, else its last real token."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    last_real = torch.where(attention_mask.bool(), positions, -1).amax(dim=1)
    if labels is None:
        return last_real
    labelled = labels != IGNORE_INDEX
    first_label = torch.where(labelled, positions, attention_mask.shape[1]).amin(dim=1)
    return torch.where(labelled.any(dim=1), first_label - 1, last_real)


def _check_composition(plugins: list[Plugin]) -> None:
    """One plug-in per slot, exactly one that encodes images, and every required capability provided."""
    slots = [p.slot for p in plugins]
    repeated = sorted({s for s in slots if slots.count(s) > 1})
    if repeated:
        raise ValueError(f"VisionLanguageModel: more than one plug-in for slot(s) {repeated}")
    encoders = [p.name for p in plugins if p.image_tokens is not None]
    if len(encoders) != 1:
        raise ValueError(
            "VisionLanguageModel: give exactly one plug-in that brings images into the LM (a prompt "
            f"splice such as a Q-Former, or media such as a Perceiver); got {encoders or 'none'} among "
            f"{[p.name for p in plugins]}"
        )
    provided = {c for p in plugins for c in p.provides}
    for plugin in plugins:
        missing = [c for c in plugin.requires if c not in provided]
        if missing:
            raise ValueError(
                f"VisionLanguageModel: plug-in {plugin.name!r} needs a plug-in providing {missing}; "
                f"the model has {[p.name for p in plugins]}"
            )
