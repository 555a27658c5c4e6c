"""Run by tests/test_mixed_batches.py under ``torchrun`` (CPU, gloo): VPG-C training where rank 0's batch is
text only and rank 1's has images, with DDP and no ``find_unused_parameters``; with one process it trains
on the whole global batch. Writes the trained adapter weights (safetensors) to argv[1]."""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch.nn.parallel import DistributedDataParallel
from vlm_cases import PLUGIN_CASES, SLOT, plugin_model, right_padded


def global_batch():
    """Rows 0-1 text only, rows 2-3 with one and two images; labels on each row's last 3 tokens."""
    g = torch.Generator().manual_seed(0)
    text = lambda n: torch.randint(10, 128, (n,), generator=g).tolist()  # noqa: E731
    image = [SLOT] * 4
    rows = [
        [1, *text(7)],
        [1, *text(5)],
        [1, *text(2), *image, *text(4)],
        [1, *image, *text(2), *image, *text(3)],
    ]
    vision = torch.randn(4, 2, 10, 32, generator=g)
    return rows, [0, 0, 1, 2], vision


def batch(rows, counts, vision):
    ids, mask = right_padded(rows)
    labels = torch.full_like(ids, -100)
    for i, row in enumerate(rows):
        labels[i, len(row) - 3 : len(row)] = ids[i, len(row) - 3 : len(row)]
    t = max(counts)
    return dict(
        input_ids=ids,
        attention_mask=mask,
        labels=labels,
        vision_features=vision[:, :t].contiguous(),
        num_images=torch.tensor(counts),
    )


def main(out: str, steps: int = 3) -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    torch.manual_seed(0)
    model = plugin_model(PLUGIN_CASES["qformer_vpgc"])
    model.train()
    rows, counts, vision = global_batch()
    if world > 1:
        dist.init_process_group("gloo")
        half = slice(0, 2) if rank == 0 else slice(2, 4)  # rank 0: text only, rank 1: images
        mine = batch(rows[half], counts[half], vision[half])
        assert (mine["num_images"] == 0).all() == (rank == 0)
        net = DistributedDataParallel(model)  # find_unused_parameters=False (the default)
    else:
        mine, net = batch(rows, counts, vision), model
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    total = 3.0 * len(rows)  # labelled tokens of the global batch
    for _ in range(steps):
        loss = net(**mine, loss_only=True, loss_reduction="sum").loss
        (loss * world / total).backward()  # DDP averages over processes: the global mean
        optimizer.step()
        optimizer.zero_grad()
    if rank == 0:
        save_file({n: p.detach().contiguous() for n, p in model.trainable_parameters().items()}, out)
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
