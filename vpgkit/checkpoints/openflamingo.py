"""OpenFlamingo / Otter checkpoints → vpgkit's Perceiver and gated cross-attention blocks.

Key layouts handled (after removing an optional ``prefix``):

* OpenFlamingo: ``perceiver.latents``, ``perceiver.layers.{i}.0.{to_q,to_kv,to_out,norm_media,norm_latents}.*``
  (attention), ``perceiver.layers.{i}.1.{0,1,3}.*`` (feed-forward), ``perceiver.norm.*``; blocks as
  ``lang_encoder.gated_cross_attn_layers.{i}.{attn.*,attn_gate,ff.*,ff_gate}`` — a list over all
  decoder layers with ``None`` where no block sits (``(i + 1) % every != 0``), so only some indices
  appear — and, since each block is also registered inside its decoder layer, again as
  ``lang_encoder.<decoder layers>.{i}.gated_cross_attn_layer.*`` (a duplicate, checked equal).
* Otter (HF layout, from its OpenFlamingo conversion script): ``perceiver.layers.{i}.{to_q,…}.*`` and
  ``perceiver.layers.{i}.feed_forward.*``; blocks only inside the decoder layers, with ``ff`` renamed
  ``feed_forward`` (``ff_gate`` kept). Otter checkpoints may sit under another prefix: pass ``prefix``.

Block ``i`` maps to ``model.cross_attention[str(i)]`` (vpgkit places a block before decoder layer i
when ``(i + 1) % every == 0``, as OpenFlamingo does).

Embeddings: OpenFlamingo trains the LLM's input embedding matrix by default and its trainer always
saves it (``lang_encoder.model.embed_tokens.weight`` for LLaMA/OPT-style LMs, ``…transformer.wte.weight``
for MPT, ``…gpt_neox.embed_in.weight``); it is the only source of the added ``<image>`` /
``<|endofchunk|>`` rows. For an LM with tied embeddings the state dict also holds the output copy
(``lang_encoder.lm_head.weight``). These map to ``embed_tokens.weight`` / ``lm_head.weight``, the
LLM's own matrices (see :func:`~vpgkit.checkpoints.report.target_parts`), and, for a model with
:class:`~vpgkit.tokens.AddedTokens`, the added rows also to ``added_tokens.input_rows``. Other
``lang_encoder.*`` LLM weights are ignored with their reason. Otter's full checkpoints also hold its
``CLIPVisionModel`` (``vision_encoder.vision_model.*``): loaded into an
:class:`~vpgkit.backbones.HFCLIPVisionEncoder` when the model has one, else ignored; other
``vision_encoder.*`` keys (open_clip) are ignored. Learned frame / media-time embeddings
(``perceiver.frame_embs``, ``perceiver.media_time_embs``) have no vpgkit counterpart: unexpected.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch
from torch import nn

from ._io import FROZEN_LLM, read_checkpoint, take
from .report import CheckpointError, LoadReport, apply_state_dict, target_parts

EMBED = re.compile(r"lang_encoder\.(?:.+\.)?(embed_tokens|wte|embed_in)\.weight")
HEAD = re.compile(r"lang_encoder\.(lm_head|embed_out)\.weight")
DUPLICATE = "second copy of a gated block (OpenFlamingo registers each block twice); equal, loaded once"
PERCEIVER_ATTN = ("to_q.", "to_kv.", "to_out.", "norm_media.", "norm_latents.")


def _perceiver_key(rest: str) -> str | None:
    """vpgkit key for ``perceiver.<rest>``, or None if unknown."""
    if rest in ("latents",) or rest.startswith("norm."):
        return "perceiver." + rest
    m = re.fullmatch(r"layers\.(\d+)\.(.+)", rest)
    if m is None:
        return None
    i, sub = m.groups()
    if sub.startswith(("0.", "1.")):
        return f"perceiver.layers.{i}.{sub}"  # OpenFlamingo: already vpgkit's layout
    if sub.startswith(PERCEIVER_ATTN):
        return f"perceiver.layers.{i}.0.{sub}"  # Otter: attention flattened into the layer
    if sub.startswith("feed_forward."):
        return f"perceiver.layers.{i}.1.{sub.removeprefix('feed_forward.')}"
    return None


def _block_key(i: str, sub: str) -> str | None:
    if sub.startswith("feed_forward."):  # Otter renamed ff → feed_forward (but not ff_gate)
        sub = "ff." + sub.removeprefix("feed_forward.")
    if sub in ("attn_gate", "ff_gate") or sub.startswith(("attn.", "ff.")):
        return f"cross_attention.{i}.{sub}"
    return None


def openflamingo_filter_fn(
    state_dict: Mapping[str, torch.Tensor], prefix: str = ""
) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Map an OpenFlamingo / Otter state dict to ``perceiver.*`` and ``cross_attention.{i}.*`` keys.

    Args:
        state_dict: the checkpoint's tensors.
        prefix: removed from every key first (e.g. ``"module."`` or a wrapper's attribute path); keys
            without it are unexpected.
    """
    mapped: dict[str, torch.Tensor] = {}
    duplicates: dict[str, tuple[str, torch.Tensor]] = {}
    report = LoadReport(family="openflamingo")
    for original, value in state_dict.items():
        if prefix and not original.startswith(prefix):
            report.reject(original, f"outside the prefix {prefix!r}")
            continue
        key = original[len(prefix) :]
        if key.startswith("perceiver."):
            rest = key.removeprefix("perceiver.")
            dst = _perceiver_key(rest)
            if dst is not None:
                take(mapped, report, original, dst, value)
            elif rest in ("frame_embs", "media_time_embs"):
                report.reject(original, "learned frame / media-time embeddings: vpgkit's Perceiver has none")
            else:
                report.reject(original, "unknown Perceiver key")
        elif m := re.fullmatch(r"lang_encoder\.gated_cross_attn_layers\.(\d+)\.(.+)", key):
            dst = _block_key(*m.groups())
            if dst is None:
                report.reject(original, "unknown gated cross-attention key")
            else:
                take(mapped, report, original, dst, value)
        elif m := re.fullmatch(r"lang_encoder\..*?\.(\d+)\.gated_cross_attn_layer\.(.+)", key):
            dst = _block_key(*m.groups())
            if dst is None:
                report.reject(original, "unknown gated cross-attention key")
            else:
                duplicates[original] = (dst, value)
        elif EMBED.fullmatch(key):
            take(mapped, report, original, "embed_tokens.weight", value)
        elif HEAD.fullmatch(key):
            take(mapped, report, original, "lm_head.weight", value)
        elif key.startswith("lang_encoder."):
            if "additional_embedding" in key or "additional_fc" in key:
                report.ignore(
                    original,
                    "embeddings of OpenFlamingo's added tokens (<image>, <|endofchunk|>); "
                    "part of the LLM's vocabulary, load them with the LLM",
                )
            else:
                report.ignore(original, FROZEN_LLM)
        elif key.startswith("vision_encoder.vision_model."):  # Otter: a transformers CLIPVisionModel
            take(
                mapped,
                report,
                original,
                "vision.vision_model." + key.removeprefix("vision_encoder.vision_model."),
                value,
            )
        elif key.startswith("vision_encoder."):
            report.ignore(original, "frozen vision encoder (CLIP), load it from its own checkpoint")
        else:
            report.reject(original, "unknown OpenFlamingo / Otter key")
    # A block registered both in gated_cross_attn_layers and in its decoder layer is saved twice.
    for original, (dst, value) in duplicates.items():
        if dst not in mapped:
            take(mapped, report, original, dst, value)
        elif torch.equal(mapped[dst], value):
            report.ignore(original, DUPLICATE)
        else:
            report.reject(original, f"differs from the other copy of {dst}")
    return mapped, report


