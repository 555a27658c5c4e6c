"""The shape of a model's frozen base (LLM + vision encoder), and a hash of it.

An adapter only fits the base it was trained on. Weights are never hashed (a 7B model would take
minutes); the fields that define every tensor's shape are: the LLM's family, width, depth, heads,
FFN width and vocabulary, and the vision encoder's class, width, token count and depth.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from torch import nn

# LLM config fields that define the shape of some weight or hidden state.
LLM_SHAPE_FIELDS = (
    "model_type",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "vocab_size",
)
VISION_SHAPE_FIELDS = ("class", "width", "num_tokens", "image_size", "depth", "patch_size")


def llm_description(llm: nn.Module) -> dict[str, Any]:
    """Shape fields of the LLM plus where it came from (name or path, commit hash when known)."""
    # Here, not at the top: reading or publishing a checkpoint need not import transformers.
    from ..backbones.language import base_causal_lm

    lm = base_causal_lm(llm)
    config = lm.config.get_text_config()
    desc: dict[str, Any] = {f: getattr(config, f, None) for f in LLM_SHAPE_FIELDS}
    desc["model_type"] = getattr(config, "model_type", None) or getattr(lm.config, "model_type", None)
    desc["class"] = type(lm).__name__
    desc["name_or_path"] = getattr(lm.config, "name_or_path", "") or ""
    for attr in ("_commit_hash", "revision"):
        value = getattr(lm.config, attr, None)
        if value:
            desc[attr.lstrip("_")] = value
    return desc


def vision_description(vision: nn.Module | None) -> dict[str, Any] | None:
    """Class, width, tokens, image size, depth and patch size of the vision encoder (None without one)."""
    if vision is None:
        return None
    config = getattr(vision, "config", None)
    return {
        "class": type(vision).__name__,
        "width": getattr(vision, "width", None),
        "num_tokens": getattr(vision, "num_tokens", None),
        "image_size": getattr(vision, "image_size", None),
        "depth": getattr(config, "depth", None),
        "patch_size": getattr(config, "patch_size", None),
    }


def _hash(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def llm_fingerprint(desc: dict[str, Any]) -> str:
    """Hash of the LLM's shape fields only (not its name, path or revision)."""
    return _hash({f: desc.get(f) for f in LLM_SHAPE_FIELDS})


def vision_fingerprint(desc: dict[str, Any] | None) -> str | None:
    return None if desc is None else _hash({f: desc.get(f) for f in VISION_SHAPE_FIELDS})


def base_fingerprint(model: nn.Module) -> dict[str, Any]:
    """``{"llm": {...}, "vision": {...} | None, "llm_fingerprint", "vision_fingerprint"}`` of a VisionLanguageModel."""
    llm = llm_description(model.llm)
    added = getattr(model, "added_tokens", None)
    if added is not None:  # the base is the LLM before the tokens were added
        llm["vocab_size"] = added.config.base_vocab_size
    vision = vision_description(getattr(model, "vision", None))
    return {
        "llm": llm,
        "vision": vision,
        "llm_fingerprint": llm_fingerprint(llm),
        "vision_fingerprint": vision_fingerprint(vision),
    }


def describe_llm(desc: dict[str, Any]) -> str:
    """E.g. ``llama hidden 4096 × 32 layers (vocab 32000)``."""
    return (
        f"{desc.get('model_type')} hidden {desc.get('hidden_size')} × {desc.get('num_hidden_layers')} layers "
        f"(heads {desc.get('num_attention_heads')}/{desc.get('num_key_value_heads')}, "
        f"ffn {desc.get('intermediate_size')}, vocab {desc.get('vocab_size')})"
    )


def describe_vision(desc: dict[str, Any] | None) -> str:
    if desc is None:
        return "no vision encoder"
    return (
        f"{desc.get('class')} width {desc.get('width')} × {desc.get('num_tokens')} tokens "
        f"(depth {desc.get('depth')}, {desc.get('image_size')} px)"
    )


def check_base(saved: dict[str, Any], model: nn.Module, source: str) -> list[str]:
    """Raise if ``model``'s base has another shape than the one the adapter was trained on.

    The LLM must always match. The vision encoder is compared when both sides have one (a model fed
    precomputed features has none; the adapter modules' own widths are checked separately).

    Returns:
        notes on harmless differences (e.g. another checkpoint name of the same architecture).
    """
    from .report import CheckpointError

    current = base_fingerprint(model)
    problems, notes = [], []
    if saved["llm_fingerprint"] != current["llm_fingerprint"]:
        problems.append(
            f"adapter was trained on {describe_llm(saved['llm'])}; "
            f"this model is {describe_llm(current['llm'])}"
        )
    sv, cv = saved.get("vision"), current["vision"]
    if sv is not None and cv is not None and saved["vision_fingerprint"] != current["vision_fingerprint"]:
        problems.append(
            f"adapter was trained with vision encoder {describe_vision(sv)}; "
            f"this model has {describe_vision(cv)}"
        )
    if problems:
        raise CheckpointError(f"{source}: base model mismatch: " + "; ".join(problems))
    saved_name, name = saved["llm"].get("name_or_path"), current["llm"].get("name_or_path")
    if saved_name and name and saved_name != name:
        notes.append(
            f"same LLM architecture, different checkpoint name: adapter {saved_name!r}, model {name!r}"
        )
    return notes
