"""VisionLanguageModel: attachment to frozen LMs, exactness at init, generation, training, bad input."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaForCausalLM
from vlm_cases import (
    N_Q,
    SLOT,
    greedy_without_cache,
    left_padded_prompts,
    randomize_,
    tiny_llm,
    vpgc_batch,
    vpgc_model,
    xattn_batch,
    xattn_model,
)

from vpgkit.backbones import (
    CLIPVisionEncoderConfig,
    EvaVisionConfig,
    HFCLIPVisionEncoder,
    TimmEvaEncoder,
)
from vpgkit.backbones.language import llama_7b_config
from vpgkit.model import VisionLanguageModel
from vpgkit.modules import (
    VPGC,
    GatedCrossAttentionConfig,
    PerceiverConfig,
    PerceiverResampler,
    QFormer,
    QFormerConfig,
    VPGCConfig,
)

FAMILIES = ["llama", "qwen2"]


# --- exact at init -------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_vpgc_at_init_leaves_logits_identical_to_the_base_model(family):
    batch = vpgc_batch()
    with torch.no_grad():
        base = vpgc_model(family, with_vpgc=False)(**batch).logits
        with_vpgc = vpgc_model(family)(**batch).logits
    assert torch.equal(base, with_vpgc)


@pytest.mark.parametrize("family", FAMILIES)
def test_cross_attention_at_init_leaves_logits_identical_to_the_base_model(family):
    batch = xattn_batch()
    model = xattn_model(family)
    assert len(model.cross_attention) == 2  # before layers 1 and 3 of 4 (every = 2)
    with torch.no_grad():
        ours = model(**batch).logits
        base = tiny_llm(family)(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    real = batch["attention_mask"].bool()  # padding positions are numbered differently; compare real tokens
    assert torch.equal(ours[real], base[real])


@pytest.mark.parametrize("family", FAMILIES)
def test_adapters_change_the_output_once_trained(family):
    """The hooks really fire: non-zero adapters change the logits (and only after the image slots for VPG-C)."""
    batch = vpgc_batch()
    model = vpgc_model(family)
    randomize_(model.vpgc)
    with torch.no_grad():
        base = vpgc_model(family, with_vpgc=False)(**batch).logits
        ours = model(**batch).logits
    first_slot = int((batch["input_ids"][0] == SLOT).nonzero()[0])
    assert torch.equal(ours[0, :first_slot], base[0, :first_slot])
    assert not torch.allclose(ours[0, first_slot:], base[0, first_slot:])


# --- generation ----------------------------------------------------------------------------------------


def _prompts(family_kind: str):
    if family_kind == "vpgc":
        rows = [[1, 20, *[SLOT] * N_Q, 30, 31, 32], [1, *[SLOT] * N_Q, 40]]
        vision = torch.randn(2, 1, 10, 32)
    else:
        rows = [[1, 20, SLOT, 30, 31, SLOT, 32], [1, SLOT, 40, SLOT]]
        vision = torch.randn(2, 2, 10, 32)
    return (*left_padded_prompts(rows), vision, rows)


@pytest.mark.parametrize("kind", ["vpgc", "xattn"])
def test_greedy_generation_with_kv_cache_equals_without(kind):
    model = vpgc_model() if kind == "vpgc" else xattn_model()
    adapters = [m for m in (model.vpgc, model.cross_attention) if m is not None]
    input_ids, attention_mask, vision, _ = _prompts(kind)
    args = dict(vision_features=vision, max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None)
    at_init = model.generate(input_ids, attention_mask, **args)
    randomize_(*adapters, std=0.3)
    with torch.no_grad():
        uncached = greedy_without_cache(model, input_ids, attention_mask, vision, steps=6)
    cached = model.generate(input_ids, attention_mask, **args)
    assert cached.shape == (2, 6)
    assert torch.equal(cached, uncached)
    assert not torch.equal(cached, at_init)  # the adapters really steer the generation


@pytest.mark.parametrize("kind", ["vpgc", "xattn"])
def test_batched_left_padded_generation_equals_one_prompt_at_a_time(kind):
    """Guidance comes from each row's own last prompt token; media masks follow each row's images."""
    model = vpgc_model() if kind == "vpgc" else xattn_model()
    randomize_(*(m for m in (model.vpgc, model.cross_attention) if m is not None), std=0.3)
    input_ids, attention_mask, vision, rows = _prompts(kind)
    args = dict(max_new_tokens=5, do_sample=False, pad_token_id=0, eos_token_id=None)
    batched = model.generate(input_ids, attention_mask, vision_features=vision, **args)
    for i, row in enumerate(rows):
        alone = model.generate(torch.tensor([row]), vision_features=vision[i : i + 1], **args)
        assert torch.equal(batched[i], alone[0])


def test_generation_uses_vpgc_only_on_the_prefill():
    model = vpgc_model()
    randomize_(model.vpgc, std=0.3)
    calls = []
    model.vpgc.register_forward_hook(lambda *a: calls.append(1))
    input_ids, attention_mask, vision, _ = _prompts("vpgc")
    model.generate(
        input_ids, attention_mask, vision_features=vision, max_new_tokens=4, do_sample=False, pad_token_id=0
    )
    assert len(calls) == 1


# --- training ------------------------------------------------------------------------------------------


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_only_adapter_weights_get_gradients_and_frozen_weights_never_move():
    model = vpgc_model().train()
    randomize_(model.vpgc)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.AdamW(model.trainable_parameters().values(), lr=1e-2, weight_decay=0.05)
    loss = model(**vpgc_batch()).loss
    loss.backward()
    assert set(_grads(model)) == {f"vpgc.{n}" for n, _ in model.vpgc.named_parameters()}
    optimizer.step()
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert set(model.trainable_parameters()) == {f"vpgc.{n}" for n, _ in model.vpgc.named_parameters()}


def test_frozen_parts_stay_in_eval_mode_when_training():
    model = vpgc_model().train()
    assert model.vpgc.training
    assert not model.llm.training and not model.vpg.qformer.training
    reference = vpgc_model(reference_path=True).train()
    assert reference.vpg.qformer.training  # the original code's dropout-on frozen Q-Former


def test_lower_half_runs_without_autograd():
    """Nothing trainable is upstream of layer k, so layer k's input carries no graph on our path."""
    seen = {}
    for reference in (False, True):
        model = vpgc_model(reference_path=reference).train()
        randomize_(model.vpgc)
        below = model.llm.model.layers[model.vpgc.config.layer - 1]  # its output is layer k's input
        handle = below.register_forward_hook(
            lambda m, a, out, key=reference: seen.__setitem__(key, out.requires_grad)
        )
        model(**vpgc_batch()).loss.backward()
        handle.remove()
    assert seen == {False: False, True: True}


