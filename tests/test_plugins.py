"""Every plug-in composition of the shared matrix (vlm_cases.PLUGIN_CASES): exact at init, KV-cache
generation equal to uncached, only its weights train, adapter round trip; plus the registry and errors."""

from __future__ import annotations

import pytest
import torch
from vlm_cases import (
    PLUGIN_CASES,
    SLOT,
    greedy_without_cache,
    plugin_batch,
    plugin_model,
    plugin_prompts,
    randomize_all_,
    tiny_llm,
)

from vpgkit import count_parameters
from vpgkit.checkpoints import load_adapter, save_adapter
from vpgkit.config import ModelConfig, PluginSpec
from vpgkit.model import VisionLanguageModel
from vpgkit.plugins import PLUGINS
from vpgkit.training.build import build_plugins

COMPLETERS = sorted(name for name, case in PLUGIN_CASES.items() if case.completer)


def _trainables(model, name: str) -> None:
    """Non-zero values for the zero-initialised trainable weights (as after some training)."""
    for slot in PLUGIN_CASES[name].trains:
        randomize_all_(getattr(model, slot), seed=11)


def _model(name: str, **kwargs):
    return plugin_model(PLUGIN_CASES[name], **kwargs)


@pytest.mark.parametrize("name", COMPLETERS)
def test_completer_at_init_leaves_logits_identical_to_the_model_without_it(name):
    case = PLUGIN_CASES[name]
    model, base = _model(name), _model(name, without=case.completer)
    batch = plugin_batch(model)
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, base(**batch).logits)
        _trainables(model, name)  # and the hook really fires once its weights are non-zero
        assert not torch.equal(model(**batch).logits, base(**batch).logits)


@pytest.mark.parametrize("name", sorted(PLUGIN_CASES))
def test_greedy_generation_with_kv_cache_equals_without(name):
    model = _model(name)
    _trainables(model, name)
    input_ids, attention_mask, vision, _ = plugin_prompts(model)
    args = dict(vision_features=vision, max_new_tokens=5, do_sample=False, pad_token_id=0, eos_token_id=None)
    cached = model.generate(input_ids, attention_mask, **args)
    with torch.no_grad():
        uncached = greedy_without_cache(model, input_ids, attention_mask, vision, steps=5)
    assert cached.shape == (2, 5) and torch.equal(cached, uncached)


@pytest.mark.parametrize("name", sorted(PLUGIN_CASES))
def test_only_the_plugins_weights_get_gradients_and_frozen_weights_never_move(name):
    model = _model(name).train()
    _trainables(model, name)
    trains = PLUGIN_CASES[name].trains
    expected = {n for n, _ in model.named_parameters() if n.split(".")[0] in trains}
    assert set(model.trainable_parameters()) == expected and expected
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.AdamW(model.trainable_parameters().values(), lr=1e-2)
    model(**plugin_batch(model)).loss.backward()
    assert {n for n, p in model.named_parameters() if p.grad is not None} == expected
    optimizer.step()
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)


@pytest.mark.parametrize("name", sorted(PLUGIN_CASES))
def test_adapter_round_trip_gives_the_same_logits(name, tmp_path):
    model = _model(name)
    _trainables(model, name)
    save_adapter(model, tmp_path / "a")
    fresh = _model(name)
    report = load_adapter(fresh, tmp_path / "a")
    assert report.ok and len(report.loaded) == len(model.trainable_parameters())
    batch = plugin_batch(model)
    with torch.no_grad():
        assert torch.equal(fresh(**batch).logits, model(**batch).logits)


# --- registry and composition errors -------------------------------------------------------------------


def test_every_registered_plugin_has_a_slot_config_and_a_case_in_the_matrix():
    used = {spec.name for case in PLUGIN_CASES.values() for spec in case.plugins}
    built_in = {name: cls for name, cls in PLUGINS.items() if cls.__module__.startswith("vpgkit.")}
    for name, cls in built_in.items():
        assert cls.name == name and cls.slot and cls.config_class.PRESETS
    assert set(built_in) - used == set(), "a built-in plug-in has no line in vlm_cases.PLUGIN_CASES"


def test_keyword_form_and_plugin_list_build_the_same_model():
    (vpg_plugin,) = build_plugins(ModelConfig(vpg="tiny"))
    a = VisionLanguageModel(tiny_llm(), image_token_id=SLOT, plugins=[vpg_plugin])
    b = VisionLanguageModel(tiny_llm(), image_token_id=SLOT, vpg=vpg_plugin.module)
    assert [p.name for p in a.plugins] == [p.name for p in b.plugins] == ["qformer"]
    assert b.vpgc is None and b.perceiver is None  # registered slots the model lacks read as None


