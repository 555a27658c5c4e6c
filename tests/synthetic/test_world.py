"""The tiny world: scenes are deterministic, masks match pixels, captions omit details, vocabulary is closed."""

from __future__ import annotations

import importlib.util
import itertools
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from synthetic.discriminative.captions import DifferenceCaptioner, color_name, position_words
from synthetic.world.edits import edit_scene
from synthetic.world.language import (
    EVAL_WORDING,
    ORDINALS,
    PARAPHRASE_WORDING,
    TRAIN_WORDING,
    build_world_tokenizer,
    corpus_words,
    detail_question,
    full_description,
    noun_phrase,
    salient_caption,
    world_corpus,
)
from synthetic.world.scene import BACKGROUND, COLOURS, IMAGE_SIZE, POSITIONS, make_scene, render
from synthetic.world.tasks import TASK_BUILDERS, render_text
from vpgkit.modules import VPGCConfig


def test_scene_is_a_pure_function_of_seed_and_index():
    a, b = make_scene(3, 17), make_scene(3, 17)
    assert a == b
    assert np.array_equal(render(a)[0], render(b)[0])
    others = {make_scene(3, i).objects for i in range(30)} | {make_scene(4, i).objects for i in range(30)}
    assert len(others) == 60  # different indices / seeds give different scenes


@pytest.mark.parametrize("index", range(40))
def test_masks_are_exactly_the_painted_pixels(index):
    scene = make_scene(0, index)
    image, masks = render(scene)
    assert image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and image.dtype == np.uint8
    assert masks.sum(0).max() <= 1  # disjoint
    for obj, mask in zip(scene.objects, masks, strict=True):
        assert mask.any()
        assert (image[mask] == obj.rgb).all()
        x0, y0, x1, y1 = obj.box
        ys, xs = np.nonzero(mask)
        assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1
        assert position_words(obj.box, IMAGE_SIZE, IMAGE_SIZE) == obj.position
        # the synthetic pipeline names colours from pixels: it must use the world's word
        assert color_name(image[mask]) == obj.colour
    assert (image[~masks.any(0)] == BACKGROUND).all()


def test_scene_structure():
    for i in range(200):
        scene = make_scene(1, i)
        assert 7 <= len(scene.objects) <= 8
        assert 1 <= len(scene.salient) <= 2 and len(scene.details) >= 1
        assert len({(o.colour, o.shape) for o in scene.objects}) == len(scene.objects)
        assert len({o.cell for o in scene.objects}) == len(scene.objects)
        for o in scene.details:
            assert 8 <= o.box[2] - o.box[0] <= 9  # small objects: at least one 7 px patch wide


def test_salient_captions_omit_small_objects_and_descriptions_include_them():
    rng = np.random.default_rng(0)
    for i in range(200):
        scene = make_scene(2, i)
        caption, description = salient_caption(scene, rng), full_description(scene, rng)
        assert "small" not in caption
        for obj in scene.details:
            assert f"{obj.colour} {obj.shape}" not in caption
            assert f"small {obj.colour} {obj.shape}" in description
        for obj in scene.salient:
            assert obj.shape in caption
        for obj in scene.objects:  # every object, with its size, colour and position
            assert noun_phrase(obj) in description


def test_tokenizer_covers_all_generated_text():
    tok = build_world_tokenizer()
    assert tok.convert_tokens_to_ids(
        ["<pad>", "<s>", "</s>", "<image>", "<Img>", "</Img>", "<|endofchunk|>"]
    ) == [
        0,
        1,
        2,
        3,
        5,
        6,
        7,
    ]
    rng = np.random.default_rng(0)
    captioner = DifferenceCaptioner()
    texts = []
    for i in range(150):
        scene = make_scene(5, i)
        texts += [salient_caption(scene, rng), full_description(scene, rng)]
        for wording in (TRAIN_WORDING, EVAL_WORDING):
            q = detail_question(scene, rng, wording)
            texts += [q.text, *q.choices]
            for build in TASK_BUILDERS.values():
                task = build(scene, rng, wording)
                texts += [render_text(task, lambda _: "<image>"), task.response]
        _, meta = edit_scene(scene, rng, kinds=("modify", "delete", "add"))
        texts.append(captioner.caption(meta, rng))
    texts += sorted(TRAIN_WORDING.instructions() | EVAL_WORDING.instructions())
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids, text


def test_train_and_eval_wordings_are_disjoint():
    assert not TRAIN_WORDING.instructions() & EVAL_WORDING.instructions()
    for eval_text in EVAL_WORDING.instructions():
        for train_text in TRAIN_WORDING.instructions():
            assert eval_text.format(object="x", where="y", colour="z", position="w") not in train_text


def test_paraphrase_wording_keeps_the_evaluation_wording_held_out():
    """The adapter's extra wording has no evaluation sentence, and no word or word pair the evaluation has
    and the LM's corpus lacks (split as the tokenizer splits); every word is the tokenizer's."""

    def pairs(texts) -> set[tuple[str, str]]:
        return {p for t in texts for p in itertools.pairwise(corpus_words(t))}

    evaluation = EVAL_WORDING.instructions()
    corpus = [line for line in world_corpus().split("\n") if line not in evaluation]
    known_words, known_pairs = {w for line in corpus for w in corpus_words(line)}, pairs(corpus)
    new = PARAPHRASE_WORDING.instructions() - TRAIN_WORDING.instructions()
    assert new and not new & evaluation
    tok = build_world_tokenizer()
    for text in new:
        assert set(corpus_words(text)) <= known_words, text
        assert not (pairs([text]) & pairs(evaluation)) - known_pairs, text
        filled = text.format(object="small red circle", position="top", where="at the top", colour="red")
        assert tok.unk_token_id not in tok(filled, add_special_tokens=False)["input_ids"], text


def test_colours_are_named_consistently():
    for name, rgb in COLOURS.items():
        assert color_name(np.array([rgb], np.uint8)) == name


