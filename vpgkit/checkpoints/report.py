"""What a checkpoint load did: which keys were loaded, which were ignored and why, what was missing.

Every converter returns a :class:`LoadReport` next to its mapped state dict; :func:`apply_state_dict`
then loads the mapped tensors into vpgkit modules and completes the same report. Nothing is dropped
silently: a source key is either mapped (``renamed``), ignored with a reason (``ignored``), or
not understood (``unexpected``, an error unless ``strict=False``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn


class CheckpointError(ValueError):
    """A checkpoint does not fit the model (wrong base, schema, keys or shapes) or cannot be read."""


@dataclass
class LoadReport:
    """Account of one checkpoint load.

    Attributes:
        source: the file, directory or repo the weights came from.
        family: converter name (``"lavis"``, ``"hf_blip2"``, ``"openflamingo"``, ``"cheetah"``, ``"adapter"``).
        renamed: source key → target key for every mapped tensor.
        loaded: target keys whose values were copied into the model.
        ignored: source key → reason, for keys deliberately not loaded.
        unexpected: source key → reason, for keys the converter or the model could not place.
        missing: target keys the model expected from this checkpoint but did not get.
        notes: decisions worth knowing (e.g. which projection was taken as which, by shape).
    """

    source: str = ""
    family: str = ""
    renamed: dict[str, str] = field(default_factory=dict)
    loaded: list[str] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)
    unexpected: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def ignore(self, key: str, reason: str) -> None:
        self.ignored[key] = reason

    def reject(self, key: str, reason: str) -> None:
        self.unexpected[key] = reason

    def note(self, text: str) -> None:
        self.notes.append(text)

    @property
    def ok(self) -> bool:
        """True when nothing was unexpected or missing."""
        return not self.unexpected and not self.missing

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "family": self.family,
            "loaded": sorted(self.loaded),
            "ignored": dict(sorted(self.ignored.items())),
            "unexpected": dict(sorted(self.unexpected.items())),
            "missing": sorted(self.missing),
            "notes": list(self.notes),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def summary(self, limit: int = 8) -> str:
        """Human-readable account, ignored keys grouped by reason."""
        lines = [f"{self.family or 'checkpoint'} load from {self.source}: {len(self.loaded)} tensors loaded"]
        for title, reasons in (("ignored", self.ignored), ("unexpected", self.unexpected)):
            groups: dict[str, list[str]] = defaultdict(list)
            for key, reason in reasons.items():
                groups[reason].append(key)
            for reason, keys in sorted(groups.items()):
                lines.append(f"  {title} {len(keys)} ({reason}): {listing(sorted(keys), limit)}")
        if self.missing:
            lines.append(f"  missing {len(self.missing)}: {listing(sorted(self.missing), limit)}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def listing(items: list[str], limit: int = 20) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", … ({len(items) - limit} more)" if len(items) > limit else "")


# ------------------------------------------------------------------------------------- applying


def target_parts(target: nn.Module | Mapping[str, nn.Module]) -> dict[str, nn.Module]:
    """The modules a mapped state dict addresses, by their top-level name.

    A :class:`~vpgkit.model.VisionLanguageModel` gives its plug-ins' modules by slot (``model.plugin_modules()``),
    ``vision`` and ``added_tokens`` (those it has) and its LLM's ``embed_tokens``
    and ``lm_head`` (key ``weight``: the input and output embedding matrices); a mapping such as ``{"vpg": qformer}`` is taken
    as is, so converters also load into standalone modules.
    """
    if isinstance(target, Mapping):
        return {k: v for k, v in target.items() if v is not None}
    parts = dict(target.plugin_modules()) if hasattr(target, "plugin_modules") else {}
    for name in ("vision", "added_tokens"):
        if isinstance(getattr(target, name, None), nn.Module):
            parts[name] = getattr(target, name)
    llm = getattr(target, "llm", None)
    if isinstance(llm, nn.Module) and hasattr(llm, "get_input_embeddings"):
        # The LLM's (frozen) embedding matrices, for releases that ship trained ones (OpenFlamingo).
        from ..backbones.language import base_causal_lm

        lm = base_causal_lm(llm)
        parts["embed_tokens"] = lm.get_input_embeddings()
        if lm.get_output_embeddings() is not None:
            parts["lm_head"] = lm.get_output_embeddings()
    if not parts:
        raise TypeError(
            f"cannot load into {type(target).__name__}: give a VisionLanguageModel or a mapping "
            "like {'vpg': qformer, 'vision': encoder}"
        )
    return parts


def apply_state_dict(
    target: nn.Module | Mapping[str, nn.Module],
    mapped: Mapping[str, torch.Tensor],
    report: LoadReport,
    strict: bool = True,
    required: Mapping[str, str] | None = None,
) -> LoadReport:
    """Copy converter output (keys ``part.rest``) into ``target``, checking everything first.

    No weight is touched until every key is placed and every shape checked. By default a part
    (``vpg``, ``vpgc`` …) that receives at least one key must receive all of its keys: the rest are
    ``missing``.

    Args:
        target: a VisionLanguageModel, or a mapping part name → module.
        mapped: converter output.
        report: the converter's report; completed here and returned.
        strict: raise on unexpected or missing keys (always raises on shape mismatches).
        required: key prefix (``"vpgc"``, ``"vpg.language_projection"``) → reason, for what the
            checkpoint must provide entirely. Default: every part that received a key.

    Raises:
        CheckpointError: shape mismatch (always), unexpected or missing keys (``strict``).
    """
    parts = target_parts(target)
    expected: dict[str, dict[str, torch.Tensor]] = {
        name: module.state_dict() for name, module in parts.items()
    }
    by_part: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    source_of = {dst: src for src, dst in report.renamed.items()}
    wrong: list[str] = []
    for key, value in mapped.items():
        part, _, rest = key.partition(".")
        src = source_of.get(key, key)
        if part not in parts:
            report.reject(src, f"mapped to {key}, but the model has no {part!r}")
            continue
        if rest not in expected[part]:
            report.reject(src, f"mapped to {key}, which {type(parts[part]).__name__} does not have")
            continue
        want = expected[part][rest]
        if tuple(value.shape) != tuple(want.shape):
            wrong.append(f"{src} → {key}: checkpoint {tuple(value.shape)}, model {tuple(want.shape)}")
            continue
        by_part[part][rest] = value
    if wrong:
        raise CheckpointError(
            f"{report.source}: {len(wrong)} shape mismatches (never loaded): {listing(wrong)}"
        )
    # Which keys must be complete: the given prefixes, or every part that received a key.
    prefixes = dict(required) if required is not None else {part: part for part in by_part}
    for prefix, why in sorted(prefixes.items()):
        part, _, sub = prefix.partition(".")
        if part not in expected:
            report.missing.append(f"{prefix}.* ({why}; the model has no {part!r})")
            continue
        got = by_part.get(part, {})
        report.missing.extend(
            f"{part}.{k}"
            for k in sorted(expected[part])
            if (not sub or k == sub or k.startswith(sub + ".")) and k not in got
        )
    if strict and not report.ok:
        raise CheckpointError(
            f"strict load refused (pass strict=False to load the rest):\n{report.summary()}"
        )
    with torch.no_grad():
        for part, values in by_part.items():
            module = parts[part]
            state = module.state_dict()
            for rest, value in values.items():
                state[rest].copy_(value.to(state[rest].dtype))
                report.loaded.append(f"{part}.{rest}")
    return report
