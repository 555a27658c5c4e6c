"""Discriminative data: region choice, editors, quality filter, captions, tasks, VPG attention."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synthetic.discriminative import (
    CocoAnnotations,
    DifferenceCaptioner,
    DonorObject,
    EditContext,
    EditSkipped,
    QualityFilter,
    Region,
    SuperpixelProposer,
    attention_to_pixels,
    build_editor,
    choose_least_attended,
    color_name,
    difference_sample,
    load_vpg,
    no_difference_sample,
    position_words,
    random_tiny_vpg,
    register_editor,
    save_vpg,
)
from synthetic.discriminative.attention import VPGAttention
from synthetic.discriminative.editors import EDITORS, Editor, EditResult
from vpgkit.data.sample import Sample

BACKGROUND = (128, 128, 128)
# name -> (colour, (y0, y1, x0, x1)) on a 96 × 96 canvas: one object per corner.
OBJECTS = {
    "cup": ((220, 30, 30), (8, 28, 8, 28)),  # red, top left
    "ball": ((30, 180, 40), (10, 30, 66, 88)),  # green, top right
    "book": ((30, 50, 220), (64, 88, 6, 30)),  # blue, bottom left
    "lamp": ((235, 220, 40), (66, 86, 64, 90)),  # yellow, bottom right
}


def scene() -> tuple[np.ndarray, list[Region]]:
    img = np.zeros((96, 96, 3), np.uint8)
    img[:] = BACKGROUND
    regions = []
    for label, (colour, (y0, y1, x0, x1)) in OBJECTS.items():
        img[y0:y1, x0:x1] = colour
        mask = np.zeros((96, 96), bool)
        mask[y0:y1, x0:x1] = True
        regions.append(Region(mask, label, "annotation"))
    return img, regions


def attention_avoiding(label: str) -> np.ndarray:
    """A hand-made attention map: high everywhere, lowest on ``label``'s object, middling on another."""
    _, regions = scene()
    attention = np.full((96, 96), 1.0, np.float32)
    names = list(OBJECTS)
    attention[regions[names.index(label)].mask] = 0.05
    other = names[(names.index(label) + 1) % len(names)]
    attention[regions[names.index(other)].mask] = 0.3
    return attention


def context(label: str = "book", **kw) -> EditContext:
    img, regions = scene()
    attention = attention_avoiding(label)
    target = choose_least_attended(regions, attention, 0.01, 0.25)
    background = ~np.any([r.mask for r in regions], axis=0)
    return EditContext(img, attention, regions, target, background=background, **kw)


# ----------------------------------------------------------------------------------- region choice


@pytest.mark.parametrize("label", list(OBJECTS))
def test_least_attended_annotated_object_is_chosen(label):
    _, regions = scene()
    chosen = choose_least_attended(regions, attention_avoiding(label), 0.01, 0.25)
    assert regions[chosen].label == label


def test_size_limits_and_ties():
    _, regions = scene()
    attention = attention_avoiding("cup")
    # The cup covers 400 / 9216 = 4.3 % of the image: a 5 % minimum rules it (and the others) out except the lamp.
    areas = {r.label: r.fraction for r in regions}
    assert areas["cup"] < 0.05 < areas["lamp"]
    chosen = choose_least_attended(regions, attention, min_fraction=0.05, max_fraction=0.25)
    assert regions[chosen].label in {lab for lab, f in areas.items() if f >= 0.05}
    assert choose_least_attended(regions, attention, min_fraction=0.5, max_fraction=0.9) is None
    flat = np.ones((96, 96), np.float32)
    assert choose_least_attended(regions, flat, 0.01, 0.25) == 0  # ties: lowest index, deterministic


def test_superpixel_choice_lands_on_the_unattended_object():
    img, regions = scene()
    attention = attention_avoiding("lamp")
    proposals = SuperpixelProposer("slic", n_segments=24)(img)
    chosen = proposals[choose_least_attended(proposals, attention, 0.005, 0.25)]
    lamp = regions[3].mask
    assert (chosen.mask & lamp).sum() / chosen.area > 0.8
    felz = SuperpixelProposer("felzenszwalb", min_size=20)(img)
    chosen = felz[choose_least_attended(felz, attention, 0.005, 0.25)]
    assert (chosen.mask & lamp).sum() / chosen.area > 0.8


