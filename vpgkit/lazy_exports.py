"""Package names loaded on first use (PEP 562), so that importing vpgkit stays cheap.

A fresh ``import vpgkit`` used to import timm, transformers' CLIP and BLIP-2 and every checkpoint
converter: about 8 s per process, paid even by ``python -m vpgkit.evaluate --help``. A package lists
its public names and the submodule defining each; a name's submodule is imported when the name is
first read.

Example:
    >>> import vpgkit
    >>> vpgkit.count_parameters.__module__
    'vpgkit.parameters'
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, Iterable[str]]
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__all__``, ``__getattr__`` and ``__dir__`` of a package whose names load on first use.

    Args:
        package: the package's ``__name__``.
        exports: submodule (relative, without the dot) → the public names it defines.

    Returns:
        ``(__all__, __getattr__, __dir__)``, to assign at the package's top level.
    """
    sources = {name: module for module, names in exports.items() for name in names}
    shadowed = sorted(name for name, module in sources.items() if name == module)
    if shadowed:
        # Importing submodule ``x`` sets the package's attribute ``x`` to the module, and a module-level
        # __getattr__ is only asked for missing attributes: the lazy name would read as the module.
        raise ValueError(f"{package}: {shadowed} share their submodule's name; import them eagerly")

    def __getattr__(name: str) -> Any:
        if name not in sources:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{sources[name]}", package), name)
        vars(sys.modules[package])[name] = value  # later reads skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(sources))

    return sorted(sources), __getattr__, __dir__
