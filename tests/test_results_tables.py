"""Every results table in README.md and docs/ is exactly what its benchmark script makes from the JSON in
benchmarks/results/ — no number in the docs without a file a command wrote."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


from benchmark_script import load_benchmark as _script  # noqa: E402  (puts benchmarks/ on sys.path)
from doc_blocks import read_block  # noqa: E402


@pytest.mark.parametrize(
    "script, page, marker, make",
    [
        ("mini_demon_table", "README.md", "mini-demon",
         lambda m: m.readme_block(json.loads((RESULTS / "mini_demon.json").read_text()))),
        ("lm_variants", "docs/tiny_world.md", "lm-variants",
         lambda m: m.docs_block(json.loads((RESULTS / "lm_variants.json").read_text()))),
        ("world_diagnostics", "docs/tiny_world.md", "world-diagnostics",
         lambda m: m.docs_block(json.loads((RESULTS / "world_diagnostics.json").read_text()))),
        ("vpgc_stages", "docs/tiny_world.md", "vpgc-stages", lambda m: m.docs_block()),
        ("which_image_forms", "docs/tiny_world.md", "which-image-forms",
         lambda m: m.docs_block(json.loads((RESULTS / "which_image_forms.json").read_text()))),
        ("vpgc_step", "benchmarks/README.md", "vpgc-step",
         lambda m: m.readme_block(json.loads((RESULTS / "vpgc_step.json").read_text()))),
        ("synthetic_throughput", "benchmarks/README.md", "synthetic-throughput",
         lambda m: m.readme_block(json.loads((RESULTS / "synthetic_throughput.json").read_text()))),
        ("thread_policy", "benchmarks/README.md", "thread-policy",
         lambda m: m.readme_block(json.loads((RESULTS / "thread_policy.json").read_text()))),
        ("vpgc_step", "benchmarks/README.md", "vpgc-step-7b",
         lambda m: m.readme_block_7b(json.loads((RESULTS / "vpgc_step_7b.json").read_text()))),
        ("modules", "benchmarks/README.md", "modules",
         lambda m: m.readme_block(json.loads((RESULTS / "modules.json").read_text()))),
        ("default_job_steps", "benchmarks/README.md", "default-job-steps",
         lambda m: m.readme_block(json.loads((RESULTS / "default_job_steps.json").read_text()))),
        ("default_job_steps", "benchmarks/README.md", "default-job-breakdown",
         lambda m: m.breakdown_block(json.loads((RESULTS / "default_job_breakdown.json").read_text()))),
        ("mini_demon_table", "docs/tiny_world.md", "mini-demon-grounded",
         lambda m: m.readme_block(json.loads((RESULTS / "mini_demon_grounded.json").read_text()))),
        ("mini_demon_table", "docs/tiny_world.md", "mini-demon-question-summary",
         lambda m: m.readme_block(json.loads((RESULTS / "mini_demon_question_summary.json").read_text()))),
        ("mini_demon_table", "docs/tiny_world.md", "mini-demon-world-v5",
         lambda m: m.readme_block(json.loads((RESULTS / "mini_demon_world_v5.json").read_text()))),
        ("mini_demon_table", "docs/tiny_world.md", "mini-demon-world-v6",
         lambda m: m.readme_block(json.loads((RESULTS / "mini_demon_world_v6.json").read_text()))),
        ("mini_demon_table", "docs/tiny_world.md", "mini-demon-world-v6-1k",
         lambda m: m.readme_block(json.loads((RESULTS / "mini_demon_world_v6_1k.json").read_text()))),
        ("mini_demon_table", "docs/tiny_world.md", "mini-demon-world-v6-seed1",
         lambda m: m.readme_block(json.loads((RESULTS / "mini_demon_world_v6_seed1.json").read_text()))),
        ("mini_demon_table", "docs/tiny_world.md", "mini-demon-world-v7",
         lambda m: m.readme_block(json.loads((RESULTS / "mini_demon_world_v7.json").read_text()))),
        ("mini_demon_table", "docs/tiny_world.md", "mini-demon-world-v7-seed1",
         lambda m: m.readme_block(json.loads((RESULTS / "mini_demon_world_v7_seed1.json").read_text()))),
        ("mini_demon_table", "docs/tiny_world.md", "mini-demon-detail-mix",
         lambda m: m.readme_block(json.loads((RESULTS / "mini_demon_detail_mix.json").read_text()))),
        ("mini_demon_table", "docs/tiny_world.md", "mini-demon-world-v10-vs-v9",
         lambda m: m.comparison_block([("world v10", RESULTS / "mini_demon.json"),
                                       ("world v9", RESULTS / "mini_demon_world_v9.json")])),
        ("mini_demon_table", "docs/tiny_world.md", "mini-demon-world-v10-seed1-build",
         lambda m: m.comparison_block([("world v10 (shipped build)", RESULTS / "mini_demon.json"),
                                       ("world v10 recipe, seed-1 build", RESULTS / "mini_demon_world_v10_seed1.json"),
                                       ("world v9", RESULTS / "mini_demon_world_v9.json")], seeds={0, 1, 2})),
        ("world_diagnostics", "docs/tiny_world.md", "world-diagnostics-world-v10-seed1",
         lambda m: m.docs_block(json.loads((RESULTS / "world_diagnostics_world_v10_seed1.json").read_text()))),
        ("blank_answers", "docs/tiny_world.md", "blank-answers",
         lambda m: m.docs_block(json.loads((RESULTS / "blank_answers.json").read_text()))),
        ("mini_demon_table", "docs/tiny_world.md", "mini-demon-world-v9-n100",
         lambda m: m.readme_block(json.loads((RESULTS / "mini_demon_world_v9_n100.json").read_text()))),
        ("no_vision_rules", "docs/tiny_world.md", "no-vision-rules",
         lambda m: m.docs_block(json.loads((RESULTS / "no_vision_rules.json").read_text()))),
        ("no_vision_rules", "docs/tiny_world.md", "both-blank-vs-rules",
         lambda m: m.blank_block([("world v10 (shipped build)", RESULTS / "mini_demon.json"),
                                  ("world v10 recipe, seed-1 build", RESULTS / "mini_demon_world_v10_seed1.json"),
                                  ("world v9", RESULTS / "mini_demon_world_v9.json")],
                                 RESULTS / "no_vision_rules.json")),
        ("world_diagnostics", "docs/tiny_world.md", "world-diagnostics-rowcol-cells03-seed1",
         lambda m: m.docs_block(json.loads((RESULTS / "world_diagnostics_rowcol_cells03_seed1_n300.json").read_text()))),
        ("world_diagnostics", "docs/tiny_world.md", "world-diagnostics-compare-lm",
         lambda m: m.docs_block(json.loads((RESULTS / "world_diagnostics_compare_lm.json").read_text()))),
        ("mini_demon_table", "docs/tiny_world.md", "mini-demon-compare-lm",
         lambda m: m.readme_block(json.loads((RESULTS / "mini_demon_compare_lm.json").read_text()))),
        ("mini_demon_table", "docs/tiny_world.md", "mini-demon-compare-lm-difference-only",
         lambda m: m.readme_block(json.loads((RESULTS / "mini_demon_compare_lm_difference_only.json").read_text()))),
        ("difference_fetch", "docs/tiny_world.md", "difference-fetch", lambda m: m.docs_block()),
        ("mini_demon_table", "docs/tiny_world.md", "mini-demon-summary-difference",
         lambda m: m.readme_block(json.loads((RESULTS / "mini_demon_summary_difference.json").read_text()))),
        ("mini_demon_table", "docs/tiny_world.md", "mini-demon-summary-difference-length-groups",
         lambda m: m.readme_block(json.loads((RESULTS / "mini_demon_summary_difference_length_groups.json").read_text()))),
        ("mini_demon_table", "docs/tiny_world.md", "mini-demon-pair-colours",
         lambda m: m.readme_block(json.loads((RESULTS / "mini_demon_pair_colours.json").read_text()))),
        ("mini_demon_table", "docs/tiny_world.md", "mini-demon-world-v8-difference-only",
         lambda m: m.readme_block(json.loads((RESULTS / "mini_demon_world_v8_difference_only.json").read_text()))),
        ("mini_demon_table", "docs/tiny_world.md", "mini-demon-world-v8-difference60",
         lambda m: m.readme_block(json.loads((RESULTS / "mini_demon_world_v8_difference60.json").read_text()))),
        ("mini_demon_table", "docs/tiny_world.md", "mini-demon-world-v8-12x12",
         lambda m: m.readme_block(json.loads((RESULTS / "mini_demon_world_v8_12x12.json").read_text()))),
        ("mini_demon_table", "docs/tiny_world.md", "mini-demon-world-v8-steps3000",
         lambda m: m.readme_block(json.loads((RESULTS / "mini_demon_world_v8_steps3000.json").read_text()))),
        ("mini_demon_table", "docs/tiny_world.md", "mini-demon-world-v9",
         lambda m: m.readme_block(json.loads((RESULTS / "mini_demon_world_v9.json").read_text()))),
        ("mini_demon_table", "docs/tiny_world.md", "mini-demon-world-v8",
         lambda m: m.readme_block(json.loads((RESULTS / "mini_demon_world_v8.json").read_text()))),
        ("world_build_speed", "docs/tiny_world.md", "world-build-speed",
         lambda m: m.docs_block(json.loads((RESULTS / "world_build_speed.json").read_text()))),
        ("world_build_speed", "docs/tiny_world.md", "world-build-speed-processes",
         lambda m: m.docs_block(json.loads((RESULTS / "world_build_speed_processes.json").read_text()))),
        ("world_build_speed", "docs/tiny_world.md", "world-build-speed-length-groups",
         lambda m: m.docs_block(json.loads((RESULTS / "world_build_speed_length_groups.json").read_text()))),
        ("mini_demon_table", "docs/tiny_world.md", "mini-demon-rowcol-cells03",
         lambda m: m.readme_block(json.loads((RESULTS / "mini_demon_rowcol_cells03.json").read_text()))),
        ("world_diagnostics", "docs/tiny_world.md", "world-diagnostics-rowcol-cells01",
         lambda m: m.docs_block(json.loads((RESULTS / "world_diagnostics_rowcol_cells01_n300.json").read_text()))),
        ("mini_demon_table", "docs/tiny_world.md", "mini-demon-rowcol-cells01",
         lambda m: m.readme_block(json.loads((RESULTS / "mini_demon_rowcol_cells01.json").read_text()))),
        ("wording_shift", "docs/tiny_world.md", "wording-shift",
         lambda m: m.docs_block(json.loads((RESULTS / "wording_shift.json").read_text()))),
        ("wording_shift", "docs/tiny_world.md", "wording-shift-rowcol-cells01",
         lambda m: m.docs_block(json.loads((RESULTS / "wording_shift_rowcol_cells01.json").read_text()))),
        ("world_diagnostics", "docs/tiny_world.md", "world-diagnostics-lm-paraphrase",
         lambda m: m.docs_block(json.loads((RESULTS / "world_diagnostics_lm_paraphrase_n300.json").read_text()))),
        ("mini_demon_table", "docs/tiny_world.md", "mini-demon-lm-paraphrase",
         lambda m: m.readme_block(json.loads((RESULTS / "mini_demon_lm_paraphrase.json").read_text()))),
        ("wording_shift", "docs/tiny_world.md", "wording-shift-lm-paraphrase",
         lambda m: m.docs_block(json.loads((RESULTS / "wording_shift_lm_paraphrase.json").read_text()))),
        ("job_times", "README.md", "job-times",
         lambda m: m.readme_block(json.loads((RESULTS / "job_times.json").read_text()))),
    ],
)  # fmt: skip
def test_results_block_is_generated_from_its_results_file(script, page, marker, make):
    assert read_block(ROOT / page, marker) == make(_script(script)), (
        f"{page}'s {marker} block differs from benchmarks/{script}.py's rendering of its results; "
        f"rerun the script's README/docs mode"
    )


def test_world_diagnostics_are_of_the_shipped_assets():
    manifest = json.loads((ROOT / "vpgkit" / "assets" / "tiny_world" / "manifest.json").read_text())
    diagnostics = json.loads((RESULTS / "world_diagnostics.json").read_text())
    assert diagnostics["assets_sha256"] == {k: v["sha256"] for k, v in manifest["files"].items()}


def test_results_files_are_written_whole_or_not_at_all(tmp_path):
    from results_file import write_results

    path = tmp_path / "results" / "r.json"
    write_results(path, {"b": 1, "a": [1, 2]})
    assert list(json.loads(path.read_text())) == ["b", "a"]  # recorded order kept
    with pytest.raises(TypeError):
        write_results(path, {"x": object()})  # fails while serialising
    assert json.loads(path.read_text()) == {"b": 1, "a": [1, 2]}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]


def test_mini_demon_table_knows_the_default_job_and_refuses_to_merge_another_before_running(
    tmp_path, monkeypatch
):
    table = _script("mini_demon_table")
    assert table.default_job() == {
        "n_edits": 3000,
        "max_steps": 2000,
        "n_eval": 300,
    }  # what `python -m vpgkit.train` composes
    # the scaling runs are multiples of the default job's synthetic samples
    args = type("Args", (), {"seeds": [0], "variants": ["c"], "scaling": True, "scaling_seeds": [0]})
    assert sorted(o for tag, _, (o, *_) in [r for r in table._runs(args) if r[0] != "c"]) == [
        "data.prepare.n_edits=1500", "data.prepare.n_edits=6000", "data.prepare.n_edits=750"
    ]  # fmt: skip
    # a results file made with the 1000-sample default (no default_job recorded) is not merged into
    monkeypatch.setattr(table, "run_all", lambda args: pytest.fail("ran before checking the merge"))
    monkeypatch.setattr(sys, "argv", ["mini_demon_table.py", "--merge", "--out", str(tmp_path),
                                      "--results", str(RESULTS / "mini_demon_world_v6_1k.json")])  # fmt: skip
    with pytest.raises(SystemExit):
        table.main()
    # nor are runs of a job changed by --extra (the shortened job's) merged with runs made without it
    short = json.loads((RESULTS / "default_job_short.json").read_text())
    assert short["extra"] == ["trainer.max_steps=400", "data.prepare.n_edits=600", "data.prepare.n_eval=60"]
    monkeypatch.setattr(sys, "argv", ["mini_demon_table.py", "--merge", "--out", str(tmp_path),
                                      "--results", str(RESULTS / "default_job_short.json")])  # fmt: skip
    with pytest.raises(SystemExit):
        table.main()


def test_mini_demon_table_reevaluates_trained_runs_without_training_them(tmp_path):
    """--trained-runs: the command makes this job's mini-DEMON and evaluates the trained adapter (and, for (c),
    the base model) on it; the run's loss curve and training wall time come from the trained run."""
    table = _script("mini_demon_table")
    trained = tmp_path / "old" / "c_seed3"
    for need in ("adapter", ".hydra", "checkpoints"):
        (trained / need).mkdir(parents=True)
    (trained / ".hydra" / "config.yaml").write_text("{}")
    (trained / "checkpoints" / "latest.json").write_text('{"checkpoint": "step_000001"}')
    (trained / "wall_seconds.json").write_text("326.1\n")
    run_dir = tmp_path / "new" / "c_seed3"
    shell, flag, script = table._reevaluation("c", 3, run_dir, trained)
    assert (shell, flag) == ("sh", "-c") and "vpgkit.train" not in script
    steps = script.split(" && ")
    assert "make_mini_demon(" in steps[0] and "seed=3, per_task=300" in steps[0]
    assert f"--run {trained}" in steps[1] and f"--out {run_dir}/eval/results.json" in steps[1]
    assert "--base-only" not in steps[1] and "--base-only" in steps[2] and len(steps) == 3
    assert (run_dir / "checkpoints" / "latest.json").is_file()
    assert (run_dir / "wall_seconds.json").read_text() == "326.1\n"
    other = table._reevaluation("e", 3, tmp_path / "new" / "e_seed3", trained)[2]  # not (c): no base model
    assert len(other.split(" && ")) == 2 and "--base-only" not in other
    (trained / "adapter").rmdir()
    with pytest.raises(SystemExit, match="has no adapter"):
        table._reevaluation("c", 3, run_dir, trained)


