"""The plug-in protocol: what every visual module of a :class:`~vpgkit.VisionLanguageModel` declares.

A plug-in wraps one ``nn.Module`` (its *module*, registered on the model as ``model.<slot>``) and says

* which **config** dataclass describes it (``config_class``; serialised into ``vpgkit_config.json``
  under ``modules.<slot>``, so adapters, model cards and recipe validation are derived from it);
* what it **provides** and **requires** (capabilities such as ``"prompts"``, ``"media"``,
  ``"qformer"``) — the model checks these when it is composed, naming the plug-in that lacks a partner;
* how it **attaches**: :meth:`Plugin.bind` validates widths against the LLM and registers forward
  hooks on decoder layers; :meth:`Plugin.prepare` runs in ``build_inputs`` (a prompt splice, media for
  cross-attention) and fills the per-call :class:`~vpgkit.attach.VisualContext`;
* which of its weights train (:meth:`Plugin.apply_trainable`) and which of its parts stay in eval mode
  (:meth:`Plugin.frozen_modules`).

Adapter weights are the model's trainable parameters; a plug-in's keys are ``<slot>.<parameter>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from ..attach import VisualContext
from ..modules.presets import PresetConfig

if TYPE_CHECKING:  # pragma: no cover
    from ..model import VisionLanguageModel


@dataclass
class ModelInputs:
    """The batch as the plug-ins see it in ``VisionLanguageModel.build_inputs``.

    Attributes:
        input_ids, attention_mask: (B, L).
        vision: (B, T_img, N_v, D_v) vision features.
        num_images: (B,) images per row.
        image_valid: (B, T_img) bool, False for padding images.
        context: the per-call context the layer hooks read (plug-ins fill their fields).
        embeds: (B, L, D_llm) input embeddings, set by the plug-in that encodes images (None until then:
            the model then embeds ``input_ids`` itself).
        no_loss: (B, L) bool, positions that never carry a loss (image slots), or None.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    vision: torch.Tensor
    num_images: torch.Tensor
    image_valid: torch.Tensor
    context: VisualContext
    embeds: torch.Tensor | None = None
    no_loss: torch.Tensor | None = None


class Plugin:
    """Base class of every visual plug-in (see the module docstring).

    Subclasses set the class attributes and override what they use; ``@register_plugin("name")``
    makes them reachable from recipes.

    Class attributes:
        name: registry name (set by :func:`vpgkit.registry.register_plugin`).
        slot: attribute of the model that holds ``module``; prefix of its adapter keys; key of its config
            in ``vpgkit_config.json``. One plug-in per slot and model.
        config_class: the config dataclass (a :class:`~vpgkit.modules.presets.PresetConfig`).
        provides: capabilities other plug-ins may require (e.g. ``"prompts"``, ``"media"``, ``"qformer"``).
        requires: capabilities that another plug-in of the same model must provide.
        image_tokens: how images appear in the text, for the one plug-in that encodes them:
            ``"slots"`` (``tokens_per_image`` placeholder tokens replaced by prompts) or ``"marker"``
            (one real ``<image>`` token); None for plug-ins that do not encode images.
        uses_guidance: True if the plug-in reads ``context.guidance_index`` (the last prompt token).
        default_trainable: whether the module trains when a recipe does not say.
        shorthand_fields: ``ModelConfig`` shorthand fields of this plug-in beyond ``<slot>``,
            ``<slot>_overrides`` and ``<slot>_checkpoint``: field → ``"trainable"`` or ``"overrides.<key>"``.

    Args:
        config: an instance of ``config_class``.
        module: the ``nn.Module`` (None for plug-ins that build it in :meth:`bind`).
        trainable: train the plug-in's adapter weights (None: ``default_trainable``).
    """

    name: ClassVar[str] = ""
    slot: ClassVar[str] = ""
    config_class: ClassVar[type[PresetConfig]]
    provides: ClassVar[tuple[str, ...]] = ()
    requires: ClassVar[tuple[str, ...]] = ()
    image_tokens: ClassVar[str | None] = None
    uses_guidance: ClassVar[bool] = False
    default_trainable: ClassVar[bool] = True
    shorthand_fields: ClassVar[dict[str, str]] = {}

    def __init__(self, config: PresetConfig, module: nn.Module | None = None, trainable: bool | None = None):
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__}: config must be a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = config
        self.module = module
        self.trainable = self.default_trainable if trainable is None else trainable

    # --- building ------------------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        config: PresetConfig,
        partners: Mapping[str, Plugin],
        *,
        trainable: bool | None = None,
        checkpoint: str | None = None,
    ) -> Plugin:
        """Build the plug-in a recipe line describes.

        Args:
            config: the plug-in's config (preset + overrides).
            partners: capability → plug-in, for those built before this one (e.g. the Q-Former VPG-C
                completes).
            trainable: whether its weights train (None: ``default_trainable``).
            checkpoint: a safetensors file of the module's state dict, or None.
        """
        raise NotImplementedError(f"{cls.__name__}.build: this plug-in cannot be built from a recipe")

    @classmethod
    def from_module(cls, module: Any, **options: Any) -> Plugin:
        """Wrap a module passed to ``VisionLanguageModel(..., <slot>=module)`` (the keyword form)."""
        return cls(module.config, module)

    def cast_frozen(self, dtype: torch.dtype) -> None:
        """Give a plug-in that does not train the frozen backbones' dtype (trainable weights stay fp32).

        Called once every plug-in of the recipe is built (a partner may copy weights from this one first).
        """
        if not self.trainable and self.module is not None:
            self.module.to(dtype)

    # --- attaching -----------------------------------------------------------------------------------

    def bind(self, model: VisionLanguageModel, layers: nn.ModuleList) -> list:
        """Validate against the model and attach; returns hook handles (removed by ``remove_hooks``).

        May create ``self.module`` (e.g. one block per chosen decoder layer).
        """
        return []

    def apply_trainable(self) -> None:
        """Set ``requires_grad`` on the module's parameters (default: all of them follow ``trainable``)."""
        if self.module is not None:
            self.module.requires_grad_(self.trainable)

    def frozen_modules(self) -> list[nn.Module]:
        """Parts that stay in eval mode when they have no trainable weight (dropout off)."""
        return [self.module] if self.module is not None else []

    def on_train(self, model: VisionLanguageModel, mode: bool) -> None:
        """Called at the end of ``model.train(mode)``."""

    def prepare(self, model: VisionLanguageModel, inputs: ModelInputs) -> None:
        """Fill ``inputs.embeds`` / ``inputs.context`` for one batch (runs in plug-in order)."""

    def config_dict(self) -> dict[str, Any]:
        """The plain-JSON config stored in adapters (``modules.<slot>``)."""
        return self.config.to_dict()


def check_width(name: str, value: int, other_name: str, other: int | None) -> None:
    """Raise naming both sides when two widths that must agree differ (``other`` None: unknown, skip)."""
    if other is not None and value != other:
        raise ValueError(f"{name} is {value} but the {other_name} is {other}; they must be equal")


def load_module_checkpoint(module: nn.Module, path: str | None) -> nn.Module:
    """Load a safetensors state dict into ``module`` (strict), if ``path`` is given."""
    if path:
        from safetensors.torch import load_file

        module.load_state_dict(load_file(path))
    return module
