"""Export back: a BLIP-2 directory transformers alone loads (equal logits); OpenFlamingo layout round trip."""

from __future__ import annotations

import pytest
import torch
from transformers import Blip2ForConditionalGeneration, LlamaForCausalLM
from vlm_cases import N_Q, SLOT, randomize_

from vpgkit.backbones.language import tiny_llama_config
from vpgkit.backbones.vision import Blip2VisionEncoderConfig, HFBlip2VisionEncoder
from vpgkit.checkpoints import CheckpointError, export_blip2, export_openflamingo, load_openflamingo
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
from vpgkit.tokens import AddedTokens


def blip2_model(seed: int = 0, vpgc: bool = False) -> VisionLanguageModel:
    torch.manual_seed(seed)
    llm = LlamaForCausalLM(tiny_llama_config())
    vision = HFBlip2VisionEncoder(Blip2VisionEncoderConfig.preset("tiny"))
    vpg = QFormer(QFormerConfig.preset("tiny", dropout=0.0, attention_dropout=0.0))
    with torch.no_grad():  # a trained-looking model: nothing at its init values
        for p in [*vision.parameters(), *vpg.parameters()]:
            p.add_(0.05 * torch.randn_like(p))
    extra = {"vpgc": VPGC.from_qformer(vpg, VPGCConfig.preset("tiny", layer=2))} if vpgc else {}
    return VisionLanguageModel(llm, vision, image_token_id=SLOT, vpg=vpg, train_vpg_projection=True, **extra)


def blip2_batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.tensor([[1, *[SLOT] * N_Q, 20, 21, 22], [1, 30, *[SLOT] * N_Q, 31, 32]])
    return ids, torch.randn(2, 3, 28, 28, generator=g)