def test_coco_polygons_rle_and_boxes_rasterise_with_labels():
    rle = {"counts": [2 * 8 + 2, 3, 5, 3, 8 * 8 - 2 * 8 - 2 - 11], "size": [8, 8]}  # column-major runs
    ann = CocoAnnotations.from_dict(
        {
            "images": [{"id": 1, "file_name": "x.png", "width": 8, "height": 8}],
            "annotations": [
                {
                    "image_id": 1,
                    "category_id": 1,
                    "bbox": [1, 1, 4, 4],
                    "segmentation": [[1, 1, 5, 1, 5, 5, 1, 5]],
                },
                {"image_id": 1, "category_id": 2, "bbox": [2, 2, 2, 3], "segmentation": rle},
                {"image_id": 1, "category_id": 2, "bbox": [0, 6, 8, 2], "segmentation": "compressed"},
            ],
            "categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "cat"}],
        }
    )
    poly, run, box = ann.regions("x.png", 8, 8)
    assert (poly.label, run.label) == ("dog", "cat")
    assert poly.mask[1:5, 1:5].all() and poly.area <= 25
    assert run.mask[2:5, 2:4].all() and run.area == 6  # columns 2 and 3, rows 2..4
    assert box.box == (0, 6, 8, 8)
    doubled = ann.regions("x.png", 16, 16)[0]
    assert doubled.mask.shape == (16, 16) and doubled.area >= 4 * 16
    with pytest.raises(ValueError, match="missing key 'bbox'"):
        CocoAnnotations.from_dict(
            {
                "images": [{"id": 1, "file_name": "x", "width": 1, "height": 1}],
                "annotations": [{"image_id": 1}],
            }
        )


# ------------------------------------------------------------------------------------------ editors


def donor() -> DonorObject:
    pixels = np.zeros((16, 16, 3), np.uint8)
    pixels[:] = (240, 120, 20)  # orange
    mask = np.zeros((16, 16), bool)
    mask[2:14, 3:13] = True
    return DonorObject(pixels, mask, "kite")


def check_local(result, original, target_mask, tol=1e-9):
    diff = np.abs(result.image.astype(int) - original.astype(int)).mean(-1) / 255
    assert diff[target_mask].mean() > 0.1, "the target region must change"
    assert diff[~result.changed].mean() <= tol, "pixels outside the edit mask must stay the same"
    assert result.changed.mean() < 0.2
    assert QualityFilter().check(original, result.image, result.changed).keep


def test_modify_recolours_the_target_and_names_old_and_new_colour():
    ctx = context("book")
    result = build_editor("modify").edit(ctx, np.random.default_rng(0))
    book = ctx.regions[2].mask
    check_local(result, ctx.image, book)
    assert np.array_equal(result.changed, book)
    meta = result.meta
    assert (meta["label"], meta["colour"]) == ("book", "blue")
    assert meta["new_colour"] == color_name(result.image[book]) != "blue"
    caption = DifferenceCaptioner().caption(meta, np.random.default_rng(1))
    assert "book" in caption and "blue" in caption and meta["new_colour"] in caption
    assert "bottom left" in caption


@pytest.mark.parametrize("method", ["telea", "ns"])
def test_delete_inpaints_the_object_away(method):
    ctx = context("lamp")
    result = build_editor("delete", method=method).edit(ctx, np.random.default_rng(0))
    lamp = ctx.regions[3].mask
    check_local(result, ctx.image, lamp)
    # The hole is filled from the gray surroundings, not left yellow.
    assert np.abs(result.image[lamp].astype(int) - BACKGROUND).mean() < 12
    caption = DifferenceCaptioner().caption(result.meta, np.random.default_rng(0))
    assert "yellow lamp" in caption and "bottom right" in caption


def test_swap_exchanges_the_two_least_attended_objects():
    ctx = context("cup")  # cup least attended, ball next (0.3)
    result = build_editor("swap").edit(ctx, np.random.default_rng(0))
    cup, ball = ctx.regions[0].mask, ctx.regions[1].mask
    check_local(result, ctx.image, cup | ball)
    # The cup's centre now shows the ball's green and the ball's centre the cup's red.
    assert color_name(result.image[15:22, 72:82]) == "red"
    assert color_name(result.image[14:22, 14:22]) == "green"
    meta = result.meta
    assert (meta["label"], meta["other_label"], meta["colour"], meta["other_colour"]) == (
        "cup",
        "ball",
        "red",
        "green",
    )
    caption = DifferenceCaptioner().caption(meta, np.random.default_rng(0))
    assert all(w in caption for w in ("red cup", "green ball"))


