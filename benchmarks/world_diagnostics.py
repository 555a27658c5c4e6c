"""What the tiny world's frozen backbones can do on their own: the ceilings behind the mini-DEMON table.

Runs :mod:`synthetic.world.diagnostics` on a build: the language model on held-out task instances with
each image given perfectly as object slots (at the input, and with the small objects injected at layer
k), and an MLP probe of each object's colour and shape from the frozen ViT's tokens. The build prints the
same tables and stores them in its manifest.

    python benchmarks/world_diagnostics.py                      # the shipped backbones
    python benchmarks/world_diagnostics.py --assets /tmp/build  # another build's output folder

Writes ``benchmarks/results/world_diagnostics.json``; ``--docs`` rewrites the block of docs/tiny_world.md
from it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from doc_blocks import write_block
from results_file import write_results
from transformers import AutoTokenizer

from synthetic.world.build import built_by, slot_layout
from synthetic.world.diagnostics import format_diagnostics, lm_ceilings, vit_probe
from vpgkit.assets import asset_path
from vpgkit.backbones import EvaVisionConfig, TimmEvaEncoder
from vpgkit.backbones.language import load_causal_lm

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "world_diagnostics.json"


def docs_block(data: dict) -> str:
    """The docs/tiny_world.md block: the diagnostics of a results file and the commands behind them."""
    assets = built_by(
        {"command": data["assets_command"], "reused_backbones_from": data.get("assets_reused_from")}
    )
    return format_diagnostics(data) + f"\n\nMade by: `{data['command']}` (assets: {assets})"


def write_docs_block(
    text: str, page: Path = ROOT / "docs" / "tiny_world.md", name: str = "world-diagnostics"
) -> None:
    write_block(page, name, text)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--assets", type=Path, default=Path(asset_path("tiny_world")))
    parser.add_argument("--n", type=int, default=100, help="instances per task for the LM ceilings")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--docs", action="store_true", help="only rewrite docs/tiny_world.md's block from --out"
    )
    parser.add_argument(
        "--block", default="world-diagnostics", help="with --docs: the block of docs/tiny_world.md to rewrite"
    )
    args = parser.parse_args()
    if args.docs:
        data = json.loads(args.out.read_text())
        write_docs_block(docs_block(data), name=args.block)
        return
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(args.assets / "llm", local_files_only=True)
    llm = load_causal_lm(args.assets / "llm").float().eval()
    vit = TimmEvaEncoder.from_checkpoint(
        args.assets / "eva.safetensors", EvaVisionConfig.preset("tiny_world")
    )
    ceilings = lm_ceilings(llm, tok, n=args.n, layout=slot_layout(args.assets))
    diagnostics = {"lm_ceilings": ceilings, "vit_probe": vit_probe(vit)}
    manifest = json.loads((args.assets / "manifest.json").read_text())
    assets = "" if args.assets == Path(asset_path("tiny_world")) else f" --assets {args.assets}"
    result = {"command": f"python benchmarks/world_diagnostics.py --n {args.n}{assets}", "assets_command": manifest["command"],
              **({"assets_reused_from": manifest["reused_backbones_from"]} if "reused_backbones_from" in manifest else {}),
              "assets_sha256": {k: v["sha256"] for k, v in manifest["files"].items()}, **diagnostics}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_results(args.out, result, indent=1)
    print(format_diagnostics(diagnostics))


if __name__ == "__main__":
    main()
