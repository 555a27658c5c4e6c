"""Converters against key listings of real releases (``tests/releases``), built independently of vpgkit.

The fixtures come from the listings, not from inverting vpgkit's key maps: a wrong belief about a
release's names fails here. The Q-Former's LAVIS names are also checked tensor by tensor against
vpgkit's ``Blip2QFormerModel`` layout by an explicit, hand-written correspondence.
"""

from __future__ import annotations

import pytest
import torch
from release_listings import RELEASES, listing, tiny_state
from transformers import LlamaForCausalLM
from vlm_cases import SLOT

from vpgkit.backbones.language import tiny_llama_config
from vpgkit.backbones.vision import EvaVisionConfig, TimmEvaEncoder
from vpgkit.checkpoints import CheckpointError, load_cheetah, load_lavis
from vpgkit.model import VisionLanguageModel
from vpgkit.modules import VPGC, QFormer, QFormerConfig, VPGCConfig


def cheetah_model(vision=None) -> VisionLanguageModel:
    torch.manual_seed(0)
    llm = LlamaForCausalLM(tiny_llama_config())
    vpg = QFormer(QFormerConfig.preset("tiny", dropout=0.0, attention_dropout=0.0))
    vpgc = VPGC.from_qformer(vpg, VPGCConfig.preset("tiny", layer=2))
    return VisionLanguageModel(llm, vision, image_token_id=SLOT, vpg=vpg, vpgc=vpgc)


# LAVIS name → vpgkit Q-Former name for one layer with cross-attention, written out by hand.
LAYER0 = {
    "attention.self.query.weight": "encoder.layer.0.attention.attention.query.weight",
    "attention.self.key.bias": "encoder.layer.0.attention.attention.key.bias",
    "attention.output.dense.weight": "encoder.layer.0.attention.output.dense.weight",
    "attention.output.LayerNorm.bias": "encoder.layer.0.attention.output.LayerNorm.bias",
    "crossattention.self.key.weight": "encoder.layer.0.crossattention.attention.key.weight",
    "crossattention.self.value.bias": "encoder.layer.0.crossattention.attention.value.bias",
    "crossattention.output.dense.weight": "encoder.layer.0.crossattention.output.dense.weight",
    "intermediate_query.dense.weight": "encoder.layer.0.intermediate_query.dense.weight",
    "output_query.dense.bias": "encoder.layer.0.output_query.dense.bias",
    "output_query.LayerNorm.weight": "encoder.layer.0.output_query.LayerNorm.weight",
}


def test_listings_state_their_provenance():
    names = sorted(p.stem for p in RELEASES.glob("*.json"))
    assert len(names) == 5, names
    for name in names:
        doc = listing(name)
        assert doc["release"] and len(doc["provenance"]) >= 2 and len(doc["keys"]) > 100
    stage1 = listing("lavis_blip2_stage1")["keys"]
    assert stage1["Qformer.bert.encoder.layer.0.crossattention.self.key.weight"] == [768, 1408]
    assert "Qformer.bert.encoder.layer.1.crossattention.self.key.weight" not in stage1  # every 2nd layer


def test_strict_load_of_a_lavis_stage1_file_into_a_cheetah_model(tmp_path):
    state = tiny_state("lavis_blip2_stage1")
    torch.save({"model": state}, tmp_path / "blip2_pretrained.pth")
    model = cheetah_model()
    projection = model.vpg.language_projection.weight.detach().clone()
    report = load_lavis(model, tmp_path / "blip2_pretrained.pth")  # strict by default
    assert report.ok and not report.missing
    assert any("stage1 file" in n for n in report.notes)
    # Every key of the release is accounted for: loaded, or ignored with a reason.
    assert set(report.renamed) | set(report.ignored) == set(state)
    qformer = model.vpg.qformer.state_dict()
    for lavis, ours in LAYER0.items():
        assert torch.equal(qformer[ours], state["Qformer.bert.encoder.layer.0." + lavis]), lavis
    assert torch.equal(qformer["layernorm.weight"], state["Qformer.bert.embeddings.LayerNorm.weight"])
    assert torch.equal(model.vpg.query_tokens, state["query_tokens"])
    assert torch.equal(model.vpg.language_projection.weight, projection)  # not in the file: untouched
    assert "stage-1" in report.ignored["Qformer.cls.predictions.decoder.weight"]
    assert "query-only" in report.ignored["Qformer.bert.encoder.layer.1.intermediate.dense.weight"]
    assert "no vision encoder" in report.ignored["ln_vision.weight"]


