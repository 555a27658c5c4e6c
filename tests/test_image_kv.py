"""VPG-C's second Q-Former pass reusing the prompt pass's image-side keys/values: bitwise the uncached path."""

from __future__ import annotations

import pytest
import torch
from transformers import Blip2QFormerModel
from vlm_cases import N_Q, SLOT, randomize_, right_padded, vpgc_batch, vpgc_model

from vpgkit.modules import VPGC, ImageSideLinear, QFormer, QFormerConfig, VPGCConfig


def _qformer(dtype=torch.float32) -> QFormer:
    torch.manual_seed(0)
    return QFormer(QFormerConfig.preset("tiny")).eval().requires_grad_(False).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_encode_with_given_image_kv_is_bitwise_the_recomputed_pass(dtype):
    qformer = _qformer(dtype)
    vision = torch.randn(2, 3, 10, 32).to(dtype)  # (B, T_img, N_v, D_v)
    out = qformer(vision, return_image_kv=True)
    assert len(out.image_kv.keys) == len(qformer.cross_attention_layers()) == 1
    assert out.image_kv.keys[0].shape == (6, 10, 32) and out.image_kv.batch_shape == (6, 10)
    assert torch.equal(out.prompts, qformer(vision).prompts)  # recording changes nothing
    queries = torch.randn(6, N_Q, 32).to(dtype)
    flat = vision.reshape(6, 10, 32)
    assert torch.equal(qformer.encode(queries, flat, image_kv=out.image_kv), qformer.encode(queries, flat))


def test_vpgc_residual_and_gradients_with_reused_image_kv_are_bitwise_equal():
    qformer = _qformer()
    vpgc = VPGC.from_qformer(qformer, VPGCConfig.preset("tiny"))
    randomize_(vpgc, std=0.3)
    vision, guidance = torch.randn(2, 2, 10, 32), torch.randn(2, 48)
    image_kv = qformer(vision, return_image_kv=True).image_kv
    results = []
    for kv in (None, image_kv):
        vpgc.zero_grad(set_to_none=True)
        residual = vpgc(guidance, vision, qformer, image_kv=kv)
        residual.square().sum().backward()
        results.append((residual.detach(), {n: p.grad.clone() for n, p in vpgc.named_parameters()}))
    assert torch.equal(results[0][0], results[1][0]) and results[0][0].abs().sum() > 0
    for name, grad in results[0][1].items():
        assert torch.equal(grad, results[1][1][name]), name


def _loss_and_grads(model, batch) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    out = model(**batch)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.trainable_parameters().items()}
    model.zero_grad(set_to_none=True)
    return out.loss.detach(), out.logits.detach(), grads


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_model_loss_logits_gradients_equal_with_and_without_reuse(dtype):
    """The whole training forward/backward, fp32 and bf16 frozen parts: bitwise equal (same layers, same
    inputs: reuse only skips recomputing tensors it already has)."""
    batch = vpgc_batch()
    batch["vision_features"] = batch["vision_features"].to(dtype)
    runs = []
    for reuse in (False, True):
        model = vpgc_model()
        randomize_(model.vpgc, std=0.3)
        model.llm.to(dtype)
        model.vpg.to(dtype)
        model.reuse_image_kv = reuse
        runs.append(_loss_and_grads(model.train(), batch))
    (loss0, logits0, grads0), (loss1, logits1, grads1) = runs
    assert torch.equal(loss0, loss1) and torch.equal(logits0, logits1)
    assert grads0.keys() == grads1.keys()
    for name, grad in grads0.items():
        assert torch.equal(grad, grads1[name]), name
        assert grad.abs().sum() > 0, name


def test_reuse_skips_the_second_key_value_computation(monkeypatch):
    calls = []
    original = torch.nn.Linear.forward
    monkeypatch.setattr(
        torch.nn.Linear,
        "forward",
        lambda self, x: (calls.append(1) if isinstance(self, ImageSideLinear) else None) or original(self, x),
    )
    counts = {}
    for reuse in (False, True):
        model = vpgc_model()
        model.reuse_image_kv = reuse
        calls.clear()
        model(**vpgc_batch())
        counts[reuse] = len(calls)
    # one cross-attention layer in the tiny Q-Former: K and V once per pass (2 passes without reuse)
    assert counts == {False: 4, True: 2}


def test_multi_image_rows_with_padding_images_and_generate_are_equal():
    g = torch.Generator().manual_seed(3)
    text = lambda n: torch.randint(10, 128, (n,), generator=g).tolist()  # noqa: E731
    rows = [[1, *[SLOT] * N_Q, *text(2), *[SLOT] * N_Q, *text(3)], [1, *[SLOT] * N_Q, *text(4)]]
    input_ids, attention_mask = right_padded(rows)
    vision = torch.randn(2, 2, 10, 32, generator=g)
    num_images = torch.tensor([2, 1])
    outputs = []
    for reuse in (False, True):
        model = vpgc_model()
        randomize_(model.vpgc, std=0.3)
        model.reuse_image_kv = reuse
        with torch.no_grad():
            logits = model(input_ids, attention_mask, vision_features=vision, num_images=num_images).logits
        prompt_ids, prompt_mask = input_ids[:1, :-2], attention_mask[:1, :-2]
        generated = model.generate(
            prompt_ids, prompt_mask, vision_features=vision[:1], max_new_tokens=4, do_sample=False
        )
        outputs.append((logits, generated))
    assert torch.equal(outputs[0][0], outputs[1][0])
    assert torch.equal(outputs[0][1], outputs[1][1])


def test_image_kv_is_kept_only_for_a_vpgc_and_not_on_the_reference_path():
    assert vpgc_model(reference_path=True).reuse_image_kv is False
    assert vpgc_model().reuse_image_kv is True
    plain = vpgc_model(with_vpgc=False)  # BLIP-2 alone: no second pass reads the keys/values
    assert plain.reuse_image_kv is False
    seen = []
    plain.vpg.register_forward_hook(lambda module, args, kwargs, out: seen.append(out), with_kwargs=True)
    with torch.no_grad():
        plain(**vpgc_batch())
    assert seen and all(out.image_kv is None for out in seen)


def test_image_side_layers_keep_the_transformers_names_and_weights():
    """The key/value layers are the same Linear (same parameters, same state-dict names as HF's
    Blip2QFormerModel), so checkpoints load as before."""
    qformer = _qformer()
    hf = Blip2QFormerModel(qformer.config.to_hf())
    assert set(qformer.qformer.state_dict()) == set(hf.state_dict())
    hf.load_state_dict(qformer.qformer.state_dict())
    fresh = QFormer(qformer.config)
    fresh.load_state_dict(qformer.state_dict())
    vision = torch.randn(1, 1, 10, 32)
    assert torch.equal(fresh.eval()(vision).prompts, qformer(vision).prompts)


def test_image_kv_of_other_images_is_refused():
    qformer = _qformer()
    image_kv = qformer(torch.randn(2, 1, 10, 32), return_image_kv=True).image_kv
    with pytest.raises(ValueError, match="same vision features"):
        qformer.encode(torch.randn(3, N_Q, 32), torch.randn(3, 10, 32), image_kv=image_kv)
    # the layers are back to computing after the failed call
    assert all(a.key.given is None and a.value.given is None for a in qformer.cross_attention_layers())