def test_lm_documents_show_the_objects_their_answers_need_in_slots_at_the_input_or_at_layer_k():
    from synthetic.world.backbones import INJECT_LAYER, NUM_SLOTS, lm_batch, lm_example, slot_vectors

    tok = build_world_tokenizer()
    image_id = tok.convert_tokens_to_ids("<image>")
    layered = 0
    for i in range(60):
        segments, images = lm_example(0, i)
        text = "".join(t for t, _ in segments)
        assert text.count("<image>") == NUM_SLOTS * len(images) and not [
            t for t, loss in segments[:-1] if loss
        ]
        for image in images:
            shown = [o for o in image.at_input + image.at_layer if o is not None]
            assert len(shown) <= 2 * NUM_SLOTS
            # an object injected at layer k is small: salient objects always enter at the input
            assert all(not o.salient for o in image.at_layer if o is not None)
            layered += any(image.at_layer)
    assert layered > 20  # both kinds of documents occur
    batch = lm_batch(tok, 0, 0, 8)
    assert int((batch.input_ids == image_id).sum()) == batch.input_words.shape[0] * NUM_SLOTS
    assert bool((batch.labels[batch.input_ids == image_id] == -100).all())  # slots carry no loss
    embed = torch.nn.Embedding(len(tok), 16, padding_idx=0)
    vectors = slot_vectors(embed, batch.input_words)
    empty = (batch.input_words == 0).all(-1).reshape(-1)
    assert bool((vectors[empty] == 0).all()) and bool((vectors[~empty] != 0).any(-1).all())
    assert VPGCConfig.preset("tiny_world").layer == INJECT_LAYER  # the LM reads where VPG-C writes


def test_lm_batches_draw_their_tasks_by_the_weights_given():
    from synthetic.world.backbones import LM_TASK_WEIGHTS, lm_batch

    tok = build_world_tokenizer()

    def answers(batch) -> set[str]:
        return {tok.decode(row[row != -100], skip_special_tokens=True).strip() for row in batch.labels}

    which_only = lm_batch(tok, 0, 0, 12, task_weights={"which_image": 1.0})
    assert answers(which_only) == {"first", "second"}  # only which-image answers
    default = lm_batch(tok, 0, 0, 12)
    same = lm_batch(tok, 0, 0, 12, task_weights=dict(LM_TASK_WEIGHTS))
    assert torch.equal(default.input_ids, same.input_ids)  # the build's draw is the default
    assert not answers(default) <= {"first", "second"}


def test_which_image_easier_forms_lack_the_object_in_the_other_image_and_leave_the_default_draw():
    from synthetic.discriminative.captions import located
    from synthetic.world.backbones import _lm_document, lm_batch
    from synthetic.world.scene import POSITIONS
    from synthetic.world.tasks import which_image_task

    for i in range(20):
        t = which_image_task(make_scene(0, i), np.random.default_rng(i), EVAL_WORDING, form="remove")
        shown = ORDINALS.index(t.response)
        assert t.target in t.scenes[shown].objects and t.target not in t.scenes[1 - shown].objects
        assert len(t.scenes[1 - shown].objects) == len(t.scenes[shown].objects) - 1
        assert t.focus[shown] == [t.target] and t.focus[1 - shown] == []
        alone = which_image_task(make_scene(0, i), np.random.default_rng(i), EVAL_WORDING, form="alone")
        shown = ORDINALS.index(alone.response)
        assert alone.scenes[shown].objects == (alone.target,) and alone.scenes[1 - shown].objects == ()
        recoloured = which_image_task(make_scene(0, i), np.random.default_rng(i), EVAL_WORDING)
        assert len(recoloured.scenes[0].objects) == len(recoloured.scenes[1].objects)  # mini-DEMON's form
    with pytest.raises(ValueError, match="form must be one of"):
        which_image_task(make_scene(0, 0), np.random.default_rng(0), EVAL_WORDING, form="swap")
    tok = build_world_tokenizer()
    with pytest.raises(ValueError, match="add up to at most 1"):
        lm_batch(tok, 0, 0, 2, which_forms={"alone": 0.6, "remove": 0.6})
    assert torch.equal(lm_batch(tok, 0, 0, 12, which_forms={}).input_ids, lm_batch(tok, 0, 0, 12).input_ids)

    def images_with_its_cell(which_forms: dict[str, float]) -> list[int]:
        """Per LM document: how many of its two images show an object where the named object is."""
        counts = []
        for d in range(12):
            segments, images, *_ = _lm_document(
                0, d, task_weights={"which_image": 1.0}, which_forms=which_forms
            )
            question = segments[-2][0]  # the user turn, before the answer
            [named] = [p for p in POSITIONS if located(p) in question]  # one position phrase per question
            counts.append(
                sum(any(o and o.position == named for o in im.at_input + im.at_layer) for im in images)
            )
        return counts

    assert images_with_its_cell({"remove": 1.0}) == [1] * 12  # the other image lacks the object
    assert images_with_its_cell({"alone": 1.0}) == [1] * 12
    assert images_with_its_cell({}) == [2] * 12  # mini-DEMON's form: recoloured in place