def test_mini_demon_table_counts_answers_naming_no_option_per_task_and_control():
    table = _script("mini_demon_table")
    records = [
        {"task": "cloze", "choice_rule": "exact"},
        {"task": "cloze", "choice_rule": "none"},
        {"task": "cloze__both_blank", "choice_rule": "none"},
        {"task": "mini_demon_which_image", "choice_rule": "letter"},
        {"task": "difference"},  # no choice list: not counted
    ]
    assert table._off_choice(records) == {
        "cloze": {"real": 50.0, "both_blank": 100.0},
        "which_image": {"real": 0.0},
    }


def test_wording_shift_counts_which_image_answers_of_detail_and_cloze_per_control():
    shift = _script("wording_shift")
    records = [
        {"task": "mini_demon_detail_question", "prediction": "first"},
        {"task": "mini_demon_detail_question", "prediction": " Second. "},
        {"task": "mini_demon_detail_question", "prediction": "top left"},
        {"task": "mini_demon_detail_question", "prediction": "first row"},  # not a which-image answer
        {"task": "mini_demon_detail_question__both_blank", "prediction": "red"},
        {"task": "mini_demon_cloze__both_blank", "prediction": "SECOND"},
        {"task": "mini_demon_which_image", "prediction": "first"},  # its own answers: not counted
    ]
    assert shift.which_image_answers(records) == {
        "detail_question": {"real": 50.0, "both_blank": 0.0},
        "cloze": {"both_blank": 100.0},
    }