def load_openflamingo(
    target: nn.Module | Mapping[str, nn.Module],
    path: str | os.PathLike,
    prefix: str = "",
    strict: bool = True,
    embeddings: str = "full",
) -> LoadReport:
    """Load an OpenFlamingo / Otter checkpoint: Perceiver, gated blocks and the trained embeddings.

    Args:
        target: a VisionLanguageModel of the cross-attention composition (or
            ``{"perceiver": …, "cross_attention": nn.ModuleDict}``). Its LLM must already hold the
            checkpoint's vocabulary: build it with :class:`~vpgkit.tokens.AddedTokens` for
            OpenFlamingo's added tokens (``<|endofchunk|>``, ``<image>``, and ``<PAD>`` for LMs without
            a pad token, in that order).
        path: ``checkpoint.pt`` (read with ``weights_only=True``; a trainer checkpoint's
            ``model_state_dict`` entry is taken) or safetensors.
        prefix: see :func:`openflamingo_filter_fn`.
        strict: raise on unexpected or missing keys (shape mismatches always raise).
        embeddings: ``"full"`` — the trained input embedding matrix goes into the LLM (OpenFlamingo
            trains every row) and its added rows into ``added_tokens``; ``"added"`` — only the added
            rows are loaded, the other rows keep the base LLM's values (the report says how far the
            checkpoint's rows are from them).

    Raises:
        CheckpointError: unreadable file, shape mismatch (e.g. a vocabulary without the added tokens),
            or (strict) unexpected / missing keys.

    Example:
        >>> report = load_openflamingo(model, "OpenFlamingo-9B/checkpoint.pt")  # doctest: +SKIP
        >>> print(report.summary())                                              # doctest: +SKIP
    """
    return load_openflamingo_state(target, read_checkpoint(path), str(path), prefix, strict, embeddings)