def test_slot_injection_puts_input_slots_in_the_embeddings_and_adds_layer_slots_before_layer_k():
    from transformers import LlamaForCausalLM

    from synthetic.world.backbones import (
        INJECT_LAYER,
        lm_batch,
        slot_injection,
        slot_vectors,
        world_llama_config,
    )

    tok = build_world_tokenizer()
    image_id = tok.convert_tokens_to_ids("<image>")
    torch.manual_seed(0)
    llm = LlamaForCausalLM(world_llama_config(len(tok))).eval()
    batch = lm_batch(tok, 0, 0, 6)
    plain = type(batch)(batch.input_ids, batch.labels, batch.input_words, torch.zeros_like(batch.layer_words))
    mask = (batch.input_ids != tok.pad_token_id).long()
    layer_inputs, embeddings = [], []
    for b in (batch, plain):
        with torch.no_grad(), slot_injection(llm, b, image_id) as embeds:
            # registered after the injection hook, so it sees the input of layer k with the injection
            handle = llm.model.layers[INJECT_LAYER].register_forward_pre_hook(
                lambda m, args, kwargs: layer_inputs.append(
                    (args[0] if args else kwargs["hidden_states"]).clone()
                ),
                with_kwargs=True,
            )
            llm(inputs_embeds=embeds, attention_mask=mask)
            handle.remove()
        embeddings.append(embeds)
    positions = batch.input_ids == image_id
    embed = llm.get_input_embeddings()
    torch.testing.assert_close(embeddings[0][positions], slot_vectors(embed, batch.input_words))
    torch.testing.assert_close(embeddings[0], embeddings[1])
    added = layer_inputs[0] - layer_inputs[1]
    unit = slot_vectors(embed, batch.layer_words)
    unit = unit / unit.norm(dim=-1, keepdim=True).clamp(min=1e-6)
    expected = unit * layer_inputs[1][positions].norm(dim=-1, keepdim=True)  # as large as the hidden state
    torch.testing.assert_close(added[positions], expected, atol=1e-4, rtol=1e-4)
    assert float(added[~positions].abs().max()) < 1e-6
    assert bool(batch.layer_words.any())  # the batch does inject something


def test_asked_labels_name_only_what_the_question_says_about_its_object():
    from synthetic.world.backbones import ASKED_ATTRIBUTES, QUESTION_TASKS, asked_labels

    named = {a: 0 for a in ASKED_ATTRIBUTES}
    for i in range(200):
        for task, build in TASK_BUILDERS.items():
            t = build(make_scene(0, i), np.random.default_rng(i), EVAL_WORDING)
            labels = dict(zip(ASKED_ATTRIBUTES, asked_labels(t), strict=True))
            # --lm-question-summary-tasks: a task left out gets no labels (worlds v5 and v6 leave out which-image)
            assert set(asked_labels(t, tuple(x for x in TASK_BUILDERS if x != task))) == {-100}
            if task in ("caption", "difference"):  # not in the default tasks
                assert set(labels.values()) == {-100}
            if task == "difference":  # asked for: the region it names (its named object's), nothing else
                region = dict(zip(ASKED_ATTRIBUTES, asked_labels(t, QUESTION_TASKS), strict=True))
                assert region == {"size": -100, "colour": -100, "shape": -100, "position": t.named.cell}
                assert POSITIONS[t.named.cell] in t.context
            if task in ("caption", "difference"):
                continue
            assert labels["shape"] >= 0 and labels["size"] >= 0  # every such question names its object
            for a, label in labels.items():
                if label >= 0:
                    named[a] += 1
                    assert ASKED_ATTRIBUTES[a][label] == getattr(t.target, a)
            if t.subsets == ["colour"]:  # a colour question: its answer is never a label
                assert labels["colour"] == -100
            if t.subsets == ["position"]:
                assert labels["position"] == -100
    assert all(n > 100 for n in named.values())


def _untrained_world_lm():
    """The world tokenizer and an untrained world LLaMA (seed 0) in eval mode."""
    from transformers import LlamaForCausalLM

    from synthetic.world.backbones import world_llama_config

    tok = build_world_tokenizer()
    torch.manual_seed(0)
    return tok, LlamaForCausalLM(world_llama_config(len(tok))).eval()


def test_question_summary_reads_the_last_prompt_token_at_the_input_of_layer_k():
    from synthetic.world.backbones import (
        INJECT_LAYER,
        QuestionSummaryHead,
        last_prompt_states,
        lm_batch,
        slot_injection,
    )

    tok, llm = _untrained_world_lm()
    batch = lm_batch(tok, 0, 0, 6)
    mask = (batch.input_ids != tok.pad_token_id).long()
    with (
        torch.no_grad(),
        last_prompt_states(llm, batch.labels, INJECT_LAYER) as states,
        slot_injection(llm, batch, tok.convert_tokens_to_ids("<image>")) as embeds,
    ):
        out = llm(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True)
    first_label = [int((row != -100).nonzero()[0]) for row in batch.labels]
    expected = torch.stack([out.hidden_states[INJECT_LAYER][b, p - 1] for b, p in enumerate(first_label)])
    torch.testing.assert_close(states[0], expected)
    head = QuestionSummaryHead(llm.config.hidden_size)
    with torch.no_grad():
        loss = head.loss(states[0], batch.asked)
    assert batch.asked.shape == (6, 4) and bool((batch.asked >= 0).any()) and float(loss) > 0
    # rows with nothing named contribute nothing
    assert float(head.loss(states[0], torch.full_like(batch.asked, -100))) == 0


def test_tasks_name_their_object_and_balance_their_answers():
    from collections import Counter

    answers: dict[str, Counter] = {t: Counter() for t in TASK_BUILDERS}
    subsets: dict[str, Counter] = {t: Counter() for t in TASK_BUILDERS}
    for i in range(400):
        scene = make_scene(6, i)
        for name, build in TASK_BUILDERS.items():
            task = build(scene, np.random.default_rng(i), EVAL_WORDING)
            answers[name][task.response] += 1
            subsets[name].update(task.subsets)
            assert len(task.focus) == len(task.scenes) == task.context.count("{image#")
            if task.choices is not None:
                assert task.response in task.choices and len(set(task.choices)) == len(task.choices)
            if name == "which_image":  # the two images differ in the named object's colour only
                a, b = task.focus[0][0], task.focus[1][0]
                assert (a.shape, a.cell, a.box) == (b.shape, b.cell, b.box) and a.colour != b.colour
                shown = task.focus[["first", "second"].index(task.response)][0]
                assert f"a small {shown.colour} {shown.shape}" in task.context
            if name == "cloze":
                before, after = task.focus[0][0], task.focus[1][0]
                assert task.response == after.colour and f"is {before.colour}." in task.context
                assert ("unchanged" in task.subsets) == (before.colour == after.colour)
            if name == "difference":
                named = task.focus[0] or task.focus[1]
                assert named and named[0].position in task.context
                # what the instruction asks about is the object in the named region, in the image showing it
                assert (
                    task.named.cell == named[0].cell
                    and task.named in task.scenes[-1 if "add" in task.subsets else 0].objects
                )
            elif task.target is not None:
                assert task.named is task.target
    # no answer is predictable from how often it occurs
    assert abs(answers["which_image"]["first"] / 400 - 0.5) < 0.08
    assert 0.18 < subsets["cloze"]["unchanged"] / 400 < 0.32 and subsets["cloze"]["distractor"] > 100
    assert max(answers["cloze"].values()) / 400 < 0.25
    assert 0.12 < subsets["difference"]["unchanged"] / 400 < 0.28


