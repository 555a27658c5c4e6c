"""Visual plug-ins: one protocol (:class:`Plugin`), one registry, the built-in plug-ins.

Every plug-in is registered by name with :func:`~vpgkit.registry.register_plugin`; the built-in ones are
the files of this package (each imported here, so a new built-in plug-in is one new file);
a recipe line ``{name: ..., preset: ...}`` or ``{_target_: package.module.Class, ...}`` builds one.
Code outside vpgkit writes its own (see docs/plugins.md). Nothing outside the registry lists them.
"""

from __future__ import annotations

import importlib
import pkgutil

from ..registry import PLUGINS, register_plugin
from .base import ModelInputs, Plugin, check_width, load_module_checkpoint
from .image_inputs import MediaPlugin, PromptPlugin

# Every other module of this package is a plug-in file that registers itself: adding a plug-in is adding a file.
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "image_inputs"):
        importlib.import_module(f"{__name__}.{_module.name}")


def plugin_class(name: str) -> type[Plugin]:
    """The plug-in class registered as ``name``."""
    return PLUGINS.get(name)


def plugin_slots() -> set[str]:
    """Slots of every registered plug-in (model attributes that read as None when unused)."""
    return {cls.slot for _, cls in PLUGINS.items()}


def plugin_for_slot(slot: str) -> type[Plugin]:
    """The registered plug-in class for the keyword form ``VisionLanguageModel(..., <slot>=module)``."""
    found = [cls for _, cls in PLUGINS.items() if cls.slot == slot]
    if len(found) != 1:
        raise TypeError(
            f"VisionLanguageModel: unknown keyword {slot!r}; plug-in slots: {sorted(plugin_slots())} "
            "(or pass plugins=[...])"
            if not found
            else f"VisionLanguageModel: slot {slot!r} is claimed by several plug-ins {[c.name for c in found]}; "
            "pass plugins=[...]"
        )
    return found[0]


__all__ = [
    "PLUGINS",
    "MediaPlugin",
    "ModelInputs",
    "Plugin",
    "PromptPlugin",
    "check_width",
    "load_module_checkpoint",
    "plugin_class",
    "plugin_for_slot",
    "plugin_slots",
    "register_plugin",
]