def load_openflamingo_state(
    target: nn.Module | Mapping[str, nn.Module],
    state_dict: Mapping[str, torch.Tensor],
    source: str = "state dict",
    prefix: str = "",
    strict: bool = True,
    embeddings: str = "full",
) -> LoadReport:
    """:func:`load_openflamingo` on a state dict already in memory (``source`` names it in messages)."""
    if embeddings not in ("full", "added"):
        raise ValueError(f"load_openflamingo: embeddings must be 'full' or 'added', got {embeddings!r}")
    mapped, report = openflamingo_filter_fn(state_dict, prefix)
    report.source = source
    _place_vision(target, mapped, report)
    _place_embeddings(target, mapped, report, embeddings)
    return apply_state_dict(target, mapped, report, strict)


def _place_vision(
    target: nn.Module | Mapping[str, nn.Module], mapped: dict[str, torch.Tensor], report: LoadReport
) -> None:
    """Keep Otter's CLIP weights only for a model with an :class:`HFCLIPVisionEncoder` (in place)."""
    from ..backbones.clip_vision import HFCLIPVisionEncoder

    keys = [k for k in mapped if k.startswith("vision.")]
    if not keys or isinstance(target_parts(target).get("vision"), HFCLIPVisionEncoder):
        return
    source_of = {dst: src for src, dst in report.renamed.items()}
    for key in keys:
        src = source_of[key]
        report.renamed.pop(src)
        del mapped[key]
        report.ignore(
            src,
            "Otter's CLIP vision tower; the model has no HFCLIPVisionEncoder to load it into "
            "(HFCLIPVisionEncoder.from_pretrained reads it too)",
        )


