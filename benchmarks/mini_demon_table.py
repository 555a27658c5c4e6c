"""The mini-DEMON experiment: (a) base VPG trained on captions only, (b) VPG-C trained on captions only
(the paper's ablation), (c) VPG-C trained on captions + synthetic discriminative data — mean ± std over
seeds, per category, with wall times. Every number comes from real runs of `python -m vpgkit.train`.

    python benchmarks/mini_demon_table.py --seeds 0 1 2 --out runs/mini_demon
    python benchmarks/mini_demon_table.py --seeds 0 --extra trainer.max_steps=100   # quicker
    python benchmarks/mini_demon_table.py --seeds 0 1 2 --layers 0 2 3   # + (c) at other layers k, seed 0
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

BASE = "(a) base VPG, captions only"
DEFAULT = "(c) VPG-C, captions + synthetic"


def run(cmd: list[str], log: Path) -> float:
    started = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}; see {log}")
    return time.perf_counter() - started


def category_scores(results: Path) -> dict[str, float]:
    data = json.loads(results.read_text())
    return {c: v["score"] for c, v in data["categories"].items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/mini_demon")
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for every training run")
    parser.add_argument(
        "--layers",
        type=int,
        nargs="*",
        default=[],
        help="also run (c) with VPG-C at these layers k (first seed only)",
    )
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # (name, file tag, overrides, seeds); (a) comes from the (c) runs' base model
    variants = [
        ("(b) VPG-C, captions only", "b", ["data=tiny_world_captions"], args.seeds),
        (DEFAULT, "c", [], args.seeds),
    ]
    variants += [(f"{DEFAULT}, k={k} (seed {args.seeds[0]})", f"c_{k}", [f"model.vpgc_layer={k}"], args.seeds[:1])
                 for k in args.layers]  # fmt: skip
    scores: dict[str, list[dict[str, float]]] = {BASE: []}
    walls: dict[str, list[float]] = {BASE: []}
    for name, tag, overrides, seeds in variants:
        scores[name], walls[name] = [], []
        for seed in seeds:
            run_dir = out / f"{tag}_seed{seed}"
            cmd = [
                sys.executable,
                "-m",
                "vpgkit.train",
                "recipe=vpgc",
                f"seed={seed}",
                f"output_dir={run_dir}",
                *overrides,
                *args.extra,
            ]
            walls[name].append(run(cmd, out / f"{tag}_seed{seed}.log"))
            scores[name].append(category_scores(run_dir / "eval" / "results.json"))
            if name == DEFAULT:
                # (a): the same run's model without its adapter (VPG-C is zero at init)
                base = run_dir / "eval" / "base_results.json"
                cmd = [
                    sys.executable,
                    "-m",
                    "vpgkit.evaluate",
                    "--run",
                    str(run_dir),
                    "--base-only",
                    "--out",
                    str(base),
                ]
                cmd += [
                    "--demon",
                    *json.loads((run_dir / "eval" / "results.json").read_text())["settings"].get("demon", []),
                ]
                walls[BASE].append(run(cmd, out / f"a_seed{seed}.log"))
                scores[BASE].append(category_scores(base))
    categories = sorted({c for runs in scores.values() for s in runs for c in s})
    print(f"\nmini-DEMON, seeds {args.seeds}; mean ± std over seeds (percent)\n")
    print("| variant | " + " | ".join(categories) + " | wall s (per run) |")
    print("| --- | " + " | ".join("---" for _ in categories) + " | --- |")
    for name, runs in scores.items():
        cells = []
        for c in categories:
            values = [s[c] for s in runs if c in s]
            if len(values) > 1:
                cells.append(f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}")
            else:
                cells.append(f"{values[0]:.1f}" if values else "–")
        print(f"| {name} | " + " | ".join(cells) + f" | {statistics.mean(walls[name]):.0f} |")
    (out / "table.json").write_text(json.dumps({"scores": scores, "walls": walls}, indent=2))


if __name__ == "__main__":
    main()
