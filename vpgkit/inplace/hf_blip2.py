"""VPG-C added in place to transformers' ``Blip2ForConditionalGeneration`` / ``InstructBlipForConditionalGeneration``.

Nothing is converted and no class or method is replaced: hooks capture what VPG-C needs while the model's
own ``forward`` / ``generate`` run —

* a forward pre-hook on ``model.qformer`` records the image features it reads (``encoder_hidden_states``,
  (B, N_v, D_v)) and, for InstructBLIP, the instruction it reads (``input_ids`` / ``attention_mask``);
* a forward hook on the LM's input embeddings records the ``input_ids`` (their ``image_token_id`` runs are
  the prompt slots);
* a forward pre-hook on ``model`` records ``labels`` (guidance = the token before the first label);
* a forward pre-hook on ``model.language_model`` turns the records into the call's context on the pass
  that covers the whole prompt (training forward, or the prefill of ``generate``); cached decode steps
  pass through.

VPG-C re-runs the model's own frozen Q-Former (:class:`HFQFormerView`) with its guided queries, on the same
image features — and, for InstructBLIP, the same instruction, as InstructBLIP's Q-Former always reads it.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from ..backbones.language import decoder_layers
from ..modules import VPGCConfig
from .attachment import VPGCAttachment

SUPPORTED = ("Blip2ForConditionalGeneration", "InstructBlipForConditionalGeneration")


class HFQFormerView:
    """The :class:`~vpgkit.inplace.contract.QFormerLike` view of a transformers BLIP-2 / InstructBLIP Q-Former.

    ``encode`` runs ``model.qformer`` on given query embeddings (and, for InstructBLIP, the instruction of
    the current call) and returns the query positions' states (B, N_q, H).
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.reads_text = type(model).__name__.startswith("InstructBlip")
        self.text: tuple[torch.Tensor, torch.Tensor | None] | None = None  # the call's instruction
        self.running = False  # True while VPG-C re-runs the Q-Former (the capture hook then ignores it)
        q = model.config.qformer_config
        self.config = SimpleNamespace(
            hidden_size=q.hidden_size,
            num_queries=model.config.num_query_tokens,
            llm_width=model.config.text_config.hidden_size,
            vision_width=q.encoder_hidden_size,
        )

    @property
    def query_tokens(self) -> torch.Tensor:
        return self.model.query_tokens

    def encode(self, query_embeds: torch.Tensor, vision: torch.Tensor) -> torch.Tensor:
        """(B, N_q, H) queries, (B, N_v, D_v) image features → (B, N_q, H) Q-Former output at the queries."""
        text = {}
        if self.reads_text:
            if self.text is None:
                raise RuntimeError("VPG-C in place: InstructBLIP's Q-Former ran without an instruction")
            ids, mask = self.text
            text = {"input_ids": ids, "attention_mask": mask if mask is not None else torch.ones_like(ids)}
        self.running = True
        try:
            out = self.model.qformer(
                query_embeds=query_embeds,
                encoder_hidden_states=vision,
                encoder_attention_mask=torch.ones(vision.shape[:-1], dtype=torch.long, device=vision.device),
                return_dict=True,
                **text,
            ).last_hidden_state
        finally:
            self.running = False
        return out[:, : query_embeds.shape[1]]


class _Capture:
    """The records of one call, gathered by the hooks of :func:`attach_vpgc`."""

    def __init__(self, attachment: VPGCAttachment, view: HFQFormerView):
        self.attachment, self.view = attachment, view
        self.records: dict = {}
        self.in_forward = False
        self.prompt: torch.Tensor | None = None

    def model_pre(self, module, args, kwargs):
        self.attachment.context_slot.set(None)  # a new call
        self.records = {"labels": kwargs.get("labels")}
        self.in_forward = True

    def model_post(self, module, args, kwargs, output):
        self.in_forward = False

    def qformer_pre(self, module, args, kwargs):
        if self.view.running:
            return
        if not self.in_forward:
            self.attachment.context_slot.set(None)  # generate: a new call, no labels
            self.records = {}
        self.records["vision"] = kwargs.get("encoder_hidden_states")
        self.records["text"] = (kwargs.get("input_ids"), kwargs.get("attention_mask"))

    def embeddings_post(self, module, args, output):
        self.records["input_ids"] = args[0] if args else None

    def language_model_pre(self, module, args, kwargs):
        slot = self.attachment.context_slot
        embeds = kwargs.get("inputs_embeds")
        length = (embeds if embeds is not None else kwargs.get("input_ids", args[0] if args else None)).shape[
            1
        ]
        records, self.records = self.records, {}
        ids, vision = records.get("input_ids"), records.get("vision")
        if vision is not None and ids is not None and ids.shape[1] == length:
            mask = kwargs.get("attention_mask")
            mask = mask if mask is not None and mask.dim() == 2 else None
            self.view.text = records.get("text") if self.view.reads_text else None
            self.prompt = ids
            slot.set(self.attachment.context(vision, ids, mask, records.get("labels")))
            return
        # A later pass of the same call (a decode step, or an uncached pass over prompt + generated tokens)
        # keeps the context; a full pass over other text drops it.
        current = slot.current
        if (
            current is not None
            and ids is not None
            and ids.shape[1] >= current.seq_len
            and not torch.equal(ids[:, : current.seq_len], self.prompt)
        ):
            slot.set(None)


