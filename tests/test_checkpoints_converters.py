"""Foreign-checkpoint converters: LAVIS, HF BLIP-2 / InstructBLIP, OpenFlamingo / Otter, Cheetah.

The foreign checkpoints are built here in each family's real key layout from tiny modules (the real
releases are gigabytes and not reachable offline); HF ones with transformers' own ``save_pretrained``.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM
from vlm_cases import HF_QFORMER as QFORMER
from vlm_cases import HF_VISION as VISION
from vlm_cases import SLOT, randomize_, xattn_model

from vpgkit.backbones.language import tiny_llama_config
from vpgkit.backbones.vision import (
    Blip2VisionEncoderConfig,
    EvaVisionConfig,
    HFBlip2VisionEncoder,
    TimmEvaEncoder,
)
from vpgkit.checkpoints import (
    CheckpointError,
    cheetah_filter_fn,
    lavis_filter_fn,
    load_cheetah,
    load_hf_blip2,
    load_lavis,
    load_openflamingo,
    openflamingo_filter_fn,
)
from vpgkit.model import VisionLanguageModel
from vpgkit.modules import VPGC, QFormer, QFormerConfig, VPGCConfig

TINY_QF = dict(dropout=0.0, attention_dropout=0.0)


def _model(vision=None, seed=0):
    torch.manual_seed(seed)
    llm = LlamaForCausalLM(tiny_llama_config())
    vpg = QFormer(QFormerConfig.preset("tiny", **TINY_QF))
    vpgc = VPGC.from_qformer(vpg, VPGCConfig.preset("tiny", layer=2))
    return VisionLanguageModel(llm, vision, image_token_id=SLOT, vpg=vpg, vpgc=vpgc)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------------- LAVIS


def _lavis_state(vpg: QFormer, eva: TimmEvaEncoder | None) -> dict[str, torch.Tensor]:
    """A LAVIS BLIP-2 checkpoint's ``model`` dict in LAVIS's names (inverse of the documented map)."""
    state = {"query_tokens": vpg.query_tokens.detach().clone()}
    for k, v in vpg.qformer.state_dict().items():
        k = k.replace("layernorm.", "embeddings.LayerNorm.") if k.startswith("layernorm.") else k
        k = re.sub(r"(attention|crossattention)\.attention\.", r"\1.self.", k)
        state["Qformer.bert." + k] = v.clone()
    h, inter = vpg.config.hidden_size, vpg.config.intermediate_size
    state["opt_proj.weight"] = vpg.language_projection.weight.detach().clone()
    state["opt_proj.bias"] = vpg.language_projection.bias.detach().clone()
    # The text branch and stage-1 heads LAVIS keeps, which vpgkit ignores.
    state["Qformer.bert.embeddings.word_embeddings.weight"] = torch.randn(30, h)
    state["Qformer.bert.embeddings.position_embeddings.weight"] = torch.randn(16, h)
    state["Qformer.bert.embeddings.position_ids"] = torch.arange(16)[None]
    state["Qformer.bert.encoder.layer.0.intermediate.dense.weight"] = torch.randn(inter, h)
    state["Qformer.bert.encoder.layer.0.output.dense.weight"] = torch.randn(h, inter)
    state["Qformer.bert.encoder.layer.0.output.LayerNorm.weight"] = torch.randn(h)
    state["Qformer.cls.predictions.bias"] = torch.randn(30)
    state["vision_proj.weight"] = torch.randn(8, h)
    state["temp"] = torch.tensor(0.07)
    if eva is not None:
        for k, v in eva.state_dict().items():
            state[k] = v.clone()
        for i in range(eva.config.depth):
            state[f"visual_encoder.blocks.{i}.attn.k_bias"] = torch.zeros(eva.width)
        extra = eva.visual_encoder.blocks[0].state_dict()  # EVA-CLIP-g has one block more than BLIP-2 uses
        for k, v in extra.items():
            state[f"visual_encoder.blocks.{eva.config.depth}.{k}"] = v.clone()
    return state


def test_lavis_filter_fn_maps_and_reports_every_key():
    vpg = QFormer(QFormerConfig.preset("tiny"))
    mapped, report = lavis_filter_fn(_lavis_state(vpg, None))
    assert set(mapped) == {"vpg." + k for k in vpg.state_dict()}
    assert report.renamed["Qformer.bert.encoder.layer.0.attention.self.query.weight"] == (
        "vpg.qformer.encoder.layer.0.attention.attention.query.weight"
    )
    assert report.renamed["Qformer.bert.encoder.layer.0.crossattention.self.key.bias"] == (
        "vpg.qformer.encoder.layer.0.crossattention.attention.key.bias"
    )
    assert report.renamed["Qformer.bert.embeddings.LayerNorm.weight"] == "vpg.qformer.layernorm.weight"
    assert report.renamed["opt_proj.weight"] == "vpg.language_projection.weight"
    assert "query-only" in report.ignored["Qformer.bert.encoder.layer.0.intermediate.dense.weight"]
    assert "query-only" in report.ignored["Qformer.bert.embeddings.position_ids"]
    assert "stage-1" in report.ignored["Qformer.cls.predictions.bias"]
    assert not report.unexpected


def test_load_lavis_pth_into_vpg_and_timm_eva_gives_the_same_outputs(tmp_path):
    eva_config = EvaVisionConfig.preset("tiny")
    torch.manual_seed(5)
    source_eva = TimmEvaEncoder(eva_config)
    with torch.no_grad():
        for p in source_eva.parameters():
            p.normal_(std=0.05)
    source_vpg = QFormer(QFormerConfig.preset("tiny", **TINY_QF)).eval()
    torch.save({"model": _lavis_state(source_vpg, source_eva)}, tmp_path / "blip2.pth")

    model = _model(TimmEvaEncoder(eva_config), seed=1)
    report = load_lavis(model, tmp_path / "blip2.pth")
    assert report.ok
    assert _same(model.vpg, source_vpg) and _same(model.vision, source_eva)
    assert "EVA's k bias is a constant zero" in report.ignored["visual_encoder.blocks.0.attn.k_bias"]
    assert "beyond the encoder's depth 2" in report.ignored["visual_encoder.blocks.2.norm1.weight"]
    pixels = torch.randn(1, 1, 3, 28, 28)
    with torch.no_grad():
        expected = source_vpg(source_eva(pixels)).prompts
        assert torch.equal(model.vpg(model.vision(pixels)).prompts, expected)


def test_load_lavis_converts_eva_for_an_hf_vision_encoder_and_skips_it_without_one(tmp_path):
    eva = TimmEvaEncoder(EvaVisionConfig.preset("tiny"))
    vpg = QFormer(QFormerConfig.preset("tiny", **TINY_QF))
    torch.save({"model": _lavis_state(vpg, eva)}, tmp_path / "blip2.pth")
    hf = _model(HFBlip2VisionEncoder(Blip2VisionEncoderConfig.preset("tiny")))
    report = load_lavis(hf, tmp_path / "blip2.pth")
    assert any("HF Blip2VisionModel keys" in n for n in report.notes)
    assert torch.equal(hf.vision.vision_model.post_layernorm.weight, eva.ln_vision.weight)
    no_vision = _model(None)
    report = load_lavis(no_vision, tmp_path / "blip2.pth")
    assert "no vision encoder" in report.ignored["visual_encoder.cls_token"]
    assert _same(no_vision.vpg, vpg)


def test_lavis_unknown_key_and_missing_projection(tmp_path):
    vpg = QFormer(QFormerConfig.preset("tiny"))
    state = _lavis_state(vpg, None)
    state["mystery.weight"] = torch.zeros(1)
    del state["opt_proj.bias"]
    torch.save({"model": state}, tmp_path / "x.pth")
    model = _model()
    before = {k: v.clone() for k, v in model.vpg.state_dict().items()}
    with pytest.raises(
        CheckpointError, match=r"(?s)unknown LAVIS key.*missing 1: vpg.language_projection.bias"
    ):
        load_lavis(model, tmp_path / "x.pth")
    assert all(torch.equal(before[k], v) for k, v in model.vpg.state_dict().items())
    report = load_lavis(model, tmp_path / "x.pth", strict=False)
    assert report.missing == ["vpg.language_projection.bias"] and "mystery.weight" in report.unexpected


class Evil:
    """Any class: unpickling it would run code from this module."""


def test_pth_needing_code_execution_is_refused(tmp_path):
    torch.save({"model": {"query_tokens": torch.zeros(1)}, "extra": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="code execution"):
        load_lavis(_model(), tmp_path / "evil.pth")


def test_truncated_safetensors_checkpoint_names_the_file(tmp_path):
    save_file({"query_tokens": torch.zeros(1, 4, 32)}, tmp_path / "q.safetensors")
    data = (tmp_path / "q.safetensors").read_bytes()
    (tmp_path / "q.safetensors").write_bytes(data[:-40])
    with pytest.raises(CheckpointError, match=r"q\.safetensors.*truncated or corrupt"):
        load_lavis(_model(), tmp_path / "q.safetensors")


def test_shape_mismatch_always_raises(tmp_path):
    vpg = QFormer(QFormerConfig.preset("tiny", num_queries=6))
    torch.save({"model": _lavis_state(vpg, None)}, tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match=r"query_tokens → vpg.query_tokens: checkpoint \(1, 6, 32\)"):
        load_lavis(_model(), tmp_path / "x.pth", strict=False)


# ---------------------------------------------------------------------------- HF BLIP-2 / InstructBLIP


def _hf_repo(tmp_path, instruct: bool):
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        InstructBlipConfig,
        InstructBlipForConditionalGeneration,
    )

    text = LlamaConfig(**{**tiny_llama_config().to_dict(), "num_hidden_layers": 2}).to_dict()
    torch.manual_seed(3)
    if instruct:
        config = InstructBlipConfig(
            vision_config=VISION,
            qformer_config={**QFORMER, "vocab_size": 50},
            text_config=text,
            num_query_tokens=4,
        )
        hf = InstructBlipForConditionalGeneration(config)
    else:
        config = Blip2Config(
            vision_config=VISION, qformer_config=QFORMER, text_config=text, num_query_tokens=4
        )
        hf = Blip2ForConditionalGeneration(config)
    directory = tmp_path / ("instructblip" if instruct else "blip2")
    hf.save_pretrained(directory, max_shard_size="20KB")
    return hf.eval(), directory


def _corrupt_llm_only_shards(directory) -> list[str]:
    weight_map = json.loads((directory / "model.safetensors.index.json").read_text())["weight_map"]
    files: dict[str, set[str]] = {}
    for key, file in weight_map.items():
        files.setdefault(file, set()).add(key.split(".")[0])
    llm_only = sorted(f for f, owners in files.items() if owners == {"language_model"})
    for file in llm_only:
        (directory / file).write_bytes(b"not a safetensors file")  # opening it would fail
    return llm_only


@pytest.mark.parametrize("instruct", [False, True], ids=["blip2", "instructblip"])
def test_hf_blip2_reads_only_vpg_and_vision_shards(tmp_path, instruct):
    hf, directory = _hf_repo(tmp_path, instruct)
    corrupted = _corrupt_llm_only_shards(directory)
    assert corrupted, "the test repo must have shards holding only LLM weights"
    model = _model(HFBlip2VisionEncoder(Blip2VisionEncoderConfig.preset("tiny")), seed=1)
    report = load_hf_blip2(model, directory)
    assert report.ok
    assert torch.equal(model.vpg.query_tokens, hf.query_tokens)
    assert torch.equal(model.vpg.language_projection.weight, hf.language_projection.weight)
    hf_q = {k.replace("embeddings.layernorm", "layernorm"): v for k, v in hf.qformer.state_dict().items()}
    assert all(torch.equal(v, hf_q[k]) for k, v in model.vpg.qformer.state_dict().items())
    assert _same(model.vision.vision_model, hf.vision_model)
    llm_keys = [k for k in report.ignored if k.startswith("language_model.")]
    assert llm_keys and all("not read" in report.ignored[k] for k in llm_keys)
    if instruct:
        reason = report.ignored["qformer.embeddings.word_embeddings.weight"]
        assert "no instruction input" in reason
        assert "no instruction input" in report.ignored["qformer.encoder.layer.0.intermediate.dense.weight"]
        assert "qformer.encoder.layer.0.intermediate_query.dense.weight" in report.renamed
    else:  # the same prompts as HF's own Q-Former path
        pixels = torch.randn(1, 3, 28, 28)
        with torch.no_grad():
            feats = hf.vision_model(pixel_values=pixels).last_hidden_state
            q = hf.qformer(query_embeds=hf.query_tokens.expand(1, -1, -1), encoder_hidden_states=feats)
            expected = hf.language_projection(q.last_hidden_state)
            ours = model.vpg(model.vision(pixels[:, None])).prompts[:, 0]
        torch.testing.assert_close(ours, expected)


def test_hf_blip2_needed_shard_truncated_names_the_file(tmp_path):
    _, directory = _hf_repo(tmp_path, instruct=False)
    weight_map = json.loads((directory / "model.safetensors.index.json").read_text())["weight_map"]
    shard = weight_map["query_tokens"]
    data = (directory / shard).read_bytes()
    (directory / shard).write_bytes(data[: len(data) - 8])
    with pytest.raises(CheckpointError, match=re.escape(shard)):
        load_hf_blip2(_model(), directory)


# ---------------------------------------------------------------------------- OpenFlamingo / Otter


def _openflamingo_state(model) -> dict[str, torch.Tensor]:
    state = {f"perceiver.{k}": v.clone() for k, v in model.perceiver.state_dict().items()}
    for i, block in model.cross_attention.items():
        for k, v in block.state_dict().items():
            state[f"lang_encoder.gated_cross_attn_layers.{i}.{k}"] = v.clone()
            state[f"lang_encoder.model.layers.{i}.gated_cross_attn_layer.{k}"] = v.clone()
    state["lang_encoder.model.layers.0.decoder_layer.self_attn.q_proj.weight"] = torch.zeros(48, 48)
    state["lang_encoder.model.embed_tokens.additional_embedding.weight"] = torch.zeros(2, 48)
    state["vision_encoder.conv1.weight"] = torch.zeros(4, 3, 2, 2)
    return state


def _otter_state(model, prefix) -> dict[str, torch.Tensor]:
    state = {}
    for k, v in model.perceiver.state_dict().items():
        k = re.sub(r"^layers\.(\d+)\.0\.", r"layers.\1.", k)
        k = re.sub(r"^layers\.(\d+)\.1\.", r"layers.\1.feed_forward.", k)
        state[f"{prefix}perceiver.{k}"] = v.clone()
    for i, block in model.cross_attention.items():
        for k, v in block.state_dict().items():
            k = "feed_forward." + k.removeprefix("ff.") if k.startswith("ff.") else k
            state[f"{prefix}lang_encoder.model.layers.{i}.gated_cross_attn_layer.{k}"] = v.clone()
    state[f"{prefix}lang_encoder.model.norm.weight"] = torch.ones(48)
    return state


def test_openflamingo_checkpoint_loads_perceiver_and_blocks(tmp_path):
    source = xattn_model()
    randomize_(source.perceiver, *source.cross_attention.values())
    torch.save(_openflamingo_state(source), tmp_path / "checkpoint.pt")
    model = xattn_model()
    report = load_openflamingo(model, tmp_path / "checkpoint.pt")
    assert report.ok
    assert _same(model.perceiver, source.perceiver) and _same(model.cross_attention, source.cross_attention)
    assert sorted(model.cross_attention) == ["1", "3"]  # only every 2nd layer has a block
    assert report.renamed["lang_encoder.gated_cross_attn_layers.3.attn.to_q.weight"] == (
        "cross_attention.3.attn.to_q.weight"
    )
    dup = "lang_encoder.model.layers.3.gated_cross_attn_layer.ff_gate"
    assert "registers each block twice" in report.ignored[dup]
    frozen = report.ignored["lang_encoder.model.layers.0.decoder_layer.self_attn.q_proj.weight"]
    assert frozen == "frozen LLM, load it from its own checkpoint"
    assert "vision encoder" in report.ignored["vision_encoder.conv1.weight"]


def test_otter_layout_under_a_prefix(tmp_path):
    source = xattn_model()
    randomize_(source.perceiver, *source.cross_attention.values())
    mapped, report = openflamingo_filter_fn(_otter_state(source, "module."), prefix="module.")
    assert not report.unexpected
    assert set(mapped) == {f"perceiver.{k}" for k in source.perceiver.state_dict()} | {
        f"cross_attention.{k}" for k in source.cross_attention.state_dict()
    }
    torch.save(_otter_state(source, "module."), tmp_path / "otter.pt")
    model = xattn_model()
    load_openflamingo(model, tmp_path / "otter.pt", prefix="module.")
    assert _same(model.cross_attention, source.cross_attention) and _same(model.perceiver, source.perceiver)


def test_openflamingo_block_at_a_layer_without_one_is_unexpected(tmp_path):
    source = xattn_model()
    state = _openflamingo_state(source)
    state["lang_encoder.gated_cross_attn_layers.2.attn_gate"] = torch.zeros(1)
    state["perceiver.media_time_embs"] = torch.zeros(4, 1, 32)
    torch.save(state, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="which ModuleDict does not have") as err:
        load_openflamingo(xattn_model(), tmp_path / "c.pt")
    assert "media-time embeddings" in str(err.value)
    report = load_openflamingo(xattn_model(), tmp_path / "c.pt", strict=False)
    assert (
        "cross_attention.2.attn_gate" in report.unexpected["lang_encoder.gated_cross_attn_layers.2.attn_gate"]
    )
    assert "frame / media-time" in report.unexpected["perceiver.media_time_embs"]


# ------------------------------------------------------------------------------------------ Cheetah


def _cheetah_state(vpgc: VPGC, vpg: QFormer, swap_names: bool = False) -> dict[str, torch.Tensor]:
    guidance, output = ("llm_proj", "qformer_proj") if swap_names else ("qformer_proj", "llm_proj")
    return {
        "llama_model.model.query_tokens": vpgc.query_tokens.detach().clone(),
        f"llama_model.model.{guidance}.weight": vpgc.guidance_proj.weight.detach().clone(),
        f"llama_model.model.{guidance}.bias": vpgc.guidance_proj.bias.detach().clone(),
        f"llama_model.model.{output}.weight": vpgc.output_proj.weight.detach().clone(),
        f"llama_model.model.{output}.bias": vpgc.output_proj.bias.detach().clone(),
        "llama_proj.weight": vpg.language_projection.weight.detach().clone(),
        "llama_proj.bias": vpg.language_projection.bias.detach().clone(),
        "query_tokens": vpg.query_tokens.detach().clone(),
        "Qformer.bert.embeddings.LayerNorm.weight": torch.ones(32),
        "llama_model.model.layers.0.self_attn.q_proj.weight": torch.zeros(48, 48),
    }


@pytest.mark.parametrize("swap_names", [False, True], ids=["cheetah-names", "names-swapped"])
def test_cheetah_projections_are_assigned_by_shape(tmp_path, swap_names):
    source = _model(seed=2)
    randomize_(source.vpgc)
    with torch.no_grad():
        source.vpg.language_projection.weight.normal_()
    torch.save({"model": _cheetah_state(source.vpgc, source.vpg, swap_names)}, tmp_path / "cheetah.pth")
    model = _model(seed=4)
    report = load_cheetah(model, tmp_path / "cheetah.pth")
    assert report.ok
    assert _same(model.vpgc, source.vpgc)
    assert torch.equal(model.vpg.language_projection.weight, source.vpg.language_projection.weight)
    guidance = "llm_proj" if swap_names else "qformer_proj"
    assert any(
        n.startswith(f"llama_model.model.{guidance} → vpgc.guidance_proj (weight 32×48: LLM 48 → Q-Former 32")
        for n in report.notes
    )
    assert any("llama_proj → vpg.language_projection" in n for n in report.notes)
    assert "BLIP-2" in report.ignored["query_tokens"]
    assert report.ignored["llama_model.model.layers.0.self_attn.q_proj.weight"].startswith("frozen LLM")


def test_cheetah_checkpoint_without_the_vpgc_is_missing_it():
    vpg = QFormer(QFormerConfig.preset("tiny"))
    mapped, report = cheetah_filter_fn({"llama_proj.weight": vpg.language_projection.weight.detach()}, 32)
    assert set(mapped) == {"vpg.language_projection.weight"}
    from vpgkit.checkpoints import apply_state_dict

    with pytest.raises(CheckpointError, match=r"vpgc\.guidance_proj\.weight"):
        apply_state_dict(_model(), mapped, report, required={"vpgc": "Cheetah's VPG-C"})


def test_converter_loads_into_standalone_modules():
    vpg = QFormer(QFormerConfig.preset("tiny"))
    source = QFormer(QFormerConfig.preset("tiny"))
    mapped, report = lavis_filter_fn(_lavis_state(source, None))
    from vpgkit.checkpoints import apply_state_dict

    apply_state_dict({"vpg": vpg}, mapped, report)
    assert _same(vpg, source)


def test_loaded_safetensors_roundtrip_of_a_lavis_state(tmp_path):
    """LAVIS weights re-saved as safetensors load the same way."""
    source = QFormer(QFormerConfig.preset("tiny"))
    save_file(_lavis_state(source, None), tmp_path / "lavis.safetensors")
    assert "query_tokens" in load_file(tmp_path / "lavis.safetensors")
    model = _model()
    load_lavis(model, tmp_path / "lavis.safetensors")
    assert _same(model.vpg, source)
