"""LAVIS BLIP-2 / InstructBLIP checkpoints (``.pth`` with ``{"model": …}``) → vpgkit.

Key map (LAVIS → vpgkit, whose Q-Former is transformers' ``Blip2QFormerModel``):

============================================  ==============================================
``query_tokens``                              ``vpg.query_tokens``
``Qformer.bert.embeddings.LayerNorm.*``       ``vpg.qformer.layernorm.*``
``Qformer.bert.encoder.layer.i.*``            ``vpg.qformer.encoder.layer.i.*`` with
                                              ``attention.self`` → ``attention.attention``
                                              (also ``crossattention.self``)
``llm_proj`` / ``opt_proj`` / ``t5_proj``     ``vpg.language_projection``
``visual_encoder.*``, ``ln_vision.*``         ``vision.*`` (timm EVA layout, see TimmEvaEncoder)
============================================  ==============================================

Ignored with a reason: ``Qformer.cls.*`` (stage-1 LM head), word/position embeddings and
``position_ids`` and the text-only FFN ``intermediate``/``output`` (vpgkit's Q-Former is query-only;
``*_query`` FFNs are kept), stage-1 heads (``vision_proj``, ``text_proj``, ``itm_head``, ``temp``),
LLM weights (``llm_model.*``, ``opt_model.*``, ``t5_model.*``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch
from torch import nn

from ..backbones.eva_keys import eva_vision_keys
from ..backbones.vision import EvaVisionConfig, TimmEvaEncoder
from ._io import FROZEN_LLM, adapt_vision, read_checkpoint, take, vision_depth
from .report import LoadReport, apply_state_dict

TEXT_BRANCH = "Q-Former text branch (word/position embeddings, text FFN): vpgkit's Q-Former is query-only"
PROJECTIONS = ("llm_proj", "opt_proj", "t5_proj")
STAGE1_HEADS = ("vision_proj", "text_proj", "itm_head", "temp")
LLMS = ("llm_model.", "opt_model.", "t5_model.", "llama_model.")


def qformer_layer_key(rest: str) -> str:
    """Rename the part of a LAVIS BERT layer key after ``encoder.layer.i.``."""
    return re.sub(r"^(attention|crossattention)\.self\.", r"\1.attention.", rest)


def lavis_filter_fn(
    state_dict: Mapping[str, torch.Tensor], vision_depth: int | None = None
) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Map a LAVIS BLIP-2 / InstructBLIP state dict to vpgkit keys (``vpg.*``, ``vision.*``).

    A pure function in the spirit of timm's ``checkpoint_filter_fn``: no model is touched.

    Args:
        state_dict: the ``"model"`` entry of a LAVIS checkpoint.
        vision_depth: drop EVA blocks at index ≥ this (BLIP-2 uses 39 of EVA-CLIP-g's 40).

    Returns:
        (mapped state dict, report of renamed / ignored / unexpected keys).
    """
    mapped: dict[str, torch.Tensor] = {}
    report = LoadReport(family="lavis")
    for key, value in state_dict.items():
        if key == "query_tokens":
            take(mapped, report, key, "vpg.query_tokens", value)
        elif key.startswith("Qformer.cls."):
            report.ignore(key, "masked-LM head of BLIP-2 stage-1 pre-training")
        elif key.startswith("Qformer.bert.embeddings."):
            rest = key.removeprefix("Qformer.bert.embeddings.")
            if rest.startswith("LayerNorm."):
                take(mapped, report, key, "vpg.qformer.layernorm." + rest.removeprefix("LayerNorm."), value)
            elif rest.startswith(("word_embeddings.", "position_embeddings.")) or rest == "position_ids":
                report.ignore(key, TEXT_BRANCH)
            else:
                report.reject(key, "unknown Q-Former embedding key")
        elif m := re.fullmatch(r"Qformer\.bert\.encoder\.layer\.(\d+)\.(.+)", key):
            layer, rest = m.groups()
            if rest.startswith(("intermediate.", "output.")):
                report.ignore(key, TEXT_BRANCH)
            else:
                take(
                    mapped, report, key, f"vpg.qformer.encoder.layer.{layer}.{qformer_layer_key(rest)}", value
                )
        elif key.split(".")[0] in PROJECTIONS and key.count(".") == 1:
            take(mapped, report, key, "vpg.language_projection." + key.split(".")[1], value)
        elif key.startswith(("visual_encoder.", "ln_vision.")):
            dst = eva_vision_keys(key, value, vision_depth, report)
            if dst is not None:
                take(mapped, report, key, dst, value)
        elif key.split(".")[0] in STAGE1_HEADS:
            report.ignore(key, "BLIP-2 stage-1 contrastive / matching head, unused for generation")
        elif key.startswith(LLMS):
            report.ignore(key, FROZEN_LLM)
        else:
            report.reject(key, "unknown LAVIS key")
    return mapped, report


