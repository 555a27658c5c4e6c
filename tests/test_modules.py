"""The plug-in modules: published sizes, init behaviour, training, batching, gradients, shape errors."""

from __future__ import annotations

import pytest
import torch
from module_cases import CASES, IMAGE, randomize, vpgc_case, xattn_case

from vpgkit import count_parameters
from vpgkit.modules import (
    VPGC,
    GatedCrossAttentionBlock,
    GatedCrossAttentionConfig,
    PerceiverConfig,
    PerceiverResampler,
    QFormer,
    QFormerConfig,
    VPGCConfig,
    media_attention_mask,
)


def meta_count(factory, config) -> dict:
    with torch.device("meta"):
        return count_parameters(factory(config))


# --- published weight counts ---------------------------------------------------------------------------


def test_vpgc_preset_matches_cheetah_weight_count():
    counts = meta_count(VPGC, VPGCConfig.preset("vicuna7b"))
    assert counts["trainable"] == 6_320_896
    assert counts["by_module"]["guidance_proj"]["total"] == 3_146_496  # Linear(4096 → 768)
    assert counts["by_module"]["output_proj"]["total"] == 3_149_824  # Linear(768 → 4096)
    assert counts["by_module"][""]["total"] == 24_576  # 32 × 768 queries
    assert meta_count(VPGC, VPGCConfig.preset("vicuna13b"))["total"] == 7_894_784


def test_perceiver_preset_matches_openflamingo_weight_count():
    assert meta_count(PerceiverResampler, PerceiverConfig.preset("openflamingo9b"))["total"] == 63_019_008


def test_gated_block_preset_matches_openflamingo_weight_count():
    config = GatedCrossAttentionConfig.preset("openflamingo9b")
    assert meta_count(GatedCrossAttentionBlock, config)["total"] == 139_476_994


def test_qformer_blip2_preset_sizes():
    counts = meta_count(QFormer, QFormerConfig.preset("blip2"))
    assert counts["by_module"][""]["total"] == 32 * 768
    assert counts["by_module"]["language_projection"]["total"] == 768 * 4096 + 4096
    # 12 BERT-base layers (query branch only), 6 of them cross-attending to 1408-wide EVA-CLIP-g features.
    assert counts["by_module"]["qformer"]["total"] == 105_137_664


def test_meta_models_allocate_nothing_and_count_frozen_parts():
    with torch.device("meta"):
        vpg = QFormer(QFormerConfig.preset("blip2")).requires_grad_(False)
        vpgc = VPGC.from_qformer(vpg, VPGCConfig.preset("vicuna7b"))
    assert all(p.is_meta for p in [*vpg.parameters(), *vpgc.parameters()])
    model = torch.nn.ModuleDict({"vpg": vpg, "vpgc": vpgc})
    counts = count_parameters(model)
    assert counts["trainable"] == 6_320_896
    assert counts["total"] == 108_312_064 + 6_320_896
    assert counts["by_module"]["vpg"] == {"total": 108_312_064, "trainable": 0}


def test_count_parameters_counts_tied_weights_once():
    lin = torch.nn.Linear(4, 4)
    model = torch.nn.ModuleDict({"a": lin, "b": lin})
    assert count_parameters(model)["total"] == 20


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(KeyError, match="vicuna7b"):
        VPGCConfig.preset("vicuna70b")


# --- init behaviour ------------------------------------------------------------------------------------


def test_vpgc_residual_is_exactly_zero_at_init():
    case = vpgc_case()
    residual = case.run()
    assert residual.shape == (3, 2, 4, 48)
    assert torch.equal(residual, torch.zeros_like(residual))


