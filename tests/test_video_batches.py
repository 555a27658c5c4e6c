"""Video through the same collator and model as images: frames decoded from a real video file (OpenCV),
(B, T_img, F, ...) next to text-only and multi-video rows; each row equals the row run alone."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from vlm_cases import PLUGIN_CASES, SLOT, plugin_model

from vpgkit.backbones.vision import EvaVisionConfig, TimmEvaEncoder
from vpgkit.data import DataError
from vpgkit.data.collation import collate
from vpgkit.data.video import sample_frames


def write_video(path, frames: int = 12, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (28, 28))
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (28, 28, 3), dtype=np.uint8))
    writer.release()
    return str(path)


def to_pixels(frames: list[np.ndarray]) -> torch.Tensor:
    """F RGB frames → (F, 3, 28, 28) floats in [-1, 1]."""
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1


def item(i: int, ids: list[int], pixels: torch.Tensor, n: int) -> dict:
    t = torch.tensor(ids)
    labels = t.clone()
    labels[:-2] = -100
    return {"id": str(i), "input_ids": t, "labels": labels, "num_images": n, "pixel_values": pixels}


def test_sample_frames_decodes_evenly_spaced_frames_and_names_bad_files(tmp_path):
    path = write_video(tmp_path / "a.avi")
    frames = sample_frames(path, 3)
    capture, every = cv2.VideoCapture(path), []
    while (read := capture.read())[0]:
        every.append(cv2.cvtColor(read[1], cv2.COLOR_BGR2RGB))
    assert len(every) == 12 and [f.shape for f in frames] == [(28, 28, 3)] * 3
    assert all(np.array_equal(f, every[i]) for f, i in zip(frames, [0, 6, 11], strict=True))
    with pytest.raises(DataError, match="no such file"):
        sample_frames(tmp_path / "missing.avi", 3)
    (tmp_path / "text.avi").write_text("not a video")
    with pytest.raises(DataError, match=r"text\.avi"):
        sample_frames(tmp_path / "text.avi", 3)
    with pytest.raises(DataError, match="fewer than num_frames=20"):
        sample_frames(path, 20)


def test_text_video_and_two_video_rows_equal_the_rows_alone(tmp_path):
    torch.manual_seed(0)
    model = plugin_model(PLUGIN_CASES["perceiver_xattn"])
    model.vision = TimmEvaEncoder(EvaVisionConfig.preset("tiny")).eval()
    videos = [to_pixels(sample_frames(write_video(tmp_path / f"{k}.avi", seed=k), 3)) for k in range(3)]
    items = [
        item(0, [1, 20, 21, 22, 23, 24], torch.zeros(0, 3, 28, 28), 0),  # text only
        item(1, [1, SLOT, 30, 31, 32], videos[0][None], 1),  # one video of 3 frames
        item(2, [1, SLOT, 40, SLOT, 41, 42, 43], torch.stack(videos[1:]), 2),  # two videos
    ]
    batch = collate(items, pad_token_id=0, image_size=28)
    assert tuple(batch["pixel_values"].shape) == (3, 2, 3, 3, 28, 28)  # (B, T_img, F, 3, H, W)
    keys = ("input_ids", "attention_mask", "pixel_values", "num_images")
    with torch.no_grad():
        together = model(**{k: batch[k] for k in keys}).logits
        for b, one in enumerate(items):
            alone = collate([one], pad_token_id=0, image_size=28)
            logits = model(**{k: alone[k] for k in keys}).logits[0]
            n = len(one["input_ids"])
            assert (together[b, :n] - logits).abs().max() <= 1e-5
        # a video is its F frames' tokens read together by the Perceiver
        features = model.vision(batch["pixel_values"].flatten(1, 2)).unflatten(
            1, (2, 3)
        )  # (B, T, F, N_v, D_v)
        flat = model(
            batch["input_ids"],
            batch["attention_mask"],
            vision_features=features.flatten(2, 3),
            num_images=batch["num_images"],
        ).logits
    assert torch.equal(flat, together)


def test_mixed_frame_counts_and_frames_into_a_prompt_splice_are_refused():
    video = item(0, [1, SLOT, 5], torch.zeros(1, 3, 3, 28, 28), 1)
    image = item(1, [1, SLOT, 5], torch.zeros(1, 3, 28, 28), 1)
    with pytest.raises(ValueError, match="different frame counts in one batch"):
        collate([video, image], pad_token_id=0, image_size=28)
    model = plugin_model(PLUGIN_CASES["qformer_vpgc"])
    ids = torch.tensor([[1, SLOT, SLOT, SLOT, SLOT, 5]])
    with pytest.raises(ValueError, match="3 frames per visual input"):
        model(ids, vision_features=torch.zeros(1, 1, 3, 10, 32))


def test_docs_page_runs(tmp_path, monkeypatch, capsys):
    import re
    from pathlib import Path

    page = Path(__file__).resolve().parents[1] / "docs" / "video_and_multi_image.md"
    monkeypatch.chdir(tmp_path)
    (code,) = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
    exec(compile(code, str(page), "exec"), {"__name__": "__doc_example__"})
    assert "(2, 1, 4, 3, 28, 28) [0, 1]" in capsys.readouterr().out
