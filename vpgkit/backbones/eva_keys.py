"""Every EVA-CLIP key map, next to the encoders that load it (:mod:`vpgkit.backbones.vision`).

* :func:`eva_key` — the rule for one key of an EVA / LAVIS state dict → :class:`TimmEvaEncoder` layout
  (``visual_encoder.*``, ``ln_vision.*``): blocks beyond the encoder's depth are dropped (BLIP-2 uses 39 of
  EVA-CLIP-g's 40), EVA's k bias is a constant zero (a buffer in timm, never loaded).
* :func:`eva_state_to_timm` — a whole state dict through that rule (``TimmEvaEncoder.from_checkpoint``).
* :func:`eva_vision_keys` — the same rule per key with a load report, for the LAVIS converter.
* :func:`timm_eva_to_hf_blip2_vision` — timm / LAVIS layout → transformers ``Blip2VisionModel`` keys.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

BEYOND_DEPTH = "beyond_depth"
ZERO_K_BIAS = "zero_k_bias"
NONZERO_K_BIAS = "nonzero_k_bias"


def eva_key(key: str, value: torch.Tensor, depth: int | None) -> tuple[str | None, str]:
    """Map one EVA / LAVIS vision key to the :class:`TimmEvaEncoder` layout.

    Args:
        key: ``ln_vision.*``, ``visual_encoder.*`` or a plain EVA key (``blocks.0.attn.qkv.weight`` …).
        value: its tensor (a k bias must be zero).
        depth: blocks kept (None: all).

    Returns:
        (new key, "") or (None, why): :data:`BEYOND_DEPTH`, :data:`ZERO_K_BIAS` or :data:`NONZERO_K_BIAS`.

    Example:
        >>> eva_key("blocks.3.mlp.fc1.weight", torch.ones(1), depth=2)
        (None, 'beyond_depth')
        >>> eva_key("visual_encoder.blocks.1.norm1.weight", torch.ones(1), depth=2)
        ('visual_encoder.blocks.1.norm1.weight', '')
    """
    if key.startswith("ln_vision."):
        return key, ""
    rest = key.removeprefix("visual_encoder.")
    block = re.match(r"blocks\.(\d+)\.", rest)
    if depth is not None and block and int(block.group(1)) >= depth:
        return None, BEYOND_DEPTH
    if rest.endswith("attn.k_bias"):
        return None, NONZERO_K_BIAS if torch.count_nonzero(value) else ZERO_K_BIAS
    return "visual_encoder." + rest, ""


def eva_state_to_timm(state: Mapping[str, torch.Tensor], depth: int | None) -> dict[str, torch.Tensor]:
    """Normalise an EVA / LAVIS state dict to :class:`TimmEvaEncoder` keys (``visual_encoder.*``, ``ln_vision.*``).

    In a LAVIS file (``visual_encoder.*`` keys) the other parts (Q-Former, projections, LLM) are skipped;
    zero ``k_bias`` entries are dropped; a non-zero one is an error.
    """
    lavis = any(k.startswith("visual_encoder.") for k in state)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if lavis and not key.startswith(("visual_encoder.", "ln_vision.")):
            continue  # another part of a full BLIP-2 checkpoint (Q-Former, projections, LLM)
        mapped, why = eva_key(key, value, depth)
        if why == NONZERO_K_BIAS:
            raise ValueError(
                f"{key.removeprefix('visual_encoder.')}: EVA's k bias must be zero; this checkpoint has a non-zero one"
            )
        if mapped is not None:
            out[mapped] = value
    return out


def eva_vision_keys(key: str, value: torch.Tensor, depth: int | None, report) -> str | None:
    """Map a LAVIS / EVA vision key (``visual_encoder.*``, ``ln_vision.*``) to ``vision.*`` (timm layout).

    Returns None when the key is not loaded, recorded in ``report`` (a
    :class:`~vpgkit.checkpoints.report.LoadReport`): ignored with its reason, or rejected (a non-zero k bias).
    """
    mapped, why = eva_key(key, value, depth)
    if why == BEYOND_DEPTH:
        report.ignore(key, f"vision block beyond the encoder's depth {depth} (BLIP-2 uses the first {depth})")
    elif why == ZERO_K_BIAS:
        report.ignore(key, "EVA's k bias is a constant zero (a buffer, not a weight)")
    elif why == NONZERO_K_BIAS:
        report.reject(key, "EVA's k bias must be zero; this one is not")
    return None if mapped is None else "vision." + mapped


def _listing(items: list[str], limit: int = 20) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", … ({len(items) - limit} more)" if len(items) > limit else "")


def timm_eva_to_hf_blip2_vision(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an EVA + ``ln_vision`` state dict (timm / LAVIS layout) to ``Blip2VisionModel`` keys.

    ``visual_encoder.`` prefixes are optional. HF keeps one ``qkv.bias`` of 3·D: it is
    cat(q_bias, zeros, v_bias), the zero k bias EVA never learns. Every input key must be understood.

    Example:
        >>> from vpgkit.backbones import EvaVisionConfig, HFBlip2VisionEncoder, TimmEvaEncoder
        >>> enc = TimmEvaEncoder(EvaVisionConfig.preset("tiny", ln_vision_eps=1e-6))
        >>> hf = HFBlip2VisionEncoder(EvaVisionConfig.preset("tiny").to_blip2_vision())
        >>> _ = hf.vision_model.load_state_dict(timm_eva_to_hf_blip2_vision(enc.state_dict()))
    """
    fixed = {
        "cls_token": "embeddings.class_embedding",
        "pos_embed": "embeddings.position_embedding",
        "patch_embed.proj.weight": "embeddings.patch_embedding.weight",
        "patch_embed.proj.bias": "embeddings.patch_embedding.bias",
        "ln_vision.weight": "post_layernorm.weight",
        "ln_vision.bias": "post_layernorm.bias",
    }
    in_block = {
        "norm1": "layer_norm1",
        "norm2": "layer_norm2",
        "attn.qkv.weight": "self_attn.qkv.weight",
        "attn.proj": "self_attn.projection",
        "mlp.fc1": "mlp.fc1",
        "mlp.fc2": "mlp.fc2",
    }
    out: dict[str, torch.Tensor] = {}
    biases: dict[str, dict[str, torch.Tensor]] = {}
    unknown: list[str] = []
    for full_key, value in state_dict.items():
        key = full_key.removeprefix("visual_encoder.")
        if key in fixed:
            out[fixed[key]] = value
            continue
        match = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
        if match is None:
            unknown.append(full_key)
            continue
        layer, rest = f"encoder.layers.{match.group(1)}.", match.group(2)
        if rest in ("attn.q_bias", "attn.v_bias", "attn.k_bias"):
            biases.setdefault(layer, {})[rest[5]] = value
            continue
        for src, dst in in_block.items():
            if rest == src or rest.startswith(src + "."):
                out[layer + dst + rest[len(src) :]] = value
                break
        else:
            unknown.append(full_key)
    if unknown:
        raise ValueError(
            f"timm_eva_to_hf_blip2_vision: keys with no HF counterpart: {_listing(sorted(unknown))}"
        )
    for layer, qkv in biases.items():
        if "q" not in qkv or "v" not in qkv:
            raise ValueError(f"timm_eva_to_hf_blip2_vision: {layer} needs both q_bias and v_bias")
        k = qkv.get("k", torch.zeros_like(qkv["q"]))
        out[layer + "self_attn.qkv.bias"] = torch.cat([qkv["q"], k, qkv["v"]])
    return out