def test_vpgc_guidance_init_std_makes_queries_guided_from_the_start_with_a_zero_residual():
    """Cheetah's init (0) leaves the guided queries prompt-independent at first, and no gradient reaches
    guidance_proj; a positive ``guidance_init_std`` makes them depend on g, the residual still exactly 0."""
    vpg = QFormer(QFormerConfig.preset("tiny")).eval().requires_grad_(False)
    vision, g = torch.randn(2, 1, 10, 32), torch.randn(2, 48)
    cheetah = VPGC.from_qformer(vpg, VPGCConfig.preset("tiny"))
    torch.testing.assert_close(cheetah.guided_queries(g)[0], cheetah.guided_queries(g)[1])
    residual = cheetah(g, vision, vpg)
    (residual * torch.randn_like(residual)).sum().backward()  # a loss whose gradient is not zero at r = 0
    assert cheetah.output_proj.weight.grad.any() and not cheetah.guidance_proj.weight.grad.any()
    torch.manual_seed(0)
    guided = VPGC.from_qformer(vpg, VPGCConfig.preset("tiny", guidance_init_std=0.02))
    assert 0.015 < guided.guidance_proj.weight.std() < 0.025 and not guided.guidance_proj.bias.any()
    assert not torch.allclose(guided.guided_queries(g)[0], guided.guided_queries(g)[1])
    residual = guided(g, vision, vpg)
    assert torch.equal(residual, torch.zeros_like(residual))
    with pytest.raises(ValueError, match="guidance_init_std=-1"):
        VPGC(VPGCConfig.preset("tiny", guidance_init_std=-1.0))


def test_vpgc_queries_start_as_a_copy_of_the_vpg_queries():
    vpg = QFormer(QFormerConfig.preset("tiny"))
    vpgc = VPGC.from_qformer(vpg, VPGCConfig.preset("tiny"))
    assert torch.equal(vpgc.query_tokens, vpg.query_tokens)
    assert vpgc.query_tokens.data_ptr() != vpg.query_tokens.data_ptr()


def test_vpgc_guided_queries_use_the_qformer_embedding_layernorm():
    """g + queries go through the Q-Former's own LayerNorm, as Blip2QFormerModel(query_embeds=...) does."""
    case = vpgc_case()
    vpgc, (guidance, vision) = randomize(case.module), case.inputs.values()
    vpg = QFormer(QFormerConfig.preset("tiny")).eval()
    ours = vpgc(guidance, vision, vpg)
    q = (vpgc.query_tokens + vpgc.guidance_proj(guidance)[:, None]).repeat_interleave(2, dim=0)
    states = vpg.qformer(query_embeds=q, encoder_hidden_states=vision.flatten(0, 1)).last_hidden_state
    torch.testing.assert_close(ours, vpgc.output_proj(states).reshape(3, 2, 4, 48))


def test_gated_block_is_identity_at_init():
    case = xattn_case()
    assert torch.equal(case.run(), case.inputs["x"])


# --- training ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_trainable_weight_moves(name):
    """Two AdamW steps on a non-trivial loss move every trainable weight.

    Two, not one: VPG-C's two zero-initialised projections (and the gated block's zero gates) multiply,
    so on the first step only the outer factor receives a gradient; the inner weights move on the second.
    """
    case = CASES[name]()
    params = {n: p for n, p in case.module.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in params.items()}
    optimizer = torch.optim.AdamW(params.values(), lr=1e-3, weight_decay=0.0)
    target = torch.randn_like(case.run())
    for _ in range(2):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(case.run(), target).backward()
        optimizer.step()
    unchanged = [n for n, p in params.items() if torch.equal(p, before[n])]
    assert not unchanged


def test_vpgc_does_not_register_or_train_the_frozen_qformer():
    vpg = QFormer(QFormerConfig.preset("tiny")).eval().requires_grad_(False)
    vpgc = randomize(VPGC.from_qformer(vpg, VPGCConfig.preset("tiny")))
    vpgc(torch.randn(2, 48), torch.randn(2, 1, 10, 32), vpg).square().sum().backward()
    assert sorted(n for n, _ in vpgc.named_parameters()) == [
        "guidance_proj.bias",
        "guidance_proj.weight",
        "output_proj.bias",
        "output_proj.weight",
        "query_tokens",
    ]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in vpgc.parameters())
    assert all(p.grad is None for p in vpg.parameters())


# --- batching ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_sample_output_does_not_depend_on_the_rest_of_the_batch(name):
    case = CASES[name]()
    randomize(case.module).eval()
    with torch.no_grad():
        batched = case.run()
        for row in range(batched.shape[0]):
            torch.testing.assert_close(
                batched[row : row + 1], case.run(slice(row, row + 1)), atol=1e-5, rtol=1e-5
            )


# --- media mask semantics ------------------------------------------------------------------------------