def test_recolouring_tasks_fall_back_to_a_salient_object_when_no_small_one_can_change_colour():
    from synthetic.world.scene import Scene, place

    rng = np.random.default_rng(0)
    circles = [
        place("circle", c, "small", cell, rng) for cell, c in enumerate(COLOURS)
    ]  # every circle colour
    scene = Scene(
        (*circles, place("square", "red", "large", 6, rng), place("square", "blue", "medium", 7, rng))
    )
    for name in ("which_image", "cloze"):
        task = TASK_BUILDERS[name](scene, np.random.default_rng(1), EVAL_WORDING)
        assert task.focus[0][0].shape == "square"


def test_token_labels_give_each_patch_the_object_covering_it_most():
    from synthetic.world.backbones import token_labels
    from synthetic.world.scene import SHAPES, SIZES, Scene, WorldObject

    # 56 px, 7 px patches: a small square at x 7..15, y 0..5 covers patch (0, 1) by 7×5 px and patch
    # (0, 2) by 1×5 px; a large circle at x 14..28 covers (0, 2) by 7×7 px, so it wins that patch.
    small = WorldObject("square", "red", "small", 0, (7, 0, 15, 5))
    large = WorldObject("circle", "blue", "large", 1, (14, 0, 28, 14))
    labels = token_labels([Scene((small, large), IMAGE_SIZE, 0, 0)], patch_size=7)[0]
    colours = list(COLOURS)
    assert labels.shape == (64, 4)
    expect_small = [colours.index("red"), SHAPES.index("square"), list(SIZES).index("small"), 0]
    expect_large = [colours.index("blue"), SHAPES.index("circle"), list(SIZES).index("large"), 1]
    assert labels[1].tolist() == expect_small
    assert labels[2].tolist() == expect_large and labels[3].tolist() == expect_large
    assert labels[0].tolist() == [-100] * 4  # background
    assert labels[9].tolist() == [-100] * 4  # row 1, column 1: below the small square (y ≥ 7)
    assert labels[10].tolist() == expect_large


def test_grounding_phrases_name_exactly_one_object():
    from synthetic.world.backbones import grounding_phrase

    for i in range(200):
        scene = make_scene(8, i)
        rng = np.random.default_rng(i)
        for obj in scene.objects:
            phrase = grounding_phrase(scene, obj, rng)
            fits = [o for o in scene.objects if all(w in noun_phrase(o).split() for w in phrase.split())]
            assert fits == [obj], phrase


def test_grounding_loss_reaches_the_qformers_cross_attention_through_conditioned_queries():
    from synthetic.world.backbones import GroundingHead, object_targets
    from vpgkit.modules import QFormer, QFormerConfig

    torch.manual_seed(0)
    qformer = QFormer(QFormerConfig.preset("tiny"))
    head = GroundingHead(llm_width=48, width=32)
    objects = make_scene(8, 0).objects[:2]
    targets = torch.stack([object_targets(o) for o in objects])
    loss, accuracy = head.loss(qformer, torch.randn(2, 48), torch.randn(2, 10, 32), targets)
    loss.backward()
    assert len(accuracy) == 4 and all(0 <= a <= 1 for a in accuracy)
    # the loss reaches the Q-Former's own weights (its cross-attention), not only the head
    cross = next(m for n, m in qformer.named_modules() if n.endswith("crossattention.attention.query"))
    assert cross.weight.grad is not None and cross.weight.grad.abs().sum() > 0
    assert head.condition.weight.grad.abs().sum() > 0


def test_build_refuses_a_grounding_weight_without_grounding_or_not_positive(tmp_path, capsys):
    from synthetic.world.build import build, main

    for argv, message in (
        (["--qformer-grounding-weight", "4"], "grounding_weight=4 weights a loss that is off"),
        (["--qformer-grounding", "--qformer-grounding-weight", "0"], "grounding_weight must be > 0, got 0"),
    ):
        with pytest.raises(SystemExit):
            main(["--out", str(tmp_path / "w"), *argv])
        assert f"--qformer-grounding-weight: {message}" in capsys.readouterr().err
    with pytest.raises(ValueError, match="needs grounding"):  # the Python API refuses before training too
        build(tmp_path / "w", grounding=False, grounding_weight=4.0)
    assert not (tmp_path / "w").exists()


def test_question_summary_objective_trains_the_lm_and_is_absent_when_off():
    from synthetic.world.backbones import train_language_model

    tok = build_world_tokenizer()
    logs: dict[float, list[str]] = {0.0: [], 1.0: []}
    models = {
        w: train_language_model(tok, 0, 30, batch_size=8, question_summary=w, log=logs[w].append)[0]
        for w in logs
    }
    summary = [float(line.split("summary ")[1]) for line in logs[1.0]]  # steps 1 and 30
    assert len(summary) == 2 and summary[1] < summary[0] - 0.15, logs[1.0]  # measured 1.689 → 1.331
    assert not any("summary" in line for line in logs[0.0])
    # the objective changes the LM itself, not only its discarded head
    on, off = models[1.0].state_dict(), models[0.0].state_dict()
    assert any(not torch.equal(on[k], off[k]) for k in off)


