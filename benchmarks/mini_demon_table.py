"""The decisive mini-DEMON experiment: does VPG-C's *guided* completion see what the VPG missed?

Variants (every number from real runs of ``python -m vpgkit.train``; each run's evaluation carries the
controls of ``vpgkit.evaluation``: both images blank, image 2 replaced, unchanged pairs, and the best
no-vision rule computed from the task files):

    (a) base VPG              the (c) runs' model without its adapter (VPG-C is exactly zero at init)
    (b) VPG-C, captions only  the paper's ablation: no synthetic data
    (c) VPG-C + synthetic     the default job (3000 synthetic samples, 2000 steps; 1000 / 1000 in results
                              files without ``default_job``): guidance and residual at the input of layer
                              k* = 3 of 6; since world v5 with the fetch loss (``trainer.fetch_loss_weight=1``, the recipe's
                              default; results files of earlier worlds: LM loss only)
    (cl) ... LM loss only     (c) with ``trainer.fetch_loss_weight=0``: Cheetah's recipe
    (d) ... at k = 0          the guidance is then the last prompt token's *embedding* (the same token
                              for every prompt: no information about the question)
    (e) ... no guidance       k* = 3 with the guidance input held at zero
    (f) detail questions only a diagnostic, not the default job: 4000 synthetic detail questions (no
                              difference / which-image samples), lr 1e-3 instead of 3e-3
    (g) ... no guidance       (f) with the guidance input held at zero
    (f3k), (g3k), (d3k)       (f), (g) and (f) at k = 0 trained for 3000 steps instead of 1000
    (h3k)                     (f3k) with VPG-C's guidance projection drawn from N(0, 0.02²) instead of
                              Cheetah's zero init (the residual is still zero at init)
    (w3k)                     (f3k) started from a supervised fetch: run benchmarks/vpgc_warm_start.py
                              --out OUT/warm_start first (the residual is still zero at init)
    (sc), (sd), (se)          (c), (d), (e) with the fetch loss set explicitly (``trainer.fetch_loss_weight=1``:
                              VPG-C's attention pulled onto the box of the object each synthetic sample is
                              about; not Cheetah's recipe — vpgkit.training.fetch): the same runs as (c),
                              (d), (e) since world v5, named apart in results of earlier builds
    (c2k), (e2k)              (c) and (e) with 2000 synthetic samples and 2000 steps: twice the default
                              job of world v6's first table; the same runs as (c), (e) while the
                              default job was that long (world v6's second table to world v8's)
    (x), (xe)                 a diagnostic pair: the default job with difference questions as its only
                              synthetic samples, with and without guidance
    (xq), (xm)                diagnostics of position questions: the default job with detail questions as
                              its only synthetic samples (xq), or at 40% instead of 20% (difference 40%);
    (xqe), (xme)              the same with no guidance
    (cb), (cp), (cu)          (c) with changes to its synthetic data: 10% of the pairs shown blank; half the
                              samples asked in PARAPHRASE_WORDING; instruction words dropped to <unk> at 0.2
    scaling                   (c) with 1/4, 1/2, 2x the default job's synthetic samples (first seed only
                              unless --scaling-seeds says otherwise)

    python benchmarks/mini_demon_table.py --seeds 0 1 2 3 4 --variants a b c d e cl n --scaling --scaling-seeds 0 1 2
                                                                      # the README's table (~3.5 h here)
    python benchmarks/mini_demon_table.py --seeds 0 --variants c --scaling   # one run + scaling
    python benchmarks/mini_demon_table.py --readme                    # README block from the JSON only

Runs whose evaluation is already in ``--out`` are collected, not rerun (an interrupted experiment resumes).
``--trained-runs DIR`` trains nothing: it evaluates the runs an earlier table trained in ``DIR`` on this job's
mini-DEMON (after the evaluation changed; training on one machine is deterministic, so this equals rerunning).

Writes ``benchmarks/results/mini_demon.json`` (every run's per-task scores and controls, the command,
wall times) and prints the tables; ``--readme`` rewrites the README block between
``<!-- mini-demon:start -->`` and ``<!-- mini-demon:end -->`` from that JSON.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]
# The runs start in ROOT (`python -m vpgkit.train`) and so load this checkout; this process must read the
# same world and recipes, not those of an installed vpgkit that may be another checkout.
sys.path.insert(0, str(ROOT))

from doc_blocks import write_block  # noqa: E402
from results_file import write_results  # noqa: E402

from synthetic.world.build import built_by, provenance  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "mini_demon.json"
TASKS = ("caption", "difference", "which_image", "detail_question", "cloze")
DETAIL = ("difference", "which_image", "detail_question", "cloze")
# The question kinds the evaluator scores apart (instance subsets) that the tables show per variant.
SUBSET_COLUMNS = (("detail_question", "colour"), ("detail_question", "position"), ("cloze", "changed"),
                  ("cloze", "distractor"))  # fmt: skip
LM_ONLY = "trainer.fetch_loss_weight=0"  # Cheetah's recipe: the LM loss alone
FETCH = "trainer.fetch_loss_weight=1.0"  # the LM loss + the fetch loss (the default job's, since world v5)


def task_mix(**weights: float) -> list[str]:
    """Hydra overrides that set the synthetic task mix to exactly ``weights``: the recipe's mix is deleted
    first, because ``++data.prepare.tasks={...}`` *merges* into it (the recipe's other tasks would stay).

    Example:
        >>> task_mix(difference=1.0)
        ['~data.prepare.tasks', '+data.prepare.tasks={difference:1.0}']
    """
    return [
        "~data.prepare.tasks",
        "+data.prepare.tasks={" + ",".join(f"{t}:{w}" for t, w in weights.items()) + "}",
    ]


# The detail-question diagnostics: synthetic detail questions only (4000), at lr 1e-3, LM loss only, 1000 steps
# (the default job's length when they were run; variants that name another length override it).
DETAIL_DATA = [*task_mix(detail_question=1.0), "data.prepare.n_edits=4000", "optim.lr=1.0e-3",
               "trainer.max_steps=1000"]  # fmt: skip
DETAIL_ONLY = [*DETAIL_DATA, LM_ONLY]
DIFFERENCE_ONLY = task_mix(difference=1.0)  # the default job's size, lr and losses otherwise
NO_GUIDANCE = "+model.vpgc_overrides.guidance=false"  # the guidance input held at zero
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "a": ("(a) base VPG", []),
    "b": ("(b) VPG-C, captions only", ["data=tiny_world_captions"]),
    "c": ("(c) VPG-C + synthetic, k*=3", []),
    "d": ("(d) VPG-C + synthetic, k=0", ["model.vpgc_layer=0"]),
    "e": ("(e) VPG-C + synthetic, no guidance", ["+model.vpgc_overrides.guidance=false"]),
    "cl": ("(cl) (c) with the LM loss alone (Cheetah's recipe)", [LM_ONLY]),
    # A learned no-vision baseline: the default job with every training image blank (the texts unchanged).
    # What it scores with blank images is what this data teaches without vision, a fairer reference for
    # (c)'s both-blank scores than the rules, which pick the best answer per file knowing the gold answers.
    "n": ("(n) (c) trained on blank images", ["++data.prepare.blank_images=true"]),
    # (c) with a tenth of its synthetic pairs shown blank (same texts, no fetch box): does answering with nothing
    # to see, during training, keep the blank-image answers among the question's options?
    "cb": ("(cb) (c) with 10% of the synthetic pairs blank", ["++data.prepare.blank_fraction=0.1"]),
    # (c) with half its synthetic samples asked in other words (PARAPHRASE_WORDING): do more ways to ask in
    # training carry the adapter over to the evaluation's words (benchmarks/wording_shift.py)?
    "cp": ("(cp) (c) with half the synthetic samples paraphrased", ["++data.prepare.paraphrase=0.5"]),
    # (c) with a fifth of its synthetic instruction words replaced by <unk>: does word dropout carry the adapter
    # over to the evaluation's words, some of which the LM never read?
    "cu": (
        "(cu) (c) with word dropout 0.2 in the synthetic instructions",
        ["++data.prepare.word_dropout=0.2"],
    ),
    # A diagnostic pair, not the default job.
    "f": ("(f) VPG-C + detail-question synthetic only", DETAIL_ONLY),
    "g": ("(g) ... (f) with no guidance", [*DETAIL_ONLY, "+model.vpgc_overrides.guidance=false"]),
    # The same pair trained 3x longer: at 1000 steps the guided fetch was found on one seed of three.
    "f3k": ("(f) at 3000 steps", [*DETAIL_ONLY, "trainer.max_steps=3000"]),
    "g3k": (
        "(g) at 3000 steps",
        [*DETAIL_ONLY, "trainer.max_steps=3000", "+model.vpgc_overrides.guidance=false"],
    ),
    "d3k": ("(d) ... (f) at 3000 steps, k=0", [*DETAIL_ONLY, "trainer.max_steps=3000", "model.vpgc_layer=0"]),
    # With a zero guidance projection the queries ignore the guidance until the output projection has grown;
    # at 3000 steps training found the guided fetch on three seeds of five.
    "h3k": (
        "(h) ... (f) at 3000 steps, guidance projection random at init",
        [*DETAIL_ONLY, "trainer.max_steps=3000", "+model.vpgc_overrides.guidance_init_std=0.02"],
    ),
    # (f3k) started from a supervised fetch (benchmarks/vpgc_warm_start.py, written to OUT/warm_start first):
    # does the LM loss learn to read a fetched object?
    "w3k": (
        "(w) ... (f) at 3000 steps, warm-started from a supervised fetch",
        [*DETAIL_ONLY, "trainer.max_steps=3000", "model.init_adapter={out}/warm_start/adapter"],
    ),
    # The fetch loss on the same configurations: does a recipe that teaches where to look let the guidance act?
    "sc": ("(sc) VPG-C + synthetic + fetch loss, k*=3", [FETCH]),
    "sd": ("(sd) VPG-C + synthetic + fetch loss, k=0", [FETCH, "model.vpgc_layer=0"]),
    "se": (
        "(se) VPG-C + synthetic + fetch loss, no guidance",
        [FETCH, "+model.vpgc_overrides.guidance=false"],
    ),
    # World v6's first table: the default job (then 1000 samples, 1000 steps) twice as long, with and without
    # guidance. While the default job was this long (to world v8's first table), (c) and (e) were the same runs.
    "c2k": (
        "(c) with 2000 synthetic samples and 2000 steps",
        ["data.prepare.n_edits=2000", "trainer.max_steps=2000"],
    ),
    "e2k": (
        "(e) with 2000 synthetic samples and 2000 steps",
        ["data.prepare.n_edits=2000", "trainer.max_steps=2000", "+model.vpgc_overrides.guidance=false"],
    ),
    # A diagnostic pair: can VPG-C learn difference questions when they are all it is trained on?
    "x": ("(x) VPG-C + difference synthetic only", DIFFERENCE_ONLY),
    "xe": ("(xe) ... (x) with no guidance", [*DIFFERENCE_ONLY, "+model.vpgc_overrides.guidance=false"]),
    # The adapter's residual holds ~43% of position where its frozen Q-Former allows ~70% (vpgc_stages.py):
    # does more training on detail questions close the gap?
    "xq": ("(xq) VPG-C + detail-question synthetic only", task_mix(detail_question=1.0)),
    "xm": (
        "(xm) VPG-C + synthetic, detail questions 40%",
        task_mix(difference=0.4, which_image=0.2, detail_question=0.4),
    ),
    "xqe": ("(xqe) ... (xq) with no guidance", [*task_mix(detail_question=1.0), NO_GUIDANCE]),
    "xme": (
        "(xme) ... (xm) with no guidance",
        [*task_mix(difference=0.4, which_image=0.2, detail_question=0.4), NO_GUIDANCE],
    ),
}
# The trained variants whose gain over the best no-vision rule the checks table reports.
CHECKED = ("c", "f", "f3k", "h3k", "w3k", "sc", "c2k", "x", "xq", "xm")
# Data scaling of (c): synthetic samples as a multiple of the default job's (the recipe's data.prepare.n_edits).
SCALING = {"x0.25": 0.25, "x0.5": 0.5, "x2": 2.0}
# Results files written before the default job moved to 2000 samples and 2000 steps do not say its size.
LEGACY_DEFAULT_JOB = {"n_edits": 1000, "max_steps": 1000}


@functools.cache
def default_job() -> dict[str, int]:
    """Synthetic samples, training steps and mini-DEMON samples per task of the default job, from the config
    Hydra composes for ``python -m vpgkit.train`` (recipe ``vpgc``)."""
    from hydra import compose, initialize_config_module

    from vpgkit.config import register_schema

    register_schema()  # the recipes' defaults name vpgkit's structured schema
    with initialize_config_module(config_module="vpgkit.recipes", version_base=None):
        cfg = compose(config_name="train", overrides=["recipe=vpgc"])
    prepare = cfg.data.prepare
    return {
        "n_edits": int(prepare.n_edits),
        "max_steps": int(cfg.trainer.max_steps),
        "n_eval": int(prepare.n_eval),
    }


def _runs(args) -> list[tuple[str, int, list[str]]]:
    """(tag, seed, overrides) of every training run asked for."""
    # seed by seed, (c) first: the mechanism's comparison is complete early
    order = ["c", "e", "d", "b", *(v for v in VARIANTS if v not in ("a", "b", "c", "d", "e"))]
    wanted = [v for v in order if v in args.variants or (v == "c" and "a" in args.variants)]
    runs = [(v, s, VARIANTS[v][1]) for s in args.seeds for v in wanted]  # (a) comes from the (c) runs
    if args.scaling:
        runs += [
            (k, s, [f"data.prepare.n_edits={round(f * default_job()['n_edits'])}"])
            for k, f in SCALING.items()
            for s in args.scaling_seeds
        ]
    return runs


def _reevaluation(tag: str, seed: int, run_dir: Path, trained: Path) -> list[str]:
    """The command that evaluates the run trained in ``trained`` (an earlier table's run directory) on this
    job's mini-DEMON, instead of training it again: the seed's mini-DEMON at the recipe's ``n_eval`` in
    ``run_dir/data``, the adapter, and for (c) the base model. ``run_dir/checkpoints`` links to the trained
    run's (its loss curve) and its ``wall_seconds.json`` is copied (the wall time of its training)."""
    for need in ("adapter", ".hydra/config.yaml", "checkpoints/latest.json"):
        if not (trained / need).exists():
            raise SystemExit(
                f"--trained-runs: {trained} has no {need} (expected a finished run of this table)"
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "checkpoints").exists():
        (run_dir / "checkpoints").symlink_to(trained.resolve() / "checkpoints")
    if (trained / "wall_seconds.json").is_file():
        shutil.copyfile(trained / "wall_seconds.json", run_dir / "wall_seconds.json")
    demon = run_dir / "data" / "mini_demon"
    make = (f"from synthetic.world.mini_demon import make_mini_demon; make_mini_demon({str(demon)!r}, "
            f"seed={seed}, per_task={default_job()['n_eval']}, progress=False)")  # fmt: skip
    evaluate = [
        sys.executable,
        "-m",
        "vpgkit.evaluate",
        "--run",
        str(trained),
        "--demon",
        str(demon),
        "--no-progress",
    ]
    steps = [[sys.executable, "-c", make], [*evaluate, "--out", f"{run_dir}/eval/results.json"]]
    if tag == "c":
        steps.append([*evaluate, "--base-only", "--out", f"{run_dir}/eval/base_results.json"])
    return ["sh", "-c", " && ".join(shlex.join(step) for step in steps)]


def _launch(
    tag: str, seed: int, overrides: list[str], out: Path, extra: list[str], trained: Path | None = None
) -> subprocess.Popen:
    run_dir = out / f"{tag}_seed{seed}"
    overrides = [o.replace("{out}", str(out)) for o in overrides]  # other braces are Hydra dicts
    cmd = [sys.executable, "-m", "vpgkit.train", "recipe=vpgc", f"seed={seed}", f"output_dir={run_dir}",
           *overrides, *extra]  # fmt: skip
    if tag == "c":  # then (a): the same model without the adapter, on the same files
        cmd = ["sh", "-c", " ".join(cmd) + f" && {sys.executable} -m vpgkit.evaluate --run {run_dir} --base-only"
               f" --out {run_dir}/eval/base_results.json --no-progress --demon {run_dir}/data/mini_demon"]  # fmt: skip
    if trained is not None:
        cmd = _reevaluation(tag, seed, run_dir, trained / run_dir.name)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log = open(out / f"{tag}_seed{seed}.log", "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    proc.meta = {
        "tag": tag,
        "seed": seed,
        "dir": run_dir,
        "log": log,
        "start": time.perf_counter(),
        "cmd": cmd,
        "trained": trained is not None,
    }
    return proc


def task_and_kind(record: dict) -> tuple[str, str]:
    """A prediction record's task and evaluation: ``real`` images or the control's kind.

    Example:
        >>> task_and_kind({"task": "mini_demon_cloze__both_blank"}), task_and_kind({"task": "cloze"})
        (('cloze', 'both_blank'), ('cloze', 'real'))
    """
    task, _, kind = record["task"].removeprefix("mini_demon_").partition("__")
    return task, kind or "real"


def percent_where(records: list[dict], key: Callable[[dict], tuple[str, str] | None],
                  hit: Callable[[dict], bool]) -> dict[str, dict[str, float]]:  # fmt: skip
    """``{group: {subgroup: percent of its records where hit(record)}}``, each record counted under
    ``key(record)`` = ``(group, subgroup)``, or not at all when ``key`` gives None."""
    counts: dict[str, dict[str, list[int]]] = {}
    for record in records:
        where = key(record)
        if where is not None:
            tally = counts.setdefault(where[0], {}).setdefault(where[1], [0, 0])
            tally[0] += bool(hit(record))
            tally[1] += 1
    return {g: {k: 100.0 * n / total for k, (n, total) in sub.items()} for g, sub in counts.items()}


def _off_choice(predictions: list[dict]) -> dict[str, dict[str, float]]:
    """Per choice task and evaluation (``real`` images or a control): the percentage of answers that name
    none of the sample's options (the evaluator's ``choice_rule`` ``none``), which score 0 whatever the gold."""
    return percent_where(predictions, lambda r: task_and_kind(r) if "choice_rule" in r else None,
                         lambda r: r["choice_rule"] == "none")  # fmt: skip


def task_records(path: Path) -> dict:
    """Per task: score, both-blank, image-2-replaced, subsets, best no-vision rule and gain, and for choice
    tasks the answers naming no option."""
    results = json.loads(path.read_text())
    controls, off_choice = results["controls"], _off_choice(results.get("predictions", []))
    out = {}
    for task in TASKS:
        c = controls[task]
        out[task] = {
            "score": c["score"],
            "variants": c["variants"],
            "subsets": {k: v["score"] for k, v in c["subsets"].items()},
            "no_vision": c["no_vision"]["best"],
            "gain_over_no_vision": c["gain_over_no_vision"],
        }
        if task in off_choice:
            out[task]["off_choice"] = off_choice[task]
    return out


def _loss(run_dir: Path, window: int = 100) -> dict[str, float]:
    """Mean training loss of the first and last ``window`` steps (the run's final trainer state), and of the
    fetch loss (``fetch_first``, ``fetch_last``; steps without a boxed sample, NaN, left out) when it trained."""
    latest = json.loads((run_dir / "checkpoints" / "latest.json").read_text())["checkpoint"]
    state = json.loads((run_dir / "checkpoints" / latest / "trainer_state.json").read_text())

    def ends(values: list[float]) -> tuple[float, float]:
        return statistics.mean(values[:window]), statistics.mean(values[-window:])

    out = dict(zip(("first", "last"), ends(state["losses"]), strict=True))
    fetch = [x for x in state.get("fetch_losses", []) if not math.isnan(x)]
    if fetch:
        out |= dict(zip(("fetch_first", "fetch_last"), ends(fetch), strict=True))
    return out


def _record(tag: str, seed: int, run_dir: Path) -> dict[str, dict]:
    """The run's entry (and for (c), the (a) entry of its base model)."""
    out = {f"{tag}_seed{seed}": {"variant": tag, "seed": seed, "loss": _loss(run_dir),
                                 "tasks": task_records(run_dir / "eval" / "results.json")}}  # fmt: skip
    if (run_dir / "wall_seconds.json").is_file():
        out[f"{tag}_seed{seed}"]["wall_seconds"] = json.loads((run_dir / "wall_seconds.json").read_text())
    if tag == "c":
        out[f"a_seed{seed}"] = {"variant": "a", "seed": seed,
                                "tasks": task_records(run_dir / "eval" / "base_results.json")}  # fmt: skip
    return out


def _lock(out: Path) -> IO[str]:
    """Claim ``out`` for this process: a second table on the same runs would relaunch the runs the first
    is still training (their evaluation is not written yet) into the same directories.

    The claim is an exclusive ``flock`` on ``out/.mini_demon_table.lock`` (which holds the pid, for the
    message): taking it is atomic, and the kernel drops it when its holder exits, so a table that died
    leaves no stale claim. It lasts until the returned file is closed.
    """
    import fcntl

    handle = (out / ".mini_demon_table.lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        pid = handle.read().strip() or "unknown"
        handle.close()
        raise SystemExit(f"--out {out}: another mini_demon_table (pid {pid}) is running on these runs; "
                         f"wait for it or use another --out") from None  # fmt: skip
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def run_all(args) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lock = _lock(out)
    try:
        return _run_all(args, out)
    finally:
        lock.close()  # releases the claim; the file stays (unlinking it could let two tables claim two files)


def _run_all(args, out: Path) -> dict:
    pending, running, results = [], [], {}
    for tag, seed, overrides in _runs(args):  # finished runs are collected, not rerun (resume)
        run_dir = out / f"{tag}_seed{seed}"
        done = [run_dir / "eval" / "results.json"] + (
            [run_dir / "eval" / "base_results.json"] if tag == "c" else []
        )
        if all(p.is_file() for p in done):
            results.update(_record(tag, seed, run_dir))
        else:
            pending.append((tag, seed, overrides))
    while pending or running:
        while pending and len(running) < args.jobs:
            running.append(_launch(*pending.pop(0), out, args.extra, args.trained_runs))
        time.sleep(2)
        for proc in [p for p in running if p.poll() is not None]:
            running.remove(proc)
            m = proc.meta
            m["log"].close()
            if proc.returncode:
                for other in running:  # no orphans writing into run directories
                    other.kill()
                raise SystemExit(f"failed ({proc.returncode}): {' '.join(m['cmd'])}; see {m['log'].name}")
            wall = time.perf_counter() - m["start"]
            key = f"{m['tag']}_seed{m['seed']}"
            # kept beside the run, so that a later invocation that collects it still reports it
            if not m["trained"]:
                (m["dir"] / "wall_seconds.json").write_text(json.dumps(round(wall, 1)) + "\n")
            results.update(_record(m["tag"], m["seed"], m["dir"]))
            print(f"done {key} in {wall:.0f} s", flush=True)
    return results


def _mean_std(values: list[float], digits: int = 1) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _values(runs: dict, variant: str, get, seeds: set[int] | None = None) -> list[float]:
    out = []
    for r in runs.values():
        if r["variant"] == variant and (seeds is None or r["seed"] in seeds):
            v = get(r["tasks"])
            if v is not None:
                out.append(v)
    return out


def tables(data: dict) -> str:
    """Markdown tables of a results JSON: scores, controls, mechanism checks, scaling."""
    runs, lines = data["runs"], []
    present = [v for v in VARIANTS if any(r["variant"] == v for r in runs.values())]
    seeds = sorted({r["seed"] for r in runs.values() if r["variant"] in VARIANTS})
    head = "| variant | " + " | ".join(TASKS) + " |"
    lines += [f"Scores (percent; ROUGE-L for caption/difference, accuracy otherwise), mean ± std over seeds {seeds}:",
              "", head, "|---" * (len(TASKS) + 1) + "|"]  # fmt: skip

    def label(v: str) -> str:  # a variant run on fewer seeds than the table says so
        own = sorted({r["seed"] for r in runs.values() if r["variant"] == v})
        return VARIANTS[v][0] + (
            f" (seed{'s' * (len(own) > 1)} {', '.join(map(str, own))})" if own != seeds else ""
        )

    for v in present:
        cells = [_mean_std(_values(runs, v, lambda t, k=k: t[k]["score"])) for k in TASKS]
        lines.append(f"| {label(v)} | " + " | ".join(cells) + " |")
    per_seed = {
        r["seed"]: r for r in runs.values() if r["variant"] in VARIANTS
    }  # the rules depend on the seed's files
    nv = [_mean_std([r["tasks"][k]["no_vision"]["score"] for r in per_seed.values()]) for k in TASKS]
    lines.append("| best no-vision rule (from the task files) | " + " | ".join(nv) + " |")
    trained = [v for v in present if v != "a"]
    if trained:
        lines += ["", "Training loss, mean of the first → last 100 steps (from each run's trainer state):", "",
                  "| variant | first 100 steps | last 100 steps |", "|---|---|---|"]  # fmt: skip
        for v in trained:
            runs_v = [r for r in runs.values() if r["variant"] == v and "loss" in r]
            first = _mean_std([r["loss"]["first"] for r in runs_v], digits=3)
            last = _mean_std([r["loss"]["last"] for r in runs_v], digits=3)
            lines.append(f"| {label(v)} | {first} | {last} |")
    lines += ["", "Controls (same runs): both images blank / image 2 replaced / cloze on unchanged pairs / "
              "difference where the named region is unchanged:", "",
              "| variant | " + " | ".join(f"{k} blank" for k in DETAIL) + " | "
              + " | ".join(f"{k} img2 replaced" for k in ("difference", "which_image", "cloze"))
              + " | cloze unchanged | difference unchanged |",
              "|---" * (1 + len(DETAIL) + 3 + 2) + "|"]  # fmt: skip
    for v in present:
        cells = [
            _mean_std(_values(runs, v, lambda t, k=k: t[k]["variants"].get("both_blank"))) for k in DETAIL
        ]
        cells += [_mean_std(_values(runs, v, lambda t, k=k: t[k]["variants"].get("image2_replaced")))
                  for k in ("difference", "which_image", "cloze")]  # fmt: skip
        cells.append(_mean_std(_values(runs, v, lambda t: t["cloze"]["subsets"].get("unchanged"))))
        cells.append(_mean_std(_values(runs, v, lambda t: t["difference"]["subsets"].get("unchanged"))))
        lines.append(f"| {label(v)} | " + " | ".join(cells) + " |")
    kinds = [(task, kind) for task, kind in SUBSET_COLUMNS
             if any(kind in r["tasks"][task]["subsets"] for r in runs.values())]  # fmt: skip
    if kinds:
        lines += ["", "Per question kind (same runs; accuracy on the instances of each kind):", "",
                  "| variant | " + " | ".join(f"{t}: {k}" for t, k in kinds) + " |",
                  "|---" * (len(kinds) + 1) + "|"]  # fmt: skip
        for v in present:
            cells = [_mean_std(_values(runs, v, lambda t, task=task, k=k: t[task]["subsets"].get(k)))
                     for task, k in kinds]  # fmt: skip
            lines.append(f"| {label(v)} | " + " | ".join(cells) + " |")
    choice = [task for task in DETAIL if any("off_choice" in r["tasks"][task] for r in runs.values())]
    if choice:
        lines += ["", "Answers naming none of the options (same runs; percent of each evaluation, scored 0):", "",
                  "| variant | " + " | ".join(f"{t} | {t} blank" for t in choice) + " |",
                  "|---" * (2 * len(choice) + 1) + "|"]  # fmt: skip
        for v in present:
            cells = [_mean_std(_values(runs, v, lambda t, task=task, k=k: t[task].get("off_choice", {}).get(k)))
                     for task in choice for k in ("real", "both_blank")]  # fmt: skip
            lines.append(f"| {label(v)} | " + " | ".join(cells) + " |")
    if set(CHECKED) & set(present):
        lines += ["", "What the issue asks of (c), per task (differences of seed means; 2σ = twice the larger seed std):",
                  "", "| check | " + " | ".join(TASKS) + " |", "|---" * (len(TASKS) + 1) + "|"]  # fmt: skip

        def stats(v, k, get=lambda task: task["score"]):
            vals = _values(runs, v, lambda t, k=k: get(t[k]))
            return statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0, len(vals)

        def difference(one, other, k, get=lambda task: task["score"]) -> str:
            c, o = stats(one, k, get), stats(other, k, get)
            spread = f"2σ {2 * max(c[1], o[1]):.1f}" if min(c[2], o[2]) > 1 else "1 seed"
            return f"{c[0] - o[0]:+.1f} ({spread})"

        pairs = (
            ("(c) − (a)", "c", "a"),
            ("(c) − (d)", "c", "d"),
            ("(c) − (e)", "c", "e"),
            ("(c) − (cl)", "c", "cl"),
            ("(c) − (n)", "c", "n"),
            ("(f) − (g)", "f", "g"),
            ("(f3k) − (g3k)", "f3k", "g3k"),
            ("(f3k) − (d3k)", "f3k", "d3k"),
            ("(h3k) − (g3k)", "h3k", "g3k"),
            ("(h3k) − (f3k)", "h3k", "f3k"),
            ("(w3k) − (f3k)", "w3k", "f3k"),
            ("(w3k) − (g3k)", "w3k", "g3k"),
            ("(sc) − (a)", "sc", "a"),
            ("(sc) − (sd)", "sc", "sd"),
            ("(sc) − (se)", "sc", "se"),
            ("(sc) − (c)", "sc", "c"),
            ("(c2k) − (e2k)", "c2k", "e2k"),
            ("(c2k) − (c)", "c2k", "c"),
            ("(xq) − (xqe)", "xq", "xqe"),
            ("(xm) − (xme)", "xm", "xme"),
        )
        for name, one, other in pairs:
            if one not in present or other not in present:
                continue
            lines.append(f"| {name} | " + " | ".join(difference(one, other, k) for k in TASKS) + " |")
        for v in CHECKED:
            if v in present:
                gains = [
                    _mean_std(_values(runs, v, lambda t, k=k: t[k]["gain_over_no_vision"])) for k in TASKS
                ]
                lines.append(f"| ({v}) − best no-vision | " + " | ".join(gains) + " |")
        if {"c", "n"} <= set(present):  # (c) without vision against what the data teaches without vision

            def blank(task):
                return task["variants"].get("both_blank")

            cells = [difference("c", "n", k, blank) if k in DETAIL else "" for k in TASKS]
            lines.append("| (c) both-blank − (n) both-blank | " + " | ".join(cells) + " |")
        paired = [(name, one, other) for name, one, other in pairs if one in present and other in present]
        if paired:
            lines += ["", "The same differences paired by seed (a seed fixes the training data and the evaluation "
                      "files, so both variants of a seed see the same samples): mean ± std of the per-seed "
                      "differences. Information only; the check above is the issue's criterion.", "",
                      "| pair (seeds) | " + " | ".join(TASKS) + " |", "|---" * (len(TASKS) + 1) + "|"]  # fmt: skip
            for name, one, other in paired:
                by_seed = {
                    v: {r["seed"]: r["tasks"] for r in runs.values() if r["variant"] == v}
                    for v in (one, other)
                }
                both = sorted(set(by_seed[one]) & set(by_seed[other]))
                cells = [_mean_std([by_seed[one][s][k]["score"] - by_seed[other][s][k]["score"] for s in both])
                         for k in TASKS]  # fmt: skip
                lines.append(f"| {name} ({', '.join(map(str, both))}) | " + " | ".join(cells) + " |")
    scaling = [k for k in SCALING if any(r["variant"] == k for r in runs.values())]
    job = data.get("default_job", LEGACY_DEFAULT_JOB)
    if scaling:
        base = job["n_edits"]
        lines += ["", f"Data scaling of (c) (synthetic samples, {job['max_steps']} steps; the default is {base}):", "",
                  "| samples | " + " | ".join(TASKS) + " |", "|---" * (len(TASKS) + 1) + "|"]  # fmt: skip
        seeds_here = {r["seed"] for r in runs.values() if r["variant"] in scaling}
        for n, v in sorted([(round(SCALING[k] * base), k) for k in scaling] + [(base, "c")]):
            cells = [
                _mean_std([r["tasks"][t]["score"] for r in runs.values()
                           if r["variant"] == v and r["seed"] in seeds_here])
                for t in TASKS
            ]  # fmt: skip
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
    walls = [r["wall_seconds"] for r in runs.values() if r.get("wall_seconds") and r["variant"] == "c"]
    if walls:
        lines += ["", f"Wall time of a (c) run (train + evaluate, 1 thread, {data.get('jobs', 1)} runs at once on "
                  f"2 cores): {statistics.mean(walls):.0f} s."]  # fmt: skip
    return "\n".join(lines)


def _mean(runs: dict, variant: str, get, seeds: set[int] | None = None) -> float | None:
    vals = _values(runs, variant, get, seeds)
    return statistics.mean(vals) if vals else None


def _slashed(values: list[float | None], signed: bool = False) -> str:
    """``"75.2 / 99.2"`` (``"+20.6 / ..."`` when ``signed``); ``"–"`` when any value is missing."""
    if not values or any(v is None for v in values):
        return "–"
    return " / ".join(f"{v:+.1f}".replace("-", "−") if signed else f"{v:.1f}" for v in values)


def comparison_rows(data: dict, seeds: set[int] | None = None) -> dict[str, str]:
    """The rows of :func:`comparison` for one results file: seed means over ``seeds`` (default: all),
    each cell the four detail tasks (:data:`DETAIL`) joined by ``/``; ``"–"`` where a variant is missing."""
    runs = data["runs"]

    def score(variant: str, get=lambda t: t["score"]) -> list[float | None]:
        return [_mean(runs, variant, lambda ts, k=k: get(ts[k]), seeds) for k in DETAIL]

    def minus(one: list[float | None], other: list[float | None]) -> list[float | None]:
        return [None if a is None or b is None else a - b for a, b in zip(one, other, strict=True)]

    def blank(task: dict) -> float | None:
        return task["variants"].get("both_blank")

    c = score("c")
    subset = [_mean(runs, "c", lambda ts, k=k: ts["detail_question"]["subsets"].get(k), seeds)
              for k in ("position", "colour")]  # fmt: skip
    # Scaling: its own seeds (often fewer than the table's), smallest and largest sample count, (c) between.
    scaling = [k for k in SCALING if any(r["variant"] == k for r in runs.values())]
    ends = "–"
    if scaling:
        scaled = {r["seed"] for r in runs.values() if r["variant"] in scaling}
        first, last = min(scaling, key=SCALING.get), max(scaling, key=SCALING.get)
        cells = [f"{_mean(runs, first, lambda ts, k=k: ts[k]['score'], scaled):.1f} → "
                 f"{_mean(runs, last, lambda ts, k=k: ts[k]['score'], scaled):.1f}" for k in DETAIL]  # fmt: skip
        ends = " / ".join(cells)
    caption = _mean(runs, "c", lambda ts: ts["caption"]["score"], seeds)
    unchanged = _mean(runs, "c", lambda ts: ts["cloze"]["subsets"].get("unchanged"), seeds)
    return {
        "(c)": _slashed(c),
        "(c), detail questions: position / colour": _slashed(subset),
        "(c) − best no-vision rule": _slashed(score("c", lambda t: t["gain_over_no_vision"]), signed=True),
        "(c) − (d), k = 0": _slashed(minus(c, score("d")), signed=True),
        "(c) − (e), no guidance": _slashed(minus(c, score("e")), signed=True),
        "(c) both blank − rules": _slashed(
            minus(score("c", blank), score("c", lambda t: t["no_vision"]["score"])), signed=True
        ),
        "(c) both blank − (n) both blank": _slashed(minus(score("c", blank), score("n", blank)), signed=True),
        "(c), cloze on unchanged pairs": _slashed([unchanged]),
        "(c), captions (ROUGE-L)": _slashed([caption]),
        "(b), captions only": _slashed(score("b")),
        "(cl), the LM loss alone": _slashed(score("cl")),
        "(c) scaling: fewest → most samples": ends,
    }


def comparison(files: list[tuple[str, dict]], seeds: set[int] | None = None) -> str:
    """A table setting results files side by side (e.g. two world builds): one column per file, one row per
    measure, each cell the seed means of difference / which-image / detail questions / cloze. Differences
    are of seed means; the per-file tables (:func:`tables`) carry the stds and 2σ checks.

    Example:
        >>> run = {"variant": "c", "seed": 0, "tasks": {k: {"score": 50.0, "variants": {}, "subsets": {},
        ...        "gain_over_no_vision": 20.0, "no_vision": {"score": 30.0}} for k in TASKS}}
        >>> print(comparison([("A", {"command": "x", "runs": {"c_seed0": run}})]).splitlines()[2])
        | (c) | 50.0 / 50.0 / 50.0 / 50.0 |
    """
    columns = [(label, comparison_rows(data, seeds)) for label, data in files]
    lines = ["| | " + " | ".join(label for label, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for row in columns[0][1]:
        cells = [rows[row] for _, rows in columns]
        if any(cell != "–" for cell in cells):
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparison_block(files: list[tuple[str, Path]], seeds: set[int] | None = None) -> str:
    """:func:`comparison` of results files by path, with the files and seeds it read (a docs block)."""
    table = comparison([(label, json.loads(path.read_text())) for label, path in files], seeds)
    shown = [(label, path.relative_to(ROOT) if path.is_relative_to(ROOT) else path) for label, path in files]
    read = ", ".join(f"{label}: `{path}`" for label, path in shown)
    which = f"seeds {', '.join(map(str, sorted(seeds)))}" if seeds else "all seeds of each file"
    cmd = "python benchmarks/mini_demon_table.py --compare " + " ".join(
        shlex.quote(f"{label}={path}") for label, path in shown
    )
    cmd += f" --compare-seeds {' '.join(map(str, sorted(seeds)))}" if seeds else ""
    return (f"Seed means ({which}), difference / which-image / detail questions / cloze ({read}):\n\n"
            f"{table}\n\nMade by: `{cmd}`")  # fmt: skip


def readme_block(data: dict) -> str:
    """The README block: the tables of a results file and the command that made it."""
    made = f"\n\nMade by: `{data['command']}`"
    if "assets" in data:
        made += f" on the world built by {built_by(data['assets'])}"
    return tables(data) + made


def update_readme(text: str, readme: Path = ROOT / "README.md", block: str = "mini-demon") -> None:
    write_block(readme, block, text)


def labelled_results(text: str) -> tuple[str, Path]:
    """``"world v10=benchmarks/results/mini_demon.json"`` → the label and the absolute path (a relative
    one is of the current directory)."""
    label, sep, path = text.partition("=")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(f"expected LABEL=FILE, got {text!r}")
    file = Path(path).resolve()
    if not file.is_file():
        raise argparse.ArgumentTypeError(f"{text!r}: no results file at {file}")
    return label, file


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--scaling", action="store_true", help="also the data-scaling runs of (c)")
    parser.add_argument("--scaling-seeds", type=int, nargs="+", default=None)
    parser.add_argument("--out", default="runs/mini_demon", help="run directories and logs")
    parser.add_argument("--jobs", type=int, default=2, help="training runs at once (1 thread each)")
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for every training run")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--merge", action="store_true", help="add to the runs already in --results")
    parser.add_argument(
        "--trained-runs", type=Path, default=None, metavar="DIR",
        help="do not train: evaluate the runs an earlier table trained in DIR (its --out) on this job's "
        "mini-DEMON (e.g. after the recipe's n_eval changed); wall times stay those of their training",
    )  # fmt: skip
    parser.add_argument("--readme", action="store_true", help="only rewrite the README block from --results")
    parser.add_argument("--write-block", nargs=2, metavar=("PAGE", "NAME"),
                        help="only rewrite block NAME of PAGE (e.g. docs/tiny_world.md) from --results")  # fmt: skip
    parser.add_argument("--compare", nargs="+", metavar="LABEL=FILE", type=labelled_results,
                        help="only print (or, with --write-block, write) results files side by side")  # fmt: skip
    parser.add_argument("--compare-seeds", type=int, nargs="+", default=None,
                        help="with --compare: the seeds to average (default: all of each file)")  # fmt: skip
    args = parser.parse_args()
    if args.compare:
        block = comparison_block(args.compare, set(args.compare_seeds) if args.compare_seeds else None)
        if args.write_block:
            write_block(ROOT / args.write_block[0], args.write_block[1], block)
        else:
            print(block)
        return
    if args.readme or args.write_block:
        data = json.loads(args.results.read_text())
        page, block = args.write_block or ("README.md", "mini-demon")
        update_readme(readme_block(data), ROOT / page, block)
        return
    args.scaling_seeds = args.scaling_seeds or args.seeds[:1]
    old = json.loads(args.results.read_text()) if args.merge and args.results.exists() else {"runs": {}}
    # checked before any run: a merge must not mix runs of two default jobs in one table
    made_with = old.get("default_job", LEGACY_DEFAULT_JOB) if old["runs"] else default_job()
    if made_with != default_job():
        parser.error(f"--merge: {args.results} was made with the default job {made_with}, the recipe now "
                     f"composes {default_job()}; write a new results file")  # fmt: skip
    if old["runs"] and old.get("extra", []) != args.extra:  # e.g. a shortened job's runs beside full ones
        parser.error(f"--merge: {args.results} was made with --extra {old.get('extra', [])}, not {args.extra}; "
                     "write a new results file")  # fmt: skip
    runs = run_all(args)
    command = "python benchmarks/mini_demon_table.py " + " ".join(sys.argv[1:])
    if "command" in old:  # a merge: both invocations made the file
        command = f"{old['command']}; {command}"
    data = {"command": command, "jobs": args.jobs, "assets": provenance(), "default_job": default_job(),
            **({"extra": args.extra} if args.extra else {}), "runs": {**old["runs"], **runs}}  # fmt: skip
    args.results.parent.mkdir(parents=True, exist_ok=True)
    write_results(args.results, data, indent=1)
    print(tables(data))


if __name__ == "__main__":
    main()
