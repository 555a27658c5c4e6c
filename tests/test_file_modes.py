"""Files and folders vpgkit writes get the umask's permissions (not mkstemp's private 0600 / 0700)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from torch.optim import SGD
from torch.optim.lr_scheduler import LambdaLR
from vlm_cases import randomize_, vpgc_model

from vpgkit.checkpoints import publish_folder, save_adapter
from vpgkit.data.readers import write_samples_jsonl
from vpgkit.data.toy import toy_captions
from vpgkit.training.state import begin_checkpoint, finish_checkpoint, write_json_atomic


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


def _expect(path: Path, umask: int) -> int:
    return (0o777 if path.is_dir() else 0o666) & ~umask


def test_adapter_checkpoint_and_json_files_follow_the_umask(tmp_path, umask):
    model = vpgc_model()
    randomize_(model.vpgc)
    adapter = save_adapter(model, tmp_path / "adapter")
    published = publish_folder(model, tmp_path / "published", recipe="vpgc")
    params = list(model.trainable_parameters().values())
    optimizer = SGD(params, lr=0.1)
    checkpoint = finish_checkpoint(
        begin_checkpoint(tmp_path / "checkpoints", 3),
        model.trainable_parameters(),
        optimizer,
        LambdaLR(optimizer, lambda s: 1.0),
        {"step": 3},
    )
    write_json_atomic(tmp_path / "eval" / "results.json", {"a": 1})
    write_samples_jsonl(toy_captions(2), tmp_path / "samples.jsonl")
    for root in (adapter, published, checkpoint, tmp_path / "eval", tmp_path / "samples.jsonl"):
        for name, mode in _modes(root).items():
            path = root / name if name != "." else root
            assert mode == _expect(path, umask), f"{path}: {oct(mode)} under umask {oct(umask)}"
