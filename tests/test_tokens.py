"""Added tokens with trainable rows: only those rows train and travel with the adapter."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from transformers import LlamaForCausalLM
from vlm_cases import randomize_

from vpgkit.backbones.language import tiny_llama_config
from vpgkit.checkpoints import CheckpointError, load_adapter, read_config, save_adapter
from vpgkit.data.tiny_tokenizer import build_tiny_tokenizer
from vpgkit.model import VisionLanguageModel
from vpgkit.modules import GatedCrossAttentionConfig, PerceiverConfig, PerceiverResampler
from vpgkit.tokens import AddedTokens, AddedTokensConfig

NEW = ["<a>", "<b>"]


def _llm(tied=False, seed=0):
    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_llama_config(tie_word_embeddings=tied))


def _model(tied=False, output=None, seed=0):
    llm = _llm(tied, seed)
    added = AddedTokens.for_llm(llm, NEW, output=output)
    torch.manual_seed(1)
    return VisionLanguageModel(
        llm,
        image_token_id=3,
        perceiver=PerceiverResampler(PerceiverConfig.preset("tiny")),
        cross_attention=GatedCrossAttentionConfig.preset("tiny", every=2),
        added_tokens=added,
    )


def _batch():
    ids = torch.tensor([[1, 3, 128, 9, 129, 11, 12], [1, 20, 3, 128, 22, 129, 2]])
    return ids, torch.randn(2, 1, 10, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("tied", "output"), [(False, "frozen"), (False, "trained"), (False, "tied"), (True, "tied")]
)
def test_only_the_added_rows_train(tied, output):
    model = _model(tied, output)
    lm = model.llm
    assert lm.get_input_embeddings().weight.shape == (130, 48)
    assert not lm.get_input_embeddings().weight.requires_grad and not lm.lm_head.weight.requires_grad
    trainable = model.trainable_parameters()
    rows = {k for k in trainable if k.startswith("added_tokens.")}
    assert rows == {"added_tokens.input_rows"} | (
        {"added_tokens.output_rows"} if output == "trained" else set()
    )
    ids, feats = _batch()
    labels = ids.clone()
    model(ids, vision_features=feats, labels=labels).loss.backward()
    assert model.added_tokens.input_rows.grad.abs().sum() > 0
    if output == "trained":
        assert model.added_tokens.output_rows.grad.abs().sum() > 0
    # The rows are what the LM sees: changing one changes the hidden states at (and after) its position
    # only (with a tied head, the token's own logit column changes everywhere).
    with torch.no_grad():
        before = model(ids, vision_features=feats).logits
        model.added_tokens.input_rows[1] += 1.0
        after = model(ids, vision_features=feats).logits
    first = int((ids[0] == 129).nonzero()[0, 0])
    base = slice(0, 128)
    assert torch.equal(before[0, :first, base], after[0, :first, base])
    assert not torch.equal(before[0, first:, base], after[0, first:, base])


def test_output_modes_set_the_added_logits():
    model = _model(output="trained")
    randomize_(model.added_tokens)
    with torch.no_grad():
        model.added_tokens.output_rows.normal_()
        hidden = torch.randn(1, 5, 48)
        logits = model.llm.lm_head(hidden)
    expected = hidden @ model.added_tokens.output_rows.T
    torch.testing.assert_close(logits[..., 128:], expected)
    frozen = _model(output="frozen")
    head = frozen.llm.lm_head.weight
    torch.testing.assert_close(head[128], head[:128].mean(0))  # deterministic, not a random resize init


def test_a_tied_llm_must_tie_the_added_rows():
    with pytest.raises(ValueError, match="ties its input and output embeddings; output must be 'tied'"):
        AddedTokens.for_llm(_llm(tied=True), NEW, output="trained")


def test_adapter_stores_only_the_rows_and_the_tokens(tmp_path):
    model = _model(output="trained")
    randomize_(model.perceiver, *model.cross_attention.values())
    with torch.no_grad():
        model.added_tokens.input_rows.normal_()
        model.added_tokens.output_rows.normal_()
    save_adapter(model, tmp_path / "a")
    with safe_open(str(tmp_path / "a" / "adapter.safetensors"), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    assert shapes["added_tokens.input_rows"] == shapes["added_tokens.output_rows"] == (2, 48)
    assert not any(k.startswith("llm.") for k in shapes)
    config = read_config(tmp_path / "a")
    assert config["modules"]["added_tokens"]["tokens"] == NEW and config["modules"]["added_tokens"][
        "ids"
    ] == [128, 129]
    assert config["base"]["llm"]["vocab_size"] == 128  # the base, before the tokens were added

    # A user rebuilds the model from the base and the adapter's token config.
    llm = _llm(seed=0)
    added = AddedTokens(AddedTokensConfig.from_dict(config["modules"]["added_tokens"]))
    torch.manual_seed(5)
    fresh = VisionLanguageModel(
        llm,
        image_token_id=3,
        perceiver=PerceiverResampler(PerceiverConfig.preset("tiny")),
        cross_attention=GatedCrossAttentionConfig.preset("tiny", every=2),
        added_tokens=added,
    )
    load_adapter(fresh, tmp_path / "a")
    ids, feats = _batch()
    with torch.no_grad():
        torch.testing.assert_close(
            fresh(ids, vision_features=feats).logits, model(ids, vision_features=feats).logits
        )
    other = _model(output="trained")
    other.added_tokens.config.tokens = ["<x>", "<y>"]
    with pytest.raises(CheckpointError, match=r"added_tokens\.tokens"):
        load_adapter(other, tmp_path / "a")


def test_tokenizer_change_travels_with_the_config():
    tok = build_tiny_tokenizer()
    base = len(tok)
    added = AddedTokens(AddedTokensConfig(tokens=NEW, ids=[base, base + 1], base_vocab_size=base, width=48))
    added.apply_to_tokenizer(tok)
    assert tok.convert_tokens_to_ids(NEW) == [base, base + 1]
    assert tok("<a> <b>", add_special_tokens=False)["input_ids"] == [base, base + 1]
    wrong = AddedTokens(AddedTokensConfig(tokens=["<c>"], ids=[base + 5], base_vocab_size=base + 5, width=48))
    with pytest.raises(ValueError, match="tokenizer ids"):
        wrong.apply_to_tokenizer(build_tiny_tokenizer())


def test_config_checks():
    with pytest.raises(ValueError, match="without gaps"):
        AddedTokensConfig(tokens=["<a>", "<b>"], ids=[128, 130], base_vocab_size=128, width=4)
    with pytest.raises(ValueError, match="one id per token"):
        AddedTokensConfig(tokens=["<a>"], ids=[], base_vocab_size=128, width=4)
