"""Adapter checkpoints: only the trainable weights of a VisionLanguageModel, plus what they fit.

A directory written by :func:`save_adapter`::

    vpgkit_config.json     schema_version, module configs, image_token_id, trainable parts, base fingerprint
    adapter.safetensors    exactly model.trainable_parameters(), LoRA excluded
    lora/                  peft's own format (model.llm.save_pretrained), only when the LLM has LoRA
    README.md              model card (written by vpgkit.checkpoints.publish, not by save_adapter)

``VisionLanguageModel`` keeps no build config, so the config is derived from the model's modules.
:func:`load_adapter` checks the schema, the base fingerprint, the module configs and every key and
shape before it touches a weight.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..fileio import mkdtemp, share_tree
from .fingerprint import base_fingerprint, check_base
from .report import CheckpointError, LoadReport, listing

SCHEMA_VERSION = 1
CONFIG_NAME = "vpgkit_config.json"
WEIGHTS_NAME = "adapter.safetensors"
LORA_DIR = "lora"
FORMAT = "vpgkit-adapter"
# Config fields that change neither a weight's shape nor the eval-mode output of loaded weights: runtime
# settings, and init-only ones (adapters saved before such a field existed do not list it).
RUNTIME_FIELDS = {"attn_implementation", "dropout", "attention_dropout", "guidance_init_std"}


# --------------------------------------------------------------------------------------- config


def _is_peft(llm: nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(llm, PeftModel)


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors :func:`save_adapter` writes: every trainable parameter except the LLM's peft (LoRA) ones."""
    lora = _is_peft(model.llm)
    return {
        name: p for name, p in model.trainable_parameters().items() if not (lora and name.startswith("llm."))
    }


def module_configs(model: nn.Module) -> dict[str, dict[str, Any] | None]:
    """Plain-JSON configs of the model's plug-ins by slot (and of its added tokens), derived from the
    plug-ins present: ``{slot: plugin.config_dict()}``, None for registered slots the model does not use."""
    from ..plugins import plugin_slots

    # Every registered slot is listed, null when unused: the layout adapters have had since schema 1.
    configs: dict[str, dict[str, Any] | None] = dict.fromkeys(sorted(plugin_slots()))
    configs.update({p.slot: p.config_dict() for p in model.plugins})
    added = getattr(model, "added_tokens", None)
    configs["added_tokens"] = added.config.to_dict() if added is not None else None
    return configs


def plugin_names(model: nn.Module) -> dict[str, str]:
    """Slot → registered plug-in name (or ``module:Class`` for an unregistered one), for the config."""
    return {p.slot: p.name or f"{type(p).__module__}:{type(p).__qualname__}" for p in model.plugins}


def adapter_config(model: nn.Module) -> dict[str, Any]:
    """The ``vpgkit_config.json`` of ``model``, derived from its modules (see the module docstring)."""
    from .. import __version__

    trainable = model.trainable_parameters()
    lora = _is_peft(model.llm)
    parts = sorted({name.split(".", 1)[0] for name in trainable})
    return {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "vpgkit_version": __version__,
        "image_token_id": model.image_token_id,
        "modules": module_configs(model),
        "plugins": plugin_names(model),
        "trainable": {
            "parts": parts,
            "train_vpg_projection": "vpg.language_projection.weight" in trainable,
            "lora": lora,
            "tensors": len(adapter_state_dict(model)),
            "parameters": sum(p.numel() for p in trainable.values()),
        },
        "base": base_fingerprint(model),
        "weights": WEIGHTS_NAME,
    }


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    """Read and validate ``vpgkit_config.json`` (format and schema version)."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{directory}: not a vpgkit adapter (no {CONFIG_NAME})")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: invalid JSON ({err})") from err
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a vpgkit adapter config (format is not {FORMAT!r})")
    version = config.get("schema_version")
    if version != SCHEMA_VERSION:
        raise CheckpointError(
            f"{path}: adapter config schema_version {version!r}, but this vpgkit reads schema_version "
            f"{SCHEMA_VERSION}; use the vpgkit version that wrote it ({config.get('vpgkit_version', 'unknown')})"
        )
    return config


# ----------------------------------------------------------------------------------------- save


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike):
    """Yield a temporary directory next to ``target``; on success it replaces ``target`` by renames.

    An existing ``target`` is moved aside only once the new content is complete, and removed after
    the swap; on any error the temporary directory is deleted and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        old = None
        if target.exists():
            old = Path(mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            old.rmdir()
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            if old is not None:
                os.replace(old, target)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _fsync_tree(directory: Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())


def _check_replaceable(target: Path) -> None:
    if target.is_file():
        raise CheckpointError(f"{target}: exists and is a file, not an adapter directory")
    if target.is_dir() and any(target.iterdir()) and not (target / CONFIG_NAME).is_file():
        raise CheckpointError(
            f"{target}: exists, is not empty and holds no {CONFIG_NAME}; refusing to replace it"
        )


def write_adapter_files(model: nn.Module, directory: Path) -> dict[str, Any]:
    """Write config, weights and ``lora/`` into an existing directory (no atomicity; see save_adapter)."""
    from safetensors.torch import save_file

    config = adapter_config(model)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in adapter_state_dict(model).items()}
    save_file(
        tensors,
        str(directory / WEIGHTS_NAME),
        metadata={"format": "pt", "vpgkit_schema_version": str(SCHEMA_VERSION)},
    )
    if config["trainable"]["lora"]:
        model.llm.save_pretrained(str(directory / LORA_DIR))
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    share_tree(directory)  # safetensors (and peft through it) write 0600 whatever the umask
    return config


