"""A checkpoint written by OpenFlamingo's own trainer code, loaded into vpgkit: the same logits.

The reference is OpenFlamingo 2.0.1 itself (``tests/openflamingo_reference.py``): its ``Flamingo`` model
around a tiny fp32 LLaMA and a tiny open_clip ViT, its ``filter_state_dict_to_trainable`` writing the
checkpoint, non-zero gates and trained embeddings.
"""

from __future__ import annotations

import pytest
import torch
from openflamingo_reference import (
    BASE_VOCAB,
    EOC,
    MEDIA,
    OF_TOKENS,
    VIS_WIDTH,
    base_llm_state,
    tiny_open_clip,
    trained_openflamingo,
)
from transformers import LlamaForCausalLM

from vpgkit.backbones.language import tiny_llama_config
from vpgkit.checkpoints import CheckpointError, load_adapter, load_openflamingo, save_adapter
from vpgkit.model import VisionLanguageModel
from vpgkit.modules import GatedCrossAttentionConfig, PerceiverConfig, PerceiverResampler
from vpgkit.tokens import AddedTokens


def vpgkit_model(tied: bool, added: bool = True) -> VisionLanguageModel:
    """vpgkit's composition at OpenFlamingo's module defaults (8 heads × 64, 64 latents, depth 6)."""
    llm = LlamaForCausalLM(tiny_llama_config(vocab_size=BASE_VOCAB, tie_word_embeddings=tied))
    llm.load_state_dict(base_llm_state(tied))
    tokens = AddedTokens.for_llm(llm, OF_TOKENS) if added else None
    return VisionLanguageModel(
        llm,
        image_token_id=MEDIA,
        perceiver=PerceiverResampler(PerceiverConfig(width=VIS_WIDTH)),
        cross_attention=GatedCrossAttentionConfig(width=48, media_width=VIS_WIDTH, every=2),
        added_tokens=tokens,
    )


def batch(seed: int = 0):
    """Two rows, two images each, interleaved text with <image> and <|endofchunk|> as OpenFlamingo writes it."""
    g = torch.Generator().manual_seed(seed)
    t = lambda n: torch.randint(4, BASE_VOCAB, (n,), generator=g).tolist()  # noqa: E731
    rows = [
        [1, MEDIA, *t(3), EOC, MEDIA, *t(4), EOC],
        [1, *t(2), MEDIA, *t(2), EOC, MEDIA, *t(3), EOC],
    ]
    ids = torch.tensor(rows)
    pixels = torch.randn(2, 2, 1, 3, 28, 28, generator=g)  # (B, T_img, F, 3, H, W)
    return ids, pixels


def clip_features(pixels: torch.Tensor) -> torch.Tensor:
    """(B, T_img, N_v, D_v) patch tokens as OpenFlamingo's ``_encode_vision_x`` reads them."""
    visual = tiny_open_clip().visual
    visual.output_tokens = True
    b, t = pixels.shape[:2]
    with torch.no_grad():
        tokens = visual(pixels.flatten(0, 2))[1]
    return tokens.reshape(b, t, *tokens.shape[1:])


@pytest.mark.parametrize("tied", [True, False], ids=["tied-lm", "untied-lm"])
def test_openflamingo_checkpoint_gives_openflamingo_logits(tmp_path, tied):
    reference, state = trained_openflamingo(tied)
    torch.save({"epoch": 0, "model_state_dict": state}, tmp_path / "checkpoint_0.pt")
    ids, pixels = batch()
    with torch.no_grad():
        expected = reference(vision_x=pixels, lang_x=ids, attention_mask=torch.ones_like(ids)).logits

    model = vpgkit_model(tied)
    report = load_openflamingo(model, tmp_path / "checkpoint_0.pt")
    assert report.ok, report.summary()
    gates = [float(b.attn_gate.detach()) for b in model.cross_attention.values()]
    assert all(g >= 0.3 for g in gates), gates  # the comparison runs with open gates
    # The embedding rows are loaded and reported: the whole trained matrix into the LLM, the added rows
    # into the adapter's rows.
    embed_key = "lang_encoder.model.embed_tokens.weight"
    assert report.renamed[embed_key] == "embed_tokens.weight" and "embed_tokens.weight" in report.loaded
    assert "added_tokens.input_rows" in report.loaded
    assert any("trained matrix (131 × 48) was loaded into the LLM" in n for n in report.notes)
    trained = state[embed_key]
    assert torch.equal(model.llm.get_input_embeddings().weight, trained)
    assert torch.equal(model.added_tokens.input_rows, trained[BASE_VOCAB:])
    if tied:
        assert "tied output copy" in report.ignored["lang_encoder.lm_head.weight"]
    else:
        assert any("LM head: not in the checkpoint" in n for n in report.notes)

    with torch.no_grad():
        logits = model(ids, vision_features=clip_features(pixels)).logits
    assert logits.shape == expected.shape == (2, ids.shape[1], BASE_VOCAB + len(OF_TOKENS))
    if tied:
        torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
    else:
        # OpenFlamingo leaves an untied LM head's new rows at their random resize init and never saves
        # them: the logits of the added tokens cannot come from the release; every other logit can.
        torch.testing.assert_close(logits[..., :BASE_VOCAB], expected[..., :BASE_VOCAB], atol=1e-5, rtol=0)
    # Without the trained embeddings (the old converter's behaviour) the logits are far off.
    stale = vpgkit_model(tied)
    load_openflamingo(stale, tmp_path / "checkpoint_0.pt", embeddings="added")
    with torch.no_grad():
        off = stale(ids, vision_features=clip_features(pixels)).logits
    assert (off[..., :BASE_VOCAB] - expected[..., :BASE_VOCAB]).abs().max() > 1e-2


