"""The shipped tiny-world backbones: they load with vpgkit's loaders, match the manifest, and fit the budget."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from synthetic.world.language import build_world_tokenizer
from vpgkit.assets import asset_path
from vpgkit.backbones import EvaVisionConfig, TimmEvaEncoder
from vpgkit.backbones.language import decoder_layers, hidden_size, load_causal_lm
from vpgkit.model import VisionLanguageModel
from vpgkit.modules import VPGC, QFormer, QFormerConfig, VPGCConfig

ROOT = Path(asset_path("tiny_world"))
MANIFEST = json.loads((ROOT / "manifest.json").read_text())


def test_manifest_records_every_file_with_its_sha256_and_the_total_fits_25_mb():
    files = sorted(
        p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*") if p.is_file() and p.name != "manifest.json"
    )
    assert files == sorted(MANIFEST["files"])
    for name, info in MANIFEST["files"].items():
        data = (ROOT / name).read_bytes()
        assert len(data) == info["bytes"] and hashlib.sha256(data).hexdigest() == info["sha256"], name
    total = sum((ROOT / n).stat().st_size for n in files)
    assert total == MANIFEST["total_bytes"] and total <= 25 * 2**20
    assert MANIFEST["command"].startswith("python -m synthetic.world.build") and "seed" in MANIFEST
    assert {"torch", "transformers", "timm"} <= set(MANIFEST["versions"])
    for stage in MANIFEST["stages"].values():  # every stage trained: its loss fell
        assert stage["steps"] > 0 and stage["final_loss"] < stage["first_loss"]


def test_weights_are_fp16_safetensors():
    for name in ("eva.safetensors", "qformer.safetensors", "llm/model.safetensors"):
        assert {t.dtype for t in load_file(ROOT / name).values()} == {torch.float16}, name


def test_backbones_load_with_vpgkit_loaders_and_fit_together():
    vision = TimmEvaEncoder.from_checkpoint(ROOT / "eva.safetensors", EvaVisionConfig.preset("tiny_world"))
    llm = load_causal_lm(ROOT / "llm")
    tok = AutoTokenizer.from_pretrained(ROOT / "llm", local_files_only=True)
    for special in ("<image>", "<Img>", "</Img>", "<pad>", "<s>", "</s>", "<|endofchunk|>"):
        assert special in tok.get_vocab() and special in tok.all_special_tokens, special
    assert tok.get_vocab() == build_world_tokenizer().get_vocab()  # the shipped tokenizer is the world's
    assert llm.config.vocab_size == len(tok)
    qformer = QFormer(QFormerConfig.preset("tiny_world"))
    qformer.load_state_dict(load_file(ROOT / "qformer.safetensors"))  # strict: every key matches
    vpgc = VPGC.from_qformer(qformer, VPGCConfig.preset("tiny_world"))
    assert vpgc.config.layer < len(decoder_layers(llm)) and hidden_size(llm) == qformer.config.llm_width
    model = VisionLanguageModel(
        llm, vision, image_token_id=tok.convert_tokens_to_ids("<image>"), vpg=qformer, vpgc=vpgc
    )
    n_q = qformer.config.num_queries
    ids = tok("<Img>", add_special_tokens=False)["input_ids"] + [model.image_token_id] * n_q
    ids += tok("</Img> Describe the image briefly.", add_special_tokens=False)["input_ids"]
    out = model(torch.tensor([ids]), pixel_values=torch.randn(1, 1, 3, 56, 56))
    assert out.logits.shape == (1, len(ids), len(tok)) and torch.isfinite(out.logits).all()


@pytest.mark.slow
def test_a_build_reusing_an_earlier_builds_backbones_writes_the_same_files(tmp_path):
    from synthetic.world.build import build

    steps = {"lm": 2, "vit": 2, "qformer": 3}
    full = build(tmp_path / "full", steps=steps, threads=1, log=lambda _: None)
    reused = build(tmp_path / "reused", steps=steps, threads=1, log=lambda _: None, reuse=tmp_path / "full")
    assert reused["files"] == full["files"] and reused["diagnostics"] == full["diagnostics"]
    # the ViT and LM were not retrained: their entries, wall times included, are the earlier build's
    for stage in ("language_model", "vision_encoder"):
        assert reused["stages"][stage] == full["stages"][stage]
    assert {**reused["stages"]["qformer"], "seconds": 0} == {**full["stages"]["qformer"], "seconds": 0}
    assert reused["reused_backbones_from"] == full["command"] and "reused_backbones_from" not in full
    # the ceilings per detail-question kind and per cloze pair; a task's score lies between its subsets'
    ceilings = full["diagnostics"]["lm_ceilings"]
    for task, names in (("detail_question", {"colour", "position"}), ("cloze", {"changed", "unchanged"})):
        for mode, per_subset in ceilings[task]["subsets"].items():
            assert set(per_subset) == names
            assert min(per_subset.values()) - 1e-9 <= ceilings[task][mode] <= max(per_subset.values()) + 1e-9
    assert "subsets" not in ceilings["which_image"]


def test_grounding_weight_scales_the_grounding_loss_and_is_refused_when_not_positive_or_alone():
    from synthetic.world.backbones import train_qformer
    from synthetic.world.build import _load_backbones

    vit, llm, tok, _ = _load_backbones(ROOT)
    first = {
        w: train_qformer(vit, llm, tok, 0, 1, batch_size=4, num_images=8, grounding=True, grounding_weight=w,
                         log=lambda _: None)[1].losses[0]
        for w in (1.0, 4.0)
    }  # fmt: skip
    caption_only = train_qformer(vit, llm, tok, 0, 1, batch_size=4, num_images=8, log=lambda _: None)[1]
    # the same batch and initial weights: loss = caption + w · grounding, so the gap grows 3× from w=1 to w=4
    grounding = first[1.0] - caption_only.losses[0]
    assert grounding > 0.5 and first[4.0] == pytest.approx(caption_only.losses[0] + 4 * grounding, rel=1e-4)
    for grounding, weight, message in ((True, 0.0, "must be > 0"), (False, 4.0, "needs grounding")):
        with pytest.raises(ValueError, match=message):
            train_qformer(vit, llm, tok, 0, 1, grounding=grounding, grounding_weight=weight)


def test_lm_answers_pose_a_given_builders_instances_on_the_ceilings_scenes():
    from functools import partial

    from transformers import LlamaForCausalLM

    from synthetic.world.diagnostics import answer_score, lm_answers
    from synthetic.world.tasks import which_image_task

    llm = LlamaForCausalLM.from_pretrained(ROOT / "llm", dtype=torch.float32).eval()
    tok = build_world_tokenizer()
    alone = partial(which_image_task, form="alone")
    easy = lm_answers(llm, tok, "which_image", "layered", n=5, batch_size=2, builder=alone)
    default = lm_answers(llm, tok, "which_image", "layered", n=5, batch_size=2)
    assert len(easy) == len(default) == 5
    for (answer, inst), (_, recoloured) in zip(easy, default, strict=True):
        # the same scene and draw: the same named object, here alone against an empty image
        assert inst.target == recoloured.target
        assert sorted(len(s.objects) for s in inst.scenes) == [0, 1]
        assert len(recoloured.scenes[0].objects) == len(recoloured.scenes[1].objects) > 1
        assert answer_score(answer, inst) in (0.0, 1.0)
    with pytest.raises(ValueError, match="mode must be one of"):
        lm_answers(llm, tok, "which_image", "middle", n=1)
    with pytest.raises(ValueError, match="task must be one of"):
        lm_answers(llm, tok, "counting", "input", n=1)


def test_the_blank_control_poses_the_same_prompts_with_every_slot_empty(monkeypatch):
    from transformers import LlamaForCausalLM

    from synthetic.world import diagnostics

    llm = LlamaForCausalLM.from_pretrained(ROOT / "llm", dtype=torch.float32).eval()
    tok = build_world_tokenizer()
    shown: dict[str, tuple[list, list]] = {}
    generate = diagnostics._generate

    def recording(llm, tokenizer, prompts, images, *args):
        shown[mode] = (prompts, images)
        return generate(llm, tokenizer, prompts, images, *args)

    monkeypatch.setattr(diagnostics, "_generate", recording)
    answers = {}
    for mode in ("input", "blank"):
        answers[mode] = diagnostics.lm_answers(llm, tok, "difference", mode, n=4)
    (prompts, images), (blank_prompts, blank_images) = shown["input"], shown["blank"]
    assert blank_prompts == prompts and len(blank_images) == len(images) == 8  # two images per instance
    assert any(o is not None for image in images for o in image.shown)
    assert all(o is None for image in blank_images for o in image.at_input + image.at_layer)
    assert [i.response for _, i in answers["blank"]] == [i.response for _, i in answers["input"]]
