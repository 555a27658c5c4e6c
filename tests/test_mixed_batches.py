"""Mixed batches: text-only rows, one image, several images in one batch, through every plug-in composition.

A row's outputs do not depend on the other rows (nor on the padding images they bring); a batch in which no
row has an image runs without any dummy image and equals the plain LM where the plug-ins add nothing
without images; every trainable weight takes part in the loss's graph (zero-weighted when it is not used),
so DDP needs no ``find_unused_parameters``.
"""

from __future__ import annotations

import pytest
import torch
from vlm_cases import PLUGIN_CASES, SLOT, plugin_model, right_padded

cases = pytest.mark.parametrize("case", sorted(PLUGIN_CASES))


def mixed_rows(model, seed: int = 0) -> tuple[list[list[int]], list[int]]:
    """Three rows: text only, one image, two images (in the model's image convention)."""
    g = torch.Generator().manual_seed(seed)
    text = lambda n: torch.randint(10, 128, (n,), generator=g).tolist()  # noqa: E731
    image = [SLOT] * (model.image_slots_per_image or 1)
    rows = [[1, *text(6)], [1, *text(2), *image, *text(3)], [1, *image, *text(2), *image, *text(4)]]
    return rows, [0, 1, 2]


def run(model, rows: list[list[int]], counts: list[int], vision: torch.Tensor):
    """Logits (B, L, V) and loss-only sum of a right-padded batch; labels on each row's last 2 tokens."""
    ids, mask = right_padded(rows)
    labels = torch.full_like(ids, -100)
    for i, row in enumerate(rows):
        labels[i, len(row) - 2 : len(row)] = ids[i, len(row) - 2 : len(row)]
    num = torch.tensor(counts)
    with torch.no_grad():
        logits = model(ids, mask, vision_features=vision, num_images=num).logits
    return logits, labels, ids, mask, num


@cases
def test_rows_of_a_mixed_batch_equal_the_rows_run_alone(case):
    model = plugin_model(PLUGIN_CASES[case])
    from vlm_cases import randomize_all_

    randomize_all_(model, seed=3)  # trained adapters: the completers' residuals are not zero
    rows, counts = mixed_rows(model)
    g = torch.Generator().manual_seed(5)
    vision = torch.randn(3, 2, 10, 32, generator=g)  # (B, T_img, N_v, D_v); padding images stay random
    batch, *_ = run(model, rows, counts, vision)
    for i, (row, n) in enumerate(zip(rows, counts, strict=True)):
        alone, *_ = run(model, [row], [n], vision[i : i + 1, :n])
        diff = (batch[i, : len(row)] - alone[0]).abs().max().item()
        assert diff <= 1e-5, (case, i, diff)


@cases
def test_a_batch_without_images_runs_without_a_dummy_image(case):
    model = plugin_model(PLUGIN_CASES[case])
    model.vision = None
    rows = mixed_rows(model)[0][:1] * 2
    logits, labels, ids, mask, num = run(model, rows, [0, 0], torch.zeros(2, 0, 10, 32))
    assert torch.isfinite(logits).all()
    if not any(p.name == "cross_attention" for p in model.plugins):  # its blocks' gated FF runs on text too
        with torch.no_grad():
            assert torch.equal(logits, model.llm(input_ids=ids, attention_mask=mask).logits)
    model.train()
    loss = model(
        ids,
        mask,
        labels=labels,
        vision_features=torch.zeros(2, 0, 10, 32),
        num_images=num,
        loss_only=True,
        loss_reduction="sum",
    ).loss
    loss.backward()
    grads = {n: p.grad for n, p in model.trainable_parameters().items()}
    assert all(g is not None for g in grads.values())  # every adapter weight is in the graph (zero-weighted)


@pytest.mark.slow
def test_two_processes_with_a_text_only_rank_equal_one_process(tmp_path):
    """torchrun, 2 CPU processes (gloo, DDP without find_unused_parameters): rank 0 draws a text-only batch,
    rank 1 an image batch. Completes, and the trained VPG-C equals one process on the global batch ≤ 1e-5."""
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file
    from train_cli import torchrun

    root = Path(__file__).resolve().parents[1]
    script = str(Path(__file__).with_name("ddp_mixed.py"))  # run by path: it imports vlm_cases beside it
    one = subprocess.run(
        [sys.executable, script, str(tmp_path / "one.safetensors")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(
        [*torchrun(2, 29531), script, str(tmp_path / "two.safetensors")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, (two.stdout + two.stderr)[-3000:]
    a, b = load_file(tmp_path / "one.safetensors"), load_file(tmp_path / "two.safetensors")
    assert sorted(a) == sorted(b) and len(a) == 5
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-5)