def test_wording_shift_poses_each_runs_benchmark_in_both_wordings_and_the_base_model_once_per_seed(
    tmp_path, monkeypatch
):
    shift = _script("wording_shift")
    runs = []
    for name, seed in (("c_seed0", 0), ("e_seed0", 0), ("c_seed1", 1)):
        (tmp_path / name / "data").mkdir(parents=True)
        (tmp_path / name / "data" / "prepare_config.json").write_text(
            json.dumps({"mini_demon": {"seed": seed, "n_eval": 2}})
        )
        runs.append(tmp_path / name)
    calls = []

    def evaluate(job):
        calls.append(
            (job.run.name, job.demon.relative_to(tmp_path / "out").as_posix(), job.result.name, job.base)
        )
        assert job.demon.parent.name == f"{job.wording}_wording"
        return {"detail_question": {"score": float(len(calls))}}

    monkeypatch.setattr(shift, "_evaluate", evaluate)
    data = shift.run_all(runs, tmp_path / "out", base=True, jobs=1, wordings=("eval", "train", "paraphrase"))
    assert list(data) == ["c_seed0", "base_seed0", "e_seed0", "c_seed1", "base_seed1"]
    assert all(set(entry) == {"run", "eval", "train", "paraphrase"} for entry in data.values())
    assert ("c_seed0", "train_wording/seed0_n2", "base_seed0_train.json", True) in calls and len(calls) == 15
    # the two wordings ask the same samples in different words
    eval_file, train_file = (json.loads((tmp_path / "out" / f"{w}_wording/seed1_n2/detail_question/core.json")
                                        .read_text()) for w in ("eval", "train"))  # fmt: skip
    assert [x["response"] for x in eval_file["data"]] == [x["response"] for x in train_file["data"]]
    assert eval_file["metadata"]["task_instruction"] != train_file["metadata"]["task_instruction"]