def test_media_mask_immediate_and_all_previous():
    ids = torch.tensor([[1, 2, IMAGE, 3, IMAGE, 4], [IMAGE, 5, 6, 7, 8, 0]])
    immediate = media_attention_mask(ids, IMAGE, num_images=torch.tensor([2, 1]))
    assert immediate.shape == (2, 6, 2)
    assert immediate[0].int().tolist() == [[0, 0], [0, 0], [1, 0], [1, 0], [0, 1], [0, 1]]
    assert immediate[1].int().tolist() == [[1, 0]] * 6  # the padded second image is never attended
    every = media_attention_mask(ids, IMAGE, only_immediate=False)
    assert every[0].int().tolist() == [[0, 0], [0, 0], [1, 0], [1, 0], [1, 1], [1, 1]]


def test_media_mask_rejects_more_markers_than_images():
    ids = torch.tensor([[IMAGE, 1, IMAGE], [IMAGE, 2, 3]])
    with pytest.raises(ValueError, match=r"row 0 has 2 <image> markers .* but 1 images"):
        media_attention_mask(ids, IMAGE, num_images=1)


def test_text_before_the_first_image_gets_an_exactly_zero_update():
    case = xattn_case()
    block = randomize(case.module)
    with torch.no_grad():
        block.ff_gate.zero_()  # isolate the cross-attention update
    out = case.run()
    x = case.inputs["x"]
    assert torch.equal(out[0, :2], x[0, :2])  # row 0: two text tokens before its first <image>
    assert not torch.equal(out[0, 2:], x[0, 2:])
    assert torch.isfinite(out).all()


def test_immediate_mask_ignores_earlier_images():
    case = xattn_case()
    block = randomize(case.module).eval()
    x, media, mask = case.inputs.values()
    changed = media.clone()
    changed[1, 0] += 1.0  # row 1's first image; its last three tokens follow the second image
    with torch.no_grad():
        a, b = block(x, media, mask), block(x, changed, mask)
    assert torch.equal(a[1, 3:], b[1, 3:])
    assert not torch.equal(a[1, :3], b[1, :3])


# --- cross-attention maps ------------------------------------------------------------------------------


