"""VPG-C in place on transformers' BLIP-2 / InstructBLIP (vpgkit.inplace) and on a model of one's own.

Tiny random models built in code: logits equal the unmodified model at init; generate with the KV cache
equals greedy full passes; training changes only VPG-C; the adapter reloads into a fresh model exactly;
the own-model contract gives the same outputs as a VisionLanguageModel with the same modules.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from transformers import (
    Blip2Config,
    Blip2ForConditionalGeneration,
    InstructBlipConfig,
    InstructBlipForConditionalGeneration,
    LlamaForCausalLM,
)
from vlm_cases import HF_QFORMER as QFORMER
from vlm_cases import HF_VISION as VISION

from vpgkit import VisionLanguageModel
from vpgkit.backbones.language import tiny_llama_config
from vpgkit.checkpoints import CheckpointError, load_adapter, save_adapter
from vpgkit.inplace import VPGCAttachment, attach_vpgc
from vpgkit.inplace.attachment import slot_positions
from vpgkit.modules import QFormer, QFormerConfig, VPGCConfig

IMAGE = 5
PAGE = Path(__file__).resolve().parents[1] / "docs" / "hf_blip2_vpgc.md"


def hf_model(instruct: bool, seed: int = 0):
    torch.manual_seed(seed)
    common = dict(
        vision_config=VISION,
        text_config=tiny_llama_config().to_dict(),
        num_query_tokens=4,
        image_token_index=IMAGE,
    )
    if instruct:
        config = InstructBlipConfig(qformer_config={**QFORMER, "vocab_size": 50}, **common)
        return InstructBlipForConditionalGeneration(config).eval()
    return Blip2ForConditionalGeneration(Blip2Config(qformer_config=QFORMER, **common)).eval()


def batch(instruct: bool) -> dict:
    """Two left-padded prompts, one image each (4 image tokens)."""
    torch.manual_seed(7)
    out = dict(
        pixel_values=torch.randn(2, 3, 28, 28),
        input_ids=torch.tensor([[1, 5, 5, 5, 5, 20, 21, 22], [0, 1, 5, 5, 5, 5, 30, 31]]),
        attention_mask=torch.tensor([[1] * 8, [0] + [1] * 7]),
    )
    if instruct:
        out["qformer_input_ids"] = torch.tensor([[1, 7, 8], [1, 9, 2]])
        out["qformer_attention_mask"] = torch.tensor([[1, 1, 1], [1, 1, 0]])
    return out


def perturb(attachment: VPGCAttachment, scale: float = 0.5) -> None:
    """Non-zero VPG-C weights (as if trained), so its residual matters."""
    torch.manual_seed(11)
    with torch.no_grad():
        for p in attachment.parameters():
            p.add_(scale * torch.randn_like(p))


kinds = pytest.mark.parametrize("instruct", [False, True], ids=["blip2", "instructblip"])


@kinds
def test_logits_equal_the_unmodified_model_at_init_and_after_remove(instruct):
    model, inputs = hf_model(instruct), batch(instruct)
    with torch.no_grad():
        before = model(**inputs).logits
        attachment = attach_vpgc(model, layer=2)
        assert torch.equal(model(**inputs).logits, before)
        perturb(attachment)
        assert (model(**inputs).logits - before).abs().max() > 1e-2  # the residual reaches the logits
        attachment.remove()
        assert torch.equal(model(**inputs).logits, before)
    assert not hasattr(model, "vpgc") or model.vpgc is None


@kinds
def test_generate_with_cache_equals_greedy_full_passes(instruct):
    model, inputs = hf_model(instruct), batch(instruct)
    perturb(attach_vpgc(model, layer=2))
    steps = 4
    with torch.no_grad():
        cached = model.generate(**inputs, max_new_tokens=steps, do_sample=False)[:, -steps:]
        # Full passes over prompt + generated tokens; labels on the generated tokens keep the guidance at
        # the prompt's last token, as in generate.
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        prompt_len = ids.shape[1]
        for _ in range(steps):
            labels = ids.clone()
            labels[:, :prompt_len] = -100
            logits = model(**{**inputs, "input_ids": ids, "attention_mask": mask, "labels": labels}).logits
            ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    assert torch.equal(cached, ids[:, prompt_len:])


@kinds
def test_training_changes_only_vpgc_and_the_adapter_reloads_exactly(instruct, tmp_path):
    model, inputs = hf_model(instruct), batch(instruct)
    frozen_before = {k: v.clone() for k, v in model.state_dict().items()}
    attachment = attach_vpgc(model, layer=2)
    assert all(not p.requires_grad for n, p in model.named_parameters() if not n.startswith("vpgc."))
    vpgc_before = {k: v.detach().clone() for k, v in attachment.trainable_parameters().items()}
    answer = torch.tensor([[40, 41], [42, 43]])
    train = {
        **inputs,
        "input_ids": torch.cat([inputs["input_ids"], answer], dim=1),
        "attention_mask": torch.cat([inputs["attention_mask"], torch.ones_like(answer)], dim=1),
        "labels": torch.cat([torch.full_like(inputs["input_ids"], -100), answer], dim=1),
    }
    optimizer = torch.optim.AdamW(attachment.parameters(), lr=1e-2)
    for _ in range(3):
        model(**train).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in frozen_before.items())
    moved = {k for k, v in attachment.trainable_parameters().items() if not torch.equal(v, vpgc_before[k])}
    assert moved == set(vpgc_before)  # every VPG-C tensor trained (guidance, queries, output)

    save_adapter(attachment, tmp_path / "adapter")
    fresh = hf_model(instruct)
    report = load_adapter(attach_vpgc(fresh, layer=2), tmp_path / "adapter")
    assert report.ok and len(report.loaded) == 5
    with torch.no_grad():
        assert torch.equal(fresh(**train).logits, model(**train).logits)
        assert torch.equal(
            fresh.generate(**inputs, max_new_tokens=3), model.generate(**inputs, max_new_tokens=3)
        )


def test_adapter_refuses_another_layer_and_the_other_family(tmp_path):
    attachment = attach_vpgc(hf_model(False), layer=2)
    save_adapter(attachment, tmp_path / "a")
    with pytest.raises(CheckpointError, match=r"vpgc\.layer"):
        load_adapter(attach_vpgc(hf_model(False), layer=1), tmp_path / "a")
    with pytest.raises(CheckpointError, match=r"base model mismatch.*InstructBlipVisionModel"):
        load_adapter(attach_vpgc(hf_model(True), layer=2), tmp_path / "a")


def test_errors_name_the_bad_input():
    with pytest.raises(TypeError, match="LlamaForCausalLM"):
        attach_vpgc(LlamaForCausalLM(tiny_llama_config()))
    model = hf_model(False)
    attach_vpgc(model, layer=2)
    with pytest.raises(ValueError, match="already has a vpgc"):
        attach_vpgc(model)
    ids = torch.tensor([[1, 5, 5, 5, 5, 20, 21, 22], [1, 5, 5, 5, 5, 5, 30, 31]])
    with pytest.raises(ValueError, match="row 1 of input_ids has 5 image tokens"):
        slot_positions(ids, IMAGE, 4)


def test_own_model_contract_equals_a_vision_language_model():
    torch.manual_seed(0)
    llm, qformer = LlamaForCausalLM(tiny_llama_config()).eval(), QFormer(QFormerConfig.preset("tiny")).eval()
    host = torch.nn.Module()
    host.qformer, host.llm = qformer, llm
    attachment = VPGCAttachment(host, qformer, llm, llm.model.layers, 3, VPGCConfig.preset("tiny"))
    perturb(attachment, 0.2)
    ids = torch.tensor([[1, 3, 3, 3, 3, 7, 8, 9], [0, 1, 3, 3, 3, 3, 8, 9]])
    mask = torch.tensor([[1] * 8, [0] + [1] * 7])
    vision = torch.randn(2, 1, 10, 32)
    with torch.no_grad(), attachment.inputs(vision, ids, attention_mask=mask):
        embeds = llm.get_input_embeddings()(ids.masked_fill(ids == 3, 0))
        embeds[ids == 3] = qformer(vision).prompts[:, 0].reshape(-1, 48)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        mine = llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).logits
    attachment.remove()
    reference = VisionLanguageModel(llm, image_token_id=3, vpg=qformer, vpgc=attachment.vpgc)
    with torch.no_grad():
        expected = reference(ids, mask, vision_features=vision).logits
    assert (mine - expected).abs().max() <= 1e-6


def test_docs_page_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    codes = re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)
    assert len(codes) == 2
    for code in codes:
        exec(compile(code, str(PAGE), "exec"), {"__name__": "__doc_example__"})
    out = capsys.readouterr().out
    assert "adapter load from blip2_vpgc: 5 tensors loaded" in out
    assert out.strip().endswith("0.0")