def test_wording_shift_counts_which_image_answers_per_question_template(tmp_path):
    from synthetic.world.language import EVAL_WORDING
    from synthetic.world.mini_demon import make_mini_demon

    shift = _script("wording_shift")
    make_mini_demon(tmp_path, seed=0, per_task=8, tasks=("detail_question",), progress=False)
    data = json.loads((tmp_path / "detail_question" / "core.json").read_text())["data"]
    # "first" for every position question with real images, a colour otherwise
    records = [{"task": f"detail_question{kind}", "id": f"mini_demon_detail_question{kind}-{x['sample_id']}",
                "prediction": "first" if x["subsets"] == ["position"] and not kind else "red"}
               for kind in ("", "__both_blank") for x in data]  # fmt: skip
    shares = shift.by_question(records, tmp_path, "eval")
    assert set(shares) == {"real", "both_blank"}
    assert set(shares["real"]) <= set(EVAL_WORDING.position_q) | set(EVAL_WORDING.colour_q)
    for template, share in shares["real"].items():
        assert share == (100.0 if template in EVAL_WORDING.position_q else 0.0)
    assert set(shares["both_blank"].values()) == {0.0}


def test_mini_demon_table_refuses_runs_another_table_is_training_and_ignores_a_dead_ones_lock(
    tmp_path, monkeypatch
):
    import subprocess

    table = _script("mini_demon_table")
    monkeypatch.setattr(table, "_runs", lambda args: [])  # nothing to train: only the claim is exercised
    args = type("Args", (), {"out": str(tmp_path)})
    lock = tmp_path / ".mini_demon_table.lock"
    holder = (  # another table: holds the claim the way _lock takes it
        "import fcntl, os, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
        "f.write(str(os.getpid())); f.flush(); print('held', flush=True); time.sleep(60)"
    )
    other = subprocess.Popen([sys.executable, "-c", holder, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "held"
        with pytest.raises(SystemExit, match=f"another mini_demon_table \\(pid {other.pid}\\)"):
            table.run_all(args)
        assert lock.read_text() == str(other.pid)  # its claim is kept
    finally:
        other.kill()
        other.wait()
    assert lock.read_text() == str(other.pid)  # the dead table's file is left behind, its claim is not
    assert table.run_all(args) == {}
    assert table.run_all(args) == {}  # released after the first: claimed again


def test_mini_demon_table_records_the_fetch_loss_when_the_run_trained_one(tmp_path):
    table = _script("mini_demon_table")

    def run(state: dict) -> dict:
        (tmp_path / "checkpoints" / "step_000004").mkdir(parents=True, exist_ok=True)
        (tmp_path / "checkpoints" / "latest.json").write_text(json.dumps({"checkpoint": "step_000004"}))
        (tmp_path / "checkpoints" / "step_000004" / "trainer_state.json").write_text(json.dumps(state))
        return table._loss(tmp_path, window=2)

    losses = [4.0, 2.0, 1.0, 3.0]
    assert run({"losses": losses}) == {"first": 3.0, "last": 2.0}  # LM loss alone: no fetch keys
    # a step whose batch had no boxed sample logs NaN (JSON NaN): left out of the means
    assert run({"losses": losses, "fetch_losses": [2.0, float("nan"), 4.0, 1.0]}) == {
        "first": 3.0, "last": 2.0, "fetch_first": 3.0, "fetch_last": 2.5,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("rebuild", "first"),
    [
        (RESULTS / "world_v9_rebuild_manifest.json", RESULTS / "world_v9_manifest.json"),
        (
            RESULTS / "world_lm_paraphrase_rebuild_manifest.json",
            RESULTS / "world_lm_paraphrase_manifest.json",
        ),
        # world v10 as shipped: the third candidate built once more, in a later session
        (
            ROOT / "vpgkit" / "assets" / "tiny_world" / "manifest.json",
            RESULTS / "world_lm_paraphrase_manifest.json",
        ),
        # world v10's recipe with --seed 1, built again in a later session on a rebuilt environment
        (
            RESULTS / "world_v10_seed1_rebuild_manifest.json",
            RESULTS / "world_v10_seed1_manifest.json",
        ),
    ],
)
def test_a_rebuild_with_the_same_command_wrote_the_same_files(rebuild, first):
    """The docs' "rebuilds bitwise" claims: a second build's manifest has the first's command and sha256."""
    again, built = json.loads(rebuild.read_text()), json.loads(first.read_text())
    assert again["command"] == built["command"]
    assert {k: v["sha256"] for k, v in again["files"].items()} == {
        k: v["sha256"] for k, v in built["files"].items()
    }


def test_the_readme_table_is_of_the_shipped_assets_and_holds_the_candidates_runs_unchanged():
    """mini_demon.json was measured on the files vpgkit ships, and its (a), (c), (d), (e), (n) rows are the
    runs of the candidate's 5-seed file, merged as they were (docs: "World v10")."""
    from synthetic.world.build import provenance

    table = json.loads((RESULTS / "mini_demon.json").read_text())
    assert table["assets"] == provenance()
    candidate = json.loads((RESULTS / "mini_demon_lm_paraphrase_5seeds.json").read_text())["runs"]
    assert {v["variant"] for v in candidate.values()} == set("acden")
    assert {tag: table["runs"][tag] for tag in candidate} == candidate


@pytest.mark.parametrize(
    "rerun_file",
    [
        "mini_demon_world_v10_c_seed0_rerun.json",  # the session that merged (b), (cl) and scaling in
        "mini_demon_world_v10_c_seeds012_rerun.json",  # the next: the runs benchmarks/blank_answers.py read
    ],
)
def test_a_rerun_of_table_runs_in_a_later_session_gave_the_same_scores(rerun_file):
    """The README's table merges runs trained in two sessions, and later analyses read runs trained again:
    (c) (and its base model (a)) trained again on the same assets gave every score, control and loss of the
    table's runs (their wall times differ: new runs)."""
    rerun = json.loads((RESULTS / rerun_file).read_text())
    table = json.loads((RESULTS / "mini_demon.json").read_text())
    assert rerun["assets"] == table["assets"]
    assert {r["variant"] for r in rerun["runs"].values()} <= {"a", "c"}
    for tag, again in rerun["runs"].items():
        first = dict(table["runs"][tag])
        again = dict(again)
        if "wall_seconds" in again:
            assert again.pop("wall_seconds") != first.pop("wall_seconds")
        assert again == first, tag
