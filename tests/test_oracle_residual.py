"""benchmarks/oracle_residual.py: the perfect residual goes where VPG-C's does, and only on the prompt."""

from __future__ import annotations

import torch
from benchmark_script import load_benchmark
from test_train import config

from synthetic.world.backbones import slot_vectors, slot_word_ids
from synthetic.world.build import slot_layout
from synthetic.world.mini_demon import mini_demon_instance
from synthetic.world.tasks import render_text
from vpgkit.data import Sample, Turn
from vpgkit.training.build import build_model
from vpgkit.training.datasets import sample_tokenizer


def test_the_oracle_adds_each_focus_object_to_its_images_first_or_every_slot_at_the_hidden_norm_on_the_prompt_only():
    oracle = load_benchmark("oracle_residual")
    cfg = config()  # the default job: the tiny world's backbones
    model, tok = build_model(cfg.model, cfg.seed)
    prompts = sample_tokenizer(cfg.data, tok, model)
    inst = next(
        i for i in (mini_demon_instance("difference", n, 0) for n in range(50)) if i.subsets == ["add"]
    )
    assert not inst.focus[0] and inst.focus[1]  # an added object: image 1 shows none at the region
    s = Sample("x", [None] * 2, [Turn("user", render_text(inst, lambda _: "<image>"))])
    ids = torch.as_tensor(prompts.prompt(s)["input_ids"]).view(1, -1)
    every = (ids[0] == model.image_token_id).nonzero().flatten().view(2, -1)  # (T_img, N_q)
    slots = every[:, 0]
    layer = model.llm.model.layers[3]
    embeds = torch.randn(1, ids.shape[1], model.llm.config.hidden_size)

    @torch.no_grad()
    def layer_input(x: torch.Tensor) -> torch.Tensor:
        """What layer 3 receives: recorded by a hook registered after any the oracle registered."""
        seen = []
        handle = layer.register_forward_pre_hook(
            lambda m, a, k: seen.append(a[0] if a else k["hidden_states"]), with_kwargs=True
        )
        try:
            model.llm(inputs_embeds=x)
        finally:
            handle.remove()
        return seen[0]

    base, step_without = layer_input(embeds), layer_input(embeds[:, :1])
    with oracle.oracle_residual(model, tok, ids, inst, layer=3, scale=1.0):
        added, step_with = layer_input(embeds), layer_input(embeds[:, :1])  # a cached step's length
    delta = (added - base)[0]
    changed = delta.norm(dim=-1).gt(0).nonzero().flatten().tolist()
    assert changed == [int(slots[1])]  # image 2's first slot only: image 1 has no focus object
    torch.testing.assert_close(delta[slots[1]].norm(), base[0, slots[1]].norm())
    embed = model.llm.get_input_embeddings()
    # in the layout the shipped LM learned its slots in (world v10: a row and a column per position)
    words = slot_word_ids(tok, [inst.focus[1][:1]], slot_layout().row_column_slots)
    added_object = slot_vectors(embed, words)[0]  # (D,)
    cosine = torch.nn.functional.cosine_similarity(delta[slots[1]], added_object, dim=0)
    torch.testing.assert_close(cosine, torch.tensor(1.0))  # the added object's own slot vector, not another
    torch.testing.assert_close(step_with, step_without)
    with oracle.oracle_residual(model, tok, ids, inst, layer=3, scale=1.0, every_slot=True):
        spread = layer_input(embeds)[0] - base[0]
    assert spread.norm(dim=-1).gt(0).nonzero().flatten().tolist() == every[1].tolist()
    torch.testing.assert_close(spread[every[1]].norm(dim=-1), base[0, every[1]].norm(dim=-1))