def save_adapter(
    model: nn.Module, directory: str | os.PathLike, extra_files: dict[str, str] | None = None
) -> Path:
    """Save the trainable weights of ``model`` (a VisionLanguageModel) as an adapter directory.

    The files are written into a temporary directory next to ``directory`` and renamed into place,
    so a crash never leaves a half-written adapter and an existing adapter is replaced only once the
    new one is complete.

    Args:
        model: the model whose ``trainable_parameters()`` to save.
        directory: target directory (created; an existing adapter there is replaced).
        extra_files: file name → text to write alongside (e.g. ``{"README.md": card}``).

    Returns:
        The adapter directory.

    Example:
        >>> save_adapter(model, "runs/vpgc/adapter")  # doctest: +SKIP
    """
    target = Path(directory)
    _check_replaceable(target)
    with atomic_directory(target) as tmp:
        write_adapter_files(model, tmp)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
        _fsync_tree(tmp)
    return target


# ----------------------------------------------------------------------------------------- load


_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def resolve_adapter_dir(
    dir_or_repo_id: str | os.PathLike, revision: str | None = None, cache_dir: str | None = None
) -> Path:
    """A local adapter directory, or a hub repo id fetched with ``huggingface_hub.snapshot_download``.

    ``snapshot_download`` honours ``HF_HUB_OFFLINE=1`` (then only the local cache is read) and
    ``HF_HUB_CACHE`` / ``HF_HOME``.
    """
    path = Path(dir_or_repo_id)
    if path.is_dir():
        return path
    text = str(dir_or_repo_id)
    if path.exists() or not _REPO_ID.match(text) or text.startswith((".", "/")):
        raise CheckpointError(f"{text}: not an adapter directory, nor a hub repo id of the form 'owner/name'")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(text, revision=revision, cache_dir=cache_dir))
    except Exception as err:  # network, offline-mode cache miss, missing repo
        raise CheckpointError(
            f"{text}: could not fetch the adapter from the hub ({type(err).__name__}: {err})"
        ) from err


def _config_problems(saved: dict[str, Any], model: nn.Module) -> tuple[list[str], list[str]]:
    """(structural problems, field differences) between the saved module configs and ``model``'s."""
    current = module_configs(model)
    structural, fields = [], []
    # An absent slot and a null one are the same (adapters before plug-ins listed every slot, null if unused).
    for name in sorted(set(saved["modules"]) | set(current)):
        s, c = saved["modules"].get(name), current.get(name)
        if (s is None) != (c is None):
            structural.append(
                f"adapter {'has' if s is not None else 'has no'} {name}, the model {'has' if c is not None else 'has no'}"
            )
            continue
        if s is None:
            continue
        for key in sorted(set(s) | set(c)):
            if key not in RUNTIME_FIELDS and s.get(key) != c.get(key):
                fields.append(f"{name}.{key}: adapter {s.get(key)!r}, model {c.get(key)!r}")
    if saved.get("image_token_id") != model.image_token_id:
        fields.append(f"image_token_id: adapter {saved.get('image_token_id')}, model {model.image_token_id}")
    return structural, fields


def _open_safetensors(path: Path):
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointError(f"{path}: missing weights file")
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except Exception as err:
        raise CheckpointError(
            f"{path}: cannot read safetensors file (truncated or corrupt?): {type(err).__name__}: {err}"
        ) from err


def read_safetensors(path: Path, keys: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Read ``keys`` (default: all) from a safetensors file; a corrupt file is an error naming it."""
    with _open_safetensors(path) as f:
        names = list(f.keys()) if keys is None else keys
        try:
            return {k: f.get_tensor(k) for k in names}
        except Exception as err:
            raise CheckpointError(
                f"{path}: cannot read tensors (truncated or corrupt?): {type(err).__name__}: {err}"
            ) from err


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Key → shape from a safetensors header, without reading any tensor."""
    with _open_safetensors(path) as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)


