"""The default job's step time over its whole run: is it steady, and where does a tiny model's step go?

Runs the default job's training (``python -m vpgkit.train recipe=vpgc``: the same config, model, data,
sampler and loop — ``vpgkit.training.loop``'s own setup, step and checkpointing; the adapter save and
mini-DEMON evaluation after the last step are left out) twice in this process, steps alternating so that
machine load hits both alike: ``before`` = the previous recipe (``data.feature_cache=null``: the ViT
encodes every image at every step), ``after`` = the current default (frozen-feature cache on). It checks
that both runs' losses are bitwise equal and records, per optimiser step:

* the loop's own step time (``TrainResult.step_seconds``: batch fetch + forward + backward + AdamW + log);
* the data part of it (dataset ``__getitem__`` + collation, timed around the loader's calls);
* garbage-collector pauses (``gc.callbacks``), by generation;
* process CPU time.

Steadiness: the median step time of the last 10% of steps against the first 10% after warm-up (the
first ``--warmup`` steps). Must be within 15%.

    OMP_NUM_THREADS=1 python benchmarks/default_job_steps.py       # before and after, steps alternating
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
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from doc_blocks import write_block
from results_file import git_commit, write_results

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


class TimedDataset:
    """A dataset whose ``__getitem__`` time is added up (the DataLoader calls it once per sample)."""

    def __init__(self, dataset):
        self.dataset, self.seconds = dataset, 0.0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        start = time.perf_counter()
        try:
            return self.dataset[index]
        finally:
            self.seconds += time.perf_counter() - start


VARIANTS = {
    "before": ["data.feature_cache=null"],  # the previous recipe: the ViT encodes every image every step
    "after": [],  # the current default (frozen-feature cache on)
}


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
    from vpgkit.training.loop import default_sampler

    threads = apply_thread_policy()
    register_schema()
    root = Path(args.out_dir or tempfile.mkdtemp(prefix="default_job_"))
    jobs = {}
    for label in args.variants:
        out = root / label
        overrides = ["recipe=vpgc", f"output_dir={out}", "trainer.log_with=null", *VARIANTS[label]]
        with initialize_config_module(config_module="vpgkit.recipes", version_base=None):
            cfg = to_train_config(compose(config_name="train", overrides=[*overrides, *args.overrides]))
        data = Path(args.data or root / "data")  # one data folder for both (same files)
        cfg.data.prepare["out_dir"] = str(data)
        for source in cfg.data.train:
            source.path, source.images = str(data / Path(source.path).name), str(data)
        started = time.perf_counter()
        call(cfg.data.prepare)  # no work once written
        model, tokenizer = build_model(cfg.model, cfg.seed)
        train_set, _, per_batch = build_datasets(cfg.data, tokenizer, model)
        setup_s = time.perf_counter() - started  # data check + (after) filling the feature cache
        sampler = default_sampler(train_set, cfg.trainer.global_batch_size, cfg.seed, per_batch)
        timed = TimedDataset(train_set)
        collate = Timed(Collator(pad_token_id=tokenizer.pad_token_id, image_size=model.vision.image_size))
        state = loop._setup(cfg, model, timed, collate, None, sampler)
        jobs[label] = {"cfg": cfg, "run": state, "data": (timed, collate), "setup_s": setup_s, "rows": []}

    class NoStop:
        requested = None

    pauses = GCPauses()
    gc.callbacks.append(pauses)
    started = time.perf_counter()
    probe_a, probe_b = torch.randn(192, 192), torch.randn(192, 192)
    probes: list[float] = []
    try:
        steps = max(job["cfg"].trainer.max_steps for job in jobs.values())
        for _ in range(steps):  # alternate: machine load hits both runs alike
            probes.append(machine_probe(probe_a, probe_b))
            for job in jobs.values():
                cfg, state = job["cfg"], job["run"]
                if state.result.step >= cfg.trainer.max_steps:
                    continue
                timed, collate = job["data"]
                cpu, data0 = time.process_time(), timed.seconds + collate.seconds
                pauses.take()
                loop._step(cfg, state)
                gc_s, gc_n = pauses.take()
                job["rows"].append(
                    {
                        "step_s": state.result.step_seconds[-1],
                        "cpu_s": time.process_time() - cpu,
                        "data_s": timed.seconds + collate.seconds - data0,
                        "gc_s": gc_s,
                        "gc_collections": gc_n,
                    }
                )
                loop._evaluate_and_save(cfg, state, None, collate, NoStop())
    finally:
        gc.callbacks.remove(pauses)
    wall = time.perf_counter() - started
    results = {}
    for label, job in jobs.items():
        state = job["run"]
        state.bar.close()
        for row, probe in zip(job["rows"], probes, strict=False):
            row["probe_s"] = probe
        results[label] = summarise(args, job["rows"], job["setup_s"], state.result.losses)
    losses = [job["run"].result.losses for job in jobs.values()]
    return {
        "command": "python benchmarks/default_job_steps.py "
        + " ".join(_without_option(sys.argv[1:], ("--data", "--out", "--out-dir"))),
        "commit": git_commit(ROOT) or "unknown",
        "threads": threads,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch": torch.__version__,
        "load_before": args.load_before,
        "load_after": os.getloadavg(),
        "interleaved_wall_s": wall,
        "losses_bitwise_equal": all(x == losses[0] for x in losses),
        "runs": results,
    }


def machine_probe(a, b, repeat: int = 20) -> float:
    """Wall seconds of a fixed piece of work (``repeat`` 192² fp32 matmuls): how fast the machine runs this
    process right now. Timed once per step pair, it separates the machine's drift from the job's."""
    start = time.perf_counter()
    for _ in range(repeat):
        a @ b
    return time.perf_counter() - start


def window_stats(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def summarise(args, per_step: list[dict], setup_s: float, losses: list[float]) -> dict:
    """Per-run figures: first / last 10% after warm-up, medians per tenth, totals."""
    n, warm = len(per_step), args.warmup
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

    deciles, cpu_deciles, probe_deciles = [], [], []
    for d in range(10):
        rows = per_step[warm + d * tenth : warm + (d + 1) * tenth] if d < 9 else per_step[warm + 9 * tenth :]
        deciles.append(1e3 * window_stats(rows, "step_s"))
        cpu_deciles.append(1e3 * window_stats(rows, "cpu_s"))
        probe_deciles.append(1e3 * window_stats(rows, "probe_s"))
    first_p, last_p = part(first), part(last)
    return {
        "steps": n,
        "warmup_steps": warm,
        "setup_s": setup_s,
        "train_s": sum(r["step_s"] for r in per_step),
        "median_step_ms": 1e3 * window_stats(per_step[warm:], "step_s"),
        "median_cpu_ms": 1e3 * window_stats(per_step[warm:], "cpu_s"),
        "first_10pct": first_p,
        "last_10pct": last_p,
        "last_over_first": last_p["median_step_ms"] / first_p["median_step_ms"],
        "last_over_first_cpu": last_p["median_cpu_ms"] / first_p["median_cpu_ms"],
        "decile_median_step_ms": deciles,
        "decile_median_cpu_ms": cpu_deciles,
        "decile_median_probe_ms": probe_deciles,
        "last_over_first_probe": probe_deciles[-1] / probe_deciles[0],
        "last_over_first_per_probe": (last_p["median_step_ms"] / first_p["median_step_ms"])
        / (probe_deciles[-1] / probe_deciles[0]),
        "total_gc_s": sum(sum(r["gc_s"]) for r in per_step),
        "total_data_s": sum(r["data_s"] for r in per_step),
        "final_loss": losses[-1],
        "step_ms": [round(1e3 * r["step_s"], 2) for r in per_step],
        "cpu_ms": [round(1e3 * r["cpu_s"], 2) for r in per_step],
    }


BREAKDOWN = ROOT / "results" / "default_job_breakdown.json"
PARTS = ("data", "vision tower", "prompts + LM forward + loss", "backward", "AdamW")


def breakdown(args) -> dict:
    """Where one step of the default job's model goes: process-CPU time of its parts, by hand-placed clocks
    around the same calls the loop makes (data = dataset + collation; the vision tower run explicitly,
    then the model on its features), over ``--breakdown-steps`` steps of the job's batches, for the
    previous recipe (pixels) and the current one (cached features); and the number of aten ops per step
    (torch.profiler), the per-op overhead a 128-wide model pays."""
    import torch
    from hydra import compose, initialize_config_module
    from hydra.utils import call
    from torch.profiler import ProfilerActivity, profile

    import vpgkit  # noqa: F401
    from vpgkit.config import register_schema, to_train_config
    from vpgkit.data.collation import Collator
    from vpgkit.threads import apply_thread_policy
    from vpgkit.training.build import build_model
    from vpgkit.training.datasets import build_datasets
    from vpgkit.training.loop import MODEL_INPUTS, default_sampler

    threads = apply_thread_policy()
    register_schema()
    root = Path(args.out_dir or tempfile.mkdtemp(prefix="default_job_breakdown_"))
    out = {}
    for label in args.variants:
        with initialize_config_module(config_module="vpgkit.recipes", version_base=None):
            overrides = ["recipe=vpgc", f"output_dir={root / label}", *VARIANTS[label], *args.overrides]
            cfg = to_train_config(compose(config_name="train", overrides=overrides))
        data = Path(args.data or root / "data")
        cfg.data.prepare["out_dir"] = str(data)
        for source in cfg.data.train:
            source.path, source.images = str(data / Path(source.path).name), str(data)
        call(cfg.data.prepare)
        model, tokenizer = build_model(cfg.model, cfg.seed)
        train_set, _, per_batch = build_datasets(cfg.data, tokenizer, model)
        collate = Collator(pad_token_id=tokenizer.pad_token_id, image_size=model.vision.image_size)
        sampler = default_sampler(train_set, cfg.trainer.global_batch_size, cfg.seed, per_batch)
        optimizer = torch.optim.AdamW(model.trainable_parameters().values(), lr=1e-3)
        model.train()
        times: dict[str, list[float]] = {p: [] for p in PARTS}

        job = (model, optimizer, collate, train_set, sampler, MODEL_INPUTS)
        for i in range(args.breakdown_steps + 3):
            _part_timed_step(job, i, times if i >= 3 else None)  # 3 warm-up steps
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            _part_timed_step(job, args.breakdown_steps + 3, None)
        ops = sum(e.count for e in prof.key_averages())
        medians = {p: 1e3 * statistics.median(v) for p, v in times.items()}
        total = sum(medians.values())
        out[label] = {
            "median_cpu_ms": medians,
            "share": {p: m / total for p, m in medians.items()},
            "total_cpu_ms": total,
            "aten_ops_per_step": ops,
            "batch_shape": list(batch_shape(collate, train_set, sampler)),
        }
    return {
        "command": "python benchmarks/default_job_steps.py --breakdown "
        + " ".join(
            a for a in _without_option(sys.argv[1:], ("--data", "--out", "--out-dir")) if a != "--breakdown"
        ),
        "commit": git_commit(ROOT) or "unknown",
        "threads": threads,
        "torch": torch.__version__,
        "load_before": args.load_before,
        "load_after": os.getloadavg(),
        "steps": args.breakdown_steps,
        "runs": out,
    }


def _part_timed_step(job: tuple, i: int, times: dict[str, list[float]] | None) -> None:
    """Step ``i`` of the job's batches with a process-CPU clock between the parts (added to ``times``)."""
    import torch

    model, optimizer, collate, train_set, sampler, model_inputs = job
    marks = [time.process_time()]
    batch = collate([train_set[j] for j in sampler.batch_indices(0, i)])
    marks.append(time.process_time())
    inputs = {k: batch[k] for k in model_inputs if k in batch}
    if "pixel_values" in inputs:
        with torch.no_grad():
            inputs["vision_features"] = model.vision(inputs.pop("pixel_values"))
    marks.append(time.process_time())
    loss = model(**inputs, loss_only=True, loss_reduction="sum").loss
    marks.append(time.process_time())
    loss.backward()
    marks.append(time.process_time())
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    marks.append(time.process_time())
    if times is not None:
        for part, a, b in zip(PARTS, marks[:-1], marks[1:], strict=True):
            times[part].append(b - a)


