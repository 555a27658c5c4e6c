"""Name → builder registries, in the spirit of timm's ``register_model``.

Three registries live in vpgkit: visual plug-ins (:data:`PLUGINS`, see :mod:`vpgkit.plugins`), vision
encoders (:data:`VISION_ENCODERS`) and LLM loaders (:data:`LLM_LOADERS`). A recipe line names an entry
(``kind: timm_eva``, ``name: vpgc``) and the registry gives the one builder for it. Code outside vpgkit
registers its own entries by decorating them; importing the defining module is enough.

Example:
    >>> from vpgkit.registry import Registry
    >>> shapes = Registry("shape")
    >>> @shapes.register("square")
    ... def square(side: int) -> int:
    ...     return side * side
    >>> shapes.get("square")(3), shapes.names()
    (9, ['square'])
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named set of builders (classes or functions).

    Args:
        kind: what the entries are, for error messages (``"plug-in"``, ``"vision encoder"``).
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; a second, different entry of that name is an error."""

        def decorate(obj: T) -> T:
            existing = self._entries.get(name)
            if existing is not None and existing is not obj and _qualname(existing) != _qualname(obj):
                raise ValueError(
                    f"{self.kind} registry: {name!r} is already registered to {_qualname(existing)}; "
                    f"cannot register {_qualname(obj)} under the same name"
                )
            self._entries[name] = obj
            return obj

        return decorate

    def get(self, name: str) -> T:
        """The entry registered as ``name``; an unknown name is an error listing the known ones."""
        if name not in self._entries:
            raise KeyError(f"unknown {self.kind} {name!r}; registered: {self.names()}")
        return self._entries[name]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """(name, entry) pairs, sorted by name."""
        return sorted(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def import_object(path: str) -> Any:
    """The object at ``package.module.Name`` (a recipe's ``_target_``), imported on demand."""
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ValueError(f"_target_ {path!r}: expected 'package.module.Name'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ImportError(f"_target_ {path!r}: cannot import {module_name!r} ({err})") from err
    if not hasattr(module, attr):
        raise ImportError(f"_target_ {path!r}: module {module_name!r} has no attribute {attr!r}")
    return getattr(module, attr)


PLUGINS: Registry[type] = Registry("plug-in")
VISION_ENCODERS: Registry[Callable[..., Any]] = Registry("vision encoder")
LLM_LOADERS: Registry[Callable[..., Any]] = Registry("LLM loader")


def register_plugin(name: str):
    """Register a :class:`vpgkit.plugins.Plugin` subclass under ``name`` (sets its ``name`` attribute)."""

    def decorate(cls: type) -> type:
        cls.name = name
        return PLUGINS.register(name)(cls)

    return decorate


def register_vision_encoder(name: str):
    """Register a vision-encoder builder ``fn(config: VisionConfig, dtype) -> VisionEncoder`` as ``name``."""
    return VISION_ENCODERS.register(name)


def register_llm_loader(name: str):
    """Register an LLM loader ``fn(config: LLMConfig, dtype, seed) -> (llm, tokenizer)`` as ``name``."""
    return LLM_LOADERS.register(name)
