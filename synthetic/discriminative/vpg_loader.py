"""A small on-disk format for the VPG the discriminative pipeline reads attention from.

A VPG directory holds two files:

- ``vpg_config.json``: ``{"vision": {"class": "TimmEvaEncoder", "config": EvaVisionConfig.to_dict()},
  "qformer": QFormerConfig.to_dict()}`` (``"HFBlip2VisionEncoder"`` with a ``Blip2VisionEncoderConfig``
  works too);
- ``vpg.safetensors``: the vision encoder's ``state_dict()`` under ``vision.*`` and the Q-Former's under
  ``qformer.*``.

:func:`save_vpg` writes it (atomically), :func:`load_vpg` reads it, :func:`random_tiny_vpg` builds an
untrained tiny one for demos and tests (its attention is meaningless). The format is deliberately
minimal; a later change may fold it into vpgkit's adapter checkpoints.

Example:
    >>> import tempfile
    >>> vpg = random_tiny_vpg(seed=0)
    >>> d = tempfile.mkdtemp()
    >>> save_vpg(d, vpg.vision, vpg.qformer)
    >>> load_vpg(d).processor.size
    56
"""

from __future__ import annotations

import json
import os
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from vpgkit.backbones import (
    Blip2VisionEncoderConfig,
    EvaVisionConfig,
    HFBlip2VisionEncoder,
    ImageProcessor,
    TimmEvaEncoder,
    VisionEncoder,
)
from vpgkit.fileio import mkstemp, share
from vpgkit.modules import QFormer, QFormerConfig

from ..storage import atomic_write_json

CONFIG_FILE = "vpg_config.json"
WEIGHTS_FILE = "vpg.safetensors"
VISION_CLASSES: dict[str, tuple[type[VisionEncoder], type]] = {
    "TimmEvaEncoder": (TimmEvaEncoder, EvaVisionConfig),
    "HFBlip2VisionEncoder": (HFBlip2VisionEncoder, Blip2VisionEncoderConfig),
}


@dataclass
class VPG:
    """A frozen vision encoder + Q-Former and the image processor matching the encoder.

    Attributes:
        vision: the encoder, (B, T_img, 3, S, S) → (B, T_img, N_v, D_v).
        qformer: the Q-Former reading those features.
        processor: :class:`ImageProcessor` at the encoder's ``image_size``.
        description: where it came from (printed by the CLI and stored in the run summary).
    """

    vision: VisionEncoder
    qformer: QFormer
    processor: ImageProcessor
    description: str


def _frozen(module: nn.Module) -> nn.Module:
    module.requires_grad_(False)
    return module.eval()


def save_vpg(directory: str | os.PathLike, vision: VisionEncoder, qformer: QFormer) -> None:
    """Write ``vpg_config.json`` + ``vpg.safetensors`` to ``directory`` (each file atomically)."""
    name = type(vision).__name__
    if name not in VISION_CLASSES:
        raise TypeError(
            f"save_vpg: vision encoder {name} is not supported; expected one of {sorted(VISION_CLASSES)}"
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"vision.{k}": v for k, v in vision.state_dict().items()}
    tensors.update({f"qformer.{k}": v for k, v in qformer.state_dict().items()})
    fd, tmp = mkstemp(dir=directory, prefix=f".{WEIGHTS_FILE}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp)
        share(tmp)  # safetensors writes 0600
        os.replace(tmp, directory / WEIGHTS_FILE)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    config = {
        "vision": {"class": name, "config": vision.config.to_dict()},
        "qformer": qformer.config.to_dict(),
    }
    atomic_write_json(directory / CONFIG_FILE, config)


def load_vpg(directory: str | os.PathLike, dtype: torch.dtype = torch.float32) -> VPG:
    """Read a VPG directory written by :func:`save_vpg`; every key is checked (strict).

    Args:
        directory: holds ``vpg_config.json`` and ``vpg.safetensors``.
        dtype: dtype of the vision encoder (bf16 is ~6× faster on CPUs with AMX); the Q-Former stays fp32.
    """
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for p in (config_path, weights_path):
        if not p.is_file():
            raise FileNotFoundError(
                f"VPG directory {directory}: missing {p.name} (expected {CONFIG_FILE} + {WEIGHTS_FILE}, "
                "see synthetic/discriminative/vpg_loader.py)"
            )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        vision_class = config["vision"]["class"]
        vision_cfg = config["vision"]["config"]
        qformer_cfg = QFormerConfig.from_dict(config["qformer"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(
            f"{config_path}: expected {{'vision': {{'class', 'config'}}, 'qformer': {{…}}}}; problem: {e!r}"
        ) from None
    if vision_class not in VISION_CLASSES:
        raise ValueError(
            f"{config_path}: vision.class {vision_class!r} is not one of {sorted(VISION_CLASSES)}"
        )
    cls, cfg_cls = VISION_CLASSES[vision_class]
    vision = cls(cfg_cls.from_dict(vision_cfg), dtype=dtype)
    qformer_cfg.attn_implementation = "sdpa"  # maps are recomputed exactly by QFormer's hooks anyway
    qformer = QFormer(qformer_cfg)
    state = load_file(weights_path)
    for prefix, module in (("vision.", vision), ("qformer.", qformer)):
        part = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        try:
            module.load_state_dict({k: v.to(next(module.parameters()).dtype) for k, v in part.items()})
        except RuntimeError as e:
            raise ValueError(
                f"{weights_path}: the {prefix[:-1]} weights do not match {CONFIG_FILE}: {e}"
            ) from None
    stray = sorted(k for k in state if not k.startswith(("vision.", "qformer.")))
    if stray:
        raise ValueError(f"{weights_path}: unexpected keys (expected vision.* / qformer.*): {stray[:10]}")
    return VPG(
        _frozen(vision), _frozen(qformer), ImageProcessor(size=vision.image_size), f"VPG from {directory}"
    )


def random_tiny_vpg(seed: int = 0, image_size: int = 56) -> VPG:
    """An untrained tiny EVA (width 32, 14-px patches) + tiny Q-Former; for demos and tests only.

    Args:
        seed: torch seed of the random weights.
        image_size: encoder input size; the attention grid is (image_size / 14)².
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        vision = TimmEvaEncoder(EvaVisionConfig.preset("tiny", image_size=image_size))
        qformer = QFormer(QFormerConfig.preset("tiny"))
    return VPG(
        vision,
        _frozen(qformer),
        ImageProcessor(size=image_size),
        f"random tiny VPG (seed {seed}, untrained: attention maps are NOT meaningful)",
    )