def test_build_refuses_lm_options_it_cannot_apply(tmp_path, capsys):
    from synthetic.world.build import main

    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "w"), "--lm-question-summary-tasks", "cloze"])
    assert "needs --lm-question-summary WEIGHT" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()  # refused before anything was written
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "w"), "--lm-compare", "1", "--reuse-backbones", str(tmp_path)])
    assert "--lm-compare trains the LM" in capsys.readouterr().err
    for argv, message in (
        (["--lm-length-groups", "0"], "expected a positive number of groups, got 0"),
        (["--lm-length-groups", "4", "--reuse-backbones", str(tmp_path)], "--lm-length-groups trains the LM"),
        (["--lm-pair-colours", "1", "--reuse-backbones", str(tmp_path)], "--lm-pair-colours trains the LM"),
        (
            ["--lm-row-column-slots", "--reuse-backbones", str(tmp_path)],
            "--lm-row-column-slots trains the LM",
        ),
        (["--lm-asked-cells", "1", "--reuse-backbones", str(tmp_path)], "--lm-asked-cells trains the LM"),
        (["--lm-paraphrase", "0.5", "--reuse-backbones", str(tmp_path)], "--lm-paraphrase trains the LM"),
        (["--lm-paraphrase", "1.5"], "expected a share in [0, 1], got 1.5"),
    ):
        with pytest.raises(SystemExit):
            main(["--out", str(tmp_path / "w"), *argv])
        assert message in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_document_layouts_label_unlabelled_pairs_align_slots_and_leave_the_build_documents():
    from synthetic.world.backbones import BUILD_LAYOUT, DocumentLayout, lm_batch

    image = lambda _: "<Img><image></Img>"  # noqa: E731
    rng = lambda: np.random.default_rng(3)  # noqa: E731
    difference = TASK_BUILDERS["difference"](make_scene(0, 3), rng(), EVAL_WORDING)
    plain, labelled = render_text(difference, image), render_text(difference, image, label_images=True)
    assert "image:" not in plain
    assert labelled == plain.replace(
        "<Img><image></Img> <Img><image></Img>",
        "first image: <Img><image></Img> second image: <Img><image></Img>",
    )
    for task in ("which_image", "cloze", "detail_question", "caption"):  # labelled already, or one image
        t = TASK_BUILDERS[task](make_scene(0, 3), rng(), EVAL_WORDING)
        assert render_text(t, image, label_images=True) == render_text(t, image)
    tok = build_world_tokenizer()
    default = lm_batch(tok, 0, 0, 12, layout=BUILD_LAYOUT)
    assert torch.equal(default.input_ids, lm_batch(tok, 0, 0, 12).input_ids)
    assert DocumentLayout(label_images=False, align_slots=False) == BUILD_LAYOUT
    first = tok.convert_tokens_to_ids("first")
    for layout, labelled in ((BUILD_LAYOUT, False), (DocumentLayout(label_images=True), True)):
        batch = lm_batch(tok, 0, 0, 12, task_weights={"difference": 1.0}, layout=layout)
        assert [first in row.tolist() for row in batch.input_ids] == [labelled] * 12

    def focus_slots(layout: DocumentLayout) -> list[tuple[int, ...]]:
        """Per two-image document, the slot each image shows its first focus object in (-1: none)."""
        out = []
        for d in range(40):
            rng_doc = np.random.default_rng(d)
            t = TASK_BUILDERS["which_image"](make_scene(0, d), rng_doc, EVAL_WORDING)
            images = layout.images(t, rng_doc, layered=False)
            out.append(tuple(im.at_input.index(f[0]) for im, f in zip(images, t.focus, strict=True)))
        return out

    assert all(a == b for a, b in focus_slots(DocumentLayout(align_slots=True)))  # recoloured pair: same slot
    assert sum(a == b for a, b in focus_slots(BUILD_LAYOUT)) < 30  # random per image: a third by chance


def test_row_column_slots_write_a_row_and_a_column_for_every_position(tmp_path):
    """With ``row_column_slots`` each slot holds two position words (the middle row or column as ``center``),
    nine distinct pairs; the documents' text is unchanged; a build's manifest tells which slots its LM read."""
    from synthetic.world.backbones import BUILD_LAYOUT, DocumentLayout, lm_batch, object_slot_words
    from synthetic.world.build import slot_layout
    from synthetic.world.scene import POSITIONS

    objects = [replace(make_scene(0, 0).objects[0], cell=cell) for cell in range(len(POSITIONS))]
    where = [object_slot_words(o, row_column=True).split()[3:] for o in objects]
    assert all(len(w) == 2 for w in where) and len({tuple(sorted(w)) for w in where}) == 9
    assert [" ".join(object_slot_words(o).split()[3:]) for o in objects] == list(POSITIONS)
    tok = build_world_tokenizer()
    layout = DocumentLayout(row_column_slots=True)
    plain, rows = lm_batch(tok, 0, 0, 12), lm_batch(tok, 0, 0, 12, layout=layout)
    assert torch.equal(plain.input_ids, rows.input_ids) and torch.equal(plain.labels, rows.labels)
    centre = tok.convert_tokens_to_ids("center")
    assert (rows.input_words == centre).sum() > (plain.input_words == centre).sum()
    assert not torch.equal(rows.input_words != 0, plain.input_words != 0)  # some slots gained a word
    (tmp_path / "manifest.json").write_text('{"lm_row_column_slots": true}')
    assert slot_layout(tmp_path) == layout
    (tmp_path / "manifest.json").write_text("{}")
    assert slot_layout(tmp_path) == BUILD_LAYOUT


def test_paraphrase_layout_asks_its_share_of_documents_in_the_paraphrase_wording():
    """``DocumentLayout(paraphrase=p)`` asks about p of the LM's documents in PARAPHRASE_WORDING, from a stream
    of its own: the other documents, their images and their answers are the build's."""
    from synthetic.world.backbones import BUILD_LAYOUT, DocumentLayout, _lm_document
    from synthetic.world.language import PARAPHRASE_WORDING, TRAIN_WORDING

    n = 80
    layout = DocumentLayout(paraphrase=0.5)
    picked = [layout.wording(0, i) is PARAPHRASE_WORDING for i in range(n)]
    assert 25 <= sum(picked) <= 55
    assert all(BUILD_LAYOUT.wording(0, i) is TRAIN_WORDING for i in range(n))
    with pytest.raises(ValueError, match=r"paraphrase: expected a share in \[0, 1\], got -0.1"):
        DocumentLayout(paraphrase=-0.1)
    new = {t.split("{")[0] for t in PARAPHRASE_WORDING.instructions() - TRAIN_WORDING.instructions()}
    said = 0
    for i in range(n):
        (plain, plain_images, *_), (ours, images, *_) = _lm_document(0, i), _lm_document(0, i, layout=layout)
        assert images == plain_images
        assert [t for t, loss in ours if loss] == [t for t, loss in plain if loss]  # the same answers
        if not picked[i]:
            assert ours == plain
        else:
            said += any(phrase in "".join(t for t, _ in ours) for phrase in new - {""})
    assert said > sum(picked) // 3  # captions and cloze have no new phrasings; the other tasks do


