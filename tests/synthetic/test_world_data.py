"""The default job's data and mini-DEMON: formats, held-out-ness, idempotence."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthetic.world.backbones import lm_document
from synthetic.world.language import EVAL_WORDING, TRAIN_WORDING
from synthetic.world.mini_demon import CONTROLS, make_mini_demon
from synthetic.world.prepare import (
    PREPARE_STREAM,
    SYNTHETIC_TASKS,
    load_world_vpg,
    make_default_data,
    object_attention,
)
from synthetic.world.scene import BACKGROUND, POSITIONS, make_scene
from synthetic.world.tasks import TASK_INFO, recolourable
from vpgkit.data.readers import read_demon, read_samples_jsonl


def _eval_sentences() -> set[str]:
    """Every evaluation instruction and question stem (placeholders cut off at the first field)."""
    return {t.split("{")[0].strip() for t in EVAL_WORDING.instructions() if len(t.split("{")[0].strip()) > 8}


@pytest.fixture(scope="module")
def default_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("default")
    paths = make_default_data(str(out), seed=0, n_images=24, n_edits=12, n_eval=6, progress=False)
    return out, paths


def test_mini_demon_reads_with_read_demon_and_has_the_demon_layout(tmp_path):
    paths = make_mini_demon(tmp_path, seed=3, per_task=5, progress=False)
    categories = set()
    controls = {}
    for name, path in paths.items():
        core = json.loads(Path(path).read_text())
        if "control" in core["metadata"]:
            controls[name] = core["metadata"]["control"]
        meta = core["metadata"]
        assert {"dataset", "split", "num_sample", "task_instruction", "category", "metric"} <= set(meta)
        assert meta["metric"] in ("rouge_l", "accuracy") and meta["num_sample"] == len(core["data"]) == 5
        categories.add(meta["category"])
        samples = read_demon(path)
        assert len(samples) == 5
        for entry, sample in zip(core["data"], samples, strict=True):
            inst = entry["task_instance"]
            assert {"sample_id", "task_instruction_id", "task_instance", "response"} <= set(entry)
            assert all(os.path.isfile(p) for p in sample.images)
            assert len(sample.images) == len(inst["images_path"]) == inst["context"].count("{image#")
            if meta["metric"] == "accuracy":
                assert entry["response"] in inst["choice_list"]
            if name.split("__")[0] in ("detail_question", "cloze"):
                assert len(set(inst["choice_list"])) == 4  # a uniform guess scores 25 (README, "Not met")
            assert sample.conversation[0].text.startswith(
                meta["task_instruction"][entry["task_instruction_id"]]
            )
    assert len(categories) >= 4 and categories == {i["category"] for i in TASK_INFO.values()}
    assert controls == {
        f"{t}__{kind}": {"of": t, "kind": kind} for kind, tasks in CONTROLS.items() for t in tasks
    }


def test_mini_demon_controls_show_blank_images_or_another_samples_second_image(tmp_path):
    paths = make_mini_demon(tmp_path, seed=1, per_task=4, tasks=("cloze",), progress=False)
    base, blank, swapped = (
        read_demon(paths[n]) for n in ("cloze", "cloze__both_blank", "cloze__image2_replaced")
    )
    load = lambda p: np.asarray(Image.open(p))  # noqa: E731
    for i in range(4):
        assert [s.conversation for s in (base[i], blank[i], swapped[i])].count(base[i].conversation) == 3
        for p in blank[i].images:
            assert (load(p) == BACKGROUND).all()
        assert np.array_equal(load(swapped[i].images[0]), load(base[i].images[0]))
        assert np.array_equal(load(swapped[i].images[1]), load(base[(i + 1) % 4].images[1]))
    core = json.loads(Path(paths["cloze"]).read_text())
    assert all(isinstance(e["subsets"], list) for e in core["data"])


def test_default_data_outputs_and_no_eval_instruction_in_training(default_data):
    out, paths = default_data
    assert sorted(paths) == ["captions", "images", "mini_demon", "root", "synthetic"]
    captions = read_samples_jsonl(paths["captions"])
    synthetic = read_samples_jsonl(paths["synthetic"])
    assert len(captions) == 24 and len(synthetic) >= 12
    for s in captions + synthetic:
        assert all((out / p).is_file() for p in s.images), s.images
    assert {s.meta["task"] for s in synthetic} == set(SYNTHETIC_TASKS)
    # each sample is about the small object the shipped VPG attends to least
    scenes = [make_scene(PREPARE_STREAM, i) for i in range(24)]
    attention = object_attention(load_world_vpg(), scenes)
    named_regions = 0
    for s in synthetic:
        scene = scenes[int(s.meta["scene"])]
        # which-image and cloze ask about an object that can change colour; the others about any small one
        candidates = recolourable(scene) if s.meta["task"] in ("which_image", "cloze") else scene.details
        cells = [o.cell for o in candidates]
        assert s.meta["target_cell"] == min(cells, key=lambda c: (attention[scene.index][c], c))
        # the fetch box is the box of the object the instruction asks about: that object, except for
        # difference questions about an added object or an unchanged region (the object in the named cell)
        x0, y0, x1, y1 = s.meta["fetch_box"]
        box_cell = 3 * int(1.5 * (y0 + y1)) + int(1.5 * (x0 + x1))
        if s.meta["task"] == "difference" and s.meta["subsets"][0] in ("add", "unchanged"):
            assert f"the {POSITIONS[box_cell]} of" in s.conversation[0].text, (s.meta, s.conversation[0].text)
            named_regions += 1
            continue
        target = next(o for o in candidates if o.cell == s.meta["target_cell"])
        assert s.meta["fetch_box"] == [round(v / scene.size, 6) for v in target.box]
    assert named_regions > 0  # the fixture has such questions
    training_text = [t.text for s in captions + synthetic for t in s.conversation]
    training_text += [lm_document(0, i) for i in range(300)]  # the language model's corpus too
    eval_sentences = _eval_sentences()
    for text in training_text:
        for sentence in eval_sentences:
            assert sentence not in text, (sentence, text)
    demon = [
        t.text
        for p in Path(paths["mini_demon"]).glob("*/core.json")
        for s in read_demon(p)
        for t in s.conversation
    ]
    train_instructions = {t for t in TRAIN_WORDING.instructions() if "{" not in t}
    assert not any(instr in text for text in demon for instr in train_instructions)


def test_mini_demon_images_are_not_training_images(default_data):
    out, paths = default_data
    digest = lambda p: hashlib.sha256(Path(p).read_bytes()).hexdigest()  # noqa: E731
    train = {digest(p) for p in (out / "images").glob("*.png")}
    held_out = {digest(p) for p in Path(paths["mini_demon"]).glob("*/images/*.png")}
    assert train and held_out and not train & held_out


def test_rerun_does_no_work(default_data):
    out, paths = default_data
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = make_default_data(str(out), seed=0, n_images=24, n_edits=12, n_eval=6, progress=False)
    assert again == paths
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamp


def test_captions_only_mix_skips_synthetic(tmp_path):
    paths = make_default_data(str(tmp_path), n_images=4, n_eval=1, mix="captions", progress=False)
    assert "synthetic" not in paths and not (tmp_path / "synthetic.jsonl").exists()
    with pytest.raises(ValueError, match="mix must be one of"):
        make_default_data(str(tmp_path), mix="everything")
    assert np.isfinite(len(read_samples_jsonl(paths["captions"])))


def test_synthetic_task_mix_can_be_chosen(tmp_path):
    paths = make_default_data(str(tmp_path / "data"), seed=0, n_images=8, n_edits=6, n_eval=1, progress=False,
                              tasks={"detail_question": 1.0})  # fmt: skip
    tasks = {s.meta["task"] for s in read_samples_jsonl(paths["synthetic"])}
    assert tasks == {"detail_question"}
    with pytest.raises(ValueError, match="tasks must map some of"):
        make_default_data(str(tmp_path), n_images=4, n_eval=1, tasks={"riddle": 1.0})


def test_blank_images_control_keeps_every_text_and_draws_no_object(default_data, tmp_path):
    out, paths = default_data
    blank = make_default_data(str(tmp_path), seed=0, n_images=24, n_edits=12, n_eval=6, progress=False,
                              blank_images=True)  # fmt: skip
    for part in ("captions", "synthetic"):
        real, drawn = read_samples_jsonl(paths[part]), read_samples_jsonl(blank[part])
        assert drawn == real
        for sample in drawn:
            for name in sample.images:
                assert (np.asarray(Image.open(tmp_path / name).convert("RGB")) == BACKGROUND).all(), name
    # mini-DEMON is the real one
    files = sorted(p.relative_to(out / "mini_demon") for p in (out / "mini_demon").rglob("*") if p.is_file())
    for name in files:
        assert (tmp_path / "mini_demon" / name).read_bytes() == (out / "mini_demon" / name).read_bytes()


def test_switching_blank_images_in_one_folder_redraws_the_images(tmp_path):
    """The flag is part of the data's record: a folder prepared one way is not reused the other way."""

    def drawn(blank: bool) -> bool:  # True when every training image is background only
        paths = make_default_data(str(tmp_path), seed=0, n_images=6, n_edits=4, n_eval=1, progress=False,
                                  blank_images=blank)  # fmt: skip
        names = {
            n for part in ("captions", "synthetic") for s in read_samples_jsonl(paths[part]) for n in s.images
        }
        return all((np.asarray(Image.open(tmp_path / n).convert("RGB")) == BACKGROUND).all() for n in names)

    assert not drawn(False) and drawn(True) and not drawn(False)