def test_composition_errors_name_the_plugin():
    (projector,) = build_plugins(
        ModelConfig(vpg=None, plugins=[PluginSpec(name="mlp_projector", preset="tiny")])
    )
    _, vpgc = build_plugins(ModelConfig(vpg="tiny", vpgc="tiny"))
    with pytest.raises(ValueError, match=r"'vpgc' needs a plug-in providing \['qformer'\]"):
        VisionLanguageModel(tiny_llm(), image_token_id=SLOT, plugins=[projector, vpgc])
    with pytest.raises(ValueError, match="vpgc: needs a plug-in providing a Q-Former"):
        build_plugins(ModelConfig(vpg=None, vpgc="tiny"))
    plugins = build_plugins(ModelConfig(vpg=None, plugins=[PluginSpec(name="perceiver", preset="tiny")]))
    with pytest.raises(ValueError, match=r"'perceiver' needs a plug-in providing \['reads_media'\]"):
        VisionLanguageModel(tiny_llm(), image_token_id=SLOT, plugins=plugins)
    with pytest.raises(ValueError, match="exactly one plug-in that brings images"):
        VisionLanguageModel(tiny_llm(), image_token_id=SLOT, plugins=[])
    with pytest.raises(TypeError, match="unknown keyword 'resampler'"):
        VisionLanguageModel(tiny_llm(), image_token_id=SLOT, resampler=torch.nn.Linear(1, 1))
    with pytest.raises(ValueError, match="unknown plug-in 'nope'"):
        build_plugins(ModelConfig(vpg=None, plugins=[PluginSpec(name="nope")]))


def test_mlp_projector_count_at_llava15_shapes():
    from vpgkit.plugins.mlp_projector import MLPProjector, MLPProjectorConfig

    with torch.device("meta"):
        counts = count_parameters(MLPProjector(MLPProjectorConfig.preset("llava15_7b")))
    assert counts["total"] == 1024 * 4096 + 4096 + 4096 * 4096 + 4096 == 20_979_712


@pytest.mark.parametrize("name", ["qformer_vpgc", "perceiver_xattn"])
def test_adapter_in_the_layout_before_plugins_still_loads(name, tmp_path):
    """Adapters written before the plug-in protocol: ``modules`` had exactly these five keys (null when
    unused) and there was no ``plugins`` entry; the weight keys were the same ``<slot>.*``."""
    import json

    model = _model(name)
    _trainables(model, name)
    save_adapter(model, tmp_path / "a")
    path = tmp_path / "a" / "vpgkit_config.json"
    config = json.loads(path.read_text())
    del config["plugins"]
    old_keys = ("vpg", "vpgc", "perceiver", "cross_attention", "added_tokens")
    config["modules"] = {k: config["modules"].get(k) for k in old_keys}
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    fresh = _model(name)
    assert load_adapter(fresh, tmp_path / "a").ok
    batch = plugin_batch(model)
    with torch.no_grad():
        assert torch.equal(fresh(**batch).logits, model(**batch).logits)


def test_media_residual_of_layer_k_reaches_only_the_blocks_after_it():
    from vpgkit.attach import VisualContext

    media, residual = torch.randn(1, 1, 8, 32), torch.randn(1, 1, 8, 32)
    context = VisualContext(seq_len=4, media=media, media_residuals={2: residual})
    assert context.media_at(1) is media and context.media_at(2) is media
    assert torch.equal(context.media_at(3), media + residual)


def test_perceiver_vpgc_residual_follows_the_guidance_unless_ablated():
    from module_cases import randomize

    from vpgkit.modules import PerceiverConfig, PerceiverResampler
    from vpgkit.plugins.perceiver_vpgc import PerceiverVPGC, PerceiverVPGCConfig

    perceiver = PerceiverResampler(PerceiverConfig.preset("tiny")).requires_grad_(False)
    vpgc = randomize(PerceiverVPGC.from_perceiver(perceiver, PerceiverVPGCConfig.preset("tiny")))
    guidance, vision = torch.randn(2, 48), torch.randn(2, 1, 10, 32)
    assert not torch.allclose(vpgc(guidance, vision, perceiver), vpgc(2 * guidance, vision, perceiver))
    vpgc.config.guidance = False  # the no-guidance ablation: the extra query is the projection's bias
    torch.testing.assert_close(vpgc(guidance, vision, perceiver), vpgc(2 * guidance, vision, perceiver))


def test_recipe_validation_names_the_plugin_before_anything_is_built():
    from vpgkit.config import TrainConfig
    from vpgkit.training.preflight import check_config

    bad = {
        "unknown plug-in 'nope'": [PluginSpec(name="nope")],
        r"model.plugins\[0\]: plug-in 'mlp_projector': .*preset 'huge'": [
            PluginSpec(name="mlp_projector", preset="huge")
        ],
        r"plug-in 'mlp_projector': .*'widht'": [PluginSpec(name="mlp_projector", overrides={"widht": 3})],
        "exactly one of name": [PluginSpec(name="qformer", _target_="x.Y")],
    }
    for message, plugins in bad.items():
        cfg = TrainConfig()
        cfg.model.plugins = plugins
        with pytest.raises(ValueError, match=message):
            check_config(cfg)
    cfg = TrainConfig()
    cfg.model.vpgc_layer, cfg.model.vpgc = 9, "nonexistent"
    with pytest.raises(ValueError, match=r"model: plug-in 'vpgc': .*unknown preset 'nonexistent'"):
        check_config(cfg)