def test_openflamingo_checkpoint_needs_the_added_tokens(tmp_path):
    _, state = trained_openflamingo(tied=False)
    torch.save({"model_state_dict": state}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match=r"131 rows, the model's LLM 128.*AddedTokens"):
        load_openflamingo(vpgkit_model(tied=False, added=False), tmp_path / "c.pt")


def test_added_rows_travel_with_the_adapter(tmp_path):
    """After the import, save_adapter stores the added rows only; a fresh model gets them back."""
    _, state = trained_openflamingo(tied=True)
    torch.save({"model_state_dict": state}, tmp_path / "c.pt")
    model = vpgkit_model(tied=True)
    load_openflamingo(model, tmp_path / "c.pt", embeddings="added")
    save_adapter(model, tmp_path / "adapter")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "adapter" / "adapter.safetensors"), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    assert shapes["added_tokens.input_rows"] == (3, 48)
    assert not any("embed" in k or "lm_head" in k for k in shapes)

    fresh = vpgkit_model(tied=True)
    load_adapter(fresh, tmp_path / "adapter")
    ids, pixels = batch(1)
    feats = clip_features(pixels)
    with torch.no_grad():
        torch.testing.assert_close(
            fresh(ids, vision_features=feats).logits, model(ids, vision_features=feats).logits
        )


def test_from_pixels_through_the_open_clip_checkpoint(tmp_path):
    """The whole OpenFlamingo pipeline: open_clip weights from disk, checkpoint, pixels → the same logits."""
    from vpgkit.backbones import CLIPVisionEncoderConfig, HFCLIPVisionEncoder

    reference, state = trained_openflamingo(tied=True)
    torch.save({"model_state_dict": state}, tmp_path / "checkpoint.pt")
    torch.save(tiny_open_clip().state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    clip = CLIPVisionEncoderConfig(
        image_size=28, patch_size=14, width=VIS_WIDTH, depth=2, num_heads=4, mlp_dim=64, hidden_act="gelu"
    )
    model = vpgkit_model(tied=True)
    model.vision = HFCLIPVisionEncoder.from_open_clip(tmp_path / "open_clip_pytorch_model.bin", clip)
    assert load_openflamingo(model, tmp_path / "checkpoint.pt").ok
    ids, pixels = batch(2)
    with torch.no_grad():
        expected = reference(vision_x=pixels, lang_x=ids, attention_mask=torch.ones_like(ids)).logits
        logits = model(ids, pixel_values=pixels[:, :, 0]).logits
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)


def test_an_untied_output_matrix_in_the_checkpoint(tmp_path):
    """Otter's full checkpoints also hold an untied LM head: loaded in full mode, reported in 'added' mode."""
    _, state = trained_openflamingo(tied=False)
    head = torch.randn(BASE_VOCAB + len(OF_TOKENS), 48)
    torch.save({**state, "lang_encoder.lm_head.weight": head}, tmp_path / "c.pt")
    model = vpgkit_model(tied=False)
    report = load_openflamingo(model, tmp_path / "c.pt")
    assert report.ok and torch.equal(model.llm.lm_head.weight, head)
    other = vpgkit_model(tied=False)
    before = other.llm.lm_head.weight.clone()
    report = load_openflamingo(other, tmp_path / "c.pt", embeddings="added")
    assert "base rows are not loaded" in report.ignored["lang_encoder.lm_head.weight"]
    assert torch.equal(other.llm.lm_head.weight, before)
