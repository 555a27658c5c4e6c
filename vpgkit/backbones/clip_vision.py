"""CLIP ViT (transformers ``CLIPVisionModel``) as the frozen encoder of Flamingo-style models.

Both originals drop the CLS token, so each 224 px image gives 16 × 16 = 256 tokens of width 1024, but they
read different tokens:

* OpenFlamingo uses open_clip's ViT-L/14 with ``output_tokens=True``: the final LayerNorm (``ln_post``)
  is applied to every token (``post_layernorm=True``, the default);
* Otter uses transformers' ``CLIPVisionModel`` and reads ``last_hidden_state[:, 1:]``, before any final
  norm (``post_layernorm=False``).

transformers applies its ``post_layernorm`` to the pooled CLS token only, so this encoder applies it to
all tokens itself when asked. Weights load from an HF ``CLIPVisionModel`` / ``CLIPModel`` directory
(:meth:`HFCLIPVisionEncoder.from_pretrained`) or an open_clip checkpoint with ``visual.*`` keys
(:meth:`HFCLIPVisionEncoder.from_open_clip`, key map in :func:`open_clip_to_hf_clip_vision`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

from ..modules.presets import PresetConfig
from .vision import VisionEncoder


@dataclass
class CLIPVisionEncoderConfig(PresetConfig):
    """Configuration of :class:`HFCLIPVisionEncoder` (transformers ``CLIPVisionConfig`` fields).

    Attributes:
        image_size: input height = width in pixels.
        patch_size: patch side; N_v = (image_size // patch_size)² (CLS dropped).
        width: D_v (``hidden_size``).
        depth: ``num_hidden_layers``.
        num_heads: ``num_attention_heads``.
        mlp_dim: ``intermediate_size``.
        hidden_act: activation (OpenAI CLIP: ``quick_gelu``; OpenCLIP-trained ViT-L/14: ``gelu``).
        post_layernorm: apply the final LayerNorm to every token (OpenFlamingo) or not (Otter).
    """

    image_size: int = 224
    patch_size: int = 14
    width: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_dim: int = 4096
    hidden_act: str = "quick_gelu"
    post_layernorm: bool = True

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # CLIP ViT-L/14 at 224 px, as OpenFlamingo-9B and Otter use it.
        "vit_l_14": {},
        # Otter's CLIPVisionModel (openai/clip-vit-large-patch14): tokens before the final norm.
        "otter_vit_l_14": {"post_layernorm": False},
        "tiny": {"image_size": 28, "width": 32, "depth": 2, "num_heads": 4, "mlp_dim": 64},
    }

    @property
    def num_tokens(self) -> int:
        """N_v: patch tokens (no CLS)."""
        return (self.image_size // self.patch_size) ** 2

    @classmethod
    def from_hf(cls, hf: CLIPVisionConfig, **overrides: Any) -> CLIPVisionEncoderConfig:
        """The config of a transformers ``CLIPVisionConfig``."""
        return cls(
            image_size=hf.image_size,
            patch_size=hf.patch_size,
            width=hf.hidden_size,
            depth=hf.num_hidden_layers,
            num_heads=hf.num_attention_heads,
            mlp_dim=hf.intermediate_size,
            hidden_act=hf.hidden_act,
            **overrides,
        )

    def to_hf(self) -> CLIPVisionConfig:
        """The equivalent transformers ``CLIPVisionConfig``."""
        return CLIPVisionConfig(
            hidden_size=self.width,
            intermediate_size=self.mlp_dim,
            num_hidden_layers=self.depth,
            num_attention_heads=self.num_heads,
            image_size=self.image_size,
            patch_size=self.patch_size,
            hidden_act=self.hidden_act,
        )


class HFCLIPVisionEncoder(VisionEncoder):
    """Frozen CLIP ViT returning patch tokens as OpenFlamingo (or, ``post_layernorm=False``, Otter) reads them.

    Example:
        >>> enc = HFCLIPVisionEncoder(CLIPVisionEncoderConfig.preset("tiny"))
        >>> enc(torch.randn(1, 2, 3, 28, 28)).shape     # (B, T_img, N_v, D_v), N_v = 2 × 2 patches
        torch.Size([1, 2, 4, 32])
    """

    def __init__(self, config: CLIPVisionEncoderConfig, dtype: torch.dtype = torch.float32):
        super().__init__(config.width, config.num_tokens, config.image_size)
        self.config = config
        self.vision_model = CLIPVisionModel(config.to_hf()).to(dtype)
        self._freeze()

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(M, 3, H, W) → (M, N_v, D_v): every patch token (after ``post_layernorm`` if configured)."""
        tokens = self.vision_model(pixel_values=images).last_hidden_state[:, 1:]
        return self.vision_model.post_layernorm(tokens) if self.config.post_layernorm else tokens

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike, dtype: torch.dtype = torch.float32, post_layernorm: bool = True
    ) -> HFCLIPVisionEncoder:
        """Load a local transformers ``CLIPVisionModel`` or ``CLIPModel`` directory (only its vision tower).

        Args:
            directory: holds ``config.json`` and the weights (``model.safetensors`` or ``pytorch_model.bin``).
            post_layernorm: see :class:`CLIPVisionEncoderConfig` (Otter: False).

        Raises:
            CheckpointError: not a CLIP directory, or weights missing for the vision tower.

        Example:
            >>> enc = HFCLIPVisionEncoder.from_pretrained("otter/vision_encoder", post_layernorm=False)  # doctest: +SKIP
        """
        from ..checkpoints.report import CheckpointError

        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise CheckpointError(f"{directory}: not a transformers CLIP directory (no config.json)")
        try:
            hf_config = CLIPVisionConfig.from_pretrained(directory, local_files_only=True)
        except Exception as err:
            raise CheckpointError(f"{directory}: config.json is not a CLIP (vision) config: {err}") from err
        config = CLIPVisionEncoderConfig.from_hf(hf_config, post_layernorm=post_layernorm)
        encoder = cls(config, dtype)
        try:
            loaded, info = CLIPVisionModel.from_pretrained(
                directory, local_files_only=True, dtype=dtype, output_loading_info=True
            )
        except Exception as err:
            raise CheckpointError(f"{directory}: cannot load the CLIP vision weights: {err}") from err
        if info["missing_keys"]:
            raise CheckpointError(
                f"{directory}: the vision tower's weights are missing: {sorted(info['missing_keys'])[:8]}"
            )
        encoder.vision_model.load_state_dict(loaded.state_dict())
        encoder._freeze()
        return encoder

    @classmethod
    def from_open_clip(
        cls,
        path: str | os.PathLike,
        config: CLIPVisionEncoderConfig,
        dtype: torch.dtype = torch.float32,
        prefix: str = "visual.",
    ) -> HFCLIPVisionEncoder:
        """Load an open_clip checkpoint's vision tower (``visual.*`` keys; safetensors or ``.bin``/``.pt``).

        Pickles are read with ``weights_only=True``; OpenAI's original TorchScript archives are not state
        dicts (open_clip re-publishes them as plain state dicts). The text tower is ignored.

        Args:
            path: the checkpoint file.
            config: the encoder's shapes (``CLIPVisionEncoderConfig.preset("vit_l_14")`` for OpenFlamingo;
                ``hidden_act="quick_gelu"`` for OpenAI weights, ``"gelu"`` for OpenCLIP-trained ones).
            prefix: where the vision tower sits in the state dict.

        Raises:
            CheckpointError: unreadable file, a key outside the known layout, or shapes that differ from
                ``config``.

        Example:
            >>> enc = HFCLIPVisionEncoder.from_open_clip(
            ...     "open_clip_pytorch_model.bin", CLIPVisionEncoderConfig.preset("vit_l_14"))  # doctest: +SKIP
        """
        from ..checkpoints._io import read_checkpoint
        from ..checkpoints.report import CheckpointError

        state = read_checkpoint(path)
        try:
            mapped, _ = open_clip_to_hf_clip_vision(state, prefix)
        except ValueError as err:
            raise CheckpointError(f"{path}: {err}") from err
        encoder = cls(config, dtype)
        expected = encoder.vision_model.state_dict()
        expected = {k: v for k, v in expected.items() if not k.endswith("position_ids")}
        wrong = [
            f"{k}: checkpoint {tuple(mapped[k].shape)}, config {tuple(v.shape)}"
            for k, v in expected.items()
            if k in mapped and mapped[k].shape != v.shape
        ]
        missing = sorted(set(expected) - set(mapped))
        unexpected = sorted(set(mapped) - set(expected))
        if wrong or missing or unexpected:
            raise CheckpointError(
                f"{path}: open_clip vision tower does not fit {config}: shape mismatches {wrong[:4]}, "
                f"missing {missing[:4]}, unexpected {unexpected[:4]}"
            )
        encoder.vision_model.load_state_dict(mapped, strict=False)
        encoder._freeze()
        return encoder