def test_qformer_cross_attention_maps_match_transformers_eager():
    config = QFormerConfig.preset("tiny")
    ours = QFormer(config).eval()
    out = ours(torch.randn(2, 3, 10, 32), return_attentions=True)
    assert out.cross_attentions.shape == (2, 3, 1, 4, 4, 10)  # (B, T_img, L_x, heads, N_q, N_v)
    eager = QFormer(QFormerConfig.preset("tiny", attn_implementation="eager")).eval()
    eager.load_state_dict(ours.state_dict())
    vision = torch.randn(2, 3, 10, 32)
    hf = eager.qformer(
        query_embeds=eager.query_tokens.expand(6, -1, -1),
        encoder_hidden_states=vision.flatten(0, 1),
        output_attentions=True,
    ).cross_attentions
    maps = ours(vision, return_attentions=True).cross_attentions
    torch.testing.assert_close(maps.flatten(0, 1), torch.stack(hf, dim=1))
    torch.testing.assert_close(maps.sum(-1), torch.ones(maps.shape[:-1]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_qformer_maps_only_pass_equals_the_full_pass(dtype):
    """cross_attention_maps stops after the last cross-attention layer: the same maps, bitwise, as the
    full pass (which also runs the layers after it), the hooks gone afterwards, and keys/values recorded
    once per layer when maps and image keys/values are asked for together."""
    config = QFormerConfig.preset("tiny", num_layers=4, cross_attention_every=2)  # cross at layers 0, 2
    qformer = randomize(QFormer(config)).eval().to(dtype)
    vision = torch.randn(2, 3, 10, 32, dtype=dtype)
    full = qformer(vision, return_attentions=True, return_image_kv=True)
    maps = qformer.cross_attention_maps(vision)
    assert maps.shape == (2, 3, 2, 4, 4, 10) and maps.dtype == dtype
    assert torch.equal(maps, full.cross_attentions)
    assert len(full.image_kv.keys) == len(full.image_kv.values) == 2
    for attention in qformer.cross_attention_layers():
        assert not attention.query._forward_hooks and not attention.key._forward_hooks
    assert torch.equal(qformer(vision).prompts, full.prompts)  # nothing left behind changes a normal pass


# --- gradients and compilation -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["vpgc", "xattn", "mlp_projector", "perceiver_vpgc"])
def test_gradcheck_float64(name):
    case = CASES[name](torch.float64)
    randomize(case.module).eval()
    inputs = dict(case.inputs)
    floats = [k for k, v in inputs.items() if v.is_floating_point()]

    def fn(*tensors):
        return case.call({**inputs, **dict(zip(floats, tensors, strict=True))})

    args = [inputs[k].clone().requires_grad_(True) for k in floats]
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-5)


@pytest.mark.slow
def test_perceiver_under_torch_compile_matches_eager():
    case = CASES["perceiver"]()
    compiled = torch.compile(case.module)
    media = case.inputs["media"]
    torch.testing.assert_close(compiled(media), case.module(media), atol=1e-5, rtol=1e-5)


# --- shape errors --------------------------------------------------------------------------------------

BAD_INPUTS = [
    (
        "qformer",
        {"vision": torch.zeros(3, 10, 32)},
        r"vision: expected shape \(B, T_img, N_v, 32\).*got \(3, 10, 32\)",
    ),
    (
        "qformer",
        {"vision": torch.zeros(3, 1, 10, 31)},
        r"vision: .*\(B, T_img, N_v, 32\).*got \(3, 1, 10, 31\)",
    ),
    ("vpgc", {"guidance": torch.zeros(3, 47)}, r"guidance: expected shape \(B, 48\).*got \(3, 47\)"),
    (
        "vpgc",
        {"guidance": torch.zeros(2, 48)},
        r"vision: expected shape \(B, T_img, N_v, 32\) with \{'B': 2\}",
    ),
    ("perceiver", {"media": torch.zeros(3, 2, 10, 32)}, r"media: expected shape \(B, T_img, F, N_v, 32\)"),
    ("xattn", {"x": torch.zeros(3, 6, 40)}, r"x: expected shape \(B, T_txt, 48\).*got \(3, 6, 40\)"),
    ("xattn", {"media_mask": torch.zeros(3, 5, 2, dtype=torch.bool)}, r"media_mask: .*\(B, T_txt, T_img\)"),
    ("xattn", {"media": torch.zeros(3, 2, 8, 16)}, r"media: expected shape \(B, T_img, N, 32\)"),
]


@pytest.mark.parametrize(
    ("name", "bad", "message"), BAD_INPUTS, ids=[f"{n}-{next(iter(b))}" for n, b, _ in BAD_INPUTS]
)
def test_wrong_shapes_raise_value_error_naming_the_argument(name, bad, message):
    case = CASES[name]()
    with pytest.raises(ValueError, match=message):
        case.call({**case.inputs, **bad})


def test_vpgc_rejects_a_qformer_of_another_width():
    vpg = QFormer(QFormerConfig.preset("tiny", hidden_size=64))
    with pytest.raises(ValueError, match=r"qformer_width=32.*hidden_size=64"):
        VPGC.from_qformer(vpg, VPGCConfig.preset("tiny"))


def test_vpgc_without_guidance_gives_every_prompt_the_same_queries():
    """``VPGCConfig(guidance=False)`` (the no-guidance ablation) ignores the guidance input."""
    from vpgkit.config import ModelConfig
    from vpgkit.modules import VPGC, QFormer, QFormerConfig, VPGCConfig
    from vpgkit.training.build import build_model

    vpg = QFormer(QFormerConfig.preset("tiny")).eval().requires_grad_(False)
    guided = VPGC.from_qformer(vpg, VPGCConfig.preset("tiny"))
    blind = VPGC.from_qformer(vpg, VPGCConfig.preset("tiny", guidance=False))
    for module in (guided, blind):
        torch.nn.init.normal_(module.guidance_proj.weight)
    g = torch.randn(2, 48)
    q = blind.guided_queries(g)
    torch.testing.assert_close(q[0], q[1])
    torch.testing.assert_close(q, blind.guided_queries(torch.zeros_like(g)))
    assert not torch.allclose(guided.guided_queries(g)[0], guided.guided_queries(g)[1])
    # recipes reach it through model.vpgc_overrides
    config = ModelConfig(vpgc="tiny", vpgc_overrides={"guidance": False})
    model, _ = build_model(config)
    assert model.vpgc.config.guidance is False
