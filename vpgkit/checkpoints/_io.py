"""Reading foreign checkpoint files safely, and shared converter helpers."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..backbones.eva_keys import timm_eva_to_hf_blip2_vision
from ..backbones.vision import HFBlip2VisionEncoder, TimmEvaEncoder, load_state_dict_file
from .report import CheckpointError, LoadReport, target_parts

FROZEN_LLM = "frozen LLM, load it from its own checkpoint"


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A tensor state dict from safetensors or ``.pth``/``.pt``/``.bin``.

    Pickles are read with ``torch.load(weights_only=True)``: a file that would need code execution is
    refused. A truncated or corrupt safetensors file is an error naming the file.
    """
    path = Path(path)
    if path.suffix == ".safetensors" and path.is_file():
        from .adapter import read_safetensors

        return read_safetensors(path)
    try:
        return load_state_dict_file(path)
    except (FileNotFoundError, CheckpointError):
        raise
    except ValueError as err:
        raise CheckpointError(str(err)) from err
    except Exception as err:  # truncated zip, bad pickle opcode, …
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(err).__name__}: {err})") from err


def adapt_vision(target, mapped: dict[str, torch.Tensor], report: LoadReport) -> dict[str, torch.Tensor]:
    """Fit ``vision.*`` keys to the target's encoder class; keys for a missing encoder are ignored."""
    vision_keys = [k for k in mapped if k.startswith("vision.")]
    if not vision_keys:
        return mapped
    source_of = {dst: src for src, dst in report.renamed.items()}
    vision = target_parts(target).get("vision")
    if vision is None:
        for k in vision_keys:
            report.ignore(
                source_of.get(k, k),
                "the model has no vision encoder (built on precomputed features); build one with "
                "TimmEvaEncoder.from_checkpoint / HFBlip2VisionEncoder",
            )
            del mapped[k]
        return mapped
    timm_layout = any(k.startswith(("vision.visual_encoder.", "vision.ln_vision.")) for k in vision_keys)
    if isinstance(vision, HFBlip2VisionEncoder) and timm_layout:
        timm = {k.removeprefix("vision."): mapped.pop(k) for k in vision_keys}
        originals = {k: source_of.get("vision." + k, k) for k in timm}
        for k in timm:
            report.renamed.pop(originals[k], None)
        hf = timm_eva_to_hf_blip2_vision(timm)
        for k, v in hf.items():
            mapped["vision.vision_model." + k] = v
        report.note(
            "EVA vision weights (timm/LAVIS layout) converted to HF Blip2VisionModel keys; HF's post_layernorm "
            "uses the config's eps (1e-6) where LAVIS's ln_vision used 1e-5"
        )
    elif isinstance(vision, TimmEvaEncoder) and not timm_layout:
        for k in vision_keys:
            report.reject(
                source_of.get(k, k), "HF Blip2VisionModel layout; load it into an HFBlip2VisionEncoder"
            )
            del mapped[k]
    return mapped


def take(
    mapped: dict[str, torch.Tensor], report: LoadReport, src: str, dst: str, value: torch.Tensor
) -> None:
    """Record ``src → dst``; a second source for the same target is rejected."""
    if dst in mapped:
        report.reject(src, f"maps to {dst}, which another key already provides")
        return
    mapped[dst] = value
    report.renamed[src] = dst


def vision_depth(target) -> int | None:
    """Depth of the target's vision encoder, if it has one with a config."""
    vision = target_parts(target).get("vision")
    return getattr(getattr(vision, "config", None), "depth", None)
