"""Thread policy under CPU contention: the default job's training step with torch's defaults vs vpgkit's policy.

Each variant runs in its own subprocess (OpenMP settings are read once per process): it builds the default
job's model (the shipped tiny-world backbones + VPG-C, ``recipe=vpgc``), and times ``--steps`` training
steps (forward + backward + AdamW) on a fixed random batch of the job's shape (24 rows × 96 tokens, one
image). Variants:

* ``torch default``: what a program gets without vpgkit's policy (active waiting, one thread per core);
* ``vpgkit policy``: ``vpgkit.threads.apply_thread_policy()`` after ``import vpgkit`` (passive waiting,
  threads from the cores other processes leave free).

Each is measured on the machine as it is ("quiet") and with one competing busy process (a 1-thread
fp32 matmul loop, started before the variant and stopped after it). Variants alternate; the JSON keeps
every repeat's median step time and the process CPU time. Results depend on the machine's other load,
so compare ratios within one run.

    python benchmarks/thread_policy.py                      # writes benchmarks/results/thread_policy.json
    python benchmarks/thread_policy.py --steps 30 --repeat 2
"""

from __future__ import annotations

import argparse
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
from results_file import write_results

RESULTS = Path(__file__).resolve().parent / "results" / "thread_policy.json"

CHILD = r"""
import json, os, resource, statistics, sys, time
policy = sys.argv[1] == "policy"
steps = int(sys.argv[2])
if not policy:
    os.environ.pop("OMP_WAIT_POLICY", None)
    import torch  # before vpgkit: OpenMP starts with its own defaults
wait_policy = os.environ.get("OMP_WAIT_POLICY", "default (active)")
import vpgkit
import torch
from vpgkit.threads import apply_thread_policy
threads = apply_thread_policy() if policy else torch.get_num_threads()
from hydra import compose, initialize_config_module
from vpgkit.config import register_schema, to_train_config
from vpgkit.training.build import build_model
register_schema()
with initialize_config_module(config_module="vpgkit.recipes", version_base=None):
    cfg = to_train_config(compose(config_name="train", overrides=["recipe=vpgc"]))
model, tok = build_model(cfg.model, cfg.seed)
model.train()
g = torch.Generator().manual_seed(0)
b, n_q, size = 24, model.vpg.config.num_queries, model.vision.image_size
vocab = model.llm.config.vocab_size
slot = model.image_token_id
ids = torch.cat([torch.ones(b, 1, dtype=torch.long), torch.full((b, n_q), slot),
                 torch.randint(5, vocab - 1, (b, 92 - n_q), generator=g)], 1)
labels = torch.full_like(ids, -100); labels[:, -12:] = ids[:, -12:]
pixels = torch.randn(b, 1, 3, size, size, generator=g)
opt = torch.optim.AdamW(model.trainable_parameters().values(), lr=1e-4)
def step():
    loss = model(ids, labels=labels, pixel_values=pixels, loss_only=True, loss_reduction="sum").loss
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
for _ in range(3):
    step()
cpu0, t0 = time.process_time(), time.perf_counter()
times = []
for _ in range(steps):
    s = time.perf_counter(); step(); times.append(time.perf_counter() - s)
print(json.dumps({"threads": threads, "median_ms": 1e3 * statistics.median(times),
                  "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - cpu0,
                  "wait_policy": wait_policy if not policy else os.environ["OMP_WAIT_POLICY"]}))
"""

BUSY = (
    "import torch\ntorch.set_num_threads(1)\na = torch.randn(512, 512)\nwhile True:\n    a = (a @ a).tanh()\n"
)