def test_the_diagnostics_show_the_lm_its_slots_in_the_layout_given(monkeypatch):
    """lm_answers (and so the ceilings) writes slot words as ``layout`` says: a row / column LM is measured on
    row / column slots, the shipped one on the language's positions."""
    from synthetic.world import diagnostics
    from synthetic.world.backbones import BUILD_LAYOUT, DocumentLayout

    class Shown(Exception):
        pass

    def capture(llm, batch, image_token_id):
        raise Shown(batch.input_words)

    monkeypatch.setattr(diagnostics, "slot_injection", capture)
    tok = build_world_tokenizer()
    words = {}
    for layout in (BUILD_LAYOUT, DocumentLayout(row_column_slots=True)):
        with pytest.raises(Shown) as shown:
            diagnostics.lm_answers(None, tok, "detail_question", "input", n=20, batch_size=20, layout=layout)
        words[layout.row_column_slots] = shown.value.args[0]
    images = [diagnostics.posed_instance("detail_question", i, "input")[1][0] for i in range(20)]
    for row_column, ids in words.items():
        expected = DocumentLayout(row_column_slots=row_column).slot_words(images, tok)[0]
        assert torch.equal(ids, expected)
    assert not torch.equal(words[True], words[False])


def test_the_ceilings_count_answers_that_name_no_option(monkeypatch):
    """A colour answered to a which-image question is a wrong *kind* of answer, not a wrong image: the
    ceilings report, per choice task and mode, the share of answers that map to no option, and the
    diagnostics table shows it; ROUGE-L tasks have no options and no such share."""
    from synthetic.world import diagnostics

    def answers(llm, tokenizer, task, mode, n, batch_size, layout):
        posed = [diagnostics.posed_instance(task, i, mode)[0] for i in range(n)]
        return [("zzz" if i % 4 == 0 else (p.choices or [p.response])[0], p) for i, p in enumerate(posed)]

    monkeypatch.setattr(diagnostics, "lm_answers", answers)
    ceilings = diagnostics.lm_ceilings(None, None, n=8)
    for task in ("which_image", "detail_question", "cloze"):
        assert ceilings[task]["off_choice"] == dict.fromkeys(diagnostics.MODES, 25.0)
    assert "off_choice" not in ceilings["difference"] and "off_choice" not in ceilings["caption"]
    table = diagnostics.format_diagnostics({"lm_ceilings": ceilings, "vit_probe": {}})
    assert "| &nbsp;&nbsp;which_image: answers naming no option (%) | 25.0 | 25.0 | 25.0 |" in table


def test_slot_relations_give_each_difference_answer_at_the_named_region():
    """The slot-relation head's labels (lm_variants' ``compare``) carry the difference answer: at the named
    region the second image's slot is new for an added object, changed for a modified one, the same where
    nothing changed, and absent for a deleted one (only the first image shows it); one-image documents and
    empty slots carry none."""
    from synthetic.world.backbones import BUILD_LAYOUT, SLOT_RELATIONS, lm_batch, slot_relations

    expected = {"add": "second_new", "modify": "second_changed", "unchanged": "second_same", "delete": None}
    seen = set()
    for d in range(80):
        rng = np.random.default_rng(d)
        t = TASK_BUILDERS["difference"](make_scene(1, d), rng, TRAIN_WORDING)
        images = BUILD_LAYOUT.images(t, rng, layered=bool(d % 2))
        relations = slot_relations(images)
        shown = [im.shown for im in images]
        at_region = [
            SLOT_RELATIONS[r]
            for o, r in zip(shown[1], relations[1], strict=True)
            if o and o.position == t.named.position
        ]
        assert at_region == ([expected[t.subsets[0]]] if expected[t.subsets[0]] else []), (d, t.subsets)
        assert relations[0] == [-100 if o is None else 0 for o in shown[0]]
        seen.add(t.subsets[0])
    assert seen == set(expected)
    one = TASK_BUILDERS["detail_question"](make_scene(1, 0), np.random.default_rng(0), TRAIN_WORDING)
    assert slot_relations(BUILD_LAYOUT.images(one, np.random.default_rng(0), False)) == [[-100] * 3]
    batch = lm_batch(build_world_tokenizer(), 0, 0, 8)
    assert batch.relations.shape == batch.input_words.shape[:2]
    empty = (batch.input_words == 0).all(-1) & (batch.layer_words == 0).all(-1)
    assert bool((batch.relations[empty] == -100).all()) and bool((batch.relations[~empty] >= 0).any())


def test_the_slot_relation_loss_reads_the_slots_at_the_input_of_the_compare_layer():
    from synthetic.world.backbones import (
        COMPARE_LAYER,
        SlotRelationHead,
        layer_input_states,
        lm_batch,
        slot_injection,
    )

    tok, llm = _untrained_world_lm()
    batch = lm_batch(tok, 0, 0, 6, task_weights={"difference": 1.0})
    slots = batch.input_ids == tok.convert_tokens_to_ids("<image>")
    with (
        torch.no_grad(),
        layer_input_states(llm, COMPARE_LAYER, lambda h: h[slots]) as states,
        slot_injection(llm, batch, tok.convert_tokens_to_ids("<image>")) as embeds,
    ):
        out = llm(inputs_embeds=embeds, output_hidden_states=True)
    torch.testing.assert_close(states[0], out.hidden_states[COMPARE_LAYER][slots])
    head = SlotRelationHead(llm.config.hidden_size)
    with torch.no_grad():
        loss, first, second = head.loss(states[0], batch.relations.reshape(-1))
    relations = batch.relations.reshape(-1)
    right = head.out(states[0]).argmax(-1) == relations
    assert (first, second) == (
        float(right[relations == 0].float().mean()),
        float(right[relations > 0].float().mean()),
    )
    assert float(loss) > 0
    reports, lm_variants = _auxiliary_loss_reports(tok, compare=0.3)
    assert set(lm_variants._relation_head(reports)) == {"loss", "first_accuracy", "second_accuracy"}


