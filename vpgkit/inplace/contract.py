"""What VPG-C needs from a model it is attached to in place: a Q-Former it can re-run, and its prompt slots.

A model that was not built by vpgkit (a transformers BLIP-2, your own network) gets VPG-C when it exposes

* a **Q-Former** satisfying :class:`QFormerLike` — ``query_tokens`` (1, N_q, H), ``config.hidden_size`` (H),
  ``config.num_queries`` (N_q), ``config.llm_width`` (D_llm), ``config.vision_width`` (D_v) and
  ``encode(queries (B, N_q, H), vision (B, N_v, D_v)) -> (B, N_q, H)``, the Q-Former's output states for the
  given query embeddings (its embedding LayerNorm applied to them, as ``Blip2QFormerModel(query_embeds=...)``
  does). vpgkit's own :class:`~vpgkit.modules.QFormer` satisfies it;
* **decoder layers** (an ``nn.ModuleList``; VPG-C hooks the input of layer k), and a causal LM whose
  ``config.get_text_config().hidden_size`` is D_llm;
* per call, the vision features, the positions of each image's N_q prompt slots and each row's guidance
  position — given through :meth:`vpgkit.inplace.VPGCAttachment.inputs`, or captured by hooks
  (:func:`vpgkit.inplace.attach_vpgc` does this for transformers' BLIP-2 / InstructBLIP).

:class:`ExternalQFormerPlugin` is the plug-in (see :mod:`vpgkit.plugins`) standing for such a Q-Former: it
provides ``"qformer"`` and ``"prompts"``, the two capabilities the built-in ``vpgc`` plug-in requires, and
holds no weights (the model's own Q-Former stays where it is, frozen).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from ..modules.presets import PresetConfig
from ..plugins import Plugin


@runtime_checkable
class QFormerLike(Protocol):
    """The Q-Former contract VPG-C re-runs (see the module docstring)."""

    query_tokens: torch.Tensor
    config: Any

    def encode(self, query_embeds: torch.Tensor, vision: torch.Tensor) -> torch.Tensor:
        """(B, N_q, H) query embeddings and (B, N_v, D_v) vision features → (B, N_q, H) output states."""
        ...


@dataclass
class ExternalQFormerConfig(PresetConfig):
    """Shape of a Q-Former that lives in another model (stored in the adapter, checked on load).

    Attributes:
        source: what the Q-Former belongs to (e.g. ``"Blip2ForConditionalGeneration"``).
        hidden_size: H. num_queries: N_q. llm_width: D_llm of its projection. vision_width: D_v it reads.
        num_layers: its depth. reads_text: True when it also reads the instruction (InstructBLIP).
    """

    source: str = ""
    hidden_size: int = 768
    num_queries: int = 32
    llm_width: int = 4096
    vision_width: int = 1408
    num_layers: int = 12
    reads_text: bool = False

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def describe(cls, qformer: QFormerLike, source: str, num_layers: int, reads_text: bool = False):
        """The config of ``qformer`` (its ``config`` fields named in :class:`QFormerLike`)."""
        c = qformer.config
        return cls(source, c.hidden_size, c.num_queries, c.llm_width, c.vision_width, num_layers, reads_text)


class ExternalQFormerPlugin(Plugin):
    """Stands for another model's Q-Former: provides ``"qformer"`` (``.qformer``) and ``"prompts"``.

    It holds no module (so no adapter key) and prepares nothing: the host model splices its prompts itself.

    Example:
        >>> from vpgkit.modules import QFormer, QFormerConfig
        >>> qformer = QFormer(QFormerConfig.preset("tiny"))
        >>> plugin = ExternalQFormerPlugin.wrap(qformer, source="QFormer", num_layers=2)
        >>> plugin.provides, plugin.config.num_queries
        (('qformer', 'prompts'), 4)
    """

    slot: ClassVar[str] = "external_qformer"
    config_class = ExternalQFormerConfig
    provides: ClassVar[tuple[str, ...]] = ("qformer", "prompts")
    image_tokens: ClassVar[str | None] = "slots"
    default_trainable: ClassVar[bool] = False

    def __init__(self, config: ExternalQFormerConfig, qformer: QFormerLike):
        super().__init__(config, None, trainable=False)
        self.qformer = qformer

    @classmethod
    def wrap(
        cls, qformer: QFormerLike, *, source: str, num_layers: int, reads_text: bool = False
    ) -> ExternalQFormerPlugin:
        """Check ``qformer`` against :class:`QFormerLike` and wrap it."""
        missing = [a for a in ("query_tokens", "config", "encode") if not hasattr(qformer, a)]
        missing += [
            f"config.{f}"
            for f in ("hidden_size", "num_queries", "llm_width", "vision_width")
            if not hasattr(getattr(qformer, "config", None), f)
        ]
        if missing:
            raise TypeError(
                f"VPG-C in place: the Q-Former {type(qformer).__name__} lacks {missing}; it must expose "
                "query_tokens (1, N_q, H), config.hidden_size/num_queries/llm_width/vision_width and "
                "encode(queries, vision) (see vpgkit.inplace.contract)"
            )
        c = qformer.config
        if tuple(qformer.query_tokens.shape) != (1, c.num_queries, c.hidden_size):
            raise ValueError(
                f"VPG-C in place: query_tokens has shape {tuple(qformer.query_tokens.shape)}, expected "
                f"(1, num_queries={c.num_queries}, hidden_size={c.hidden_size})"
            )
        return cls(ExternalQFormerConfig.describe(qformer, source, num_layers, reads_text), qformer)

    @property
    def tokens_per_image(self) -> int:
        return self.config.num_queries