@pytest.mark.parametrize("lora", [False, True], ids=["plain", "lora-merged"])
def test_blip2_export_loads_in_transformers_with_equal_logits(tmp_path, lora):
    model = blip2_model()
    if lora:
        from peft import LoraConfig

        model.add_lora(LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
        with torch.no_grad():
            for name, p in model.llm.named_parameters():
                if "lora_B" in name:
                    p.normal_(std=0.1)
        with pytest.raises(CheckpointError, match="merge_lora=True"):
            export_blip2(model, tmp_path / "refused")
    model.eval()
    export_blip2(model, tmp_path / "blip2", merge_lora=lora)
    assert sorted(p.name for p in (tmp_path / "blip2").iterdir() if p.suffix in (".json", ".safetensors"))
    assert not list((tmp_path / "blip2").glob("*.bin"))
    hf = Blip2ForConditionalGeneration.from_pretrained(tmp_path / "blip2").eval()
    ids, pixels = blip2_batch()
    with torch.no_grad():
        expected = model(ids, pixel_values=pixels[:, None]).logits
        theirs = hf(pixel_values=pixels, input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        blank = hf(pixel_values=pixels * 0, input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    assert theirs.shape == expected.shape
    assert (theirs - expected).abs().max() <= 1e-5  # measured: 0
    assert (blank - expected).abs().max() > 1e-3  # the images reach transformers' logits
    if lora:  # the live model keeps its LoRA
        assert any("lora_A" in n for n, _ in model.llm.named_parameters())


def test_blip2_export_refuses_what_blip2_cannot_hold(tmp_path):
    with pytest.raises(CheckpointError, match="VPG-C"):
        export_blip2(blip2_model(vpgc=True), tmp_path / "x")
    from vpgkit.checkpoints import export_instructblip

    with pytest.raises(NotImplementedError, match="reads the instruction"):
        export_instructblip(blip2_model(), tmp_path / "z")
    no_vision = blip2_model()
    no_vision.vision = None
    with pytest.raises(CheckpointError, match="vision tower"):
        export_blip2(no_vision, tmp_path / "y")


def flamingo_model(seed: int, tied: bool = True) -> VisionLanguageModel:
    torch.manual_seed(seed)
    llm = LlamaForCausalLM(tiny_llama_config(tie_word_embeddings=tied))
    added = AddedTokens.for_llm(llm, ["<|endofchunk|>", "<image>"])
    return VisionLanguageModel(
        llm,
        image_token_id=129,
        perceiver=PerceiverResampler(PerceiverConfig.preset("tiny")),
        cross_attention=GatedCrossAttentionConfig.preset("tiny", every=2),
        added_tokens=added,
    )


@pytest.mark.parametrize("tied", [True, False], ids=["tied-lm", "untied-lm"])
def test_openflamingo_export_round_trip_is_exact(tmp_path, tied):
    source = flamingo_model(seed=0, tied=tied)
    randomize_(source.perceiver, *source.cross_attention.values())
    with torch.no_grad():
        source.added_tokens.input_rows.normal_()
    path = export_openflamingo(source, tmp_path / "checkpoint.safetensors")
    from safetensors.torch import load_file

    keys = set(load_file(path))
    assert "lang_encoder.model.layers.3.gated_cross_attn_layer.attn_gate" in keys
    assert "lang_encoder.model.embed_tokens.weight" in keys
    assert ("lang_encoder.lm_head.weight" in keys) == tied
    assert not any("gated_cross_attn_layers" in k or "decoder_layer" in k for k in keys)

    target = flamingo_model(seed=0, tied=tied)  # same base LLM, fresh adapters
    report = load_openflamingo(target, path)
    assert report.ok
    for name in ("perceiver", "cross_attention", "added_tokens"):
        a, b = getattr(source, name).state_dict(), getattr(target, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    ids = torch.tensor([[1, 129, 20, 21, 128, 129, 22, 128]])
    feats = torch.randn(1, 2, 10, 32)
    with torch.no_grad():
        assert torch.equal(
            source(ids, vision_features=feats).logits, target(ids, vision_features=feats).logits
        )
    with pytest.raises(CheckpointError, match="safetensors"):
        export_openflamingo(source, tmp_path / "checkpoint.pt")


def test_blip2_recipe_adapter_exports(tmp_path):
    """recipe=blip2 (timm EVA): adapter → model → transformers directory. transformers' BLIP-2 vision tower
    has one LayerNorm epsilon, EVA's blocks use 1e-6 and ln_vision 1e-5: with ln_vision at 1e-6 the logits
    are equal, with LAVIS's 1e-5 close."""
    from test_train import config

    from vpgkit.checkpoints import load_adapter, save_adapter
    from vpgkit.training.build import build_model

    cfg = config("recipe=blip2")
    trained, tokenizer = build_model(cfg.model, cfg.seed)
    with torch.no_grad():
        trained.vpg.language_projection.weight.normal_(std=0.2)
    save_adapter(trained, tmp_path / "adapter")
    model, _ = build_model(cfg.model, cfg.seed)
    load_adapter(model, tmp_path / "adapter")
    export_blip2(model.eval(), tmp_path / "blip2", tokenizer=tokenizer)
    hf = Blip2ForConditionalGeneration.from_pretrained(tmp_path / "blip2").eval()
    n = model.vpg.config.num_queries
    ids = torch.tensor([[1, *[model.image_token_id] * n, 20, 21, 22]])
    pixels = torch.randn(1, 3, model.vision.image_size, model.vision.image_size)
    with torch.no_grad():
        ours = model(ids, pixel_values=pixels[:, None]).logits
        theirs = hf(pixel_values=pixels, input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        assert (theirs - ours).abs().max() <= 5e-4  # measured 8.8e-5 (logits up to ~5)
        model.vision.ln_vision.eps = hf.config.vision_config.layer_norm_eps  # the only difference
        same_eps = model(ids, pixel_values=pixels[:, None]).logits
    assert (theirs - same_eps).abs().max() <= 1e-5
