"""Key listings of real releases (``tests/releases/*.json``) turned into tiny checkpoints.

Each listing names every tensor of a published file with its real shape and says where the names
come from (``provenance``). The listings were written from the originals' sources, never from
vpgkit's key maps, so a converter that guessed a release's names wrong fails on them. A tiny
checkpoint keeps every name and shrinks every dimension by a fixed table (``DIMS``); layers past
the tiny model's depth are dropped.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

RELEASES = Path(__file__).parent / "releases"

# Real dimension → tiny dimension (tiny Q-Former: 32 wide, 2 layers, 4 queries, FFN 64; tiny EVA 32
# wide; tiny LLaMA 48 wide). A dimension not in the table is an error: the listing has a shape the
# test did not plan for.
DIMS = {
    1: 1,
    2: 2,
    32: 4,  # queries
    256: 8,  # BLIP-2 stage-1 contrastive embedding
    512: 16,  # BERT positions
    768: 32,  # Q-Former width
    1408: 32,  # EVA-CLIP-g width
    2560: 48,  # OPT-2.7B width
    3072: 64,  # Q-Former FFN
    4096: 48,  # LLaMA-7B / FlanT5-XXL width
    30523: 30,  # BERT vocabulary + [DEC]
}


def listing(name: str) -> dict:
    """The JSON listing ``tests/releases/<name>.json`` (keys: release, provenance, keys → shape)."""
    return json.loads((RELEASES / f"{name}.json").read_text())


def tiny_state(name: str, layers: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """A tiny state dict with exactly the listing's key names (layers ≥ ``layers`` dropped)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in listing(name)["keys"].items():
        m = re.search(r"\.layer\.(\d+)\.", key)
        if m and int(m.group(1)) >= layers:
            continue
        missing = [d for d in shape if d not in DIMS]
        if missing:
            raise KeyError(f"{name}: {key} has dimensions {missing} with no tiny size in DIMS")
        tiny = [DIMS[d] for d in shape]
        if key.endswith("position_ids"):
            state[key] = torch.arange(tiny[-1])[None]
        elif key.endswith("LayerNorm.weight") or key.startswith("ln_vision.weight"):
            state[key] = 1 + 0.1 * torch.randn(tiny, generator=g)
        else:
            state[key] = 0.05 * torch.randn(tiny, generator=g)
    return state
