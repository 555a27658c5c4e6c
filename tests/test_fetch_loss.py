"""The fetch loss: VPG-C's guided cross-attention pulled onto the region a sample is about."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from test_train import FAST, config
from vlm_cases import randomize_, vpgc_batch, vpgc_model

from vpgkit.data import Collator, DataError
from vpgkit.training.build import build_model
from vpgkit.training.datasets import build_datasets
from vpgkit.training.fetch import box_patch_mask, fetch_loss
from vpgkit.training.loop import train


def test_box_patch_mask_takes_the_patches_whose_centre_is_inside():
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.0, 1.0, 1.0], [0.40, 0.40, 0.45, 0.45]])
    mask = box_patch_mask(boxes, 1 + 16)  # CLS + a 4 × 4 grid; centres at 1/8, 3/8, 5/8, 7/8
    grid = mask[:, 1:].reshape(3, 4, 4)
    assert not mask[:, 0].any()  # never CLS
    assert grid[0].nonzero().tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert grid[1][:, 2:].all() and not grid[1][:, :2].any()
    assert grid[2].nonzero().tolist() == [[1, 1]]  # no centre inside: the patch holding the box's centre
    with pytest.raises(ValueError, match="N_v = 16"):
        box_patch_mask(boxes, 16)


def test_fetch_loss_is_minus_log_the_mass_inside_on_scored_images_only():
    attention = torch.full((3, 2, 2, 1, 2, 5), 0.25)  # (B, T_img, L_x, heads, N_q, 1 + 2²): CLS gets 0.25
    attention[..., 0] = 0.0
    attention[0, 0, ..., 1] = 0.7  # row 0, image 0: 0.7 on the top-left patch, 0.1 on each other
    attention[0, 0, ..., 2:] = 0.1
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 1.0, 0.5], [math.nan] * 4])
    num_images = torch.tensor([2, 1, 2])  # row 1's second image is padding; row 2 has no box
    total, count = fetch_loss(attention, boxes, num_images)
    assert int(count) == 3
    expected = -math.log(0.7) - math.log(0.25) - math.log(0.5)
    assert float(total) == pytest.approx(expected, rel=1e-6)


def test_vpgc_attention_at_init_is_the_vpgs_own_and_only_the_fetch_loss_reaches_the_guidance():
    """At init VPG-C's queries are the VPG's (guidance projection zero), so its maps are the VPG's maps.
    The LM loss sends no gradient to the guidance projection then (the output projection is zero); the
    fetch loss does: that is what it is for."""
    model = vpgc_model()
    randomize_(model.vpg)
    batch = vpgc_batch()
    out = model(**batch, return_vpgc_attention=True)
    own = model.vpg(batch["vision_features"], return_attentions=True).cross_attentions
    assert out.vpgc_attention.shape == own.shape  # (B, T_img, L_x, heads, N_q, N_v)
    torch.testing.assert_close(out.vpgc_attention, own)
    torch.testing.assert_close(out.vpgc_attention.sum(-1), torch.ones(own.shape[:-1]))

    weight = model.vpgc.guidance_proj.weight
    (lm_grad,) = torch.autograd.grad(out.loss, weight, retain_graph=True)
    assert lm_grad.eq(0).all()
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]])
    total, _ = fetch_loss(out.vpgc_attention, boxes, torch.tensor([1, 1]))
    (fetch_grad,) = torch.autograd.grad(total, weight)
    assert fetch_grad.abs().sum() > 0

    assert model(**batch).vpgc_attention is None  # only when asked for
    with pytest.raises(ValueError, match="needs a 'vpgc' plug-in"):
        vpgc_model(with_vpgc=False)(**batch, return_vpgc_attention=True)


def toy_jsonl_with_fetch_boxes(folder: Path, n: int, bad: int | None = None) -> Path:
    """``n`` toy captions whose ``meta.fetch_box`` is the left half of the image (sample ``bad``: a box
    with x0 > x1)."""
    from PIL import Image

    from vpgkit.data.readers import write_samples_jsonl
    from vpgkit.data.toy import toy_captions

    samples = toy_captions(n, image_size=28)
    for i, sample in enumerate(samples):
        Image.fromarray(sample.images[0]).save(folder / f"{i}.png")
        sample.images = [f"{i}.png"]
        sample.meta["fetch_box"] = [0.6, 0.0, 0.5, 1.0] if i == bad else [0.0, 0.0, 0.5, 1.0]
    write_samples_jsonl(samples, folder / "train.jsonl")
    return folder / "train.jsonl"


def fetch_run(tmp_path: Path, weight: float, bad: int | None = None, steps: int = 30, *extra: str):
    data = toy_jsonl_with_fetch_boxes(tmp_path, 48, bad)
    cfg = config(
        "recipe=vpgc_toy", f"output_dir={tmp_path / f'run{weight}{len(extra)}'}", f"trainer.max_steps={steps}",
        *FAST, f"data.train=[{{name: boxed, format: jsonl, path: {data}, images: {tmp_path}}}]",
        f"trainer.fetch_loss_weight={weight}", *extra,
    )  # fmt: skip
    model, tokenizer = build_model(cfg.model, cfg.seed)
    with torch.no_grad():  # random init leaves q·k ≈ 0: attention uniform and flat in the queries
        for attention in model.vpg.cross_attention_layers():
            attention.query.weight.mul_(8.0)
            attention.key.weight.mul_(8.0)
    train_set, _, _ = build_datasets(cfg.data, tokenizer, model)
    collate = Collator(pad_token_id=tokenizer.pad_token_id, image_size=model.vision.image_size)
    return train(cfg, model, train_set, collate), model, train_set, collate


def test_training_with_the_fetch_loss_lowers_it_and_without_it_records_none(tmp_path):
    result, _, train_set, collate = fetch_run(tmp_path, 1.0)
    unboxed = {k: v for k, v in train_set[1].items() if k != "fetch_box"}
    boxes = collate([train_set[0], unboxed])["fetch_boxes"]  # (B, 4); NaN: no box
    assert boxes[0].tolist() == [0.0, 0.0, 0.5, 1.0] and boxes[1].isnan().all()
    assert "fetch_boxes" not in collate([unboxed])
    assert len(result.fetch_losses) == 30 and all(math.isfinite(x) for x in result.fetch_losses)
    first, last = sum(result.fetch_losses[:5]) / 5, sum(result.fetch_losses[-5:]) / 5
    assert last < first - 0.05, (first, last)
    plain, _, _, _ = fetch_run(tmp_path, 0.0, steps=2)
    assert plain.fetch_losses == []


def test_gradient_checkpointing_gives_the_same_fetch_trained_weights(tmp_path):
    """VPG-C's hook runs again when checkpointed layers are recomputed; the maps it records then are not the
    ones the loss used, and the gradients must not change."""
    plain, plain_model, _, _ = fetch_run(tmp_path, 1.0, None, 3)
    checkpointed, ckpt_model, _, _ = fetch_run(tmp_path, 1.0, None, 3, "trainer.gradient_checkpointing=true")
    assert checkpointed.fetch_losses == pytest.approx(plain.fetch_losses, rel=1e-5)
    ckpt_weights = ckpt_model.trainable_parameters()
    for name, w in plain_model.trainable_parameters().items():
        torch.testing.assert_close(ckpt_weights[name], w, rtol=1e-5, atol=1e-7)


def test_a_bad_fetch_box_is_named(tmp_path):
    data = toy_jsonl_with_fetch_boxes(tmp_path, 4, bad=3)
    cfg = config(
        "recipe=vpgc_toy",
        *FAST,
        f"data.train=[{{name: boxed, format: jsonl, path: {data}, images: {tmp_path}}}]",
    )
    model, tokenizer = build_model(cfg.model, cfg.seed)
    train_set, _, _ = build_datasets(cfg.data, tokenizer, model)
    with pytest.raises(DataError, match=r"toy-0-3.*meta.fetch_box must be \[x0, y0, x1, y1\]"):
        [train_set[i] for i in range(len(train_set))]


def test_the_fetch_loss_needs_a_vpgc(tmp_path):
    cfg = config(
        "recipe=blip2", f"output_dir={tmp_path}", "trainer.max_steps=1", *FAST, "trainer.fetch_loss_weight=1"
    )
    model, tokenizer = build_model(cfg.model, cfg.seed)
    train_set, _, _ = build_datasets(cfg.data, tokenizer, model)
    collate = Collator(pad_token_id=tokenizer.pad_token_id, image_size=model.vision.image_size)
    with pytest.raises(ValueError, match=r"fetch_loss_weight=1\.0 supervises VPG-C's attention"):
        train(cfg, model, train_set, collate)
