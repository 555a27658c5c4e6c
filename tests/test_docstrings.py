"""Every docstring example in vpgkit.data, the training helpers, file I/O, launch, the model and the plug-ins runs and gives
the shown output."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "vpgkit.data.sample",
    "vpgkit.data.errors",
    "vpgkit.data.templates",
    "vpgkit.data.tokenize",
    "vpgkit.data.collation",
    "vpgkit.data.tiny_tokenizer",
    "vpgkit.data.images",
    "vpgkit.data.video",
    "vpgkit.data.dataset",
    "vpgkit.data.mixture",
    "vpgkit.data.feature_cache",
    "vpgkit.data.throughput",
    "vpgkit.data.readers.jsonl",
    "vpgkit.data.readers.llava",
    "vpgkit.data.readers.mimicit",
    "vpgkit.data.readers.demon",
    "vpgkit.data.readers.captions",
    "vpgkit.fileio",
    "vpgkit.launch",
    "vpgkit.training.plot",
    "vpgkit.training.preflight",
    "vpgkit.training.runlog",
    "vpgkit.registry",
    "vpgkit.training.optim",
    "vpgkit.training.fetch",
    "vpgkit.backbones.eva_keys",
    "vpgkit.model",
    "vpgkit.plugins.qformer_vpg",
    "vpgkit.plugins.vpgc",
    "vpgkit.plugins.perceiver",
    "vpgkit.plugins.cross_attention",
    "vpgkit.plugins.mlp_projector",
    "vpgkit.plugins.perceiver_vpgc",
    "vpgkit.inplace.contract",
    "vpgkit.inplace.attachment",
    "vpgkit.evaluation.lmms",  # needs lmms-eval (the extra `eval`, installed by the test command)
    "vpgkit.evaluation.lmms.configs",
    "vpgkit.evaluation.lmms.model",
    "vpgkit.evaluation.lmms.task",
]


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
