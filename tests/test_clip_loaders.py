"""CLIP vision encoders load real on-disk formats and give the originals' features.

open_clip (OpenFlamingo's encoder) and transformers' CLIPVisionModel (Otter's) are the references; the
tiny open_clip checkpoints are written by open_clip's own model, the HF directories by ``save_pretrained``.
"""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModel
from vlm_cases import HF_VISION

from vpgkit.backbones import CLIPVisionEncoderConfig, HFCLIPVisionEncoder
from vpgkit.backbones.clip_vision import open_clip_to_hf_clip_vision
from vpgkit.checkpoints import CheckpointError
from vpgkit.config import ModelConfig, VisionConfig
from vpgkit.training.build import build_vision

TINY = dict(image_size=28, patch_size=14, width=32, depth=2, num_heads=4, mlp_dim=64)


def _open_clip_file(tmp_path, quick_gelu: bool, fmt: str):
    import open_clip
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(3)
    clip = open_clip.CLIP(
        embed_dim=16,
        vision_cfg=CLIPVisionCfg(
            layers=2, width=32, head_width=8, mlp_ratio=2.0, patch_size=14, image_size=28
        ),
        text_cfg=CLIPTextCfg(context_length=8, vocab_size=64, width=16, heads=2, layers=1),
        quick_gelu=quick_gelu,
    ).eval()
    with torch.no_grad():  # move the norms off their identity init
        for name, p in clip.visual.named_parameters():
            if "ln" in name:
                p.add_(0.1 * torch.randn_like(p))
    state = {k: v.contiguous() for k, v in clip.state_dict().items()}
    path = tmp_path / (
        "open_clip_model.safetensors" if fmt == "safetensors" else "open_clip_pytorch_model.bin"
    )
    save_file(state, path) if fmt == "safetensors" else torch.save(state, path)
    clip.visual.output_tokens = True
    return clip.visual, path


@pytest.mark.parametrize("quick_gelu", [False, True], ids=["gelu", "quick_gelu"])
@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_open_clip_checkpoint_gives_open_clip_tokens(tmp_path, quick_gelu, fmt):
    visual, path = _open_clip_file(tmp_path, quick_gelu, fmt)
    config = CLIPVisionEncoderConfig(**TINY, hidden_act="quick_gelu" if quick_gelu else "gelu")
    encoder = HFCLIPVisionEncoder.from_open_clip(path, config)
    pixels = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        expected = visual(pixels)[1]  # the tokens OpenFlamingo reads (after ln_post, CLS dropped)
    ours = encoder(pixels[:, None])[:, 0]
    assert ours.shape == expected.shape == (2, 4, 32)
    assert (ours - expected).abs().max() <= 1e-5
    # The wrong activation is caught by the comparison (a guessed config cannot pass silently).
    other = CLIPVisionEncoderConfig(**TINY, hidden_act="gelu" if quick_gelu else "quick_gelu")
    wrong = HFCLIPVisionEncoder.from_open_clip(path, other)(pixels[:, None])[:, 0]
    assert (wrong - expected).abs().max() > 1e-4


def test_open_clip_key_map_reports_what_it_ignores(tmp_path):
    _, path = _open_clip_file(tmp_path, False, "bin")
    state = torch.load(path, weights_only=True)
    mapped, ignored = open_clip_to_hf_clip_vision(state)
    assert "projection to the joint image-text space" in ignored["visual.proj"]
    assert "text tower" in ignored["token_embedding.weight"]
    q, k, v = state["visual.transformer.resblocks.1.attn.in_proj_weight"].chunk(3)
    for name, part in (("q", q), ("k", k), ("v", v)):
        assert torch.equal(mapped[f"encoder.layers.1.self_attn.{name}_proj.weight"], part)
    assert torch.equal(mapped["pre_layrnorm.weight"], state["visual.ln_pre.weight"])
    state["visual.attn_pool.query"] = torch.zeros(1, 32)
    torch.save(state, tmp_path / "pool.bin")
    with pytest.raises(CheckpointError, match=r"pool\.bin.*visual\.attn_pool\.query"):
        HFCLIPVisionEncoder.from_open_clip(tmp_path / "pool.bin", CLIPVisionEncoderConfig(**TINY))
    with pytest.raises(CheckpointError, match=r"does not fit.*shape mismatches"):
        HFCLIPVisionEncoder.from_open_clip(path, CLIPVisionEncoderConfig(**{**TINY, "mlp_dim": 128}))


def _hf_vision(hidden_act="quick_gelu"):
    torch.manual_seed(4)
    config = CLIPVisionConfig(**HF_VISION, hidden_act=hidden_act)
    model = CLIPVisionModel(config).eval()
    with torch.no_grad():
        model.post_layernorm.weight.add_(0.3)
    return model


@pytest.mark.parametrize("post_layernorm", [False, True], ids=["otter", "openflamingo"])
def test_hf_clip_vision_directory(tmp_path, post_layernorm):
    hf = _hf_vision()
    hf.save_pretrained(tmp_path / "clip")
    encoder = HFCLIPVisionEncoder.from_pretrained(tmp_path / "clip", post_layernorm=post_layernorm)
    assert encoder.config.width == 32 and encoder.config.hidden_act == "quick_gelu"
    pixels = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        tokens = hf(pixel_values=pixels).last_hidden_state[:, 1:]  # what Otter reads
        expected = hf.post_layernorm(tokens) if post_layernorm else tokens
    assert (encoder(pixels[:, None])[:, 0] - expected).abs().max() <= 1e-5


def test_hf_clip_model_directory_gives_its_vision_tower(tmp_path):
    torch.manual_seed(5)
    vision = _hf_vision().config.to_dict()
    full = CLIPModel(
        CLIPConfig(
            vision_config=vision,
            text_config=dict(
                hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
            ),
            projection_dim=8,
        )
    ).eval()
    full.save_pretrained(tmp_path / "clip_full")
    encoder = HFCLIPVisionEncoder.from_pretrained(tmp_path / "clip_full", post_layernorm=False)
    pixels = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        expected = full.vision_model(pixel_values=pixels).last_hidden_state[:, 1:]
    assert (encoder(pixels[:, None])[:, 0] - expected).abs().max() <= 1e-5
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        HFCLIPVisionEncoder.from_pretrained(tmp_path)


def test_build_vision_loads_clip_checkpoints_and_says_when_it_is_random(tmp_path, caplog):
    _hf_vision().save_pretrained(tmp_path / "clip")
    visual, path = _open_clip_file(tmp_path, False, "safetensors")
    from_dir = build_vision(
        ModelConfig(vision=VisionConfig(kind="hf_clip", preset="tiny", checkpoint=str(tmp_path / "clip")))
    )
    assert torch.equal(
        from_dir.vision_model.embeddings.class_embedding,
        _hf_vision().embeddings.class_embedding,
    )
    cfg = VisionConfig(kind="hf_clip", preset="tiny", checkpoint=str(path), overrides={"hidden_act": "gelu"})
    from_file = build_vision(ModelConfig(vision=cfg))
    pixels = torch.randn(1, 1, 3, 28, 28)
    with torch.no_grad():
        assert (from_file(pixels)[:, 0] - visual(pixels[:, 0])[1]).abs().max() <= 1e-5
    with caplog.at_level(logging.WARNING, logger="vpgkit.training.build"):
        build_vision(ModelConfig(vision=VisionConfig(kind="hf_clip", preset="tiny")))
    assert "RANDOM weights" in caplog.text
