"""How long the README's commands take here: wall time of each, and how much of it is training steps.

Runs each command of :data:`COMMANDS` once, one after another, as a user would (``python -m vpgkit.train
...`` in a fresh temporary folder, ``OMP_NUM_THREADS=1``), and records:

* wall time (process start to exit: data synthesis, training, evaluation, writing);
* training time, from the run's ``train.log`` (the first and last step lines' timestamps; the first step's
  own time is left out, so it is a slight underestimate);
* the 1-minute load average before and after each command (another job on the cores slows everything).

    python benchmarks/job_times.py              # ~8 min here; quietest machine you can find
    python benchmarks/job_times.py --readme     # README block from the JSON only

Writes ``benchmarks/results/job_times.json``; ``--readme`` rewrites the README block between
``<!-- job-times:start -->`` and ``<!-- job-times:end -->``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from doc_blocks import write_block
from results_file import git_commit, write_results

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "job_times.json"
# (label, overrides): the default job, then ways to shorten it, then the machinery on random backbones.
COMMANDS: list[tuple[str, list[str]]] = [
    ("the default: synthesise data, train, mini-DEMON with controls", []),
    ("", ["trainer.max_steps=100"]),
    (
        "",
        [
            "trainer.max_steps=100",
            "data.prepare.n_images=200",
            "data.prepare.n_edits=200",
            "data.prepare.n_eval=20",
        ],
    ),
    ("random tiny backbones", ["recipe=vpgc_toy"]),
]
STEP_LINE = re.compile(r"^(\S+ \S+) INFO step (\d+): ")


def training_seconds(log: Path) -> tuple[int, float]:
    """(last step, seconds from the first to the last step line) of a run's ``train.log``."""
    steps = []
    for line in log.read_text().splitlines():
        m = STEP_LINE.match(line)
        if m and "checkpoint" not in line:
            steps.append((int(m.group(2)), dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")))
    if len(steps) < 2:
        raise ValueError(f"{log}: fewer than two step lines; was trainer.log_every changed?")
    return steps[-1][0], (steps[-1][1] - steps[0][1]).total_seconds()


def time_command(overrides: list[str]) -> dict:
    """Run ``python -m vpgkit.train *overrides`` in a temporary folder; its wall and training seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        load = os.getloadavg()[0]
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "vpgkit.train", "output_dir=run", *overrides], cwd=tmp, env=env,
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        wall = time.perf_counter() - start
        steps, train = training_seconds(Path(tmp) / "run" / "train.log")
    return {"overrides": overrides, "wall_seconds": round(wall, 1), "train_seconds": round(train, 1),
            "steps": steps, "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)}  # fmt: skip


def readme_block(data: dict) -> str:
    """The README table of a results file."""
    lines = ["| command (`python -m vpgkit.train ...`) | wall time | of which training steps | load before / after |",
             "| --- | ---: | ---: | --- |"]  # fmt: skip
    for run in data["runs"]:
        args = " ".join(run["overrides"]) or "recipe=vpgc"
        label = f" ({run['label']}, {run['steps']} steps)" if run["label"] else ""
        lines.append(f"| `{args}`{label} | {run['wall_seconds']:.0f} s | {run['train_seconds']:.0f} s "
                     f"({run['train_seconds'] / run['steps']:.2f} s/step) | "
                     f"{run['load_before']} / {run['load_after']} |")  # fmt: skip
    lines += ["", f"Made by: `{data['command']}` (commit {data['commit']}, {data['cores']} cores, "
              f"`OMP_NUM_THREADS=1`, one command at a time)."]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--readme", action="store_true", help="only rewrite the README block from --results")
    args = parser.parse_args()
    if not args.readme:
        runs = []
        for label, overrides in COMMANDS:
            run = {"label": label, **time_command(overrides)}
            print(f"{' '.join(overrides) or 'recipe=vpgc'}: {run['wall_seconds']} s wall, "
                  f"{run['train_seconds']} s training", flush=True)  # fmt: skip
            runs.append(run)
        data = {"command": "python benchmarks/job_times.py", "commit": git_commit(ROOT),
                "cores": os.cpu_count(), "runs": runs}  # fmt: skip
        write_results(args.results, data)
    data = json.loads(args.results.read_text())
    write_block(ROOT / "README.md", "job-times", readme_block(data))
    print(readme_block(data))


if __name__ == "__main__":
    main()