def test_stage1_strictness_still_refuses_unexpected_and_missing_keys(tmp_path):
    state = tiny_state("lavis_blip2_stage1")
    state["Qformer.bert.encoder.layer.0.crossattention.self.rotary.weight"] = torch.zeros(2)
    torch.save({"model": state}, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match="rotary"):
        load_lavis(cheetah_model(), tmp_path / "extra.pth")
    state = tiny_state("lavis_blip2_stage1")
    del state["Qformer.bert.encoder.layer.1.output_query.dense.weight"]
    torch.save({"model": state}, tmp_path / "short.pth")
    with pytest.raises(
        CheckpointError, match=r"missing 1: vpg.qformer.encoder.layer.1.output_query.dense.weight"
    ):
        load_lavis(cheetah_model(), tmp_path / "short.pth")
    # A stage-2 file must hold its projection: declaring the stage-1 file as stage 2 fails.
    torch.save({"model": tiny_state("lavis_blip2_stage1")}, tmp_path / "s1.pth")
    with pytest.raises(CheckpointError, match=r"vpg\.language_projection\.weight"):
        load_lavis(cheetah_model(), tmp_path / "s1.pth", release="stage2")


def test_stage1_file_with_ln_vision_only_and_with_the_eva_blocks(tmp_path):
    eva = TimmEvaEncoder(EvaVisionConfig.preset("tiny"))
    state = tiny_state("lavis_blip2_stage1")
    torch.save({"model": state}, tmp_path / "no_eva.pth")
    model = cheetah_model(TimmEvaEncoder(EvaVisionConfig.preset("tiny")))
    report = load_lavis(model, tmp_path / "no_eva.pth")
    assert report.ok and torch.equal(model.vision.ln_vision.weight, state["ln_vision.weight"])
    assert any("only ln_vision was loaded" in n for n in report.notes)
    state.update({f"visual_encoder.{k}": v for k, v in eva.visual_encoder.state_dict().items()})
    torch.save({"model": state}, tmp_path / "eva.pth")
    assert load_lavis(model, tmp_path / "eva.pth").ok
    del state["visual_encoder.blocks.1.mlp.fc2.weight"]
    torch.save({"model": state}, tmp_path / "eva_short.pth")
    with pytest.raises(CheckpointError, match=r"vision\.visual_encoder\.blocks\.1\.mlp\.fc2\.weight"):
        load_lavis(model, tmp_path / "eva_short.pth")


def test_cheetah_default_qformer_file_then_the_cheetah_checkpoint(tmp_path):
    """Cheetah's config reads the Q-Former of blip2_pretrained_flant5xxl.pth, its projection from its own file."""
    state = tiny_state("lavis_blip2_flant5xxl")
    torch.save({"model": state}, tmp_path / "blip2_pretrained_flant5xxl.pth")
    model = cheetah_model()
    auto = load_lavis(cheetah_model(), tmp_path / "blip2_pretrained_flant5xxl.pth")
    assert auto.renamed["t5_proj.weight"] == "vpg.language_projection.weight"  # a stage-2 file by default
    report = load_lavis(model, tmp_path / "blip2_pretrained_flant5xxl.pth", release="qformer")
    assert report.ok and "release='qformer'" in report.ignored["t5_proj.weight"]
    assert torch.equal(model.vpg.query_tokens, state["query_tokens"])
    # Cheetah's own checkpoint: the new queries at llama_model.model.query_tokens (a name Cheetah's code
    # writes itself) plus the projections, found by shape.
    g = torch.Generator().manual_seed(1)
    cheetah = {
        "llama_model.model.query_tokens": torch.randn(1, 4, 32, generator=g),
        "llama_model.model.qformer_proj.weight": torch.randn(32, 48, generator=g),
        "llama_model.model.qformer_proj.bias": torch.randn(32, generator=g),
        "llama_model.model.llm_proj.weight": torch.randn(48, 32, generator=g),
        "llama_model.model.llm_proj.bias": torch.randn(48, generator=g),
        "llama_proj.weight": torch.randn(48, 32, generator=g),
        "llama_proj.bias": torch.randn(48, generator=g),
    }
    torch.save({"model": cheetah}, tmp_path / "cheetah.pth")
    assert load_cheetah(model, tmp_path / "cheetah.pth").ok
    assert torch.equal(model.vpg.language_projection.weight, cheetah["llama_proj.weight"])
    assert torch.equal(model.vpgc.query_tokens, cheetah["llama_model.model.query_tokens"])


