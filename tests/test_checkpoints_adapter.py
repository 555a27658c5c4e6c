"""Adapter checkpoints: round trips, base fingerprint, strictness, atomic writes, LoRA, bad files."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from vlm_cases import randomize_, vpgc_batch, vpgc_model, xattn_batch, xattn_model

import vpgkit
from vpgkit.checkpoints import CheckpointError, adapter_config, load_adapter, read_config, save_adapter
from vpgkit.checkpoints import adapter as adapter_mod


def _trained_vpgc(family="llama", layer=2):
    model = vpgc_model(family, layer=layer)
    randomize_(model.vpgc)
    return model


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def _weights(model):
    return {k: v.detach().clone() for k, v in model.trainable_parameters().items()}


def test_vpgc_round_trip_gives_identical_logits(tmp_path):
    model = _trained_vpgc()
    save_adapter(model, tmp_path / "adapter")
    fresh = vpgc_model()
    batch = vpgc_batch()
    assert not torch.equal(_logits(fresh, batch), _logits(model, batch))
    report = vpgkit.load_adapter(fresh, tmp_path / "adapter")
    assert torch.equal(_logits(fresh, batch), _logits(model, batch))
    assert sorted(report.loaded) == sorted(model.trainable_parameters())
    assert report.ok and not report.ignored


def test_cross_attention_round_trip(tmp_path):
    model = xattn_model()
    randomize_(model.perceiver, *model.cross_attention.values())
    save_adapter(model, tmp_path / "a")
    fresh = xattn_model()
    load_adapter(fresh, tmp_path / "a")
    batch = xattn_batch()
    assert torch.equal(_logits(fresh, batch), _logits(model, batch))


def test_files_hold_exactly_the_trainable_parameters_and_a_derived_config(tmp_path):
    model = _trained_vpgc()
    save_adapter(model, tmp_path / "a")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["adapter.safetensors", "vpgkit_config.json"]
    tensors = load_file(tmp_path / "a" / "adapter.safetensors")
    assert set(tensors) == set(model.trainable_parameters())
    config = json.loads((tmp_path / "a" / "vpgkit_config.json").read_text())
    assert config["schema_version"] == adapter_mod.SCHEMA_VERSION
    assert config["modules"]["vpgc"] == model.vpgc.config.to_dict()
    assert config["modules"]["vpg"] == model.vpg.config.to_dict()
    assert config["modules"]["perceiver"] is None
    assert config["image_token_id"] == model.image_token_id
    assert config["trainable"]["parts"] == ["vpgc"]
    assert config["trainable"]["parameters"] == vpgkit.count_parameters(model)["trainable"]
    llm = config["base"]["llm"]
    assert (llm["model_type"], llm["hidden_size"], llm["num_hidden_layers"], llm["vocab_size"]) == (
        "llama",
        48,
        4,
        128,
    )


def test_another_base_fails_before_any_weight_is_touched(tmp_path):
    save_adapter(_trained_vpgc("llama"), tmp_path / "a")
    other = vpgc_model("qwen2")
    before = _weights(other)
    with pytest.raises(CheckpointError) as err:
        load_adapter(other, tmp_path / "a")
    message = str(err.value)
    assert "adapter was trained on llama hidden 48 × 4 layers" in message
    assert "this model is qwen2 hidden 48 × 4 layers" in message
    assert all(torch.equal(before[k], v) for k, v in _weights(other).items())


def test_another_width_fails_naming_both(tmp_path):
    from transformers import LlamaForCausalLM

    from vpgkit.backbones.language import tiny_llama_config
    from vpgkit.model import VisionLanguageModel
    from vpgkit.modules import VPGC, QFormer, QFormerConfig, VPGCConfig

    save_adapter(_trained_vpgc(), tmp_path / "a")
    llm = LlamaForCausalLM(tiny_llama_config(hidden_size=64, num_hidden_layers=2))
    vpg = QFormer(QFormerConfig.preset("tiny", llm_width=64))
    wide = VisionLanguageModel(
        llm, image_token_id=3, vpg=vpg, vpgc=VPGC.from_qformer(vpg, VPGCConfig.preset("tiny", llm_width=64))
    )
    with pytest.raises(
        CheckpointError, match=r"hidden 48 × 4 layers.*this model is llama hidden 64 × 2 layers"
    ):
        load_adapter(wide, tmp_path / "a")


def test_other_schema_version_is_a_clear_error(tmp_path):
    save_adapter(_trained_vpgc(), tmp_path / "a")
    path = tmp_path / "a" / "vpgkit_config.json"
    config = json.loads(path.read_text())
    config["schema_version"] = 99
    path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"schema_version 99.*reads schema_version 1"):
        read_config(tmp_path / "a")
    with pytest.raises(CheckpointError, match="schema_version 99"):
        load_adapter(vpgc_model(), tmp_path / "a")


def test_differing_module_config_is_refused_when_strict(tmp_path):
    save_adapter(_trained_vpgc(layer=2), tmp_path / "a")
    other = vpgc_model(layer=1)
    with pytest.raises(CheckpointError, match=r"vpgc.layer: adapter 2, model 1"):
        load_adapter(other, tmp_path / "a")
    report = load_adapter(other, tmp_path / "a", strict=False)
    assert any("vpgc.layer" in n for n in report.notes)


def test_init_only_config_fields_do_not_block_loading(tmp_path):
    """VPG-C's guidance_init_std only draws the initial weights, which the adapter overwrites; an adapter
    saved before the field existed (its config lacks it) loads into a model that sets it."""
    model = _trained_vpgc()
    save_adapter(model, tmp_path / "a")
    config_file = tmp_path / "a" / "vpgkit_config.json"
    config = json.loads(config_file.read_text())
    del config["modules"]["vpgc"]["guidance_init_std"]
    config_file.write_text(json.dumps(config))
    fresh = vpgc_model()
    fresh.vpgc.config.guidance_init_std = 0.02
    report = load_adapter(fresh, tmp_path / "a")
    assert report.ok and not report.notes
    batch = vpgc_batch()
    assert torch.equal(_logits(fresh, batch), _logits(model, batch))


def test_missing_and_unexpected_keys_raise_unless_not_strict(tmp_path):
    model = _trained_vpgc()
    save_adapter(model, tmp_path / "a")
    weights = tmp_path / "a" / "adapter.safetensors"
    tensors = load_file(weights)
    del tensors["vpgc.output_proj.bias"]
    tensors["vpgc.extra"] = torch.zeros(2)
    save_file(tensors, weights)
    fresh = vpgc_model()
    before = _weights(fresh)
    with pytest.raises(
        CheckpointError, match=r"(?s)unexpected 1.*vpgc.extra.*missing 1: vpgc.output_proj.bias"
    ):
        load_adapter(fresh, tmp_path / "a")
    assert all(torch.equal(before[k], v) for k, v in _weights(fresh).items())
    report = load_adapter(fresh, tmp_path / "a", strict=False)
    assert report.missing == ["vpgc.output_proj.bias"]
    assert list(report.unexpected) == ["vpgc.extra"]
    assert torch.equal(fresh.vpgc.guidance_proj.weight, model.vpgc.guidance_proj.weight)
    assert torch.equal(fresh.vpgc.output_proj.bias, before["vpgc.output_proj.bias"])


def test_shape_mismatch_always_raises(tmp_path):
    save_adapter(_trained_vpgc(), tmp_path / "a")
    weights = tmp_path / "a" / "adapter.safetensors"
    tensors = load_file(weights)
    tensors["vpgc.query_tokens"] = torch.zeros(1, 5, 32)
    save_file(tensors, weights)
    fresh = vpgc_model()
    before = _weights(fresh)
    with pytest.raises(CheckpointError, match=r"vpgc.query_tokens: adapter \(1, 5, 32\), model \(1, 4, 32\)"):
        load_adapter(fresh, tmp_path / "a", strict=False)
    assert all(torch.equal(before[k], v) for k, v in _weights(fresh).items())


def test_truncated_weights_file_is_an_error_naming_it(tmp_path):
    save_adapter(_trained_vpgc(), tmp_path / "a")
    weights = tmp_path / "a" / "adapter.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"adapter\.safetensors.*truncated or corrupt"):
        load_adapter(vpgc_model(), tmp_path / "a")


def test_failed_save_leaves_the_existing_adapter_and_no_temporary_files(tmp_path, monkeypatch):
    first = _trained_vpgc()
    save_adapter(first, tmp_path / "a")
    original = {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()}

    def crash(tensors, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", crash)
    second = _trained_vpgc()
    randomize_(second.vpgc)
    with pytest.raises(OSError, match="disk full"):
        save_adapter(second, tmp_path / "a")
    assert {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()} == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no .a.tmp-* left behind


def test_an_existing_adapter_is_replaced_after_the_new_one_is_complete(tmp_path):
    save_adapter(_trained_vpgc(), tmp_path / "a")
    newer = _trained_vpgc()
    with torch.no_grad():
        newer.vpgc.output_proj.bias.fill_(0.25)
    save_adapter(newer, tmp_path / "a")
    assert torch.equal(
        load_file(tmp_path / "a" / "adapter.safetensors")["vpgc.output_proj.bias"],
        newer.vpgc.output_proj.bias,
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_refuses_to_replace_a_directory_that_is_not_an_adapter(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="refusing to replace"):
        save_adapter(_trained_vpgc(), tmp_path / "a")
    assert (tmp_path / "a" / "notes.txt").read_text() == "mine"


def test_lora_goes_to_lora_dir_in_peft_format_and_loads_back(tmp_path):
    from peft import LoraConfig

    model = _trained_vpgc()
    model.add_lora(LoraConfig(r=2, target_modules=["q_proj", "v_proj"], lora_alpha=4))
    with torch.no_grad():
        for name, p in model.llm.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.1)
    save_adapter(model, tmp_path / "a")
    assert (tmp_path / "a" / "lora" / "adapter_config.json").is_file()
    tensors = load_file(tmp_path / "a" / "adapter.safetensors")
    assert set(tensors) == {k for k in model.trainable_parameters() if not k.startswith("llm.")}
    assert adapter_config(model)["trainable"]["lora"] is True
    batch = vpgc_batch()
    fresh = vpgc_model()  # no LoRA yet: load_adapter wraps the LLM with peft
    report = load_adapter(fresh, tmp_path / "a")
    assert any("LoRA" in entry for entry in report.loaded)
    assert torch.allclose(_logits(fresh, batch), _logits(model, batch), atol=1e-6)
    # Into a model that already has the same LoRA config.
    again = vpgc_model()
    again.add_lora(LoraConfig(r=2, target_modules=["q_proj", "v_proj"], lora_alpha=4))
    load_adapter(again, tmp_path / "a")
    assert torch.allclose(_logits(again, batch), _logits(model, batch), atol=1e-6)


def test_lora_model_without_lora_in_the_adapter_is_missing_when_strict(tmp_path):
    from peft import LoraConfig

    save_adapter(_trained_vpgc(), tmp_path / "a")
    model = vpgc_model()
    model.add_lora(LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(CheckpointError, match="LoRA"):
        load_adapter(model, tmp_path / "a")


def test_not_an_adapter_nor_a_repo_id(tmp_path):
    with pytest.raises(CheckpointError, match="not a vpgkit adapter"):
        load_adapter(vpgc_model(), tmp_path)
    with pytest.raises(CheckpointError, match="nor a hub repo id"):
        load_adapter(vpgc_model(), "no such/dir/here")