def _auxiliary_loss_reports(tok, task_weights: dict[str, float] | None = None, **loss_weight):
    """Two LM steps with an auxiliary loss on (on documents drawn by ``task_weights``, default the build's):
    checks it shapes the LM itself (not only its discarded head) and returns the training log lines with
    ``benchmarks/lm_variants.py``, which parses them."""
    from synthetic.world.backbones import train_language_model

    mix = {"task_weights": task_weights} if task_weights else {}
    reports: list[str] = []
    on = train_language_model(tok, 0, 2, batch_size=4, log=reports.append, **mix, **loss_weight)[
        0
    ].state_dict()
    off = train_language_model(tok, 0, 2, batch_size=4, log=lambda _: None, **mix)[0].state_dict()
    assert any(not torch.equal(on[k], off[k]) for k in off)
    spec = importlib.util.spec_from_file_location(
        "lm_variants", Path(__file__).resolve().parents[2] / "benchmarks" / "lm_variants.py"
    )
    lm_variants = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lm_variants)
    return reports, lm_variants


def test_pair_colour_labels_split_which_image_into_a_colour_per_image_and_one_comparison():
    """A recoloured which-image pair's answer is "first" exactly when the first image's label is the question's
    colour; a cloze pair's second label is its answer; one-image documents carry none."""
    from synthetic.world.backbones import pair_colour_labels
    from synthetic.world.tasks import which_image_task

    colours = list(COLOURS)
    for d in range(40):
        rng = np.random.default_rng(d)
        which = TASK_BUILDERS["which_image"](make_scene(2, d), rng, TRAIN_WORDING)
        first, second = pair_colour_labels(which)
        assert first != second and min(first, second) >= 0
        assert (colours[first] == which.target.colour) == (which.response == "first"), d
        cloze = TASK_BUILDERS["cloze"](make_scene(2, d), rng, TRAIN_WORDING)
        assert colours[pair_colour_labels(cloze)[1]] == cloze.response
        one = TASK_BUILDERS["detail_question"](make_scene(2, d), rng, TRAIN_WORDING)
        assert pair_colour_labels(one) == [-100, -100]
    alone = which_image_task(make_scene(2, 0), np.random.default_rng(0), TRAIN_WORDING, form="alone")
    assert sorted(pair_colour_labels(alone))[0] == -100  # the empty image has nothing to name


def test_the_pair_colour_loss_reads_the_last_prompt_token_at_the_compare_layer(monkeypatch):
    from synthetic.world.backbones import (
        COMPARE_LAYER,
        PairColourHead,
        last_prompt_states,
        lm_batch,
        slot_injection,
    )

    tok, llm = _untrained_world_lm()
    batch = lm_batch(tok, 0, 0, 6, task_weights={"which_image": 1.0, "caption": 1.0})
    with (
        torch.no_grad(),
        last_prompt_states(llm, batch.labels, COMPARE_LAYER) as states,
        slot_injection(llm, batch, tok.convert_tokens_to_ids("<image>")) as embeds,
    ):
        out = llm(inputs_embeds=embeds, output_hidden_states=True)
    first_label = [int((row != -100).nonzero()[0]) for row in batch.labels]
    expected = torch.stack([out.hidden_states[COMPARE_LAYER][b, p - 1] for b, p in enumerate(first_label)])
    torch.testing.assert_close(states[0], expected)
    head = PairColourHead(llm.config.hidden_size)
    with torch.no_grad():
        loss, right = head.loss(states[0], batch.colours)
        logits = torch.stack([h(states[0]) for h in head.heads], 1)
    known = batch.colours >= 0
    assert bool(known.any()) and bool((~known).any())  # caption documents carry no labels
    assert right == float((logits.argmax(-1) == batch.colours)[known].float().mean())
    assert float(loss) == pytest.approx(float(F.cross_entropy(logits[known], batch.colours[known])))
    reports, lm_variants = _auxiliary_loss_reports(tok, pair_colours=1.0)
    assert set(lm_variants._head_report(reports, "colours")) == {"loss", "accuracy"}
    # training captures its states where this test read them
    assert _last_prompt_layers(monkeypatch, tok, pair_colours=1.0) == [COMPARE_LAYER]


def _last_prompt_layers(monkeypatch, tok, **loss_weight) -> list[int]:
    """The layers whose last-prompt-token states one LM training step captures with ``loss_weight`` on."""
    from synthetic.world import backbones

    layers: list[int] = []
    real = backbones.last_prompt_states
    monkeypatch.setattr(
        backbones,
        "last_prompt_states",
        lambda llm, labels, layer: layers.append(layer) or real(llm, labels, layer),
    )
    backbones.train_language_model(tok, 0, 1, batch_size=4, log=lambda _: None, **loss_weight)
    return layers


