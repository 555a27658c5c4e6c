"""VPG-C in place on models vpgkit did not build (docs/hf_blip2_vpgc.md).

* :func:`attach_vpgc` — transformers' ``Blip2ForConditionalGeneration`` / ``InstructBlipForConditionalGeneration``.
* :class:`VPGCAttachment` — any model exposing a Q-Former (:class:`QFormerLike`) and decoder layers.
"""

from .attachment import VPGCAttachment
from .contract import ExternalQFormerConfig, ExternalQFormerPlugin, QFormerLike
from .hf_blip2 import attach_vpgc

__all__ = ["ExternalQFormerConfig", "ExternalQFormerPlugin", "QFormerLike", "VPGCAttachment", "attach_vpgc"]