def run_cli(policy: bool, steps: int, busy: bool, out: Path) -> dict:
    """``python -m vpgkit.train recipe=vpgc_toy`` end to end: wall seconds and the delay from its last
    output line to its exit (the interpreter's shutdown), with the policy on or off."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env["VPGKIT_THREAD_POLICY"] = "on" if policy else "off"
    competitor = subprocess.Popen([sys.executable, "-c", BUSY], env=env) if busy else None
    try:
        if competitor is not None:
            time.sleep(1.0)
        args = ["recipe=vpgc_toy", f"trainer.max_steps={steps}", "trainer.log_with=null", f"output_dir={out}"]
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "vpgkit.train", *args],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        last = start
        for _ in proc.stdout:
            last = time.perf_counter()
        if proc.wait() != 0:
            raise RuntimeError(f"vpgkit.train exited with {proc.returncode}")
        end = time.perf_counter()
    finally:
        if competitor is not None:
            competitor.terminate()
            competitor.wait()
    return {"wall_s": end - start, "exit_delay_s": end - last}


def run_variant(variant: str, steps: int, busy: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    competitor = subprocess.Popen([sys.executable, "-c", BUSY], env=env) if busy else None
    try:
        if competitor is not None:
            time.sleep(1.0)  # let it start spinning
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", CHILD, variant, str(steps)],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["process_wall_s"] = time.perf_counter() - start
    finally:
        if competitor is not None:
            competitor.terminate()
            competitor.wait()
    return row


def readme_block(result: dict) -> str:
    """The benchmarks/README.md block of this script, rendered from its JSON."""
    lines = [
        "| variant | threads | wait policy | median step ms | CPU s per step |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, s in result["variants"].items():
        lines.append(
            f"| {key} | {s['threads']} | {s['wait_policy']} | {s['median_step_ms']:.0f} | {s['cpu_s_per_step']:.3f} |"
        )
    ratio = result["busy_over_quiet"]
    if "cli_vpgc_toy" in result:
        lines += [
            "",
            f"`python -m vpgkit.train recipe=vpgc_toy trainer.max_steps={result['cli_steps']}` end to end "
            "(`VPGKIT_THREAD_POLICY=off` = torch's defaults):",
            "",
            "| command line | median wall s | median exit delay s (last output → exit) |",
            "| --- | --- | --- |",
        ]
        for key, c in result["cli_vpgc_toy"].items():
            lines.append(f"| {key} | {c['median_wall_s']:.1f} | {c['median_exit_delay_s']:.2f} |")
    lines += [
        "",
        f"Busy / quiet step time: torch default {ratio['torch default']:.2f}×, vpgkit policy "
        f"{ratio['vpgkit policy']:.2f}× (`{result['command']}`; {result['note']}).",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--cli-steps", type=int, default=60, help="steps of the recipe=vpgc_toy command line runs")
    p.add_argument("--readme", action="store_true", help="only rewrite benchmarks/README.md's block")
    args = p.parse_args()
    if args.readme:
        text = readme_block(json.loads(args.out.read_text()))
        write_block(Path(__file__).resolve().parent / "README.md", "thread-policy", text)
        return
    rows: dict[str, list[dict]] = {}
    for r in range(args.repeat):
        for busy in (False, True):
            for variant in ("default", "policy"):
                key = f"{'torch default' if variant == 'default' else 'vpgkit policy'}, {'busy' if busy else 'quiet'}"
                row = run_variant(variant, args.steps, busy)
                rows.setdefault(key, []).append(row)
                print(f"[{r}] {key}: {row}", flush=True)
    cli: dict[str, list[dict]] = {}
    scratch = Path(tempfile.mkdtemp(prefix="thread_policy_"))
    for r in range(args.repeat):
        for busy in (False, True):
            for policy in (False, True):
                key = f"{'vpgkit policy' if policy else 'policy off'}, {'busy' if busy else 'quiet'}"
                row = run_cli(policy, args.cli_steps, busy, scratch / f"run{r}-{int(busy)}-{int(policy)}")
                cli.setdefault(key, []).append(row)
                print(f"[{r}] vpgc_toy CLI, {key}: {row}", flush=True)
    summary = {
        key: {
            "threads": runs[-1]["threads"],
            "wait_policy": runs[-1]["wait_policy"],
            "median_step_ms": statistics.median(x["median_ms"] for x in runs),
            "cpu_s_per_step": statistics.median(x["cpu_s"] for x in runs) / args.steps,
            "runs": runs,
        }
        for key, runs in rows.items()
    }
    ratio = {
        name: summary[f"{name}, busy"]["median_step_ms"] / summary[f"{name}, quiet"]["median_step_ms"]
        for name in ("torch default", "vpgkit policy")
    }
    result = {
        "command": "python benchmarks/thread_policy.py " + " ".join(sys.argv[1:]),
        "steps": args.steps,
        "repeat": args.repeat,
        "cpu_count": os.cpu_count(),
        "variants": summary,
        "cli_vpgc_toy": {
            key: {
                "median_wall_s": statistics.median(x["wall_s"] for x in runs),
                "median_exit_delay_s": statistics.median(x["exit_delay_s"] for x in runs),
                "runs": runs,
            }
            for key, runs in cli.items()
        },
        "cli_steps": args.cli_steps,
        "busy_over_quiet": ratio,
        "note": "quiet = the machine as it was (other jobs may run); busy = plus one 1-thread matmul loop",
    }
    write_results(args.out, result)
    for key, s in summary.items():
        print(
            f"{key:28s} threads {s['threads']}  {s['median_step_ms']:8.1f} ms/step  cpu {s['cpu_s_per_step']:.3f} s/step"
        )
    print("busy / quiet:", {k: round(v, 2) for k, v in ratio.items()})


if __name__ == "__main__":
    main()