def attach_vpgc(
    model: nn.Module, config: VPGCConfig | None = None, *, layer: int | None = None
) -> VPGCAttachment:
    """Add VPG-C to a transformers BLIP-2 / InstructBLIP model in place.

    The model's own Q-Former and ``language_projection`` keep producing the prompts; VPG-C adds its
    residual at the prompt slots at the input of decoder layer k on every pass that covers the whole
    prompt. ``model(...)`` and ``model.generate(...)`` (KV cache on) keep working. Every weight of the model
    is frozen; ``model.vpgc`` (VPG-C: new queries copied from ``model.query_tokens``, zero-initialised
    projections) trains. Keep the model in eval mode while training: VPG-C has no dropout, and the frozen
    Q-Former's and LM's dropout should stay off.

    Args:
        model: a ``Blip2ForConditionalGeneration`` or ``InstructBlipForConditionalGeneration`` with a
            decoder-only LM.
        config: VPG-C's config; default: widths from the model, ``layer`` = half the LM's depth.
        layer: decoder layer k (overrides ``config.layer``).

    Returns:
        The :class:`~vpgkit.inplace.VPGCAttachment`; save it with
        :func:`vpgkit.checkpoints.save_adapter` and load it into a fresh model with
        :func:`vpgkit.checkpoints.load_adapter` (after ``attach_vpgc`` on that model).

    Example:
        >>> attachment = attach_vpgc(model, layer=16)           # doctest: +SKIP
        >>> out = model(**processor(images=image, text=prompt, return_tensors="pt"))  # doctest: +SKIP
        >>> save_adapter(attachment, "runs/blip2_vpgc")          # doctest: +SKIP
    """
    if type(model).__name__ not in SUPPORTED:
        raise TypeError(
            f"attach_vpgc: expected one of {SUPPORTED}, got {type(model).__name__}; for another model use "
            "vpgkit.inplace.VPGCAttachment with its Q-Former and decoder layers (docs/hf_blip2_vpgc.md)"
        )
    if not model.config.use_decoder_only_language_model:
        raise NotImplementedError(
            f"attach_vpgc: {type(model).__name__} with an encoder-decoder LM "
            f"({model.config.text_config.model_type}); VPG-C hooks a decoder-only LM's layers"
        )
    view = HFQFormerView(model)
    layers = decoder_layers(model.language_model)
    c = view.config
    widths = {"llm_width": c.llm_width, "qformer_width": c.hidden_size, "num_queries": c.num_queries}
    if config is None:
        config = VPGCConfig(**widths, layer=len(layers) // 2)
    if layer is not None:
        config = VPGCConfig(**{**config.to_dict(), "layer": layer})
    attachment = VPGCAttachment(
        model,
        view,  # type: ignore[arg-type]
        model.language_model,
        layers,
        model.config.image_token_id,
        config,
        vision=model.vision_model,
        num_qformer_layers=model.config.qformer_config.num_hidden_layers,
        reads_text=view.reads_text,
    )
    capture = _Capture(attachment, view)
    attachment._hooks += [
        model.register_forward_pre_hook(capture.model_pre, with_kwargs=True),
        model.register_forward_hook(capture.model_post, with_kwargs=True, always_call=True),
        model.qformer.register_forward_pre_hook(capture.qformer_pre, with_kwargs=True),
        model.get_input_embeddings().register_forward_hook(capture.embeddings_post),
        model.language_model.register_forward_pre_hook(capture.language_model_pre, with_kwargs=True),
    ]
    model.eval()
    return attachment