def open_clip_to_hf_clip_vision(
    state_dict: Mapping[str, torch.Tensor], prefix: str = "visual."
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Map open_clip's ``VisionTransformer`` keys to transformers' ``CLIPVisionTransformer`` keys.

    ==========================================================  =============================================
    ``class_embedding``, ``positional_embedding``, ``conv1``     ``embeddings.{class_embedding,
                                                                position_embedding.weight,patch_embedding}``
    ``ln_pre``, ``ln_post``                                      ``pre_layrnorm``, ``post_layernorm``
    ``transformer.resblocks.i.ln_1`` / ``ln_2``                  ``encoder.layers.i.layer_norm1`` / ``2``
    ``….attn.in_proj_{weight,bias}`` (3·D rows: q, k, v)         ``….self_attn.{q,k,v}_proj``
    ``….attn.out_proj``, ``….mlp.c_fc``, ``….mlp.c_proj``         ``….self_attn.out_proj``, ``….mlp.fc1``, ``fc2``
    ==========================================================  =============================================

    ``proj`` (the projection into the joint image-text space) and every key outside ``prefix`` (the
    text tower, ``logit_scale``) are returned as ignored with the reason.

    Returns:
        (HF state dict, ignored key → reason).

    Raises:
        ValueError: a key under ``prefix`` with no HF counterpart (e.g. an attention-pool or layer-scale
            variant), naming it.
    """
    fixed = {
        "class_embedding": "embeddings.class_embedding",
        "positional_embedding": "embeddings.position_embedding.weight",
        "conv1.weight": "embeddings.patch_embedding.weight",
    }
    norms = {"ln_pre": "pre_layrnorm", "ln_post": "post_layernorm"}
    block = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj"}
    block.update({"mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"})
    out: dict[str, torch.Tensor] = {}
    ignored: dict[str, str] = {}
    unknown: list[str] = []
    for full, value in state_dict.items():
        if not full.startswith(prefix):
            ignored[full] = "outside the vision tower (text tower / logit scale)"
            continue
        key = full[len(prefix) :]
        if key in fixed:
            out[fixed[key]] = value
        elif key == "proj":
            ignored[full] = (
                "projection to the joint image-text space; Flamingo models read the tokens before it"
            )
        elif (norm := key.split(".")[0]) in norms and key.count(".") == 1:
            out[f"{norms[norm]}.{key.split('.')[1]}"] = value
        elif m := re.fullmatch(r"transformer\.resblocks\.(\d+)\.(.+)", key):
            i, rest = m.groups()
            layer = f"encoder.layers.{i}."
            if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
                kind = rest.rsplit("_", 1)[1]
                for name, part in zip(("q", "k", "v"), value.chunk(3, dim=0), strict=True):
                    out[f"{layer}self_attn.{name}_proj.{kind}"] = part
                continue
            for src, dst in block.items():
                if rest.startswith(src + "."):
                    out[layer + dst + rest[len(src) :]] = value
                    break
            else:
                unknown.append(full)
        else:
            unknown.append(full)
    if unknown:
        raise ValueError(
            f"open_clip vision keys with no transformers CLIP counterpart: {sorted(unknown)[:8]}"
        )
    return out, ignored
