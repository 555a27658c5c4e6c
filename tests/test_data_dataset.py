"""SampleDataset: lazy images, bad-data errors and skip reports, DataLoader workers, mixture sampler, feature cache."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from vpgkit.backbones import ImageProcessor
from vpgkit.data import (
    Collator,
    DataError,
    FeatureCache,
    MixtureDataset,
    MixtureSampler,
    Sample,
    SampleDataset,
    SampleTokenizer,
    SkipReport,
    Turn,
    build_tiny_tokenizer,
    content_hash,
    fingerprint,
    read_captions,
)

TOK = build_tiny_tokenizer()
IMG = TOK.convert_tokens_to_ids("<image>")


def tokenizer(**kw) -> SampleTokenizer:
    return SampleTokenizer(
        TOK, "vicuna_v0", IMG, "query_tokens", num_queries=4, max_length=kw.pop("max_length", 256), **kw
    )


def png(path, value: int, size=(20, 14)) -> str:
    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(path)
    return str(path)


def caption(i: int, image) -> Sample:
    return Sample(
        f"c{i}",
        [image],
        [Turn("user", "<image> Describe the image briefly."), Turn("assistant", "a red cup .")],
    )


@pytest.fixture
def files(tmp_path):
    good = [png(tmp_path / f"{i}.png", i) for i in range(4)]
    (tmp_path / "corrupt.png").write_bytes((tmp_path / "0.png").read_bytes()[:60])  # truncated PNG
    return tmp_path, good


def test_items_are_lazy_preprocessed_images(files):
    root, good = files
    ds = SampleDataset(
        [caption(i, os.path.basename(p)) for i, p in enumerate(good)], tokenizer(), image_size=28, images=root
    )
    item = ds[2]
    expected = ImageProcessor(28)([[Image.open(good[2])]])[0]
    assert torch.allclose(item["pixel_values"], expected) and item["id"] == "c2" and item["num_images"] == 1


@pytest.mark.parametrize(
    ("image", "reason", "message"),
    [
        ("missing.png", "missing_image", r"\[1\]: sample 'c1', image 0: no such image file: .*missing.png"),
        ("corrupt.png", "corrupt_image", r"\[1\]: sample 'c1', image 0: cannot decode image 'corrupt.png'"),
    ],
)
def test_bad_images_error_or_are_skipped_and_counted(files, image, reason, message):
    root, _ = files
    samples = [caption(0, "0.png"), caption(1, image), caption(2, "2.png")]
    strict = SampleDataset(samples, tokenizer(), image_size=28, images=root, name="caps")
    with pytest.raises(DataError, match="caps" + message) as e:
        strict[1]
    assert e.value.reason == reason
    lenient = SampleDataset(samples, tokenizer(), image_size=28, images=root, skip_bad_samples=True)
    item = lenient[1]
    assert item["id"] == "c2"  # replaced by the next good sample, batch size unchanged
    assert [r["reason"] for r in item["skipped"]] == [reason] and item["skipped"][0]["sample_id"] == "c1"
    lenient[1]  # counted once however often it is met
    assert lenient.report.counts == {reason: 1}
    assert "c1" in str(lenient.report) or image in str(lenient.report)


def test_image_count_mismatch_and_too_long_are_reported(files):
    root, _ = files
    mismatch = Sample(
        "mm", ["0.png", "1.png"], [Turn("user", "<image> one marker"), Turn("assistant", "a cup .")]
    )
    long = Sample("long", ["0.png"], [Turn("user", "<image> " + "a " * 300), Turn("assistant", "a cup .")])
    samples = [mismatch, long, caption(2, "2.png")]
    with pytest.raises(
        DataError, match=r"\[0\]: sample 'mm': conversation has 1 <image> markers but 2 images"
    ):
        SampleDataset(samples, tokenizer(), image_size=28, images=root)[0]
    with pytest.raises(DataError, match=r"\[1\]: sample 'long': \d+ tokens"):
        SampleDataset(samples, tokenizer(), image_size=28, images=root)[1]
    ds = SampleDataset(samples, tokenizer(), image_size=28, images=root, skip_bad_samples=True)
    report = ds.scan(progress=False)
    assert report.counts == {"image_count_mismatch": 1, "too_long": 1} and len(ds) == 1
    assert ds[0]["id"] == "c2" and ds[0]["skipped"] == []


def test_reader_and_dataset_share_one_report(tmp_path, files):
    root, _ = files
    path = tmp_path / "caps.jsonl"
    path.write_text(
        '{"image": "0.png", "caption": "a cup"}\n{oops\n{"image": "gone.png", "caption": "a dog"}\n'
    )
    report = SkipReport()
    samples = read_captions(path, report=report)
    ds = SampleDataset(samples, tokenizer(), image_size=28, images=root, skip_bad_samples=True, report=report)
    ds.scan(progress=False)
    assert report.counts == {"invalid_json": 1, "missing_image": 1} and report.total == 2
    assert report.to_dict()["counts"] == report.counts


def test_dataloader_with_two_workers_matches_in_process_batches(files):
    root, good = files
    samples = [caption(i, os.path.basename(good[i % 4])) for i in range(8)]
    samples[3] = caption(3, "missing.png")
    ds = SampleDataset(samples, tokenizer(), image_size=28, images=root, skip_bad_samples=True)
    pickle.dumps(ds)
    collator = Collator(pad_token_id=TOK.pad_token_id, image_size=28)
    direct = [collator([ds[i] for i in range(j, j + 4)]) for j in (0, 4)]
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collator)
    batches = list(loader)
    for got, want in zip(batches, direct, strict=True):
        assert got["ids"] == want["ids"] and torch.equal(got["pixel_values"], want["pixel_values"])
        assert torch.equal(got["input_ids"], want["input_ids"])
    main_report = SkipReport()
    for batch in batches:
        main_report.extend(batch["skipped"])
    assert main_report.counts == {"missing_image": 1}  # workers' skips reach the main process


def test_mixture_sampler_composition_determinism_and_resume():
    sizes = {"synthetic": 30, "captions": 200}
    sampler = MixtureSampler(sizes, per_batch={"synthetic": 3, "captions": 8}, seed=7)
    assert len(sampler) == 10
    sampler.set_epoch(0)
    epoch0 = list(sampler)
    for batch in epoch0:
        assert len(batch) == 11 and sum(i < 30 for i in batch) == 3
    synthetic = sorted(i for b in epoch0 for i in b if i < 30)
    assert synthetic == list(range(30))  # one pass over the scarce source, no repeats
    again = MixtureSampler(sizes, per_batch={"synthetic": 3, "captions": 8}, seed=7)
    assert list(again) == epoch0
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch1 != epoch0 and sorted(i for b in epoch1 for i in b if i < 30) == list(range(30))
    assert list(MixtureSampler(sizes, per_batch={"synthetic": 3, "captions": 8}, seed=8)) != epoch0
    # resume: save after 4 batches of epoch 1, restore in a fresh sampler
    fresh = MixtureSampler(sizes, per_batch={"synthetic": 3, "captions": 8}, seed=7)
    fresh.load_state_dict(
        MixtureSampler(sizes, per_batch={"synthetic": 3, "captions": 8}, seed=7).state_dict()
        | {"epoch": 1, "batch": 4}
    )
    fresh.set_epoch(1)
    assert list(fresh) == epoch1[4:]
    running = MixtureSampler(sizes, per_batch={"synthetic": 3, "captions": 8}, seed=7)
    it = iter(running)
    [next(it) for _ in range(6)]
    state = running.state_dict()
    assert state["epoch"] == 0 and state["batch"] == 6
    resumed = MixtureSampler(sizes, per_batch={"synthetic": 3, "captions": 8}, seed=7)
    resumed.load_state_dict(state)
    assert list(resumed) == epoch0[6:]
    with pytest.raises(ValueError, match="saved sizes"):
        MixtureSampler(
            {"synthetic": 31, "captions": 200}, per_batch={"synthetic": 3, "captions": 8}, seed=7
        ).load_state_dict(state)
    weighted = MixtureSampler(sizes, weights={"synthetic": 24, "captions": 64}, batch_size=11)
    assert weighted.per_batch == {"synthetic": 3, "captions": 8}


def test_mixture_dataset_serves_each_source(files):
    _, good = files
    a = SampleDataset([caption(i, good[i]) for i in range(2)], tokenizer(), image_size=28, name="a")
    b = SampleDataset([caption(10 + i, good[i]) for i in range(4)], tokenizer(), image_size=28, name="b")
    mix = MixtureDataset({"a": a, "b": b})
    sampler = MixtureSampler({"a": a, "b": b}, per_batch={"a": 1, "b": 2}, seed=0)
    loader = DataLoader(mix, batch_sampler=sampler, collate_fn=Collator(0, 28))
    batches = list(loader)
    assert len(batches) == 2 and all(len(bt["ids"]) == 3 for bt in batches)
    assert sorted(i for bt in batches for i in bt["ids"] if i in ("c0", "c1")) == ["c0", "c1"]


def test_feature_cache_hit_miss_invalidation_and_atomic_writes(tmp_path, files, monkeypatch):
    root, good = files
    encoder = {"w": torch.arange(6.0)}
    fp = fingerprint(encoder, {"image_size": 28})
    cache = FeatureCache(tmp_path / "cache", fp, shard_size=2)
    keys = [content_hash(Path(p).read_bytes()) for p in good]
    feats = [torch.randn(5, 8) for _ in keys]
    assert not cache.contains(keys[0])
    for k, f in zip(keys[:3], feats[:3], strict=True):
        cache.put(k, f)
    assert len(list((tmp_path / "cache").glob("shard-*.safetensors"))) == 1  # full buffer → one shard
    cache.flush()
    reopened = FeatureCache(tmp_path / "cache", fp)
    assert all(torch.equal(reopened.get(k), f) for k, f in zip(keys[:3], feats[:3], strict=True))
    assert not reopened.contains(keys[3]) and len(reopened) == 3
    with pytest.raises(KeyError, match="no features"):
        reopened.get(keys[3])
    # a dataset on the cache serves features without decoding; a miss names the sample
    samples = [caption(i, os.path.basename(good[i])) for i in range(4)]
    ds = SampleDataset(samples, tokenizer(), images=root, feature_cache=reopened, return_image_hashes=True)
    item = ds[1]
    assert torch.equal(item["vision_features"][0], feats[1]) and item["image_hashes"] == [keys[1]]
    batch = Collator(0, 28)([ds[0], ds[1]])
    assert batch["vision_features"].shape == (2, 1, 5, 8) and "pixel_values" not in batch
    with pytest.raises(DataError, match=r"sample 'c3', image 0: no cached features") as e:
        ds[3]
    assert e.value.reason == "feature_cache_miss"
    # another encoder: everything invalid, stale shards can be removed
    changed = FeatureCache(tmp_path / "cache", fingerprint({"w": torch.arange(6.0) + 1}, {"image_size": 28}))
    assert len(changed) == 0 and not changed.contains(keys[0]) and len(changed.stale_shards) == 2
    # a write killed before os.replace leaves the old shards intact and no partial shard
    import vpgkit.data.feature_cache as fc

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(fc.os, "replace", killed)
    reopened.put(keys[3], feats[3])
    with pytest.raises(KeyboardInterrupt):
        reopened.flush()
    monkeypatch.undo()
    names = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert all(n.startswith("shard-") for n in names) and len(names) == 2
    after = FeatureCache(tmp_path / "cache", fp)
    assert len(after) == 3 and torch.equal(after.get(keys[0]), feats[0])
    assert changed.clear_stale() == 2 and FeatureCache(tmp_path / "cache", fp).index == {}


def test_feature_cache_survives_sigkill_during_shard_write(tmp_path):
    import subprocess
    import sys
    import textwrap

    directory = tmp_path / "cache"
    cache = FeatureCache(directory, "fp")
    cache.put("old", torch.ones(2, 3))
    cache.flush()
    script = textwrap.dedent(
        f"""
        import os, signal, torch
        import vpgkit.data.feature_cache as fc
        cache = fc.FeatureCache({str(directory)!r}, "fp")
        cache.put("new", torch.zeros(2, 3))
        fc.os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)  # die after writing, before renaming
        cache.flush()
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert result.returncode == -9, result.stderr.decode()
    assert len(list(directory.glob(".tmp-*"))) == 1  # the interrupted write is left aside
    after = FeatureCache(directory, "fp")
    assert (
        after.contains("old")
        and not after.contains("new")
        and torch.equal(after.get("old"), torch.ones(2, 3))
    )


def test_feature_cache_keeps_shard_handles_open_and_pickles_without_them(tmp_path):
    cache = FeatureCache(tmp_path, encoder_fingerprint="enc")
    for i in range(3):
        cache.put(f"k{i}", torch.full((2, 4), float(i)))
    cache.flush()
    reader = FeatureCache(tmp_path, encoder_fingerprint="enc")
    assert torch.equal(reader.get("k1"), torch.full((2, 4), 1.0))
    assert len(reader._open) == 1  # one handle for the shard, reused by the next reads
    reader.get("k2")
    assert len(reader._open) == 1
    worker = pickle.loads(pickle.dumps(reader))  # what a DataLoader worker receives
    assert worker._open == {} and torch.equal(worker.get("k0"), torch.zeros(2, 4))