# What each kind of LAVIS release file holds (LAVIS saves only weights that train, so the frozen EVA
# ViT is in neither; ``ln_vision`` trains and is in both). Prefixes of vpgkit keys that must be complete.
LAVIS_RELEASES: dict[str, dict[str, str]] = {
    # Stage 1, Q-Former pre-training (blip2_pretrained*.pth): no LLM, so no language projection.
    "stage1": {
        "vpg.query_tokens": "LAVIS stage-1 queries",
        "vpg.qformer": "LAVIS stage-1 Q-Former",
    },
    # Stage 2 / InstructBLIP (…_vicuna7b.pth, …_opt2.7b.pth, instruct_blip_*.pth): plus the projection.
    "stage2": {"vpg": "LAVIS stage-2 Q-Former with its language projection"},
    # Only the Q-Former of any LAVIS file, for a model whose projection comes from elsewhere: Cheetah reads
    # the Q-Former of blip2_pretrained_flant5xxl.pth and its projection (llama_proj) from its own checkpoint.
    "qformer": {
        "vpg.query_tokens": "the Q-Former's queries",
        "vpg.qformer": "the Q-Former",
    },
}
FOREIGN_PROJECTION = (
    "projection to the LLM this LAVIS file was trained with; release='qformer' keeps the model's own "
    "(Cheetah: llama_proj from the Cheetah checkpoint)"
)


def lavis_release(state_dict: Mapping[str, torch.Tensor]) -> str:
    """``"stage2"`` when the file holds a language projection (``llm_proj``/``opt_proj``/``t5_proj``), else ``"stage1"``."""
    has_projection = any(k.split(".")[0] in PROJECTIONS and k.count(".") == 1 for k in state_dict)
    return "stage2" if has_projection else "stage1"


def load_lavis(
    target: nn.Module | Mapping[str, nn.Module],
    path: str | os.PathLike,
    strict: bool = True,
    release: str = "auto",
) -> LoadReport:
    """Load a LAVIS checkpoint into a VisionLanguageModel (or ``{"vpg": qformer, "vision": enc}``).

    The Q-Former and its projection go to ``vpg``; EVA weights go to ``vision`` when the model has
    an encoder (timm EVA as is, HF Blip2Vision converted), and are ignored with a reason otherwise.

    What must be complete follows the release (:data:`LAVIS_RELEASES`): a stage-1 file (Q-Former
    pre-training, what Cheetah's config points its Q-Former at) holds no language projection, so a strict
    load succeeds without one and leaves the model's projection as it is (Cheetah's comes from its own
    checkpoint, ``llama_proj``: :func:`~vpgkit.checkpoints.load_cheetah`); a stage-2 file must hold it;
    ``release="qformer"`` takes only the Q-Former of any file and reports its projection as ignored
    (Cheetah's default Q-Former file, ``blip2_pretrained_flant5xxl.pth``, holds FlanT5's ``t5_proj``).
    Vision: a file with the EVA blocks must hold the whole encoder; a training checkpoint holds only
    ``ln_vision`` (LAVIS saves no frozen weight), which is then all that is required. Unknown keys
    are unexpected in every release.

    Args:
        release: ``"stage1"``, ``"stage2"``, ``"qformer"`` or ``"auto"`` (stage 2 iff a projection key
            is present, else stage 1).

    Raises:
        CheckpointError: unreadable file, ``.pth`` needing code execution, shape mismatch, or (strict)
            unexpected / missing keys.

    Example:
        >>> report = load_lavis(model, "blip2_pretrained_vicuna7b.pth")  # doctest: +SKIP
        >>> report = load_lavis(cheetah_model, "blip2_pretrained_flant5xxl.pth")  # stage 1  # doctest: +SKIP
    """
    state = read_checkpoint(path)
    if release == "auto":
        release = lavis_release(state)
    if release not in LAVIS_RELEASES:
        raise ValueError(
            f"load_lavis: release must be one of {sorted(LAVIS_RELEASES)} or 'auto', got {release!r}"
        )
    mapped, report = lavis_filter_fn(state, vision_depth(target))
    report.source = str(path)
    if release == "qformer":
        for src, dst in list(report.renamed.items()):
            if dst.startswith("vpg.language_projection."):
                report.ignore(src, FOREIGN_PROJECTION)
                del report.renamed[src], mapped[dst]
    mapped = adapt_vision(target, mapped, report)
    required = dict(LAVIS_RELEASES[release])
    report.note(
        f"LAVIS {release} file: expected to hold {', '.join(sorted(required))} (+ vision weights it has)"
    )
    vision = sorted(k for k in mapped if k.startswith("vision."))
    body = [
        k for k in vision if not k.startswith(("vision.ln_vision.", "vision.vision_model.post_layernorm."))
    ]
    if body:
        required["vision"] = "EVA weights: the file holds the encoder, so all of it"
    else:
        required.update(
            {k.rsplit(".", 1)[0]: "ln_vision, the only vision weight LAVIS trains" for k in vision}
        )
        if vision:
            report.note("no EVA blocks in the file (LAVIS saves no frozen weight): only ln_vision was loaded")
    return apply_state_dict(target, mapped, report, strict, required=required)


def load_lavis_vision(
    path: str | os.PathLike, config: EvaVisionConfig, dtype: torch.dtype = torch.float32
) -> TimmEvaEncoder:
    """Build the frozen EVA encoder from a LAVIS / EVA-CLIP checkpoint (``TimmEvaEncoder.from_checkpoint``)."""
    return TimmEvaEncoder.from_checkpoint(path, config, dtype=dtype)
