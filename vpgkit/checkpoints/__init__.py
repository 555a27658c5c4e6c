"""Adapter checkpoints (save, load, publish) and converters for foreign checkpoints.

* :func:`save_adapter` / :func:`load_adapter` — the trainable weights of a VisionLanguageModel with a
  config that records what they fit (module configs, base-model fingerprint, schema version).
* :func:`push_to_hub` / :func:`publish_folder` — the same plus a model card, to the hub or a folder.
* converters, one per family, each a pure ``state_dict → (mapped, LoadReport)`` function plus a
  loader: :mod:`.lavis`, :mod:`.hf_blip2`, :mod:`.openflamingo`, :mod:`.cheetah`.
* :func:`export_blip2` / :func:`export_openflamingo` — back to transformers' BLIP-2 and OpenFlamingo's layout.

Names load on first use (:mod:`vpgkit.lazy_exports`).
"""

# ruff: noqa: F401 (the TYPE_CHECKING imports are re-exports)

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy_exports import lazy_exports

if TYPE_CHECKING:  # the names, for type checkers and IDEs
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
    from .openflamingo import load_openflamingo, load_openflamingo_state, openflamingo_filter_fn
    from .publish import publish_folder, push_to_hub
    from .report import CheckpointError, LoadReport, apply_state_dict

# Eager: the function shares its submodule's name, and an imported submodule would shadow a lazy name.
from .model_card import model_card

_lazy, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "adapter": ("SCHEMA_VERSION", "adapter_config", "load_adapter", "read_config", "save_adapter"),
        "cheetah": ("cheetah_filter_fn", "load_cheetah"),
        "export": (
            "export_blip2",
            "export_instructblip",
            "export_openflamingo",
            "llm_state_dict",
            "openflamingo_state_dict",
        ),
        "fingerprint": ("base_fingerprint",),
        "hf_blip2": ("hf_blip2_filter_fn", "load_hf_blip2", "read_hf_blip2_state_dict"),
        "lavis": ("lavis_filter_fn", "load_lavis", "load_lavis_vision"),
        "openflamingo": ("load_openflamingo", "load_openflamingo_state", "openflamingo_filter_fn"),
        "publish": ("publish_folder", "push_to_hub"),
        "report": ("CheckpointError", "LoadReport", "apply_state_dict"),
    },
)
__all__ = sorted([*_lazy, "model_card"])
