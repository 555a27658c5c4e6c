"""VPG-C attached in place to a model vpgkit did not build: its Q-Former, its decoder layers, its forward.

:class:`VPGCAttachment` is the handle: it registers VPG-C's hook on decoder layer k through the built-in
``vpgc`` plug-in (:class:`~vpgkit.plugins.vpgc.VPGCPlugin`), owns the trainable VPG-C weights, and
answers what adapters need (``trainable_parameters``, ``plugins``, ``llm`` …), so
:func:`vpgkit.checkpoints.save_adapter` / :func:`~vpgkit.checkpoints.load_adapter` work on it unchanged
(keys ``vpgc.*``, as for a :class:`~vpgkit.VisionLanguageModel` with VPG-C).

Per call the hook needs the vision features, the prompt slots and the guidance position. A model of your
own gives them with :meth:`VPGCAttachment.inputs` around its forward / generate call;
:func:`vpgkit.inplace.attach_vpgc` captures them with hooks on transformers' BLIP-2 / InstructBLIP.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from ..attach import ContextSlot, VisualContext
from ..backbones.language import freeze
from ..model import _last_prompt_index
from ..modules import VPGC, VPGCConfig
from ..plugins import Plugin
from ..plugins.vpgc import VPGCPlugin
from .contract import ExternalQFormerPlugin, QFormerLike


class CallContextSlot(ContextSlot):
    """A :class:`~vpgkit.attach.ContextSlot` that can also be set by capture hooks (no ``with`` block)."""

    def set(self, context: VisualContext | None) -> None:
        self._current = context

    @property
    def current(self) -> VisualContext | None:
        return self._current


def slot_positions(input_ids: torch.Tensor, image_token_id: int, num_queries: int) -> torch.Tensor:
    """(B, L) ids with one image of ``num_queries`` slot tokens per row → (B, 1, N_q) slot positions.

    Raises:
        ValueError: naming the row, when a row does not hold exactly ``num_queries`` slot tokens.
    """
    is_slot = input_ids == image_token_id
    counts = is_slot.sum(dim=1)
    for row in (counts != num_queries).nonzero().flatten().tolist():
        raise ValueError(
            f"VPG-C in place: row {row} of input_ids has {int(counts[row])} image tokens (id {image_token_id}); "
            f"expected exactly num_query_tokens = {num_queries} (one image per row)"
        )
    return is_slot.nonzero()[:, 1].view(input_ids.shape[0], 1, num_queries)


class VPGCAttachment:
    """VPG-C on a model's own Q-Former and decoder layers (see the module docstring).

    Every weight of ``host`` is frozen; only ``vpgc`` (registered on ``host`` as ``host.vpgc``, so
    ``host.parameters()``, ``.to()`` and optimisers see it) trains. VPG-C starts from the Q-Former's queries
    with zero projections: the host's outputs are unchanged until it trains.

    Args:
        host: the model (an ``nn.Module``) VPG-C is added to.
        qformer: its Q-Former (:class:`~vpgkit.inplace.contract.QFormerLike`).
        llm: its causal LM (read for D_llm, the base fingerprint and LoRA).
        layers: the LM's decoder layers; the hook goes on ``layers[config.layer]``.
        image_token_id: id of the prompt-slot token (stored in the adapter).
        config: VPG-C's config; its widths must agree with the Q-Former and the LM.
        vision: the vision tower (for the adapter's base fingerprint), or None.
        num_qformer_layers, reads_text: stored in the adapter's description of the Q-Former.

    Example:
        >>> from transformers import LlamaForCausalLM
        >>> from vpgkit.backbones.language import tiny_llama_config
        >>> from vpgkit.modules import QFormer, QFormerConfig
        >>> host = nn.Module()
        >>> host.qformer, host.llm = QFormer(QFormerConfig.preset("tiny")), LlamaForCausalLM(tiny_llama_config())
        >>> vpgc = VPGCAttachment(host, host.qformer, host.llm, host.llm.model.layers, 3,
        ...                       VPGCConfig.preset("tiny"))
        >>> sorted(vpgc.trainable_parameters())
        ['vpgc.guidance_proj.bias', 'vpgc.guidance_proj.weight', 'vpgc.output_proj.bias', 'vpgc.output_proj.weight', 'vpgc.query_tokens']
    """

    def __init__(
        self,
        host: nn.Module,
        qformer: QFormerLike,
        llm: nn.Module,
        layers: nn.ModuleList,
        image_token_id: int,
        config: VPGCConfig,
        *,
        vision: nn.Module | None = None,
        num_qformer_layers: int = 0,
        reads_text: bool = False,
    ):
        if getattr(host, "vpgc", None) is not None:
            raise ValueError(f"VPG-C in place: {type(host).__name__} already has a vpgc; attach it once")
        source = ExternalQFormerPlugin.wrap(
            qformer, source=type(host).__name__, num_layers=num_qformer_layers, reads_text=reads_text
        )
        self.host, self.llm, self.vision = host, llm, vision
        self.image_token_id = image_token_id
        self.added_tokens = None
        self.reference_path = False
        self.context_slot = CallContextSlot()
        freeze(host)
        module = VPGC.from_qformer(qformer, config)  # type: ignore[arg-type]  (QFormerLike suffices)
        module.to(qformer.query_tokens.device)
        self.vpgc_plugin = VPGCPlugin(config, module)
        self.plugins: list[Plugin] = [source, self.vpgc_plugin]
        self._hooks = self.vpgc_plugin.bind(self, layers)  # type: ignore[arg-type]
        self.vpgc_plugin.apply_trainable()
        host.add_module("vpgc", module)

    @property
    def vpgc(self) -> VPGC:
        """The trainable VPG-C module."""
        return self.vpgc_plugin.module

    def plugin_providing(self, capability: str) -> Plugin:
        """The plug-in providing ``capability`` (``"qformer"``, ``"prompts"``)."""
        for plugin in self.plugins:
            if capability in plugin.provides:
                return plugin
        raise LookupError(f"VPG-C in place: nothing provides {capability!r}")

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """``vpgc.<name>`` → parameter, the weights an adapter holds (the host's are frozen)."""
        return {f"vpgc.{n}": p for n, p in self.vpgc.named_parameters() if p.requires_grad}

    def parameters(self) -> Iterator[nn.Parameter]:
        """The trainable parameters (for an optimiser)."""
        return iter(self.trainable_parameters().values())

    def remove(self) -> None:
        """Detach VPG-C: remove its hooks and ``host.vpgc`` (the host is again the unmodified model)."""
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()
        if "vpgc" in self.host._modules:
            del self.host._modules["vpgc"]

    def context(
        self,
        vision: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        guidance_index: torch.Tensor | None = None,
    ) -> VisualContext:
        """The per-call context of the hook.

        Args:
            vision: (B, T_img, N_v, D_v) the features the Q-Former read (one image per row: T_img = 1).
            input_ids: (B, L) with N_q slot tokens (``image_token_id``) per image.
            attention_mask: (B, L) or None (all ones).
            labels: (B, L) with -100 on prompt tokens, or None; guidance is the token before the first
                label, else each row's last attended token.
            guidance_index: (B,) explicit guidance positions (overrides the above).
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        n_q = self.vpgc.config.num_queries
        if vision.dim() == 3:
            vision = vision[:, None]
        if vision.shape[1] == 1:
            slots = slot_positions(input_ids, self.image_token_id, n_q)
        else:
            from ..attach import image_slot_positions

            num = torch.full(
                (input_ids.shape[0],), vision.shape[1], dtype=torch.long, device=input_ids.device
            )
            slots = image_slot_positions(input_ids, self.image_token_id, n_q, num)
        if guidance_index is None:
            guidance_index = _last_prompt_index(attention_mask, labels)
        return VisualContext(
            seq_len=input_ids.shape[1],
            owner=self.context_slot,
            vision=vision,
            slot_positions=slots,
            image_valid=torch.ones(slots.shape[:2], dtype=torch.bool, device=slots.device),
            guidance_index=guidance_index,
        )

    @contextlib.contextmanager
    def inputs(self, vision: torch.Tensor, input_ids: torch.Tensor, **options) -> Iterator[VisualContext]:
        """Bind the call's context (:meth:`context`) for the ``with`` block: your model's forward or generate
        inside it gets VPG-C at layer k (the prefill pass; cached decode steps pass through)."""
        context = self.context(vision, input_ids, **options)
        previous = self.context_slot.current
        self.context_slot.set(context)
        try:
            yield context
        finally:
            self.context_slot.set(previous)
