"""Kept pairs per hour of the discriminative-data pipeline at 224 px with a ViT-S VPG (CPU), projected to 64k.

The whole pipeline (image loading, attention with an EVA ViT-S/14 + BLIP-2-sized Q-Former with random
weights — only shapes matter for speed —, SLIC superpixels, the four editors, quality filter, captions,
PNG + JSONL writes) runs on generated 224-px scenes until ``--pairs`` pairs are kept. The result, under
``--label`` in ``benchmarks/results/synthetic_throughput.json``, holds the wall time per kept pair, the
projection for ``--target`` pairs, the keep rate per editor, the per-stage split (main process: load,
attention, waiting for the workers, writing; workers: CPU seconds of editing), the torch thread counts
(of the main process and of its attention), the code it ran (git commit) and how busy the machine's other
processes kept its cores: sampled for 1 s before the run, and averaged over the whole run (all CPU time
of the machine minus this process's and its workers').

    OMP_WAIT_POLICY=PASSIVE python benchmarks/synthetic_throughput.py --label after3 --pairs 2000  # as the CLI
    PYTHONPATH=/path/to/old/checkout python benchmarks/synthetic_throughput.py --label before --pairs 200 \\
        --attention-dtype float32 --edits-per-source 1 --delete-min-contrast 0    # an older pipeline
    OMP_WAIT_POLICY=PASSIVE python benchmarks/synthetic_throughput.py --label t1 --attention-threads 1

Options an older checkout lacks are left out of its run (recorded as ``null``). Not run in tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from doc_blocks import write_block
from gemm_rate import gemm_gflops
from results_file import git_commit, write_results

import synthetic
from synthetic.discriminative import DiscriminativePipeline, PipelineConfig, VPGAttention, sources_from_folder
from synthetic.discriminative.vpg_loader import VPG
from vpgkit.backbones import EvaVisionConfig, ImageProcessor, TimmEvaEncoder
from vpgkit.modules import QFormer, QFormerConfig

try:
    from vpgkit.threads import busy_cores
except ImportError:  # an older checkout
    busy_cores = None

RESULTS = Path(__file__).resolve().parent / "results" / "synthetic_throughput.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def scenes(folder: Path, n: int, size: int = 224) -> None:
    """n images of 3–6 coloured rectangles and discs on a textured background."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for k in range(n):
        img = np.empty((size, size, 3), np.float64)
        img[:] = rng.integers(40, 220, 3)
        img += rng.normal(0, 4, img.shape)
        for _ in range(rng.integers(3, 7)):
            cy, cx, r = rng.integers(20, size - 20), rng.integers(20, size - 20), rng.integers(10, 40)
            shape = (
                (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
                if rng.random() < 0.5
                else (abs(yy - cy) < r) & (abs(xx - cx) < r)
            )
            img[shape] = rng.integers(0, 256, 3)
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / f"{k:05d}.png")


def vit_s_vpg() -> VPG:
    """EVA ViT-S/14 at 224 px (12 × 384) + BLIP-2-sized Q-Former, random fp32 weights, frozen."""
    vision = TimmEvaEncoder(EvaVisionConfig(width=384, depth=12, num_heads=6, mlp_dim=1536))
    qformer = QFormer(QFormerConfig.preset("blip2", vision_width=384))
    for m in (vision, qformer):
        m.requires_grad_(False).eval()
    return VPG(vision, qformer, ImageProcessor(224), "EVA ViT-S/14 + Q-Former (random)")


def gemm_rates() -> dict:
    """GFLOP/s of a 2048² matmul in fp32 and bf16 per wall second and per process-CPU second, now: how much
    of the machine this run had."""
    rates = {name: gemm_gflops(dt) for name, dt in (("float32", torch.float32), ("bfloat16", torch.bfloat16))}
    return {
        name: {"gflops_wall": r["wall"], "gflops_per_cpu_second": r["per_cpu_second"]}
        for name, r in rates.items()
    }