def test_blank_fraction_blanks_some_pairs_whole_and_leaves_the_others_as_they_were(default_data, tmp_path):
    _, paths = default_data
    mixed = make_default_data(str(tmp_path), seed=0, n_images=24, n_edits=12, n_eval=6, progress=False,
                              blank_fraction=0.5)  # fmt: skip
    real, drawn = read_samples_jsonl(paths["synthetic"]), read_samples_jsonl(mixed["synthetic"])
    blanked = [s for s in drawn if s.meta.get("blank")]
    assert 0 < len(blanked) < len(drawn)
    for before, after in zip(real, drawn, strict=True):
        assert after.conversation == before.conversation
        if after.meta.get("blank"):  # every image blank (the unedited one too), nothing to fetch
            assert "fetch_box" not in after.meta and all(n.startswith("synthetic/") for n in after.images)
            for name in after.images:
                assert (np.asarray(Image.open(tmp_path / name).convert("RGB")) == BACKGROUND).all(), name
        else:
            assert after == before
    with pytest.raises(ValueError, match="blank_fraction must be in"):
        make_default_data(str(tmp_path), n_images=4, n_eval=1, blank_fraction=1.0)


def test_paraphrase_asks_the_same_samples_in_other_words_never_the_evaluations(default_data, tmp_path):
    _, paths = default_data
    asked = make_default_data(str(tmp_path), seed=0, n_images=24, n_edits=12, n_eval=6, progress=False,
                              paraphrase=1.0)  # fmt: skip
    real, other = read_samples_jsonl(paths["synthetic"]), read_samples_jsonl(asked["synthetic"])
    changed = 0
    for before, after in zip(real, other, strict=True):
        assert (after.images, after.meta, after.conversation[1:]) == (before.images, before.meta,
                                                                       before.conversation[1:])  # fmt: skip
        changed += after.conversation[0].text != before.conversation[0].text
        assert not any(s in after.conversation[0].text for s in _eval_sentences())
    assert changed == len(real)  # the synthetic tasks' templates are all new
    with pytest.raises(ValueError, match="paraphrase must be in"):
        make_default_data(str(tmp_path), n_images=4, n_eval=1, paraphrase=1.5)