def load_adapter(
    model: nn.Module,
    dir_or_repo_id: str | os.PathLike,
    strict: bool = True,
    revision: str | None = None,
    cache_dir: str | None = None,
) -> LoadReport:
    """Load an adapter saved by :func:`save_adapter` into ``model`` (a VisionLanguageModel).

    Checked before any weight is touched, in order: the config's schema version; the base
    fingerprint (the LLM's and vision encoder's shapes — another base is an error naming both);
    the plug-in modules present and their configs; every key and shape in the weights file.

    Args:
        model: the model to load into; its trainable weights (and LoRA) are overwritten.
        dir_or_repo_id: an adapter directory, or a hub repo id (``snapshot_download``; honours
            ``HF_HUB_OFFLINE=1`` and the local cache).
        strict: raise on missing or unexpected keys and on differing module config fields (image
            token id, VPG-C layer …); with ``False`` these are reported and the rest is loaded.
            Shape mismatches and another base always raise.
        revision, cache_dir: passed to ``snapshot_download`` for hub repos.

    Returns:
        A :class:`LoadReport` of what was loaded and ignored.

    Example:
        >>> report = load_adapter(model, "runs/vpgc/adapter")  # doctest: +SKIP
    """
    directory = resolve_adapter_dir(dir_or_repo_id, revision, cache_dir)
    source = str(dir_or_repo_id)
    report = LoadReport(source=source, family="adapter")
    config = read_config(directory)
    for note in check_base(config["base"], model, source):
        report.note(note)
    structural, fields = _config_problems(config, model)
    if structural:
        raise CheckpointError(f"{source}: adapter does not fit the model: " + "; ".join(structural))
    if fields:
        if strict:
            raise CheckpointError(
                f"{source}: module configs differ (pass strict=False to load anyway): " + "; ".join(fields)
            )
        report.notes.extend(f"config differs: {f}" for f in fields)

    weights = directory / config.get("weights", WEIGHTS_NAME)
    shapes = safetensors_shapes(weights)
    expected = adapter_state_dict(model)
    wrong = [
        f"{k}: adapter {shapes[k]}, model {tuple(expected[k].shape)}"
        for k in sorted(set(shapes) & set(expected))
        if shapes[k] != tuple(expected[k].shape)
    ]
    if wrong:
        raise CheckpointError(f"{weights}: shape mismatches (nothing loaded): {listing(wrong)}")
    for k in sorted(set(shapes) - set(expected)):
        report.reject(k, "not a trainable (non-LoRA) parameter of this model")
    report.missing.extend(sorted(set(expected) - set(shapes)))

    lora_dir = directory / LORA_DIR
    lora_weights = None
    if config["trainable"].get("lora"):
        if not lora_dir.is_dir():
            raise CheckpointError(f"{source}: config says the adapter has LoRA, but {lora_dir} is missing")
        from peft.utils import load_peft_weights

        lora_weights = load_peft_weights(str(lora_dir), device="cpu")
        _check_lora(model, lora_weights, lora_dir, report)
    elif _is_peft(model.llm):
        report.missing.append("llm LoRA weights (the model has LoRA, the adapter has no lora/)")
    if strict and not report.ok:
        raise CheckpointError(
            f"strict load refused (pass strict=False to load the rest):\n{report.summary()}"
        )

    # Everything is checked: from here on weights are written.
    tensors = read_safetensors(weights, sorted(set(shapes) & set(expected)))
    with torch.no_grad():
        for key, value in tensors.items():
            expected[key].copy_(value.to(expected[key].dtype))
            report.loaded.append(key)
    if lora_weights is not None:
        _load_lora(model, lora_dir, lora_weights, report)
    return report


def _check_lora(model, weights: dict[str, torch.Tensor], lora_dir: Path, report: LoadReport) -> None:
    """Compare saved LoRA keys and shapes with the model's peft adapter, when it has one already."""
    if not _is_peft(model.llm):
        return  # PeftModel.from_pretrained builds the adapter from lora/adapter_config.json
    from peft import get_peft_model_state_dict

    current = get_peft_model_state_dict(model.llm)
    wrong = [
        f"{k}: adapter {tuple(weights[k].shape)}, model {tuple(current[k].shape)}"
        for k in sorted(set(weights) & set(current))
        if weights[k].shape != current[k].shape
    ]
    if wrong:
        raise CheckpointError(f"{lora_dir}: LoRA shape mismatches (nothing loaded): {listing(wrong)}")
    for k in sorted(set(weights) - set(current)):
        report.reject(f"lora/{k}", "not a LoRA parameter of this model's peft config")
    report.missing.extend(f"lora/{k}" for k in sorted(set(current) - set(weights)))


def _load_lora(model, lora_dir: Path, weights: dict[str, torch.Tensor], report: LoadReport) -> None:
    from peft import PeftModel, set_peft_model_state_dict

    if not _is_peft(model.llm):
        # Wrap in place: peft swaps the decoder's Linear layers inside their modules, so the
        # VPG-C / cross-attention hooks on the decoder layers stay where they are.
        model.llm = PeftModel.from_pretrained(model.llm, str(lora_dir), is_trainable=True)
        model.train(model.training)
        report.loaded.append(f"llm LoRA ({len(weights)} tensors from lora/, wrapped with peft)")
        return
    set_peft_model_state_dict(model.llm, weights)
    report.loaded.append(f"llm LoRA ({len(weights)} tensors from lora/)")