def test_the_asked_cell_loss_reads_the_detail_questions_object_cell_at_the_compare_layer(monkeypatch):
    """Detail-question documents are labelled with their asked object's cell, others not; the head reads the
    last prompt token at the compare layer (one capture shared with the pair-colour head) and trains the LM."""
    from synthetic.world import backbones
    from synthetic.world.backbones import COMPARE_LAYER, AskedCellHead, lm_batch

    tok = build_world_tokenizer()
    batch = lm_batch(tok, 0, 0, 8, task_weights={"detail_question": 1.0, "caption": 1.0})
    for d, label in enumerate(batch.cells.tolist()):
        instance_cell = backbones._lm_document(0, d, task_weights={"detail_question": 1.0, "caption": 1.0})[4]
        assert label == instance_cell
    known = batch.cells >= 0
    assert bool(known.any()) and bool((~known).any())
    hidden = torch.randn(len(batch.cells), 128)
    head = AskedCellHead(128)
    with torch.no_grad():
        loss, right = head.loss(hidden, batch.cells)
        logits = head.out(hidden)
    assert right == float((logits.argmax(-1) == batch.cells)[known].float().mean())
    assert float(loss) == pytest.approx(float(F.cross_entropy(logits[known], batch.cells[known])))
    reports, lm_variants = _auxiliary_loss_reports(tok, {"detail_question": 1.0}, asked_cells=1.0)
    assert set(lm_variants._head_report(reports, "cells")) == {"loss", "accuracy"}
    # one capture at the compare layer serves both heads
    assert _last_prompt_layers(monkeypatch, tok, pair_colours=1.0, asked_cells=1.0) == [COMPARE_LAYER]


def test_llm_shape_changes_the_trained_lms_heads_and_the_default_is_the_shipped_shape():
    from synthetic.world.backbones import train_language_model, world_llama_config
    from vpgkit.assets import asset_path

    tok = build_world_tokenizer()
    shipped = json.loads(Path(asset_path("tiny_world/llm/config.json")).read_text())
    default = world_llama_config(len(tok)).to_dict()
    fields = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    fields += ("num_key_value_heads", "head_dim", "max_position_embeddings")
    assert {k: default[k] for k in fields} == {k: shipped[k] for k in fields}
    shape = {"num_attention_heads": 8, "num_key_value_heads": 8}
    llm, result = train_language_model(tok, 0, 1, batch_size=4, log=lambda _: None, llm_shape=shape)
    assert (llm.config.num_attention_heads, llm.config.head_dim, llm.config.hidden_size) == (8, 16, 128)
    assert np.isfinite(result.final_loss)


def test_the_lm_document_stream_is_pinned():
    """The build's LM documents (first 64, seed 0): unchanged since before ``which_forms`` (sha256 measured at
    8429c17 and after). A change here changes what the shipped LM was trained on: rebuild the world."""
    import hashlib

    from synthetic.world.backbones import lm_batch

    b = lm_batch(build_world_tokenizer(), 0, 0, 64)
    parts = (b.input_ids, b.labels, b.input_words, b.layer_words)
    digest = hashlib.sha256(b"".join(t.numpy().tobytes() for t in parts)).hexdigest()
    assert digest == "6764c6bfd7948719a87b2a80b9850338c44a90ccf59d28a72603742f06f79464"


def test_most_position_questions_need_the_colour_to_pick_their_object():
    """docs/tiny_world.md: ~70% of the LM's position questions name an object whose shape and size another
    object of its scene shares, so the question's colour is what picks it out (a colour-matching foothold)."""
    from synthetic.world.language import TRAIN_WORDING
    from synthetic.world.tasks import TASK_BUILDERS

    need = []
    for i in range(1000):
        scene = make_scene(101, i)  # the LM's scenes of seed 0 (stream 101)
        t = TASK_BUILDERS["detail_question"](scene, np.random.default_rng(i), TRAIN_WORDING)
        if t.subsets == ["position"]:
            o = t.target
            need.append(sum(x.shape == o.shape and x.size == o.size for x in scene.objects) > 1)
            assert o.colour in t.context  # the position question names the colour
    assert 0.6 < np.mean(need) < 0.8, np.mean(need)


def test_length_groups_split_documents_with_their_slots_and_keep_the_step_loss():
    from synthetic.world.backbones import NUM_SLOTS, lm_batch, train_language_model

    tok = build_world_tokenizer()
    image, pad = tok.convert_tokens_to_ids("<image>"), tok.pad_token_id
    batch = lm_batch(tok, 0, 0, 10, summary_tasks=("detail_question", "cloze", "difference"))
    groups = batch.by_length(3, image, pad)
    assert [len(g.input_ids) for g in groups] == [4, 3, 3]
    lengths = [int(n) for g in groups for n in (g.input_ids != pad).sum(1)]
    assert lengths == sorted(lengths) and sum(lengths) == int((batch.input_ids != pad).sum())
    # each group is cut to its longest document, and carries exactly its documents' slot images
    for g in groups:
        assert int((g.input_ids != pad).sum(1).max()) == g.input_ids.shape[1]
        assert (
            int((g.input_ids == image).sum())
            == len(g.input_words) * NUM_SLOTS
            == len(g.layer_words) * NUM_SLOTS
        )
        assert g.relations.shape == (len(g.input_words), NUM_SLOTS) and len(g.asked) == len(g.input_ids)

    # documents are matched to their own rows: every (document, slot words) pair of the whole batch reappears
    def pairs(b):
        rows, out, k = (b.input_ids == image).sum(1) // NUM_SLOTS, [], 0
        for d, n in enumerate(rows.tolist()):
            key = tuple(b.input_ids[d][b.input_ids[d] != pad].tolist())
            out.append(
                (
                    key,
                    b.input_words[k : k + n].tolist(),
                    b.layer_words[k : k + n].tolist(),
                    b.asked[d].tolist(),
                    b.relations[k : k + n].tolist(),
                    b.colours[d].tolist(),
                )
            )
            k += n
        return sorted(out)

    assert sorted(p for g in groups for p in pairs(g)) == pairs(batch)
    # the step loss is the same mean over all answer tokens (and the summary/compare losses the same means)
    kw = dict(batch_size=8, question_summary=0.1, compare=1.0, pair_colours=1.0, log=lambda _: None)
    whole = train_language_model(tok, 0, 2, **kw)
    grouped = train_language_model(tok, 0, 2, length_groups=3, **kw)
    assert grouped[1].losses == pytest.approx(whole[1].losses, rel=1e-5)
    for (name, a), b in zip(whole[0].state_dict().items(), grouped[0].state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4, msg=name)
