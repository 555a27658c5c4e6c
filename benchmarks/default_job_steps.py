"""The default job's step time over its whole run: is it steady, and where does a tiny model's step go?

Runs the default job's training (``python -m vpgkit.train recipe=vpgc``: the same config, model, data,
sampler and loop; the post-training adapter save and mini-DEMON evaluation are left out, they come after
the last step) in this process and records, per optimiser step:

* the loop's own step time (``TrainResult.step_seconds``: batch fetch + forward + backward + AdamW + log);
* the data part of it (dataset ``__getitem__`` + collation, timed around the loader's calls);
* garbage-collector pauses (``gc.callbacks``), by generation;
* process CPU time.

Steadiness: the median step time of the last 10% of steps against the first 10% after warm-up (the
first ``--warmup`` steps). Must be within 15%.

    OMP_NUM_THREADS=1 python benchmarks/default_job_steps.py --label before
    OMP_NUM_THREADS=1 python benchmarks/default_job_steps.py --label after      # updates the same JSON
    python benchmarks/default_job_steps.py --readme

``--data DIR`` reuses an already prepared ``data`` folder (the job's ``prepare`` step does no work when
its settings match, so the first run writes it and later runs only read it).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from doc_blocks import write_block

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "default_job_steps.json"


class GCPauses:
    """Seconds the cyclic garbage collector ran, per generation, since the last :meth:`take`."""

    def __init__(self):
        self.seconds = [0.0, 0.0, 0.0]
        self.count = [0, 0, 0]
        self._start = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.seconds[info["generation"]] += time.perf_counter() - self._start
            self.count[info["generation"]] += 1

    def take(self) -> tuple[list[float], list[int]]:
        out = (self.seconds, self.count)
        self.seconds, self.count = [0.0, 0.0, 0.0], [0, 0, 0]
        return out


class Timed:
    """Wraps a callable and adds its wall time to ``self.seconds``."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def run(args) -> dict:
    import torch
    from hydra import compose, initialize_config_module
    from hydra.utils import call

    import vpgkit  # noqa: F401  (sets the OpenMP wait policy before torch starts its threads)
    from vpgkit.config import register_schema, to_train_config
    from vpgkit.data.collation import Collator
    from vpgkit.threads import apply_thread_policy
    from vpgkit.training import loop
    from vpgkit.training.build import build_model
    from vpgkit.training.datasets import build_datasets
    from vpgkit.training.loop import default_sampler, train

    threads = apply_thread_policy()
    register_schema()
    out = Path(args.out_dir or tempfile.mkdtemp(prefix="default_job_"))
    overrides = ["recipe=vpgc", f"output_dir={out}", "trainer.log_with=null", *args.overrides]
    with initialize_config_module(config_module="vpgkit.recipes", version_base=None):
        cfg = to_train_config(compose(config_name="train", overrides=overrides))
    if args.data:
        cfg.data.prepare["out_dir"] = str(args.data)
        for source in cfg.data.train:
            source.path = str(Path(args.data) / Path(source.path).name)
            source.images = str(args.data)
    started = time.perf_counter()
    call(cfg.data.prepare)
    prepare_s = time.perf_counter() - started
    model, tokenizer = build_model(cfg.model, cfg.seed)
    train_set, eval_set, per_batch = build_datasets(cfg.data, tokenizer, model)
    collate = Timed(Collator(pad_token_id=tokenizer.pad_token_id, image_size=model.vision.image_size))
    getitem = Timed(train_set.__getitem__)
    type(train_set).__getitem__ = lambda self, i: getitem(i)  # the DataLoader calls dataset[i]
    sampler = default_sampler(train_set, cfg.trainer.global_batch_size, cfg.seed, per_batch)

    pauses = GCPauses()
    gc.callbacks.append(pauses)
    per_step: list[dict] = []
    original_step = loop._step

    def timed_step(cfg_, run_):
        cpu = time.process_time()
        data0 = collate.seconds + getitem.seconds
        original_step(cfg_, run_)
        gc_s, gc_n = pauses.take()
        per_step.append(
            {
                "cpu_s": time.process_time() - cpu,
                "data_s": collate.seconds + getitem.seconds - data0,
                "gc_s": gc_s,
                "gc_collections": gc_n,
            }
        )

    loop._step = timed_step
    try:
        started = time.perf_counter()
        result = train(cfg, model, train_set, collate, eval_set, batch_sampler=sampler)
        train_s = time.perf_counter() - started
    finally:
        loop._step = original_step
        gc.callbacks.remove(pauses)
    steps = result.step_seconds
    for row, s in zip(per_step, steps, strict=True):
        row["step_s"] = s
    return summarise(args, steps, per_step, threads, prepare_s, train_s, result.losses, torch)


