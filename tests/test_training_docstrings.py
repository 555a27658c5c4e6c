"""Every docstring example in the training helpers, file I/O and launch modules runs as shown."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "vpgkit.fileio",
    "vpgkit.launch",
    "vpgkit.training.plot",
    "vpgkit.training.preflight",
    "vpgkit.training.runlog",
]


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