def test_no_autograd_lower_half_gradients_equal_the_reference_path():
    grads = {}
    for reference in (False, True):
        model = vpgc_model(reference_path=reference).train()
        torch.manual_seed(5)
        randomize_(model.vpgc)
        model(**vpgc_batch()).loss.backward()
        grads[reference] = _grads(model)
    assert set(grads[False]) == set(grads[True])
    for name, g in grads[False].items():
        rel = (g - grads[True][name]).norm() / grads[True][name].norm()
        assert rel <= 1e-6, (name, rel)


def test_lora_composes_with_vpgc():
    from peft import LoraConfig

    model = vpgc_model().add_lora(LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    randomize_(model.vpgc)
    names = set(model.trainable_parameters())
    assert any("lora_" in n for n in names) and any(n.startswith("vpgc.") for n in names)
    calls = []
    model.vpgc.register_forward_hook(lambda *a: calls.append(1))
    model.train()(**vpgc_batch()).loss.backward()
    assert calls == [1]  # the layer-k hook still fires through the peft wrapper
    grads = _grads(model)
    assert any("lora_B" in n for n in grads) and "vpgc.output_proj.weight" in grads


def test_loss_is_taken_on_answer_tokens_only():
    model = vpgc_model()
    batch = vpgc_batch()
    with torch.no_grad():
        out = model(**batch)
    logits, labels = out.logits[:, :-1], batch["labels"][:, 1:]
    keep = labels != -100
    expected = torch.nn.functional.cross_entropy(logits[keep], labels[keep])
    torch.testing.assert_close(out.loss, expected)


@pytest.mark.parametrize("family", FAMILIES)
def test_loss_only_gives_the_same_loss_and_gradients(family):
    results = []
    for loss_only in (False, True):
        model = vpgc_model(family).train()
        randomize_(model.vpgc)
        out = model(**vpgc_batch(), loss_only=loss_only)
        out.loss.backward()
        results.append((out.loss.detach(), _grads(model)))
    (full_loss, full_grads), (loss, grads) = results
    torch.testing.assert_close(loss, full_loss)
    for name, g in grads.items():
        torch.testing.assert_close(g, full_grads[name], rtol=1e-5, atol=1e-7)


# --- real shapes on the meta device --------------------------------------------------------------------


def test_meta_build_of_vicuna7b_vpgc_reports_the_published_share():
    with torch.device("meta"):
        llm = LlamaForCausalLM(llama_7b_config())
        vision = TimmEvaEncoder(EvaVisionConfig.preset("eva_clip_g"))
        vpg = QFormer(QFormerConfig.preset("blip2"))
        vpgc = VPGC.from_qformer(vpg, VPGCConfig.preset("vicuna7b"))
        model = VisionLanguageModel(llm, vision, image_token_id=32000, vpg=vpg, vpgc=vpgc)
    assert all(p.is_meta for p in model.parameters())
    report = model.parameter_report()
    assert report["trainable"] == 6_320_896
    assert report["llm_total"] == 6_738_415_616
    assert round(100 * report["trainable_share_of_llm"], 3) == 0.094


def test_meta_build_of_openflamingo9b_counts_perceiver_and_eight_blocks():
    with torch.device("meta"):
        llm = LlamaForCausalLM(llama_7b_config())
        model = VisionLanguageModel(
            llm,
            HFCLIPVisionEncoder(CLIPVisionEncoderConfig.preset("vit_l_14")),
            image_token_id=32000,
            perceiver=PerceiverResampler(PerceiverConfig.preset("openflamingo9b")),
            cross_attention=GatedCrossAttentionConfig.preset("openflamingo9b"),
        )
    assert sorted(map(int, model.cross_attention)) == [3, 7, 11, 15, 19, 23, 27, 31]
    assert all(p.is_meta for p in model.parameters())
    assert model.parameter_report()["trainable"] == 63_019_008 + 8 * 139_476_994


# --- pixels through a real encoder ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["vpgc", "xattn"])
def test_pixels_through_the_frozen_encoder_equal_precomputed_features(kind):
    encoder = (
        TimmEvaEncoder(EvaVisionConfig.preset("tiny"))
        if kind == "vpgc"
        else HFCLIPVisionEncoder(CLIPVisionEncoderConfig.preset("tiny"))
    )
    model = vpgc_model() if kind == "vpgc" else xattn_model()
    with_encoder = VisionLanguageModel(
        model.llm,
        encoder,
        image_token_id=SLOT,
        vpg=model.vpg,
        perceiver=model.perceiver,
        cross_attention=getattr(model, "cross_attention_config", None),
    )
    batch = vpgc_batch() if kind == "vpgc" else xattn_batch()
    pixels = torch.randn(*batch.pop("vision_features").shape[:2], 3, 28, 28)
    with torch.no_grad():
        ours = with_encoder(**batch, pixel_values=pixels).logits
        expected = with_encoder(**batch, vision_features=encoder(pixels)).logits
    assert torch.equal(ours, expected)
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())


