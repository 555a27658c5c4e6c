"""Toy training files on disk for tests."""

from __future__ import annotations

from pathlib import Path


def toy_jsonl_with_a_missing_image(folder: Path, n: int, missing: int) -> Path:
    """``folder/train.jsonl`` of ``n`` toy captions with PNGs beside it; sample ``missing`` names a file that
    does not exist."""
    from PIL import Image

    from vpgkit.data.readers import write_samples_jsonl
    from vpgkit.data.toy import toy_captions

    samples = toy_captions(n)
    for i, sample in enumerate(samples):
        Image.fromarray(sample.images[0]).save(folder / f"{i}.png")
        sample.images = [f"{i}.png"]
    samples[missing].images = ["does_not_exist.png"]
    write_samples_jsonl(samples, folder / "train.jsonl")
    return folder / "train.jsonl"