def test_add_pastes_the_donor_on_background_where_attention_is_lowest():
    ctx = context("book", donor=donor())
    # Make the middle of the left edge the least-attended background.
    ctx.attention[40:60, 0:30] = 0.0
    result = build_editor("add").edit(ctx, np.random.default_rng(0))
    placed = result.changed
    assert not (placed & ~ctx.background).any(), "added objects go on background only"
    check_local(result, ctx.image, placed)
    assert (result.meta["label"], result.meta["colour"]) == ("kite", "orange")
    assert position_words(result.meta["box"], 96, 96) == "left"
    caption = DifferenceCaptioner().caption(result.meta, np.random.default_rng(0))
    assert "orange kite" in caption and "on the left" in caption


def test_editors_report_why_they_cannot_apply():
    img, regions = scene()
    flat = np.ones((96, 96), np.float32)
    with pytest.raises(EditSkipped) as e:
        build_editor("modify").edit(EditContext(img, flat, regions, target=None), np.random.default_rng(0))
    assert e.value.reason == "no_region"
    with pytest.raises(EditSkipped) as e:
        build_editor("add").edit(EditContext(img, flat, regions, target=0), np.random.default_rng(0))
    assert e.value.reason == "no_donor"
    with pytest.raises(EditSkipped) as e:
        build_editor("swap").edit(EditContext(img, flat, regions[:1], target=0), np.random.default_rng(0))
    assert e.value.reason == "no_second_region"
    with pytest.raises(KeyError, match="registered editors"):
        build_editor("sharpen")


def test_users_can_register_an_editor():
    @register_editor
    class Invert(Editor):
        name = "test_invert"

        def edit(self, ctx, rng):
            region = ctx.target_region()
            out = ctx.image.copy()
            out[region.mask] = 255 - out[region.mask]
            return EditResult(out, region.mask, ctx.describe(region, "modify", new_colour="inverted"))

    try:
        ctx = context("cup")
        result = build_editor("test_invert").edit(ctx, np.random.default_rng(0))
        check_local(result, ctx.image, ctx.regions[0].mask)
    finally:
        EDITORS.pop("test_invert")


def test_diffusion_editor_fails_clearly_without_diffusers_or_weights(tmp_path):
    with pytest.raises((ImportError, FileNotFoundError), match=r"diffusers|local inpainting pipeline"):
        build_editor("diffusion", model_dir=tmp_path / "absent")


# ---------------------------------------------------------------------------------------- quality


def test_quality_filter_rejects_unchanged_and_global_edits_with_reasons():
    img, regions = scene()
    mask = regions[0].mask
    q = QualityFilter()
    assert q.check(img, img, mask).reason == "region_unchanged"
    brighter = np.clip(img.astype(int) + 40, 0, 255).astype(np.uint8)  # changes every pixel
    assert q.check(img, brighter, mask).reason == "outside_changed"
    assert q.check(img, brighter, np.ones_like(mask)).reason == "region_too_large"
    verdict = q.check(img, 255 - img, mask)
    assert (
        not verdict.keep and verdict.stats["outside_change"] > 0.01 and verdict.stats["region_change"] > 0.5
    )


# --------------------------------------------------------------------------------------- captions


@pytest.mark.parametrize(
    ("rgb", "name"),
    [
        ((220, 30, 30), "red"),
        ((30, 180, 40), "green"),
        ((30, 50, 220), "blue"),
        ((235, 220, 40), "yellow"),
        ((240, 120, 20), "orange"),
        ((128, 128, 128), "gray"),
        ((250, 250, 250), "white"),
        ((10, 10, 10), "black"),
        ((120, 70, 30), "brown"),
        ((140, 40, 200), "purple"),
    ],
)
def test_colour_names(rgb, name):
    assert color_name(np.array([rgb], np.uint8)) == name


def test_position_words_and_rewriter_hook():
    assert position_words((40, 40, 56, 56), 96, 96) == "center"
    assert position_words((70, 40, 90, 56), 96, 96) == "right"
    assert position_words((40, 0, 56, 10), 96, 96) == "top"
    assert position_words((0, 80, 10, 96), 96, 96) == "bottom left"
    meta = {
        "kind": "delete",
        "label": "cup",
        "colour": "red",
        "box": [0, 0, 10, 10],
        "height": 96,
        "width": 96,
    }
    captioner = DifferenceCaptioner(rewriter=str.upper)
    assert captioner.caption(meta, np.random.default_rng(0)).isupper()
    texts = {DifferenceCaptioner().caption(meta, np.random.default_rng(s)) for s in range(20)}
    assert len(texts) > 1, "templates vary with the seed"
    assert all("red cup" in t and "top left" in t for t in texts)