def cpu_ticks() -> dict[str, int]:
    """Machine-wide busy and total jiffies (``/proc/stat``) and this process's own CPU jiffies, its
    waited-for children (the pipeline's worker processes, once shut down) included."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return {"busy": sum(fields) - idle, "total": sum(fields), "own": sum(int(x) for x in own[11:15])}


def others_busy_cores(before: dict[str, int], after: dict[str, int]) -> float:
    """Cores kept busy by processes other than this one and its children between two :func:`cpu_ticks`."""
    total = after["total"] - before["total"]
    others = (after["busy"] - before["busy"]) - (after["own"] - before["own"])
    return max(0.0, others / max(total, 1) * (os.cpu_count() or 1))


def code_version() -> dict:
    root = Path(synthetic.__file__).resolve().parent.parent
    return {"checkout": str(root), "commit": git_commit(root)}


def readme_block(data: dict) -> str:
    """The benchmarks/README.md block of this script, rendered from its JSON (one row per label)."""
    lines = [
        "| run | code | attention | attention threads | edits / source | kept / jobs | delete keep rate "
        "| pairs / hour | hours for 64k | s per pair: attention · edit CPU · write | CPU s per pair: all "
        "(attention · edit · write) | bf16 GEMM GFLOP per CPU s | other processes' busy cores: before · during |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, r in data.items():
        hours = next(v for k, v in r.items() if k.startswith("hours_for_"))
        st = r.get("stage_seconds_per_kept_pair") or {}
        split = " · ".join(f"{st[k]:.3f}" for k in ("attention", "edit_cpu", "write")) if st else "n/a"
        delete = r["by_editor"].get("delete", {}).get("keep_rate")
        during = r.get("busy_cores_of_other_processes_during")
        busy = f"{_num(r['busy_cores_of_other_processes_before'])} · {_num(during)}"
        cpu = "n/a"
        if "cpu_seconds_per_kept_pair" in r:
            parts = [st.get(k) for k in ("attention_cpu", "edit_cpu", "write_cpu")]
            cpu = f"{r['cpu_seconds_per_kept_pair']:.3f}"
            if None not in parts:
                # thread CPU time: with more than one torch thread the attention's other threads are missing
                at_least = "≥" if r.get("attention_threads", 1) > 1 else ""
                cpu += f" ({at_least}" + " · ".join(f"{x:.3f}" for x in parts) + ")"
        lines.append(
            f"| {label} | {r['code']['commit']} | {r['attention_dtype']} "
            f"| {r.get('attention_threads', r['threads_main'])} | {r['edits_per_source'] or 1} "
            f"| {r['kept']} / {r['jobs']} | {delete:.2f} | {r['pairs_per_hour']:.0f} | {hours:.1f} | {split} "
            f"| {cpu} | {r['gemm_before']['bfloat16']['gflops_per_cpu_second']:.0f} | {busy} |"
        )
    lines += [
        "",
        "Commands: " + "; ".join(f"`{r['command']}`" for r in data.values()) + f" ({r['workers']} workers).",
    ]
    notes = {label: r["note"] for label, r in data.items() if r.get("note")}
    for note in dict.fromkeys(notes.values()):
        lines.append(f"{', '.join(k for k, v in notes.items() if v == note)}: {note}.")
    return "\n".join(lines)


def _num(x: float | None) -> str:
    return "n/a" if x is None or x != x else f"{x:.2f}"  # x != x: NaN (not measured)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--label", help="key of this run in the JSON (e.g. before, after)")
    p.add_argument("--readme", action="store_true", help="only rewrite benchmarks/README.md's block")
    p.add_argument("--pairs", type=int, default=2000, help="kept pairs to produce (default 2000)")
    p.add_argument("--images", type=int, default=1000, help="generated source images (default 1000)")
    p.add_argument("--workers", type=int, default=2, help="editing processes (default 2)")
    p.add_argument("--target", type=int, default=64000, help="pairs to project the time for (default 64000)")
    p.add_argument("--attention-dtype", choices=sorted(DTYPES), default="bfloat16")
    p.add_argument("--edits-per-source", type=int, default=None, help="default: the pipeline's")
    p.add_argument("--delete-min-contrast", type=float, default=None, help="default: the editor's")
    p.add_argument(
        "--attention-threads",
        type=int,
        default=None,
        help="torch threads of the attention (default: the pipeline's)",
    )
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    if args.readme:
        text = readme_block(json.loads(args.out.read_text()))
        write_block(Path(__file__).resolve().parent / "README.md", "synthetic-throughput", text)
        return
    if not args.label:
        p.error("--label is required to measure")
    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="synthetic_throughput_"))
    (work / "imgs").mkdir()
    scenes(work / "imgs", args.images)
    sources = sources_from_folder(work / "imgs")

    fields = {f.name for f in dataclasses.fields(PipelineConfig)}
    options: dict = {"seed": 0, "preview": 0, "max_side": 224}
    if args.edits_per_source is not None and "edits_per_source" in fields:
        options["edits_per_source"] = args.edits_per_source
    if args.delete_min_contrast is not None:
        options["editor_options"] = {"delete": {"min_contrast": args.delete_min_contrast}}
    config = PipelineConfig(**options)
    dtype = DTYPES[args.attention_dtype]
    try:
        attention = VPGAttention(vit_s_vpg(), batch_size=16, dtype=dtype)
    except TypeError:  # an older checkout: no dtype option (fp32 only)
        if dtype != torch.float32:
            raise
        attention = VPGAttention(vit_s_vpg(), batch_size=16)
    pipe = DiscriminativePipeline(attention, config)
    others = busy_cores(1.0) if busy_cores is not None else float("nan")
    gemm_before = gemm_rates()
    run_options = {}
    if "attention_threads" in inspect.signature(pipe.run).parameters:
        run_options["attention_threads"] = args.attention_threads
        threads_attention = args.attention_threads or torch.get_num_threads()
    elif args.attention_threads is not None:
        p.error("--attention-threads: this checkout's pipeline has no such option")
    else:
        threads_attention = torch.get_num_threads()
    load_before = os.getloadavg()[0]
    ticks0 = cpu_ticks()
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0, start = time.process_time(), time.perf_counter()
    summary = pipe.run(sources, work / "out", args.pairs, workers=args.workers, progress=False, **run_options)
    seconds, main_cpu = time.perf_counter() - start, time.process_time() - cpu0
    during = others_busy_cores(ticks0, cpu_ticks())
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the workers, joined when the run ended
    workers_cpu = (children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime)
    load_after = os.getloadavg()[0]
    kept, jobs = summary["kept"], summary["jobs"]
    stages = dict(getattr(pipe, "stage_seconds", {}))
    by_editor = {
        e: {
            "jobs": sum(c.values()),
            "kept": c.get("kept", 0),
            "keep_rate": c.get("kept", 0) / sum(c.values()),
        }
        for e, c in summary["by_editor"].items()
    }
    result = {
        "command": "".join(
            f"{k}={os.environ[k]} " for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS") if k in os.environ
        )
        + "python benchmarks/synthetic_throughput.py "
        + " ".join(sys.argv[1:]),
        "code": code_version(),
        "torch": torch.__version__,
        "threads_main": torch.get_num_threads(),
        "attention_threads": threads_attention,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default (active)"),
        "workers": args.workers,
        "busy_cores_of_other_processes_before": round(others, 2),
        "busy_cores_of_other_processes_during": round(during, 2),
        "load_average_1min": {"before": load_before, "after": load_after},
        "gemm_before": gemm_before,
        "gemm_after": gemm_rates(),
        "attention_dtype": args.attention_dtype
        if "dtype" in VPGAttention.__init__.__code__.co_varnames
        else "float32",
        "edits_per_source": getattr(config, "edits_per_source", None),
        "delete_min_contrast": args.delete_min_contrast,
        "kept": kept,
        "jobs": jobs,
        "keep_rate": kept / jobs,
        "by_editor": by_editor,
        "rejected": summary["rejected"],
        "wall_seconds": seconds,
        "main_process_cpu_seconds": main_cpu,
        "worker_processes_cpu_seconds": workers_cpu,
        # all CPU time the run took per kept pair (main + workers): what a machine's cores must supply
        "cpu_seconds_per_kept_pair": (main_cpu + workers_cpu) / kept,
        "seconds_per_kept_pair": seconds / kept,
        "pairs_per_hour": 3600 * kept / seconds,
        f"hours_for_{args.target}": args.target * seconds / kept / 3600,
        "stage_seconds_per_kept_pair": {k: v / kept for k, v in sorted(stages.items())} or None,
        "attention_maps": dict(getattr(pipe, "stage_counts", {})).get("attention_maps"),
    }
    data = json.loads(args.out.read_text()) if args.out.is_file() else {}
    data[args.label] = result
    write_results(args.out, data)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
