"""Package names load on first use: a bare ``import vpgkit`` or ``--help`` does not import the model libraries."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from vpgkit.lazy_exports import lazy_exports

HEAVY = ("torch", "transformers", "timm")


def _imported_after(code: str) -> list[str]:
    """The heavy libraries in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    probe = f"{code}\nimport sys\nprint('imported:', *(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return out.splitlines()[-1].split()[1:]


def test_import_vpgkit_and_its_packages_skips_the_model_libraries():
    assert _imported_after("import vpgkit, vpgkit.backbones") == []
    # The LM helpers need transformers, not timm or transformers' vision models.
    assert "timm" not in _imported_after("import vpgkit.backbones.language")


def test_train_help_does_not_import_torch():
    probe = "import runpy, sys\nsys.argv = ['vpgkit.train', '--help']\ntry:\n    runpy.run_module('vpgkit.train', run_name='__main__')\nexcept SystemExit:\n    pass"
    assert _imported_after(probe) == []


@pytest.mark.parametrize("package", ["vpgkit", "vpgkit.backbones", "vpgkit.checkpoints"])
def test_every_exported_name_resolves_and_is_listed(package):
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, name
        assert name in dir(module)
        assert not isinstance(getattr(module, name), type(module)), f"{package}.{name} reads as a module"
    with pytest.raises(AttributeError, match=f"{package}' has no attribute 'nope'"):
        module.nope  # noqa: B018


def test_a_name_equal_to_its_submodule_is_refused():
    with pytest.raises(ValueError, match=r"\['card'\] share their submodule's name"):
        lazy_exports("somepackage", {"card": ("card", "other")})


@pytest.mark.parametrize("package", ["vpgkit", "vpgkit.backbones", "vpgkit.checkpoints"])
def test_the_type_checking_imports_name_exactly_the_lazy_exports(package):
    """The names are written twice (for type checkers, and for the loader): the two lists must agree."""
    module = importlib.import_module(package)
    tree = ast.parse(Path(module.__file__).read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING")
    typed = {(node.module, alias.name) for node in block.body for alias in node.names}
    eager = {
        (n.module, a.name) for n in tree.body if isinstance(n, ast.ImportFrom) and n.level for a in n.names
    }
    exported = {name for name in module.__all__ if name != "__version__"}
    assert {name for _, name in typed | eager} - {"lazy_exports", "prefer_passive_waiting"} == exported
    for submodule, name in typed:  # and the loader reads each from the submodule the import names
        assert getattr(module, name) is getattr(importlib.import_module(f"{package}.{submodule}"), name), name
