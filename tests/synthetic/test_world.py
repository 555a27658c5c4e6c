"""The tiny world: scenes are deterministic, masks match pixels, captions omit details, vocabulary is closed."""

from __future__ import annotations

import numpy as np
import pytest

from synthetic.discriminative.captions import DifferenceCaptioner, color_name, position_words
from synthetic.world.edits import edit_scene
from synthetic.world.language import (
    EVAL_WORDING,
    TRAIN_WORDING,
    build_world_tokenizer,
    detail_question,
    full_description,
    noun_phrase,
    salient_caption,
)
from synthetic.world.scene import BACKGROUND, COLOURS, IMAGE_SIZE, make_scene, render


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
        assert 3 <= len(scene.objects) <= 5
        assert 1 <= len(scene.salient) <= 2 and len(scene.details) >= 1
        assert len({(o.colour, o.shape) for o in scene.objects}) == len(scene.objects)
        assert len({o.cell for o in scene.objects}) == len(scene.objects)
        for o in scene.details:
            assert 5 <= o.box[2] - o.box[0] <= 7  # small objects: a few pixels, still visible


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
            assert eval_text.format(object="x", where="y", colour="z") not in train_text


def test_colours_are_named_consistently():
    for name, rgb in COLOURS.items():
        assert color_name(np.array([rgb], np.uint8)) == name


def test_lm_slot_documents_put_mean_word_embeddings_at_image_tokens():
    """Half of the LM's documents give images as object slots; each slot is the mean embedding of its words."""
    import torch

    from synthetic.world.backbones import (
        NUM_SLOTS,
        lm_batch,
        lm_example,
        object_slot_words,
        slot_inputs_embeds,
    )

    tok = build_world_tokenizer()
    image_id = tok.convert_tokens_to_ids("<image>")
    kinds = [bool(lm_example(0, i)[1]) for i in range(40)]
    assert 10 < sum(kinds) < 30  # both kinds occur
    input_ids, labels, slot_words = lm_batch(tok, 0, 0, 8)
    scenes = [s for i in range(8) for s in lm_example(0, i)[1]]
    assert int((input_ids == image_id).sum()) == len(scenes) * NUM_SLOTS == slot_words.shape[0] * NUM_SLOTS
    assert bool((labels[input_ids == image_id] == -100).all())  # slots carry no loss
    embed = torch.nn.Embedding(len(tok), 16, padding_idx=0)
    x = slot_inputs_embeds(embed, input_ids, slot_words, image_id)
    torch.testing.assert_close(x[input_ids != image_id], embed(input_ids)[input_ids != image_id])
    first = x[input_ids == image_id][:NUM_SLOTS]  # the first slot image, objects in reading order
    objects = sorted(scenes[0].objects, key=lambda o: o.cell)
    for j, obj in enumerate(objects):
        words = torch.tensor(tok(object_slot_words(obj), add_special_tokens=False)["input_ids"])
        torch.testing.assert_close(first[j], embed(words).mean(0))
    assert bool((first[len(objects) :] == 0).all())  # empty slots are zero


def test_reshape_scene_changes_one_shape_only():
    from synthetic.world.backbones import reshape_scene

    rng = np.random.default_rng(0)
    reshaped = 0
    for i in range(30):
        scene = make_scene(8, i)
        other = reshape_scene(scene, rng)
        changed = [(a, b) for a, b in zip(scene.objects, other.objects, strict=True) if a != b]
        assert len(changed) == 1
        a, b = changed[0]
        assert (a.cell, a.box, a.size) == (b.cell, b.box, b.size)
        assert (a.shape != b.shape) != (a.colour != b.colour)  # one attribute changes
        reshaped += a.shape != b.shape
    assert reshaped >= 27  # recolouring is only the fallback when every shape of that colour is taken
