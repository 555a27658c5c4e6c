"""A run that cannot succeed fails before any compute, naming the setting (issue 16, items 3 and 5)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_train import FAST, config, run_training

from vpgkit.data import Collator
from vpgkit.train import run
from vpgkit.training.build import build_model
from vpgkit.training.datasets import build_datasets
from vpgkit.training.loop import train


class CountingDataset:
    """Wraps a dataset and counts item reads: zero reads means nothing was computed."""

    def __init__(self, dataset):
        self.dataset, self.reads = dataset, 0
        self.datasets = getattr(dataset, "datasets", None)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        self.reads += 1
        return self.dataset[i]


def _blocked(tmp_path: Path) -> Path:
    """An output_dir that cannot be created (its parent is a file); works as root too, unlike chmod."""
    (tmp_path / "a_file").write_text("not a directory")
    return tmp_path / "a_file" / "run"


def test_an_unusable_output_dir_fails_before_training_from_python(tmp_path):
    cfg = config("recipe=vpgc_toy", f"output_dir={_blocked(tmp_path)}", "trainer.max_steps=3", *FAST)
    model, tokenizer = build_model(cfg.model, cfg.seed)
    train_set, _, _ = build_datasets(cfg.data, tokenizer, model)
    counting = CountingDataset(train_set)
    collate = Collator(pad_token_id=tokenizer.pad_token_id, image_size=model.vision.image_size)
    with pytest.raises(OSError, match=r"output_dir=.*a_file/run: cannot write there"):
        train(cfg, model, counting, collate)
    assert counting.reads == 0


def test_run_checks_output_dir_before_preparing_data(tmp_path):
    called = tmp_path / "prepare_called"
    cfg = config("recipe=vpgc_toy", f"output_dir={tmp_path / 'a_file'}", *FAST)
    (tmp_path / "a_file").write_text("x")
    cfg.data.prepare = {"_target_": "pathlib.Path.touch", "self": str(called)}
    with pytest.raises(NotADirectoryError, match=r"output_dir=.*a_file: exists and is not a directory"):
        run(cfg)
    assert not called.exists()


def test_zero_steps_is_refused_by_name(tmp_path):
    cfg = config("recipe=vpgc_toy", f"output_dir={tmp_path}", "trainer.max_steps=0", *FAST)
    with pytest.raises(ValueError, match=r"trainer\.max_steps=0: nothing would be trained"):
        run_training(cfg)
    assert not (tmp_path / "adapter").exists()


def test_an_empty_dataset_is_named(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    source = f"data.train=[{{name: mine, format: jsonl, path: {tmp_path / 'empty.jsonl'}}}]"
    cfg = config("recipe=vpgc_toy", f"output_dir={tmp_path / 'run'}", "data.eval=[]", source)
    model, tokenizer = build_model(cfg.model, cfg.seed)
    with pytest.raises(ValueError, match=r"data source 'mine': no samples in .*empty\.jsonl"):
        build_datasets(cfg.data, tokenizer, model)


def test_max_length_beyond_the_lm_context_is_refused_before_training(tmp_path):
    cfg = config("recipe=vpgc_toy", f"output_dir={tmp_path}", "data.max_length=100000", *FAST)
    model, tokenizer = build_model(cfg.model, cfg.seed)
    with pytest.raises(ValueError, match=r"data\.max_length=100000 exceeds the LM's context of \d+ tokens"):
        build_datasets(cfg.data, tokenizer, model)


def test_an_empty_dataset_given_to_train_directly_is_named(tmp_path):
    from vpgkit.data.mixture import MixtureDataset
    from vpgkit.training.loop import default_sampler

    with pytest.raises(ValueError, match=r"data source 'mine': no samples; check the file"):
        default_sampler(MixtureDataset({"mine": []}), 4, seed=0)