def _place_embeddings(
    target: nn.Module | Mapping[str, nn.Module],
    mapped: dict[str, torch.Tensor],
    report: LoadReport,
    mode: str,
) -> None:
    """Fit ``embed_tokens.weight`` / ``lm_head.weight`` to the target's LLM and added tokens (in place)."""
    if "embed_tokens.weight" not in mapped and "lm_head.weight" not in mapped:
        return
    source_of = {dst: src for src, dst in report.renamed.items()}
    parts = target_parts(target)
    if "embed_tokens" not in parts:
        for key in ("embed_tokens.weight", "lm_head.weight"):
            if key in mapped:
                report.ignore(source_of[key], "LLM embedding matrix; the target has no LLM")
                report.renamed.pop(source_of[key])
                del mapped[key]
        return
    embed = parts["embed_tokens"].weight
    rows = mapped.get("embed_tokens.weight", mapped.get("lm_head.weight"))
    if rows.shape[0] != embed.shape[0]:
        raise CheckpointError(
            f"{report.source}: the checkpoint's embedding matrix has {rows.shape[0]} rows, the model's LLM "
            f"{embed.shape[0]}: build the model with the tokens the checkpoint added (vpgkit.tokens.AddedTokens; "
            "OpenFlamingo adds <|endofchunk|>, <image> and, without a pad token, <PAD>) after resizing the LLM "
            "to len(tokenizer) as OpenFlamingo does (that can shrink a padded vocabulary: MPT-7B's 50432 rows "
            "become 50280)"
        )
    head = parts.get("lm_head")
    tied = head is not None and head.weight is embed
    if "lm_head.weight" in mapped and tied:
        copy = mapped.pop("lm_head.weight")
        src = source_of["lm_head.weight"]
        report.renamed.pop(src)
        if "embed_tokens.weight" not in mapped:
            take(mapped, report, src, "embed_tokens.weight", copy)
        elif torch.equal(copy, mapped["embed_tokens.weight"]):
            report.ignore(src, "tied output copy of the input embedding matrix (equal); loaded once")
        else:
            report.reject(src, "differs from the input embedding matrix, but the model's LLM ties them")
    if "embed_tokens.weight" not in mapped:
        return  # only an output matrix of an untied LM: it loads as the LM head, nothing else to place
    added = parts.get("added_tokens")
    matrix = mapped["embed_tokens.weight"]
    if added is not None:
        ids = added.token_ids
        take(
            mapped,
            report,
            f"{source_of['embed_tokens.weight']}[added rows]",
            "added_tokens.input_rows",
            matrix[ids],
        )
        if added.output_rows is not None:
            out = mapped.get("lm_head.weight", matrix if "lm_head.weight" not in mapped and tied else None)
            if out is not None:
                take(mapped, report, "lm_head rows of the added tokens", "added_tokens.output_rows", out[ids])
        report.note(
            f"added tokens {dict(zip(added.config.tokens, added.config.ids, strict=True))}: rows taken from the checkpoint's "
            "trained embedding matrix"
        )
    if mode == "added":
        src = source_of["embed_tokens.weight"]
        base = embed.shape[0] if added is None else added.config.base_vocab_size
        diff = (matrix[:base].float() - embed[:base].float()).abs().max().item() if base else 0.0
        report.renamed.pop(src)
        del mapped["embed_tokens.weight"]
        report.ignore(
            src,
            f"embeddings='added': rows of the base vocabulary not loaded (they differ from the LLM's by "
            f"up to {diff:.3g})",
        )
        if "lm_head.weight" in mapped:
            head_src = source_of["lm_head.weight"]
            report.renamed.pop(head_src)
            del mapped["lm_head.weight"]
            report.ignore(head_src, "embeddings='added': the LM head's base rows are not loaded either")
    else:
        report.note(
            f"LLM input embeddings: the checkpoint's trained matrix ({matrix.shape[0]} × {matrix.shape[1]}) "
            "was loaded into the LLM (OpenFlamingo trains every row); save_adapter keeps only the added rows"
        )
    if head is not None and not tied and "lm_head.weight" not in mapped:
        report.note(
            "LM head: not in the checkpoint (OpenFlamingo saves no output matrix for an untied LM); the rows of "
            "added tokens keep vpgkit's values (see AddedTokens' output mode)"
        )