def test_mini_demon_in_another_wording_asks_the_same_samples(tmp_path):
    eval_paths = make_mini_demon(tmp_path / "eval", seed=1, per_task=4, progress=False)
    train_paths = make_mini_demon(
        tmp_path / "train", seed=1, per_task=4, progress=False, wording=TRAIN_WORDING
    )
    assert eval_paths.keys() == train_paths.keys()
    for name in eval_paths:
        a, b = (json.loads(Path(p[name]).read_text()) for p in (eval_paths, train_paths))
        assert b["metadata"]["task_instruction"] != a["metadata"]["task_instruction"]
        for x, y in zip(a["data"], b["data"], strict=True):
            assert (y["response"], y["task_instance"].get("choice_list"), y["subsets"]) == (
                x["response"], x["task_instance"].get("choice_list"), x["subsets"])  # fmt: skip
            images = tmp_path / "eval" / name, tmp_path / "train" / name
            for image in x["task_instance"]["images_path"]:
                assert (images[0] / "images" / image).read_bytes() == (
                    images[1] / "images" / image
                ).read_bytes()


def test_word_dropout_replaces_only_template_words_by_unk(default_data, tmp_path):
    import re

    from synthetic.world.scene import COLOURS, SHAPES, SIZES

    _, paths = default_data
    noisy = make_default_data(str(tmp_path), seed=0, n_images=24, n_edits=12, n_eval=6, progress=False,
                              word_dropout=0.5)  # fmt: skip
    real, other = read_samples_jsonl(paths["synthetic"]), read_samples_jsonl(noisy["synthetic"])
    named = {w for phrase in (*COLOURS, *SHAPES, *SIZES, *POSITIONS) for w in phrase.split()}
    dropped = 0
    for before, after in zip(real, other, strict=True):
        assert (after.images, after.meta, after.conversation[1:]) == (before.images, before.meta,
                                                                       before.conversation[1:])  # fmt: skip
        old, new = before.conversation[0].text, after.conversation[0].text
        # the same text but for words that became <unk> ...
        assert re.fullmatch(re.escape(new).replace(re.escape("<unk>"), "[A-Za-z]+"), old), (old, new)
        dropped += new.count("<unk>")
        # ... and never a word that names the object, its region or an option
        for word in named:
            assert re.findall(rf"\b{word}\b", new) == re.findall(rf"\b{word}\b", old), (word, old, new)
    assert dropped > 0
    with pytest.raises(ValueError, match="word_dropout must be in"):
        make_default_data(str(tmp_path), n_images=4, n_eval=1, word_dropout=1.0)