def batch_shape(collate, train_set, sampler) -> tuple[int, ...]:
    """(B, L) of the job's first batch."""
    return tuple(collate([train_set[j] for j in sampler.batch_indices(0, 0)])["input_ids"].shape)


def breakdown_block(result: dict) -> str:
    runs = result["runs"]
    lines = [
        f"Process-CPU time per step of the default job's model by part (median of {result['steps']} steps of "
        f"its batches, {result['threads']} thread(s), code {result['commit']}, load {result['load_before'][0]:.2f} "
        f"→ {result['load_after'][0]:.2f}):",
        "",
        "| run | " + " | ".join(PARTS) + " | total ms | aten ops per step |",
        "| --- | " + " | ".join("---" for _ in PARTS) + " | --- | --- |",
    ]
    for label, r in runs.items():
        cells = [f"{r['median_cpu_ms'][p]:.1f} ms ({100 * r['share'][p]:.0f}%)" for p in PARTS]
        lines.append(
            f"| {label} | " + " | ".join(cells) + f" | {r['total_cpu_ms']:.0f} | {r['aten_ops_per_step']} |"
        )
    lines += ["", f"Command: `{result['command']}`."]
    return "\n".join(lines)


def _without_option(argv: list[str], names: tuple[str, ...]) -> list[str]:
    """``argv`` without the given options and their values (local paths)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in names:
            skip = True
        elif not a.startswith(tuple(f"{n}=" for n in names)):
            out.append(a)
    return out


def readme_block(result: dict) -> str:
    runs = result["runs"]
    lines = [
        f"Both runs in one process, steps alternating; {result['threads']} thread(s), torch {result['torch']}, "
        f"code {result['commit']}; machine load (1-min average) {result['load_before'][0]:.2f} before, "
        f"{result['load_after'][0]:.2f} after (the machine is shared). Losses of the two runs bitwise equal: "
        f"**{result['losses_bitwise_equal']}**.",
        "",
        "| run | steps | median step ms (wall / CPU) | first 10% median ms | last 10% median ms | last / first "
        "(wall, CPU) | data ms per step | GC s (total) | setup s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, r in runs.items():
        lines.append(
            f"| {label} | {r['steps']} | {r['median_step_ms']:.0f} / {r['median_cpu_ms']:.0f} "
            f"| {r['first_10pct']['median_step_ms']:.0f} | {r['last_10pct']['median_step_ms']:.0f} "
            f"| {r['last_over_first']:.2f}, {r['last_over_first_cpu']:.2f} "
            f"| {1e3 * r['total_data_s'] / r['steps']:.1f} | {r['total_gc_s']:.2f} | {r['setup_s']:.0f} |"
        )
    lines += ["", "Median step ms per tenth of the run after warm-up (wall; CPU):", ""]
    for label, r in runs.items():
        lines.append(
            f"- {label}: "
            + ", ".join(f"{d:.0f}" for d in r["decile_median_step_ms"])
            + "; "
            + ", ".join(f"{d:.0f}" for d in r["decile_median_cpu_ms"])
        )
    probe = next(iter(runs.values())).get("decile_median_probe_ms")
    if probe:
        lines += [
            "",
            "Machine probe (a fixed 20 × 192² matmul, timed once per step pair), median ms per tenth: "
            + ", ".join(f"{d:.2f}" for d in probe)
            + ". Last / first 10% of the step time divided by the probe's last / first: "
            + ", ".join(f"{label} {r['last_over_first_per_probe']:.2f}" for label, r in runs.items())
            + ".",
        ]
    if "before" in runs and "after" in runs:
        b, a = runs["before"], runs["after"]
        lines += [
            "",
            f"after vs before: {b['median_step_ms'] / a['median_step_ms']:.2f}× per step in wall time, "
            f"{b['median_cpu_ms'] / a['median_cpu_ms']:.2f}× in CPU time.",
        ]
    lines += ["", f"Command: `{result['command']}`."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--data", type=Path, default=None, help="an already prepared data folder")
    parser.add_argument("--out-dir", default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--readme", action="store_true")
    parser.add_argument("--breakdown", action="store_true", help="only the per-part CPU breakdown")
    parser.add_argument("--breakdown-steps", type=int, default=20)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides (key=value)")
    args = parser.parse_args()
    if args.readme:
        write_block(ROOT / "README.md", "default-job-steps", readme_block(json.loads(args.out.read_text())))
        if BREAKDOWN.exists():
            write_block(
                ROOT / "README.md",
                "default-job-breakdown",
                breakdown_block(json.loads(BREAKDOWN.read_text())),
            )
        return
    args.load_before = os.getloadavg()
    if args.breakdown:
        result = breakdown(args)
        write_results(BREAKDOWN, result)
        print(breakdown_block(result))
        return
    result = run(args)
    write_results(args.out, result)
    print(readme_block(result))


if __name__ == "__main__":
    main()