# ------------------------------------------------------------------------------------------- tasks


def test_task_samples_follow_the_vpgkit_schema():
    rng = np.random.default_rng(0)
    for task in ("describe_difference", "which_edited", "any_difference"):
        s = difference_sample(task, f"p-{task}", "a.png", "b.png", "The cup is gone.", rng)
        back = Sample.from_json(s.to_json())
        assert back.num_images == 2 and back.conversation[1].loss and not back.conversation[0].loss
        if task == "which_edited":
            k = s.meta["edited_index"]
            assert s.images[k] == "b.png" and ("first" if k == 0 else "second") in s.conversation[1].text
        if task == "describe_difference":
            assert s.images == ["a.png", "b.png"]
            assert s.conversation[0].text.endswith("Describe the difference between the images.")
    neg = no_difference_sample("any_difference", "n", "a.png", rng)
    assert neg.images == ["a.png", "a.png"] and neg.conversation[1].text.startswith("No")
    with pytest.raises(ValueError, match="unknown task"):
        no_difference_sample("caption", "n", "a.png", rng)


# ------------------------------------------------------------------------------------ VPG attention


def test_attention_to_pixels_drops_cls_and_keeps_the_grid_layout():
    cross = torch.full((1, 1, 2, 2, 3, 1 + 9), 0.01)
    cross[..., 0] = 10.0  # CLS: must be ignored
    cross[..., 1 + 2] = 1.0  # patch (row 0, col 2): the top-right patch
    (pixels,) = attention_to_pixels(cross, [(30, 60)])
    assert pixels.shape == (30, 60)
    y, x = np.unravel_index(pixels.argmax(), pixels.shape)
    assert y < 10 and x >= 40
    assert pixels.max() <= 1.0


def test_vpg_roundtrip_and_maps(tmp_path):
    vpg = random_tiny_vpg(seed=3)
    save_vpg(tmp_path, vpg.vision, vpg.qformer)
    loaded = load_vpg(tmp_path)
    img, _ = scene()
    a = VPGAttention(vpg).maps([img, img[:64]])
    b = VPGAttention(loaded).maps([img, img[:64]])
    assert a[0].shape == (96, 96) and a[1].shape == (64, 96)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-7)
    grid = vpg.processor.size // 14
    assert len(np.unique(a[0].round(6))) > grid * grid  # interpolated, not blocky
    (tmp_path / "vpg.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing vpg\.safetensors"):
        load_vpg(tmp_path)


def test_batched_bf16_maps_equal_one_image_at_a_time_and_do_not_depend_on_threads():
    """The pipeline computes a shard's maps in batches (bf16 weights stored once, maps-only Q-Former
    pass): each map must be that of its image alone, within bf16 tolerance, at 1 and 2 threads, and
    equal to the maps read from a full Q-Former pass."""
    vpg = random_tiny_vpg(seed=5, image_size=56)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40 + 8 * k, 56, 3), dtype=np.uint8) for k in range(5)]
    batched = VPGAttention(vpg, batch_size=4, dtype=torch.bfloat16)
    assert next(batched.vpg.vision.parameters()).dtype == torch.bfloat16  # converted once, not per call
    single = VPGAttention(vpg, batch_size=1, dtype=torch.bfloat16)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one_thread = batched.maps(images)
        torch.set_num_threads(2)
        two_threads = batched.maps(images)
    finally:
        torch.set_num_threads(threads)
    alone = single.maps(images)
    pixels = vpg.processor([[img] for img in images])
    with torch.no_grad():
        vision = batched.vpg.vision(pixels)
        full = batched.vpg.qformer(vision, return_attentions=True).cross_attentions
    from_full = attention_to_pixels(full, [img.shape[:2] for img in images])
    for a, b, c, d, img in zip(one_thread, two_threads, alone, from_full, images, strict=True):
        assert a.shape == img.shape[:2] and a.dtype == np.float32
        scale = float(np.abs(c).max())
        np.testing.assert_allclose(a, c, rtol=0, atol=2**-8 * scale)  # bf16: 8 significant bits
        np.testing.assert_allclose(b, c, rtol=0, atol=2**-8 * scale)
        np.testing.assert_array_equal(a, d)  # the maps-only pass is the full pass's maps