# --- bad input -----------------------------------------------------------------------------------------


def test_image_count_not_matching_slots_names_the_sample():
    batch = vpgc_batch()
    batch["vision_features"] = torch.randn(2, 2, 10, 32)  # two images per row, but one slot run each
    with pytest.raises(ValueError, match=r"sample 0: .* 2 images × 4 queries = 8"):
        vpgc_model()(**batch)


def test_more_image_markers_than_images_is_an_error_for_cross_attention():
    batch = xattn_batch()
    batch["vision_features"] = batch["vision_features"][:, :1]
    with pytest.raises(ValueError, match="row 0 has 2 <image> markers"):
        xattn_model()(**batch)


def test_prompt_longer_than_the_context_is_a_clear_error():
    model = vpgc_model()
    ids = torch.full((1, 300), 10)
    with pytest.raises(ValueError, match="sequence length 300 exceeds the LLM's context of 256"):
        model(ids, vision_features=torch.randn(1, 0, 10, 32))


def test_vpg_of_another_width_fails_at_construction_with_both_widths():
    class Encoder(torch.nn.Module):
        width = 64

    with pytest.raises(ValueError, match=r"vision_width\) is 32 but the vision encoder is 64"):
        VisionLanguageModel(
            tiny_llm(), Encoder(), image_token_id=SLOT, vpg=QFormer(QFormerConfig.preset("tiny"))
        )
    with pytest.raises(ValueError, match=r"llm_width\) is 40 but the LLM hidden size is 48"):
        VisionLanguageModel(
            tiny_llm(), image_token_id=SLOT, vpg=QFormer(QFormerConfig.preset("tiny", llm_width=40))
        )
