"""How fast the tiny world builds: seconds per training step of each stage, code against code, side by side.

Each measurement is a real short build (``python -m synthetic.world.build`` with few steps per stage, the
recipe's flags, 2 threads, a temporary ``--out``) run in a subprocess from a checkout; the stages' own
timers (the manifest's ``stages.*.seconds``) give seconds per step. Builds of the configurations alternate
and repeat, so a change in the machine's load touches every column alike; the JSON records the load and
the GEMM rate measured in the same run. The full build's time is projected from the per-step medians
(default steps: LM 2000, ViT 800, Q-Former 600) plus the short build's diagnostics and writing.

    git worktree add /tmp/before 17846ce   # the code before the LM's length groups and the prefetch
    python benchmarks/world_build_speed.py --config "before=/tmp/before" --config "now=." \\
        --config "now, 4 length groups=.:--lm-length-groups 4"

Writes ``benchmarks/results/world_build_speed.json`` (``--out``); ``--docs`` rewrites the block
``world-build-speed`` (``--block``) of docs/tiny_world.md from it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from doc_blocks import write_block  # noqa: E402
from gemm_rate import gemm_gflops  # noqa: E402
from results_file import git_commit, write_results  # noqa: E402

# world v8's recipe (its manifest's command; world v9 adds --processes 2 --lm-length-groups 4)
RECIPE = (
    "--qformer-grounding --qformer-grounding-weight 4 --lm-question-summary 0.1 "
    "--lm-question-summary-tasks detail_question cloze difference --lm-compare 1 --lm-pair-colours 1"
)
FULL_STEPS = {"language_model": 2000, "vision_encoder": 800, "qformer": 600}
FLAGS = {"language_model": "--lm-steps", "vision_encoder": "--vit-steps", "qformer": "--qformer-steps"}


def parse_config(text: str) -> tuple[str, Path, list[str]]:
    """``NAME=CHECKOUT[:EXTRA FLAGS]`` → (name, checkout, extra build flags)."""
    name, sep, rest = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--config: expected NAME=CHECKOUT[:FLAGS], got {text!r}")
    checkout, _, extra = rest.partition(":")
    path = Path(checkout).resolve()
    if not (path / "synthetic" / "world" / "build.py").is_file():
        raise argparse.ArgumentTypeError(
            f"--config {name}: {path} is not a vpgkit checkout (no synthetic/world/build.py)"
        )
    return name, path, extra.split()


def short_build(checkout: Path, extra: list[str], steps: dict[str, int]) -> dict[str, float]:
    """Seconds per step of each stage, and the rest of the build (diagnostics, writing), of one short build."""
    with tempfile.TemporaryDirectory(prefix="world_speed.") as out:
        cmd = [
            sys.executable,
            "-m",
            "synthetic.world.build",
            "--out",
            out,
            "--seed",
            "0",
            *RECIPE.split(),
            *extra,
        ]
        cmd += [f"{FLAGS[s]}={n}" for s, n in steps.items()]
        env = {**os.environ, "PYTHONPATH": str(checkout)}
        subprocess.run(cmd, cwd=checkout, env=env, check=True, capture_output=True, text=True)
        manifest = json.loads((Path(out) / "manifest.json").read_text(encoding="utf-8"))
    stages = manifest["stages"]
    per_step = {s: stages[s]["seconds"] / stages[s]["steps"] for s in steps}
    per_step["rest_seconds"] = manifest["wall_seconds"] - sum(stages[s]["seconds"] for s in steps)
    return per_step


def docs_block(data: dict) -> str:
    """The Markdown table (per-step medians, projected full build, ratio to the first configuration) of a
    results file."""
    configs = data["configs"]
    first = next(iter(configs.values()))["projected_full_build_seconds"]
    lines = [
        "| code | LM s/step | ViT s/step | Q-Former s/step | projected full build (s) | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for name, c in configs.items():
        m, total = c["median"], c["projected_full_build_seconds"]
        lines.append(
            f"| {name} | {m['language_model']:.3f} | {m['vision_encoder']:.3f} | {m['qformer']:.3f} "
            f"| {total:.0f} | {first / total:.2f}x |"
        )
    steps, load = data["short_build_steps"], data["load_before"][0]
    lines += [
        "",
        f"Medians of {data['repeats']} alternating short builds per row ({steps['language_model']} LM, "
        f"{steps['vision_encoder']} ViT, {steps['qformer']} Q-Former steps; 2 threads, or with `--processes N` N "
        f"processes of 1 thread); projected = "
        f"2000 / 800 / 600 steps at those rates + the short build's diagnostics and writing. Load average "
        f"before the run {load:.2f}; fp32 GEMM {data['gemm_fp32_gflops']['wall']:.0f} GFLOP/s in the same run.",
        "",
        f"Made by: `{data['command']}`",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config", type=parse_config, action="append", default=[], metavar="NAME=CHECKOUT[:FLAGS]"
    )
    parser.add_argument("--lm-steps", type=int, default=40)
    parser.add_argument("--vit-steps", type=int, default=30)
    parser.add_argument("--qformer-steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2, help="rounds of alternating builds (default 2)")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "world_build_speed.json"
    )
    parser.add_argument(
        "--docs", action="store_true", help="only rewrite docs/tiny_world.md's block (--block) from --out"
    )
    parser.add_argument("--block", default="world-build-speed", help="the docs block --docs rewrites")
    args = parser.parse_args(argv)
    if args.docs:
        data = json.loads(args.out.read_text(encoding="utf-8"))
        write_block(ROOT / "docs" / "tiny_world.md", args.block, docs_block(data))
        return 0
    if not args.config:
        parser.error("--config NAME=CHECKOUT[:FLAGS]: give at least one")
    steps = {"language_model": args.lm_steps, "vision_encoder": args.vit_steps, "qformer": args.qformer_steps}
    torch.set_num_threads(2)
    start, load_before, gemm = time.perf_counter(), os.getloadavg(), gemm_gflops(torch.float32)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in args.config}
    for r in range(args.repeats):
        for name, checkout, extra in args.config:
            runs[name].append(short_build(checkout, extra, steps))
            print(
                f"round {r + 1}/{args.repeats} {name}: "
                + json.dumps({k: round(v, 3) for k, v in runs[name][-1].items()}),
                flush=True,
            )
    configs = {}
    for name, checkout, extra in args.config:
        median = {k: statistics.median(run[k] for run in runs[name]) for k in runs[name][0]}
        projected = sum(FULL_STEPS[s] * median[s] for s in FULL_STEPS) + median["rest_seconds"]
        configs[name] = {"checkout_commit": git_commit(checkout), "extra_flags": extra, "runs": runs[name],
                         "median": median, "projected_full_build_seconds": round(projected, 1)}  # fmt: skip
    data = {
        "command": "python benchmarks/world_build_speed.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "recipe": RECIPE, "short_build_steps": steps, "threads": 2, "repeats": args.repeats,
        "load_before": load_before, "load_after": os.getloadavg(), "gemm_fp32_gflops": gemm,
        "wall_seconds": round(time.perf_counter() - start, 1), "configs": configs,
    }  # fmt: skip
    write_results(args.out, data)
    print(docs_block(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
