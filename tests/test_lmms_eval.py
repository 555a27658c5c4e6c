"""lmms-eval plug-in (extra `eval`): `lmms-eval --model vpgkit` on the mini-DEMON gives the scores of
`python -m vpgkit.evaluate` on the same run, offline; loglikelihood with interleaved images; vpgkit imports
without lmms-eval."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from test_evaluate_cases import difference_task

from synthetic.world.mini_demon import make_mini_demon
from vpgkit.checkpoints import save_adapter
from vpgkit.config import register_schema, to_train_config
from vpgkit.data import Sample, Turn
from vpgkit.evaluate import main as vpgkit_evaluate
from vpgkit.evaluation.lmms.configs import task_name
from vpgkit.lmms_tasks import main as lmms_tasks
from vpgkit.training.build import build_model

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture(scope="module")
def world_run(tmp_path_factory):
    """A run directory of the default recipe (tiny-world backbones) with a non-zero VPG-C adapter, and its
    mini-DEMON (2 samples per task: the 5 tasks and 7 control variants) where the run keeps it."""
    run = tmp_path_factory.mktemp("lmms") / "run"
    register_schema()
    with initialize_config_module(config_module="vpgkit.recipes", version_base=None):
        composed = compose(config_name="train", overrides=["recipe=vpgc", f"output_dir={run}"])
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(composed))
    cfg = to_train_config(composed)
    model, _ = build_model(cfg.model, cfg.seed)
    torch.manual_seed(5)
    with torch.no_grad():
        for p in model.trainable_parameters().values():
            p.normal_(std=0.05)
    save_adapter(model, run / "adapter")
    make_mini_demon(run / "data" / "mini_demon", per_task=2, progress=False)
    return run


@pytest.mark.slow
def test_lmms_eval_cli_scores_equal_vpgkit_evaluate_offline(world_run, tmp_path):
    # The run's mini-DEMON and one more DEMON-format task folder (a second task of category VRI).
    run, demon = world_run, [world_run / "data" / "mini_demon", tmp_path / "extra" / "Spot-the-Diff"]
    difference_task(demon[1], count=3)
    args = ["--run", str(run), "--demon", *map(str, demon), "--out", str(tmp_path / "demon.json"),
            "--max-new-tokens", "8", "--batch-size", "8", "--no-progress"]  # fmt: skip
    ours = vpgkit_evaluate(args)
    tasks_dir = tmp_path / "lmms_tasks"
    lmms_tasks([*map(str, demon), "--out", str(tasks_dir)])
    lmms_eval = Path(sys.executable).with_name("lmms-eval")  # the console script the extra installs
    out = tmp_path / "lmms_out"
    command = [str(lmms_eval), "--model", "vpgkit", "--model_args", f"adapter={run}", "--include_path",
               str(tasks_dir), "--tasks", "mini_demon", "--gen_kwargs", "max_new_tokens=8", "--batch_size", "3",
               "--output_path", str(out), "--log_samples", "--verbosity", "WARNING"]  # fmt: skip
    proc = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={**os.environ, **OFFLINE},
        cwd=tmp_path,
    )
    found = list(out.rglob("*_results.json"))  # lmms-eval 0.7 exits with 0 even after an error
    assert proc.returncode == 0 and len(found) == 1, proc.stdout[-4000:] + proc.stderr[-4000:]
    (results_file,) = found
    results = json.loads(results_file.read_text())["results"]

    # Every task of the run's evaluation (controls included) and every category, and nothing else, with
    # the same score; VRI is the mean of two tasks.
    assert len(ours["tasks"]) == 13 and ours["categories"]["VRI"]["tasks"] == ["difference", "Spot-the-Diff"]
    names = {name: task_name("mini_demon", name) for name in ours["tasks"]}
    categories = {c: task_name("mini_demon", c) for c in ours["categories"]}
    assert set(results) == {"mini_demon", *names.values(), *categories.values()}
    for name, row in ours["tasks"].items():
        assert results[names[name]][f"{row['metric']},none"] == row["score"], name
    for category, row in ours["categories"].items():
        assert results[categories[category]][f"{row['metric']},none"] == row["score"], category
    assert any(row["score"] > 0 for row in ours["tasks"].values())  # not a comparison of zeros only

    # ... because every answer is the same (batches of 3 there, 8 here: left padding keeps answers apart).
    theirs = {}
    for name, lmms_name in names.items():
        (samples,) = out.rglob(f"*_samples_{lmms_name}.jsonl")
        for line in samples.read_text().splitlines():
            record = json.loads(line)
            theirs[(name, record["doc_id"])] = record["filtered_resps"]
    expected = {}
    for record in ours["predictions"]:
        doc_id = sum(1 for key in expected if key[0] == record["task"])
        expected[(record["task"], doc_id)] = record["prediction"]
    assert theirs == expected


@pytest.fixture(scope="module")
def lmm(world_run):
    from vpgkit.evaluation.lmms.model import VpgkitLMM

    return VpgkitLMM(adapter=str(world_run), batch_size=2)


def _requests(lmm, kind: str, rows: list[tuple[str, str, list]]) -> list:
    """lmms-eval Instances for (context, second argument, images) rows, their docs in ``lmm.task_dict``."""
    from lmms_eval.api.instance import Instance

    lmm.task_dict["probe"] = {"test": [{"images": images} for _, _, images in rows]}
    return [
        Instance(
            request_type=kind,
            arguments=(context, second, lambda doc: doc["images"], i, "probe", "test"),
            idx=0,
            metadata={"task": "probe", "doc_id": i, "repeats": 1},
        )
        for i, (context, second, images) in enumerate(rows)
    ]


def test_loglikelihood_is_the_answer_nll_with_interleaved_images(world_run, lmm):
    from vpgkit.data import load_image, open_image_store

    folder = world_run / "data" / "mini_demon" / "cloze" / "images"
    store = open_image_store(None)
    first, second = (load_image(str(folder / name), store)[0] for name in ("000000_1.png", "000000_2.png"))
    context = "Which colour? <image> This one is blue. <image> That one is ___."
    rows = [
        (context, " purple", [first, second]),
        (context, " purple", [second, first]),  # the images swapped
        ("Which colour? This one is blue. That one is ___.", " purple", [first, second]),  # images first
        (context, " blue", [first, second]),
    ]
    scores = lmm.loglikelihood(_requests(lmm, "loglikelihood", rows))

    # The value is the summed NLL of the answer tokens, as the training loss counts them (without EOS).
    st = lmm.sample_tokenizer(0)
    sample = Sample("x", [first, second], [Turn("user", context), Turn("assistant", "purple")])
    encoded = st(sample)
    labels = encoded["labels"].clone()
    assert labels[-1] == st.eos_id
    labels[-1] = -100
    from vpgkit.backbones.image_processor import ImageProcessor
    from vpgkit.evaluation.runner import _pixels

    pixels, counts = _pixels([("probe", sample)], ImageProcessor(size=lmm.model.vision.image_size), store)
    with torch.no_grad():
        loss = lmm.model(
            encoded["input_ids"][None],
            labels=labels[None],
            pixel_values=pixels,
            num_images=counts,
            loss_only=True,
            loss_reduction="sum",
        ).loss
    assert scores[0][0] == pytest.approx(float(loss), rel=1e-5)
    assert scores[0][0] > 0  # a negative log-likelihood: lmms-eval's multiple choice takes the argmin

    # Images sit where the markers are: swapping them changes the score; no markers = images first.
    assert abs(scores[1][0] - scores[0][0]) > 1e-4
    prefixed = lmm.loglikelihood(
        _requests(lmm, "loglikelihood", [("<image> <image> " + rows[2][0], " purple", [first, second])])
    )
    assert prefixed[0][0] == pytest.approx(scores[2][0], rel=1e-6)

    # Batches (of 2) give the scores of single requests.
    alone = [lmm.loglikelihood(_requests(lmm, "loglikelihood", [row]))[0][0] for row in rows]
    assert alone == pytest.approx([s for s, _ in scores], rel=1e-5)

    # The greedy answer is greedy.
    (answer,) = lmm.generate_until(
        _requests(lmm, "generate_until", [(context, {"max_new_tokens": 4, "until": []}, [first, second])])
    )
    ((_, greedy),) = lmm.loglikelihood(
        _requests(lmm, "loglikelihood", [(context, " " + answer, [first, second])])
    )
    assert answer and greedy


def test_bad_inputs_are_named(world_run, tmp_path, lmm):
    from vpgkit.evaluation.lmms.model import VpgkitLMM
    from vpgkit.evaluation.lmms.task import DemonLmmsTask

    with pytest.raises(FileNotFoundError, match=r"adapter=.*nowhere: no such directory"):
        VpgkitLMM(adapter=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="not a vpgkit run"):
        VpgkitLMM(adapter=str(tmp_path))
    with pytest.raises(ValueError, match="'auto'"):
        VpgkitLMM(adapter=str(world_run), batch_size="auto")
    with pytest.raises(TypeError, match=r"unknown argument\(s\) \['pretrained'\]"):
        VpgkitLMM(adapter=str(world_run), pretrained="x")
    with pytest.raises(ValueError, match="1 <image> marker"):
        lmm.generate_until(_requests(lmm, "generate_until", [("<image> which?", {}, ["a.png", "b.png"])]))
    with pytest.raises(ValueError, match="greedily"):
        lmm.generate_until(_requests(lmm, "generate_until", [("which?", {"do_sample": True}, [])]))
    with pytest.raises(FileNotFoundError, match=r"demon: .*missing does not exist"):
        DemonLmmsTask(config={"task": "t", "demon": str(tmp_path / "missing")})
    with pytest.raises(ValueError, match="needs `demon:`"):
        DemonLmmsTask(config={"task": "t"})
    with pytest.raises(FileNotFoundError, match=r"DEMON path .*nothing does not exist"):
        lmms_tasks([str(tmp_path / "nothing"), "--out", str(tmp_path / "tasks")])


def test_the_model_is_registered_and_vpgkit_imports_without_lmms_eval():
    from lmms_eval.models import get_model

    from vpgkit.evaluation.lmms.model import VpgkitLMM

    assert get_model("vpgkit") is VpgkitLMM
    code = (
        "import sys; sys.modules['lmms_eval'] = None\n"  # any import of lmms_eval fails
        "import vpgkit, vpgkit.evaluation, vpgkit.evaluation.lmms, vpgkit.evaluation.lmms.configs, vpgkit.lmms_tasks\n"
        "try:\n    import vpgkit.evaluation.lmms.model\nexcept ImportError:\n    print('needs lmms-eval')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "needs lmms-eval", proc.stderr[-2000:]


def test_lmms_eval_0_7_still_stringifies_loglikelihood_results():
    """lmms-eval 0.7.x's evaluator passes every model output through ``unwrap_generation_output``, which
    turns a loglikelihood pair ``(float, bool)`` into its string: its ``multiple_choice`` and
    ``loglikelihood`` tasks then fail in ``process_results`` ("too many values to unpack") for every model,
    vpgkit's included (docs/evaluate_with_lmms_eval.md). vpgkit's ``loglikelihood`` is tested directly
    above. When this test fails, lmms-eval passes pairs through: add an end-to-end multiple-choice check."""
    from lmms_eval.api.instance import unwrap_generation_output

    assert unwrap_generation_output((1.5, True)) == ("(1.5, True)", None)