def test_openflamingo_9b_listing_loads_strictly_into_a_real_size_model():
    """OpenFlamingo-9B's real names and shapes into vpgkit's openflamingo9b composition, on the meta device."""
    from transformers import MptConfig, MptForCausalLM

    from vpgkit.checkpoints import load_openflamingo_state
    from vpgkit.modules import GatedCrossAttentionConfig, PerceiverConfig, PerceiverResampler
    from vpgkit.tokens import AddedTokens

    doc = listing("openflamingo_9b_mpt7b")
    state = {k: torch.empty(shape, device="meta") for k, shape in doc["keys"].items()}
    with torch.device("meta"):
        llm = MptForCausalLM(MptConfig(d_model=4096, n_heads=32, n_layers=32, vocab_size=50432))
        llm.resize_token_embeddings(50280, mean_resizing=False)  # as OpenFlamingo's factory does
        tokens = AddedTokens.for_llm(llm, ["<|endofchunk|>", "<image>", "<PAD>"], ids=[50277, 50278, 50279])
        model = VisionLanguageModel(
            llm,
            image_token_id=50278,
            perceiver=PerceiverResampler(PerceiverConfig.preset("openflamingo9b")),
            cross_attention=GatedCrossAttentionConfig.preset("openflamingo9b"),
            added_tokens=tokens,
        )
    report = load_openflamingo_state(model, state, "OpenFlamingo-9B checkpoint.pt")
    assert report.ok, report.summary()
    assert sorted(model.cross_attention, key=int) == [str(i) for i in range(3, 32, 4)]
    assert report.renamed["lang_encoder.transformer.blocks.31.gated_cross_attn_layer.ff.3.weight"] == (
        "cross_attention.31.ff.3.weight"
    )
    assert report.renamed["lang_encoder.transformer.wte.weight"] == "embed_tokens.weight"
    assert "added_tokens.input_rows" in report.loaded and "embed_tokens.weight" in report.loaded
    loaded = {k.split(".")[0] for k in report.loaded}
    assert loaded == {"perceiver", "cross_attention", "embed_tokens", "added_tokens"}
    assert len(report.renamed) == len(state) + 1  # every key, plus the added rows taken from the matrix


def test_otter_listing_loads_strictly_with_its_clip_tower():
    """Otter's full checkpoint (LLaMA-7B, CLIP ViT-L/14) into vpgkit's composition at real size, on meta."""
    from transformers import LlamaConfig

    from vpgkit.backbones import CLIPVisionEncoderConfig, HFCLIPVisionEncoder
    from vpgkit.checkpoints import load_openflamingo_state
    from vpgkit.modules import GatedCrossAttentionConfig, PerceiverConfig, PerceiverResampler
    from vpgkit.tokens import AddedTokens

    doc = listing("otter_llama7b")
    state = {k: torch.empty(shape, device="meta") for k, shape in doc["keys"].items()}
    with torch.device("meta"):
        llm = LlamaForCausalLM(LlamaConfig(intermediate_size=11008, tie_word_embeddings=False))
        tokens = AddedTokens.for_llm(
            llm, ["<|endofchunk|>", "<image>", "<answer>", "<PAD>"], output="trained"
        )
        model = VisionLanguageModel(
            llm,
            HFCLIPVisionEncoder(CLIPVisionEncoderConfig.preset("otter_vit_l_14")),
            image_token_id=32001,
            perceiver=PerceiverResampler(PerceiverConfig.preset("openflamingo9b")),
            cross_attention=GatedCrossAttentionConfig.preset("openflamingo9b"),
            added_tokens=tokens,
        )
    report = load_openflamingo_state(model, state, "Otter")
    assert report.ok, report.summary()
    assert report.renamed["perceiver.layers.5.feed_forward.3.weight"] == "perceiver.layers.5.1.3.weight"
    assert report.renamed["lang_encoder.model.layers.7.gated_cross_attn_layer.feed_forward.1.weight"] == (
        "cross_attention.7.ff.1.weight"
    )
    assert report.renamed["vision_encoder.vision_model.encoder.layers.23.mlp.fc2.weight"] == (
        "vision.vision_model.encoder.layers.23.mlp.fc2.weight"
    )
    assert {"lm_head.weight", "added_tokens.output_rows"} <= set(report.loaded)
    frozen = report.ignored["lang_encoder.model.layers.0.decoder_layer.self_attn.q_proj.weight"]
    assert frozen.startswith("frozen LLM")


def test_lavis_instructblip_file_loads_its_projection_and_reports_the_instruction_input(tmp_path):
    state = tiny_state("lavis_instructblip_vicuna7b")
    torch.save({"model": state}, tmp_path / "instruct_blip_vicuna7b_trimmed.pth")
    model = cheetah_model()
    report = load_lavis(model, tmp_path / "instruct_blip_vicuna7b_trimmed.pth")
    assert report.ok and any("stage2 file" in n for n in report.notes)
    assert torch.equal(model.vpg.language_projection.weight, state["llm_proj.weight"])
    assert "query-only" in report.ignored["Qformer.bert.embeddings.word_embeddings.weight"]
    assert "query-only" in report.ignored["Qformer.bert.encoder.layer.0.output.LayerNorm.weight"]
    assert set(report.renamed) | set(report.ignored) == set(state)
