"""Adapter checkpoints (save, load, publish) and converters for foreign checkpoints.

* :func:`save_adapter` / :func:`load_adapter` — the trainable weights of a VisionLanguageModel with a
  config that records what they fit (module configs, base-model fingerprint, schema version).
* :func:`push_to_hub` / :func:`publish_folder` — the same plus a model card, to the hub or a folder.
* converters, one per family, each a pure ``state_dict → (mapped, LoadReport)`` function plus a
  loader: :mod:`.lavis`, :mod:`.hf_blip2`, :mod:`.openflamingo`, :mod:`.cheetah`.
* :func:`export_blip2` / :func:`export_openflamingo` — back to transformers' BLIP-2 and OpenFlamingo's layout.
"""

from .adapter import SCHEMA_VERSION, adapter_config, load_adapter, read_config, save_adapter
from .cheetah import cheetah_filter_fn, load_cheetah
from .export import (
    export_blip2,
    export_instructblip,
    export_openflamingo,
    llm_state_dict,
    openflamingo_state_dict,
)
from .fingerprint import base_fingerprint
from .hf_blip2 import hf_blip2_filter_fn, load_hf_blip2, read_hf_blip2_state_dict
from .lavis import lavis_filter_fn, load_lavis, load_lavis_vision
from .model_card import model_card
from .openflamingo import load_openflamingo, load_openflamingo_state, openflamingo_filter_fn
from .publish import publish_folder, push_to_hub
from .report import CheckpointError, LoadReport, apply_state_dict

__all__ = [
    "SCHEMA_VERSION",
    "CheckpointError",
    "LoadReport",
    "adapter_config",
    "apply_state_dict",
    "base_fingerprint",
    "cheetah_filter_fn",
    "export_blip2",
    "export_instructblip",
    "export_openflamingo",
    "hf_blip2_filter_fn",
    "lavis_filter_fn",
    "llm_state_dict",
    "load_adapter",
    "load_cheetah",
    "load_hf_blip2",
    "load_lavis",
    "load_lavis_vision",
    "load_openflamingo",
    "load_openflamingo_state",
    "model_card",
    "openflamingo_filter_fn",
    "openflamingo_state_dict",
    "publish_folder",
    "push_to_hub",
    "read_config",
    "read_hf_blip2_state_dict",
    "save_adapter",
]
