"""Export back to the originals' formats: a transformers BLIP-2 directory, an OpenFlamingo checkpoint.

* :func:`export_blip2` — a prompt-splice model (``vpg`` without VPG-C) → a directory that
  ``Blip2ForConditionalGeneration.from_pretrained`` loads with transformers alone: the vision tower,
  Q-Former, queries, projection and the LLM (LoRA merged into it when asked), config with
  ``image_token_index`` = the model's slot token.
* :func:`export_openflamingo` — a cross-attention model → OpenFlamingo's checkpoint layout (what its
  trainer keeps: ``perceiver.*``, the blocks inside the decoder layers, the input embedding matrix with
  the added rows, and the tied output copy), as safetensors: OpenFlamingo reads it with
  ``safetensors.torch.load_file`` + ``load_state_dict(strict=False)``. :func:`load_openflamingo` reads
  it back exactly.

Everything is written atomically (a temporary directory or file renamed into place), safetensors and
JSON only.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..backbones.language import base_causal_lm, decoder_layers
from .adapter import atomic_directory
from .report import CheckpointError


def llm_state_dict(model: nn.Module, merge_lora: bool = False) -> dict[str, torch.Tensor]:
    """The LLM's weights as its own transformers class names them, with added-token rows written in.

    Args:
        model: a VisionLanguageModel.
        merge_lora: fold a peft LoRA into the weights (W + B·A·scale, computed aside: the model is not
            changed). Without it, a model with LoRA is refused.

    Raises:
        CheckpointError: the LLM has LoRA and ``merge_lora`` is False.
    """
    from .adapter import _is_peft

    lm = base_causal_lm(model.llm)
    lora = _is_peft(model.llm)
    if lora and not merge_lora:
        raise CheckpointError(
            "export: the LLM has LoRA, which the target format cannot hold; pass merge_lora=True to fold it "
            "into the weights"
        )
    state: dict[str, torch.Tensor] = {}
    merged: dict[str, torch.Tensor] = {}
    if lora:
        for name, module in lm.named_modules():
            if hasattr(module, "base_layer") and hasattr(module, "get_delta_weight"):
                for adapter in getattr(module, "active_adapters", []):
                    base = module.base_layer.weight.detach()
                    merged[f"{name}.weight"] = base + module.get_delta_weight(adapter).to(base.dtype)
    for key, value in lm.state_dict().items():
        if "lora_" in key:
            continue
        key = key.replace(".base_layer.", ".")
        state[key] = merged.get(key, value.detach())
    added = getattr(model, "added_tokens", None)
    if added is not None:  # the rows the hooks use, written into the matrices
        embed_key = _module_name(lm, lm.get_input_embeddings()) + ".weight"
        rows = added.merged_rows()
        ids = added.token_ids
        state[embed_key] = state[embed_key].clone()
        state[embed_key][ids] = rows["input"].to(state[embed_key].dtype)
        head = lm.get_output_embeddings()
        if "output" in rows and head is not None and head.weight is not lm.get_input_embeddings().weight:
            head_key = _module_name(lm, head) + ".weight"
            state[head_key] = state[head_key].clone()
            state[head_key][ids] = rows["output"].to(state[head_key].dtype)
    return state


def _module_name(root: nn.Module, module: nn.Module) -> str:
    for name, candidate in root.named_modules():
        if candidate is module:
            return name
    raise ValueError(f"{type(module).__name__} is not a submodule of {type(root).__name__}")


# ------------------------------------------------------------------------------------------ BLIP-2


def export_blip2(
    model: nn.Module, directory: str | os.PathLike, merge_lora: bool = False, tokenizer=None
) -> Path:
    """Write a transformers ``Blip2ForConditionalGeneration`` directory for a BLIP-2-style model.

    The model needs a vision encoder (``HFBlip2VisionEncoder``; a ``TimmEvaEncoder`` is converted, with
    HF's single LayerNorm epsilon for ``ln_vision``) and a ``vpg`` without VPG-C (Cheetah's VPG-C has no
    transformers counterpart). Input ids keep the model's convention: each image is N_q slot tokens
    (``config.image_token_index``), as transformers' BLIP-2 expects them.

    Args:
        model: a VisionLanguageModel (prompt splice).
        directory: the output directory (replaced atomically if it exists).
        merge_lora: fold the LLM's LoRA into its weights (see :func:`llm_state_dict`).
        tokenizer: saved alongside when given.

    Returns:
        The directory.

    Raises:
        CheckpointError: a model transformers' BLIP-2 cannot express (no vision encoder, VPG-C,
            cross-attention composition, LoRA without ``merge_lora``).

    Example:
        >>> export_blip2(model, "exports/blip2")                            # doctest: +SKIP
        >>> Blip2ForConditionalGeneration.from_pretrained("exports/blip2")  # doctest: +SKIP
    """
    from transformers import Blip2Config, Blip2ForConditionalGeneration

    from ..backbones.vision import HFBlip2VisionEncoder, TimmEvaEncoder, timm_eva_to_hf_blip2_vision

    if getattr(model, "vpg", None) is None:
        raise CheckpointError(
            "export_blip2: the model has no Q-Former (vpg); BLIP-2 is a prompt-splice model"
        )
    if model.vpgc is not None:
        raise CheckpointError(
            "export_blip2: the model has a VPG-C, which transformers' BLIP-2 cannot express; export_blip2 "
            "writes the BLIP-2 part only of a model without it"
        )
    vision = model.vision
    if isinstance(vision, HFBlip2VisionEncoder):
        vision_config = vision.vision_model.config
        vision_state = vision.vision_model.state_dict()
    elif isinstance(vision, TimmEvaEncoder):
        vision_config = vision.config.to_blip2_vision().to_hf()
        vision_state = timm_eva_to_hf_blip2_vision(vision.state_dict())
    else:
        raise CheckpointError(
            f"export_blip2: BLIP-2 needs its vision tower; the model has {type(vision).__name__ if vision else 'none'} "
            "(build it with HFBlip2VisionEncoder or TimmEvaEncoder)"
        )
    lm = base_causal_lm(model.llm)
    config = Blip2Config(
        vision_config=vision_config.to_dict(),
        qformer_config=model.vpg.qformer.config.to_dict(),
        text_config=lm.config.to_dict(),
        num_query_tokens=model.vpg.config.num_queries,
        image_token_index=model.image_token_id,
    )
    state: dict[str, torch.Tensor] = {"query_tokens": model.vpg.query_tokens.detach()}
    state.update({f"vision_model.{k}": v for k, v in vision_state.items()})
    state.update({f"qformer.{k}": v for k, v in model.vpg.qformer.state_dict().items()})
    state.update(
        {f"language_projection.{k}": v for k, v in model.vpg.language_projection.state_dict().items()}
    )
    state.update({f"language_model.{k}": v for k, v in llm_state_dict(model, merge_lora).items()})
    with torch.device("meta"):
        hf = Blip2ForConditionalGeneration(config)
    expected = hf.state_dict()
    missing = sorted(k for k in expected if k not in state and not k.endswith("position_ids"))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"export_blip2: the model's weights do not fill transformers' BLIP-2 (missing {missing[:6]}, "
            f"unexpected {unexpected[:6]})"
        )
    hf.load_state_dict({k: v.detach().contiguous() for k, v in state.items()}, strict=False, assign=True)
    target = Path(directory)
    with atomic_directory(target) as tmp:
        hf.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return target


def export_instructblip(model: nn.Module, directory: str | os.PathLike, **kwargs) -> Path:
    """Not implemented: InstructBLIP's Q-Former reads the instruction; vpgkit's Q-Former has no text input.

    Raises:
        NotImplementedError: always, saying why and what to use instead.
    """
    raise NotImplementedError(
        "export_instructblip: not implemented. InstructBLIP's Q-Former also reads the instruction (word/position "
        "embeddings and a text FFN), which vpgkit's query-only Q-Former does not have, so an export could not "
        "reproduce the model's outputs; use export_blip2 for a BLIP-2 directory"
    )


# ------------------------------------------------------------------------------------ OpenFlamingo


def openflamingo_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """A cross-attention model's weights in OpenFlamingo's checkpoint layout (see the module docstring)."""
    if getattr(model, "perceiver", None) is None:
        raise CheckpointError("export_openflamingo: the model has no Perceiver (a prompt-splice model)")
    lm = base_causal_lm(model.llm)
    layers = _module_name(lm, decoder_layers(lm))
    state = {f"perceiver.{k}": v.detach() for k, v in model.perceiver.state_dict().items()}
    for i, block in model.cross_attention.items():
        for k, v in block.state_dict().items():
            state[f"lang_encoder.{layers}.{i}.gated_cross_attn_layer.{k}"] = v.detach()
    llm = llm_state_dict(model)  # OpenFlamingo keeps the LLM's (frozen) weights out, except the embeddings
    embed = _module_name(lm, lm.get_input_embeddings()) + ".weight"
    state[f"lang_encoder.{embed}"] = llm[embed]
    head = lm.get_output_embeddings()
    if head is not None and head.weight is lm.get_input_embeddings().weight:
        state[f"lang_encoder.{_module_name(lm, head)}.weight"] = llm[
            embed
        ]  # the tied copy OpenFlamingo saves
    return state


def export_openflamingo(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write a cross-attention model as an OpenFlamingo checkpoint (safetensors, atomically).

    Example:
        >>> export_openflamingo(model, "exports/checkpoint.safetensors")   # doctest: +SKIP
        >>> load_openflamingo(other, "exports/checkpoint.safetensors")      # doctest: +SKIP
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(
            f"export_openflamingo: {path}: vpgkit writes safetensors; name it *.safetensors"
        )
    state = {k: v.to("cpu").contiguous().clone() for k, v in openflamingo_state_dict(model).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(state, str(tmp), metadata={"format": "pt", "layout": "openflamingo"})
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
