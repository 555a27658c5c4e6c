"""Frozen vision encoders: one interface over timm's EVA and transformers' ``Blip2VisionModel``.

BLIP-2, InstructBLIP and Cheetah all read EVA-CLIP-g: a 1408-wide ViT-g/14 of which the first 39 of 40
blocks are used, followed by a separate LayerNorm (``ln_vision``); every token (CLS + 16×16 patches at
224 px) is handed to the visual prompt generator. Two interchangeable backends compute it:

* :class:`TimmEvaEncoder` — timm's ``Eva``; loads LAVIS / EVA-CLIP state dicts (``visual_encoder.*``,
  ``ln_vision.*``) from ``.pth`` or safetensors without any key renaming inside the ViT.
* :class:`HFBlip2VisionEncoder` — transformers' ``Blip2VisionModel``; loads HF BLIP-2 vision weights.

:func:`~vpgkit.backbones.eva_keys.timm_eva_to_hf_blip2_vision` maps the first layout onto the second (every
EVA key map is in :mod:`vpgkit.backbones.eva_keys`); the tests check that both backends then produce the
same features.

Finding (timm/LAVIS vs HF): the two agree in everything (pre-norm blocks, exact-erf GELU, no layer scale,
LayerNorm eps 1e-6 inside the ViT, zero k bias) except the final norm's epsilon. LAVIS builds
``ln_vision`` as a plain ``LayerNorm`` (eps 1e-5), whereas HF's ``post_layernorm`` takes the config's
``layer_norm_eps`` (1e-6) like every block norm. :attr:`EvaVisionConfig.ln_vision_eps` therefore
defaults to LAVIS's 1e-5, and must be set to 1e-6 to reproduce the HF model exactly.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import torch
from timm.models.eva import Eva
from torch import nn
from transformers import Blip2VisionConfig, Blip2VisionModel

from ..modules.presets import PresetConfig
from ..modules.shapes import check_shape
from .eva_keys import eva_state_to_timm, timm_eva_to_hf_blip2_vision

__all__ = [
    "Blip2VisionEncoderConfig",
    "EvaVisionConfig",
    "HFBlip2VisionEncoder",
    "TimmEvaEncoder",
    "VisionEncoder",
    "load_state_dict_file",
    "timm_eva_to_hf_blip2_vision",
]


class VisionEncoder(nn.Module):
    """A frozen image encoder: (B, T_img, 3, H, W) pixels → (B, T_img, N_v, D_v) features.

    Subclasses build their modules, call :meth:`_freeze` and implement :meth:`encode_images`. The
    encoder is always frozen: its parameters never require grad, it stays in eval mode and its forward
    runs without autograd.

    Attributes:
        width: D_v, feature width.
        num_tokens: N_v, tokens per image (CLS + patches).
        image_size: H = W expected by the encoder.

    Example:
        >>> enc = TimmEvaEncoder(EvaVisionConfig.preset("tiny"))   # or HFBlip2VisionEncoder
        >>> feats = enc(torch.randn(2, 3, 3, 28, 28))             # (B, T_img, 3, H, W)
        >>> feats.shape, feats.requires_grad                       # (B, T_img, N_v, D_v)
        (torch.Size([2, 3, 5, 32]), False)
    """

    width: int
    num_tokens: int
    image_size: int

    def __init__(self, width: int, num_tokens: int, image_size: int):
        super().__init__()
        self.width = width
        self.num_tokens = num_tokens
        self.image_size = image_size

    def _freeze(self) -> None:
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> VisionEncoder:
        """Ignore ``mode``: the backbone stays in eval mode.

        A VLM calls ``.train()`` on itself to train its adapters; if that reached the frozen encoder,
        its dropout / drop-path would switch on and the features would become random and differ from
        those the pretrained model (and the adapters' other users) see.
        """
        return super().train(False)

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the encoder's weights, which is also the dtype of its output."""
        return next(self.parameters()).dtype

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Encode a flat batch: (M, 3, H, W) in the encoder's dtype → (M, N_v, D_v)."""
        raise NotImplementedError

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Encode T_img images per sample.

        Args:
            pixel_values: (B, T_img, 3, H, W) normalised images, H = W = ``image_size``
                (see :class:`vpgkit.backbones.ImageProcessor`).

        Returns:
            (B, T_img, N_v, D_v) features in the encoder's dtype, on its device.
        """
        size = self.image_size
        check_shape("pixel_values", pixel_values, ("B", "T_img", 3, size, size))
        b, t = pixel_values.shape[:2]
        weight = next(self.parameters())
        if b * t == 0:  # a batch without any image: nothing to encode (no dummy image)
            return torch.zeros(b, t, self.num_tokens, self.width, dtype=weight.dtype, device=weight.device)
        with torch.no_grad():
            flat = pixel_values.reshape(b * t, 3, size, size).to(weight.device, weight.dtype)
            features = self.encode_images(flat)
        return features.reshape(b, t, self.num_tokens, self.width)


# ----------------------------------------------------------------------------------------- timm EVA


@dataclass
class EvaVisionConfig(PresetConfig):
    """Configuration of :class:`TimmEvaEncoder` (EVA ViT + ``ln_vision``).

    Attributes:
        image_size: input height = width in pixels.
        patch_size: patch side in pixels; N_v = (image_size // patch_size)² + 1.
        width: D_v, embedding width.
        depth: number of transformer blocks built (BLIP-2 uses 39 of EVA-CLIP-g's 40).
        num_heads: attention heads.
        mlp_dim: hidden width of each block's MLP.
        norm_eps: epsilon of the LayerNorms inside the ViT (EVA: 1e-6).
        ln_vision_eps: epsilon of ``ln_vision`` after the blocks (LAVIS: 1e-5; HF's ``post_layernorm``
            uses 1e-6, see the module docstring).
    """

    image_size: int = 224
    patch_size: int = 14
    width: int = 1408
    depth: int = 39
    num_heads: int = 16
    mlp_dim: int = 6144
    norm_eps: float = 1e-6
    ln_vision_eps: float = 1e-5

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # EVA-CLIP-g as BLIP-2 / InstructBLIP / Cheetah use it: first 39 blocks + ln_vision, 257 tokens.
        "eva_clip_g": {},
        # Width 32 matches QFormerConfig.preset("tiny").vision_width; 5 tokens per image.
        "tiny": {"image_size": 28, "width": 32, "depth": 2, "num_heads": 4, "mlp_dim": 64},
        # The shipped tiny-world ViT (vpgkit/assets/tiny_world/eva.safetensors): 56 px, 7 px patches (65
        # tokens; with 14 px patches a probe read large objects' shapes at 40%, chance 25%), width 96.
        "tiny_world": {
            "image_size": 56,
            "patch_size": 7,
            "width": 96,
            "depth": 3,
            "num_heads": 4,
            "mlp_dim": 384,
        },
    }

    @property
    def num_tokens(self) -> int:
        """N_v: CLS + patches."""
        return (self.image_size // self.patch_size) ** 2 + 1

    def to_blip2_vision(self) -> Blip2VisionEncoderConfig:
        """The same architecture as a :class:`Blip2VisionEncoderConfig`.

        HF has a single epsilon for all norms, so this takes ``norm_eps``; outputs match exactly only
        when ``ln_vision_eps == norm_eps``.
        """
        return Blip2VisionEncoderConfig(
            image_size=self.image_size,
            patch_size=self.patch_size,
            width=self.width,
            depth=self.depth,
            num_heads=self.num_heads,
            mlp_dim=self.mlp_dim,
            layer_norm_eps=self.norm_eps,
        )


class TimmEvaEncoder(VisionEncoder):
    """EVA ViT (timm ``Eva``) followed by ``ln_vision``, frozen; returns every token.

    Submodules are named as in LAVIS's BLIP-2 (``visual_encoder``, ``ln_vision``), so
    ``state_dict()`` has LAVIS's key layout.

    Example:
        >>> enc = TimmEvaEncoder(EvaVisionConfig.preset("tiny"))
        >>> enc(torch.randn(2, 3, 3, 28, 28)).shape     # (B, T_img, N_v, D_v)
        torch.Size([2, 3, 5, 32])
    """

    def __init__(self, config: EvaVisionConfig, dtype: torch.dtype = torch.float32):
        super().__init__(config.width, config.num_tokens, config.image_size)
        self.config = config
        self.visual_encoder = Eva(
            img_size=config.image_size,
            patch_size=config.patch_size,
            embed_dim=config.width,
            depth=config.depth,
            num_heads=config.num_heads,
            mlp_ratio=config.mlp_dim / config.width,
            qkv_bias=True,  # EVA: learned q and v biases, k bias fixed at zero (a buffer in timm)
            norm_layer=partial(nn.LayerNorm, eps=config.norm_eps),
            num_classes=0,
            global_pool="",
            use_post_transformer_norm=False,  # BLIP-2 drops the ViT's own final norm; ln_vision replaces it
            dtype=dtype,
        )
        fc1 = self.visual_encoder.blocks[0].mlp.fc1
        if fc1.out_features != config.mlp_dim:  # mlp_ratio is a float; guard against rounding
            raise ValueError(f"EvaVisionConfig: built MLP width {fc1.out_features}, wanted {config.mlp_dim}")
        self.ln_vision = nn.LayerNorm(config.width, eps=config.ln_vision_eps, dtype=dtype)
        self._freeze()

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(M, 3, H, W) → (M, N_v, D_v): all tokens after the blocks and ``ln_vision``."""
        return self.ln_vision(self.visual_encoder.forward_features(images))

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        config: EvaVisionConfig,
        dtype: torch.dtype = torch.float32,
        drop_extra_blocks: bool = True,
    ) -> TimmEvaEncoder:
        """Load EVA + ``ln_vision`` weights from a local safetensors or ``.pth`` state dict.

        Accepted layouts: timm / EVA-CLIP keys (``cls_token``, ``blocks.i.attn.qkv.weight``,
        ``blocks.i.attn.q_bias`` …) with an optional ``visual_encoder.`` prefix, plus ``ln_vision.*``.
        A whole LAVIS BLIP-2 checkpoint (``{"model": {...}}`` with ``Qformer.*``, ``opt_proj.*`` …) works
        too: when ``visual_encoder.*`` keys are present only those and ``ln_vision.*`` are read. The
        model is built on the meta device and takes the checkpoint tensors directly (no random init).

        Args:
            path: ``.safetensors``, or ``.pth``/``.pt``/``.bin`` read with ``torch.load(weights_only=True)``.
            config: the architecture; ``depth`` blocks are loaded.
            dtype: dtype to hold the weights in.
            drop_extra_blocks: ignore blocks at index ≥ ``config.depth`` (BLIP-2 loads the 40-block
                EVA-CLIP-g checkpoint into 39 blocks). With ``False`` they are unexpected keys.

        Raises:
            ValueError: missing, unexpected or wrongly shaped keys (all listed), a non-zero k bias, or a
                ``.pth`` that would need code execution to unpickle.

        Example:
            >>> enc = TimmEvaEncoder.from_checkpoint("blip2_pretrained.pth", EvaVisionConfig.preset("eva_clip_g"))  # doctest: +SKIP
        """
        state = eva_state_to_timm(load_state_dict_file(path), config.depth if drop_extra_blocks else None)
        with torch.device("meta"):
            model = cls(config, dtype=dtype)
        _check_keys(state, model.state_dict(), str(path))
        model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, assign=True)
        for block in model.visual_encoder.blocks:  # non-persistent buffer, never in a checkpoint
            block.attn.k_bias = torch.zeros(config.width, dtype=dtype)
        model._freeze()  # assign=True swapped in the checkpoint's tensors, which may require grad
        return model


def _check_keys(got: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], source: str) -> None:
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    wrong = [
        f"{k}: {tuple(got[k].shape)} (expected {tuple(expected[k].shape)})"
        for k in sorted(set(got) & set(expected))
        if got[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
    if wrong:
        problems.append(f"wrong shapes ({len(wrong)}): {_listing(wrong)}")
    if problems:
        raise ValueError(f"{source}: state dict does not match the encoder; " + "; ".join(problems))


def _listing(items: list[str], limit: int = 20) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", … ({len(items) - limit} more)" if len(items) > limit else "")


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a tensor state dict from ``.safetensors`` or a ``.pth``/``.pt``/``.bin``/``.ckpt`` file.

    Pickled files are read with ``torch.load(weights_only=True)``: tensors and plain containers only,
    never code. A ``{"model": …}`` / ``{"model_state_dict": …}`` (OpenFlamingo's trainer) /
    ``{"state_dict": …}`` / ``{"module": …}`` wrapper (LAVIS / trainer checkpoints) is unwrapped.

    Example:
        >>> state = load_state_dict_file("eva_vit_g.pth")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    if path.suffix not in {".pth", ".pt", ".bin", ".ckpt"}:
        raise ValueError(
            f"{path}: unknown checkpoint format; expected .safetensors, .pth, .pt, .bin or .ckpt"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path}: refused to load — the file holds pickled objects other than tensors and plain "
            "containers, which would need code execution; re-save it as a plain state dict or safetensors"
        ) from err
    for wrapper in ("model", "model_state_dict", "state_dict", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict (str → tensor), got {type(obj).__name__}")
    bad = sorted(str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor))
    if bad:
        raise ValueError(f"{path}: entries that are not tensors: {_listing(bad)}")
    return obj


# ------------------------------------------------------------------------------ transformers BLIP-2


@dataclass
class Blip2VisionEncoderConfig(PresetConfig):
    """Configuration of :class:`HFBlip2VisionEncoder` (transformers ``Blip2VisionConfig`` fields).

    Attributes:
        image_size: input height = width in pixels.
        patch_size: patch side in pixels; N_v = (image_size // patch_size)² + 1.
        width: D_v (``hidden_size``).
        depth: ``num_hidden_layers``.
        num_heads: ``num_attention_heads``.
        mlp_dim: ``intermediate_size``.
        layer_norm_eps: epsilon of every LayerNorm, ``post_layernorm`` included.
        attn_implementation: transformers attention backend, ``"sdpa"`` or ``"eager"``.
    """

    image_size: int = 224
    patch_size: int = 14
    width: int = 1408
    depth: int = 39
    num_heads: int = 16
    mlp_dim: int = 6144
    layer_norm_eps: float = 1e-6
    attn_implementation: str = "sdpa"

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # HF Blip2VisionConfig defaults: EVA-CLIP-g's first 39 layers, as in Salesforce/blip2-*.
        "blip2": {},
        "tiny": {"image_size": 28, "width": 32, "depth": 2, "num_heads": 4, "mlp_dim": 64},
    }

    @property
    def num_tokens(self) -> int:
        """N_v: CLS + patches."""
        return (self.image_size // self.patch_size) ** 2 + 1

    def to_hf(self) -> Blip2VisionConfig:
        """The equivalent transformers ``Blip2VisionConfig``."""
        return Blip2VisionConfig(
            hidden_size=self.width,
            intermediate_size=self.mlp_dim,
            num_hidden_layers=self.depth,
            num_attention_heads=self.num_heads,
            image_size=self.image_size,
            patch_size=self.patch_size,
            layer_norm_eps=self.layer_norm_eps,
            qkv_bias=True,
            attn_implementation=self.attn_implementation,
        )

    @classmethod
    def from_hf(cls, hf: Blip2VisionConfig, attn_implementation: str = "sdpa") -> Blip2VisionEncoderConfig:
        """Read the architecture from a transformers ``Blip2VisionConfig``."""
        if not hf.qkv_bias or hf.hidden_act != "gelu":
            raise ValueError(
                f"Blip2VisionConfig with qkv_bias={hf.qkv_bias}, hidden_act={hf.hidden_act!r} is not EVA-CLIP"
            )
        return cls(
            image_size=_side(hf.image_size, "image_size"),
            patch_size=_side(hf.patch_size, "patch_size"),
            width=hf.hidden_size,
            depth=hf.num_hidden_layers,
            num_heads=hf.num_attention_heads,
            mlp_dim=hf.intermediate_size,
            layer_norm_eps=hf.layer_norm_eps,
            attn_implementation=attn_implementation,
        )


def _side(value: int | list[int] | tuple[int, int], name: str) -> int:
    if isinstance(value, int):
        return value
    if len(value) == 2 and value[0] == value[1]:
        return int(value[0])
    raise ValueError(f"Blip2VisionConfig.{name}: only square sizes are supported, got {value}")


class HFBlip2VisionEncoder(VisionEncoder):
    """transformers ``Blip2VisionModel``, frozen; returns ``last_hidden_state`` (after ``post_layernorm``).

    Example:
        >>> enc = HFBlip2VisionEncoder(Blip2VisionEncoderConfig.preset("tiny"))
        >>> enc(torch.randn(1, 2, 3, 28, 28)).shape     # (B, T_img, N_v, D_v)
        torch.Size([1, 2, 5, 32])
    """

    def __init__(
        self,
        config: Blip2VisionEncoderConfig,
        dtype: torch.dtype = torch.float32,
        model: Blip2VisionModel | None = None,
    ):
        super().__init__(config.width, config.num_tokens, config.image_size)
        if (
            model is not None
            and Blip2VisionEncoderConfig.from_hf(model.config, config.attn_implementation) != config
        ):
            raise ValueError(f"HFBlip2VisionEncoder: model config {model.config} does not match {config}")
        self.config = config
        self.vision_model = Blip2VisionModel(config.to_hf()).to(dtype) if model is None else model.to(dtype)
        self._freeze()

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(M, 3, H, W) → (M, N_v, D_v): all tokens after the layers and ``post_layernorm``."""
        return self.vision_model(pixel_values=images).last_hidden_state

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, dtype: torch.dtype = torch.float32, attn_implementation: str = "sdpa"
    ) -> HFBlip2VisionEncoder:
        """Load a local directory written by ``Blip2VisionModel.save_pretrained`` (never downloads).

        Example:
            >>> enc = HFBlip2VisionEncoder.from_pretrained("checkpoints/blip2-vision")  # doctest: +SKIP
        """
        if not Path(path).is_dir():
            raise FileNotFoundError(f"not a local model directory: {path}")
        model, info = Blip2VisionModel.from_pretrained(
            path,
            local_files_only=True,
            dtype=dtype,
            attn_implementation=attn_implementation,
            output_loading_info=True,
        )
        # transformers only warns and initialises missing weights randomly; a frozen encoder must not
        problems = [
            f"{kind} ({len(keys)}): {_listing(sorted(map(str, keys)))}" for kind, keys in info.items() if keys
        ]
        if problems:
            raise ValueError(f"{path}: weights do not match Blip2VisionModel; " + "; ".join(problems))
        config = Blip2VisionEncoderConfig.from_hf(model.config, attn_implementation)
        return cls(config, dtype=dtype, model=model)
