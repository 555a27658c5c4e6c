"""Discriminative data pipeline end to end: determinism, kill + resume, workers, bad images, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_discriminative import OBJECTS, attention_avoiding

import synthetic.discriminative.pipeline as pipeline_module
from synthetic.discriminative import (
    DiscriminativePipeline,
    FunctionAttention,
    PipelineConfig,
    SuperpixelProposer,
    VPGAttention,
    random_tiny_vpg,
    sources_from_captions,
    sources_from_folder,
)
from synthetic.discriminative.cli import main
from vpgkit.data.sample import Sample


def write_scenes(folder: Path, n: int = 6, bad: bool = True) -> dict:
    """n scenes with the four known objects (colours and background vary), their COCO annotations,
    plus a corrupt PNG and a text file."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(123)
    coco = {
        "images": [],
        "annotations": [],
        "categories": [{"id": i, "name": n} for i, n in enumerate(OBJECTS)],
    }
    for k in range(n):
        img = np.zeros((96, 96, 3), np.uint8)
        img[:] = rng.integers(90, 170, 3)
        for cid, (colour, (y0, y1, x0, x1)) in enumerate(OBJECTS.values()):
            img[y0:y1, x0:x1] = np.roll(colour, k % 3)
            coco["annotations"].append(
                {"image_id": k, "category_id": cid, "bbox": [x0, y0, x1 - x0, y1 - y0]}
            )
        img += rng.integers(0, 6, img.shape, dtype=np.uint8)  # texture, so inpainting is not trivial
        Image.fromarray(img).save(folder / f"scene{k}.png")
        coco["images"].append({"id": k, "file_name": f"scene{k}.png", "width": 96, "height": 96})
    if bad:
        (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
        (folder / "notes.txt").write_text("not an image")
    return coco


def snapshot(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def config(**kw) -> PipelineConfig:
    return PipelineConfig(seed=7, shard_size=4, n_segments=24, preview=3, **kw)


def tiny_attention() -> VPGAttention:
    return VPGAttention(random_tiny_vpg(seed=0))


class Killed(Exception):
    pass


def test_killed_and_resumed_runs_match_an_uninterrupted_one(tmp_path, monkeypatch):
    write_scenes(tmp_path / "imgs")
    sources = sources_from_folder(tmp_path / "imgs")
    pipe = DiscriminativePipeline(tiny_attention(), config())

    reference = pipe.run(sources, tmp_path / "a", count=9, progress=False)
    assert reference["kept"] == 9
    expected = snapshot(tmp_path / "a")

    # Killed between shards (after shard 1 is committed), then resumed.
    def kill_after_shard_1(shard):
        if shard == 1:
            raise Killed

    with pytest.raises(Killed):
        pipe.run(sources, tmp_path / "b", count=9, progress=False, on_shard=kill_after_shard_1)
    assert not (tmp_path / "b" / "summary.json").exists()
    pipe.run(sources, tmp_path / "b", count=9, progress=False)
    assert snapshot(tmp_path / "b") == expected

    # Killed in the middle of a shard: PNGs written, the shard file not.
    real_write = pipeline_module.atomic_write_jsonl
    calls = []

    def dies_on_second_shard(path, records):
        calls.append(path)
        if len(calls) == 2:
            raise Killed
        real_write(path, records)

    monkeypatch.setattr(pipeline_module, "atomic_write_jsonl", dies_on_second_shard)
    with pytest.raises(Killed):
        pipe.run(sources, tmp_path / "c", count=9, progress=False)
    monkeypatch.setattr(pipeline_module, "atomic_write_jsonl", real_write)
    done = sorted(p.name for p in (tmp_path / "c" / "progress").glob("*.json"))
    assert done == ["shard-00000.json"]
    pipe.run(sources, tmp_path / "c", count=9, progress=False)
    assert snapshot(tmp_path / "c") == expected

    # A rerun of a finished directory changes nothing; a different seed is refused.
    pipe.run(sources, tmp_path / "a", count=9, progress=False)
    assert snapshot(tmp_path / "a") == expected
    with pytest.raises(ValueError, match="different settings"):
        DiscriminativePipeline(tiny_attention(), PipelineConfig(seed=8, shard_size=4)).run(
            sources, tmp_path / "a", count=9, progress=False
        )


def test_output_is_samples_with_existing_images_and_a_summary(tmp_path):
    write_scenes(tmp_path / "imgs")
    out = tmp_path / "out"
    summary = DiscriminativePipeline(tiny_attention(), config(negative_fraction=0.5)).run(
        sources_from_folder(tmp_path / "imgs"), out, count=12, progress=False
    )
    lines = [
        json.loads(line)
        for p in sorted((out / "shards").glob("*.jsonl"))
        for line in p.read_text().splitlines()
    ]
    samples = [Sample.from_json(rec, where=rec["id"]) for rec in lines]
    assert len(samples) == summary["samples"] == 12 + summary["negatives"] and summary["negatives"] > 0
    assert len({s.id for s in samples}) == len(samples)
    for s in samples:
        assert all((out / p).is_file() for p in s.images)
        if s.meta["negative"]:
            assert s.images[0] == s.images[1]
        else:
            assert len(set(s.images)) == 2 and s.meta["edit"]["kind"] in {"modify", "swap", "delete", "add"}
    # Every job is accounted for: kept or rejected with a reason.
    assert summary["jobs"] == summary["kept"] + sum(summary["rejected"].values())
    assert summary["skipped_files"] == {"unsupported": ["notes.txt"], "corrupt": ["broken.png"]}
    assert summary["skipped_images"] == {"unsupported": 1, "corrupt": 1}
    assert summary["rejected"].get("corrupt_image", 0) >= 1
    preview = Image.open(out / "preview.png")
    assert preview.width == 3 * 160 and preview.height == 3 * (160 + 28)


def test_pipeline_edits_the_object_the_attention_map_ignores(tmp_path):
    """The hand-made map replaces the VPG through the same AttentionSource interface the CLI uses."""
    coco = write_scenes(tmp_path / "imgs", n=4, bad=False)
    from synthetic.discriminative import CocoAnnotations

    pipe = DiscriminativePipeline(
        FunctionAttention(lambda img: attention_avoiding("ball")),
        config(editors=("modify", "delete"), negative_fraction=0.0, edits_per_source=1),
        annotations=CocoAnnotations.from_dict(coco),
    )
    out = tmp_path / "out"
    pipe.run(sources_from_folder(tmp_path / "imgs"), out, count=6, progress=False)
    pairs = list(pipe.iter_pairs(out))
    assert len(pairs) == 6
    for rec in pairs:
        edit = rec["meta"]["edit"]
        assert edit["label"] == "ball" and edit["box"] == [66, 10, 88, 30] and edit["attention_rank"] == 0
        assert "ball" in rec["conversation"][1]["text"] and "top right" in rec["conversation"][1]["text"]


def test_the_edits_of_one_source_share_its_attention_map_and_edit_different_regions(tmp_path):
    coco = write_scenes(tmp_path / "imgs", n=4, bad=False)
    from synthetic.discriminative import CocoAnnotations

    seen: list[int] = []

    def counted(img):
        seen.append(1)
        return attention_avoiding("ball")

    pipe = DiscriminativePipeline(
        FunctionAttention(counted),
        PipelineConfig(seed=7, shard_size=4, preview=0, editors=("modify",), negative_fraction=0.0),
        annotations=CocoAnnotations.from_dict(coco),
    )
    out = tmp_path / "out"
    summary = pipe.run(sources_from_folder(tmp_path / "imgs"), out, count=8, progress=False)
    assert summary["kept"] == 8 and len(seen) == 4 == pipe.stage_counts["attention_maps"]
    by_source: dict[str, list] = {}
    for rec in pipe.iter_pairs(out):
        by_source.setdefault(rec["meta"]["source"], []).append(rec["meta"]["edit"])
    assert len(by_source) == 4
    for first, second in by_source.values():  # least-attended object first, then the next one
        assert (first["label"], first["attention_rank"]) == ("ball", 0)
        assert second["label"] != "ball" and second["attention_rank"] == 1


def test_delete_skips_candidates_that_look_like_their_rim(tmp_path):
    """Most least-attended superpixels are plain background, where inpainting changes nothing: the
    delete editor rules them out before inpainting, so most delete jobs keep their pair."""
    from synthetic.discriminative.editors import EditContext, InpaintDeleteEditor
    from synthetic.discriminative.regions import Region

    img = np.full((64, 64, 3), 120, np.uint8)
    img[20:40, 20:40] = (200, 30, 30)
    background, square = np.zeros((64, 64), bool), np.zeros((64, 64), bool)
    background[2:14, 2:14], square[20:40, 20:40] = True, True
    ctx = EditContext(img, np.ones((64, 64)), [Region(background), Region(square)])
    editor = InpaintDeleteEditor()
    assert not editor.viable(ctx, 0) and editor.viable(ctx, 1)
    assert InpaintDeleteEditor(min_contrast=0).viable(ctx, 0)

    write_scenes(tmp_path / "imgs", bad=False)
    summary = DiscriminativePipeline(
        tiny_attention(), config(editors=("delete",), negative_fraction=0.0)
    ).run(sources_from_folder(tmp_path / "imgs"), tmp_path / "out", count=8, progress=False)
    assert summary["kept"] == 8 and summary["jobs"] <= 12, summary


def test_output_does_not_depend_on_the_number_of_workers(tmp_path):
    write_scenes(tmp_path / "imgs")
    sources = sources_from_folder(tmp_path / "imgs")
    pipe = DiscriminativePipeline(tiny_attention(), config())
    pipe.run(sources, tmp_path / "one", count=6, progress=False, workers=1)
    pipe.run(sources, tmp_path / "two", count=6, progress=False, workers=2)
    assert snapshot(tmp_path / "one") == snapshot(tmp_path / "two")


def test_two_runs_with_the_same_seed_write_identical_files(tmp_path, monkeypatch):
    """The throughput configuration (bf16 VPG, batched maps, 2 worker processes, attention at its own
    thread count, one region proposal per source shared by its edits) writes the same bytes twice; each
    source's superpixels are computed once however many of its edits run."""
    write_scenes(tmp_path / "imgs", bad=False)
    sources = sources_from_folder(tmp_path / "imgs")

    def run(name: str, workers: int) -> dict[str, bytes]:
        attention = VPGAttention(random_tiny_vpg(seed=0), batch_size=3, dtype=torch.bfloat16)
        cfg = PipelineConfig(seed=11, shard_size=6, n_segments=24, preview=2, negative_fraction=0.3)
        summary = DiscriminativePipeline(attention, cfg).run(
            sources, tmp_path / name, count=10, progress=False, workers=workers
        )
        assert summary["kept"] == 10
        return snapshot(tmp_path / name)

    first = run("a", workers=2)
    assert any(name.startswith("images/edit/") for name in first)
    assert run("b", workers=2) == first

    calls: list[int] = []
    real = SuperpixelProposer.__call__

    def counted(self, image):
        calls.append(1)
        return real(self, image)

    monkeypatch.setattr(SuperpixelProposer, "__call__", counted)
    assert run("c", workers=1) == first  # in this process, so the proposals are counted
    jobs = sum(len(json.loads(p.read_text())["jobs"]) for p in (tmp_path / "c" / "progress").glob("*.json"))
    # 2 edits per source: at most one proposal per source job pair plus one per "add" donor
    assert 0 < len(calls) < jobs


def test_cli_with_a_caption_list_and_random_tiny_vpg(tmp_path, capsys):
    write_scenes(tmp_path / "data" / "imgs", n=3)
    caption_list = tmp_path / "data" / "captions.jsonl"
    rows = [{"image": f"imgs/scene{k}.png", "caption": f"scene {k}"} for k in range(3)]
    rows += [{"image": "imgs/broken.png"}, {"image": "imgs/missing.png"}, {"image": "imgs/notes.txt"}]
    caption_list.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    argv = ["--captions", str(caption_list), "--random-tiny-vpg", "--out", str(out), "--count", "4"]
    argv += ["--shard-size", "4", "--seed", "1", "--quiet", "--preview", "2"]
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert "random tiny VPG" in printed.err and "NOT meaningful" in printed.err
    assert "kept pairs 4/4" in printed.out and "skipped corrupt images: 1: imgs/broken.png" in printed.out
    assert "skipped missing images: 1" in printed.out and "skipped unsupported images: 1" in printed.out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kept"] == 4 and summary["attention"].startswith("random tiny VPG")
    first = json.loads((out / "shards" / "shard-00000.jsonl").read_text().splitlines()[0])
    assert first["meta"]["source_caption"].startswith("scene")
    assert (out / "preview.png").is_file()
    assert main(["--images", str(tmp_path / "nowhere"), "--random-tiny-vpg", "--out", str(out)]) == 2
    assert "not a directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--random-tiny-vpg" in capsys.readouterr().out
    assert sources_from_captions(caption_list).skipped == {
        "missing": ["imgs/missing.png"],
        "unsupported": ["imgs/notes.txt"],
    }