def window_stats(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def summarise(args, steps, per_step, threads, prepare_s, train_s, losses, torch) -> dict:
    n = len(steps)
    warm = args.warmup
    tenth = max(1, (n - warm) // 10)
    first, last = per_step[warm : warm + tenth], per_step[-tenth:]

    def part(rows):
        return {
            "median_step_ms": 1e3 * window_stats(rows, "step_s"),
            "mean_step_ms": 1e3 * statistics.fmean(r["step_s"] for r in rows),
            "median_cpu_ms": 1e3 * window_stats(rows, "cpu_s"),
            "mean_data_ms": 1e3 * statistics.fmean(r["data_s"] for r in rows),
            "mean_gc_ms": 1e3 * statistics.fmean(sum(r["gc_s"]) for r in rows),
            "gen2_collections": sum(r["gc_collections"][2] for r in rows),
        }

    deciles, cpu_deciles = [], []
    for d in range(10):
        rows = per_step[warm + d * tenth : warm + (d + 1) * tenth] if d < 9 else per_step[warm + 9 * tenth :]
        deciles.append(1e3 * window_stats(rows, "step_s"))
        cpu_deciles.append(1e3 * window_stats(rows, "cpu_s"))
    first_p, last_p = part(first), part(last)
    return {
        "label": args.label,
        "command": "python benchmarks/default_job_steps.py "
        + " ".join(a for a in sys.argv[1:] if not a.startswith("--data")),
        "commit": _commit(),
        "threads": threads,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch": torch.__version__,
        "load_before": args.load_before,
        "load_after": os.getloadavg(),
        "steps": n,
        "warmup_steps": warm,
        "prepare_s": prepare_s,
        "train_s": train_s,
        "first_10pct": first_p,
        "last_10pct": last_p,
        "last_over_first": last_p["median_step_ms"] / first_p["median_step_ms"],
        "decile_median_step_ms": deciles,
        "decile_median_cpu_ms": cpu_deciles,
        "total_gc_s": sum(sum(r["gc_s"]) for r in per_step),
        "total_data_s": sum(r["data_s"] for r in per_step),
        "final_loss": losses[-1],
        "loss_sum": sum(losses),
        "step_ms": [round(1e3 * s, 2) for s in steps],
        "cpu_ms": [round(1e3 * r["cpu_s"], 2) for r in per_step],
    }


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def readme_block(results: dict) -> str:
    lines = [
        "| run | code | threads | load (1-min avg) before → after | steps | train s | first 10% median step ms "
        "| last 10% median step ms | last / first | GC s (total) | data s (total) | final loss |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, r in results["runs"].items():
        lines.append(
            f"| {label} | {r['commit']} | {r['threads']} | {r['load_before'][0]:.2f} → {r['load_after'][0]:.2f} "
            f"| {r['steps']} | {r['train_s']:.0f} | {r['first_10pct']['median_step_ms']:.1f} "
            f"| {r['last_10pct']['median_step_ms']:.1f} | {r['last_over_first']:.2f} | {r['total_gc_s']:.1f} "
            f"| {r['total_data_s']:.1f} | {r['final_loss']:.4f} |"
        )
    lines += ["", "Median step ms per tenth of the run (after warm-up):", ""]
    for label, r in results["runs"].items():
        lines.append(f"- {label}: " + ", ".join(f"{d:.0f}" for d in r["decile_median_step_ms"]))
    lines += ["", "Commands: " + "; ".join(f"`{r['command']}`" for r in results["runs"].values()) + "."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--label", default="after")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--data", type=Path, default=None, help="an already prepared data folder")
    parser.add_argument("--out-dir", default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--readme", action="store_true")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides (key=value)")
    args = parser.parse_args()
    if args.readme:
        write_block(ROOT / "README.md", "default-job-steps", readme_block(json.loads(args.out.read_text())))
        return
    args.load_before = os.getloadavg()
    result = run(args)
    results = json.loads(args.out.read_text()) if args.out.exists() else {"runs": {}}
    results["runs"][args.label] = result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, args.out)
    print(readme_block(results))


if __name__ == "__main__":
    main()
