"""The world build's data-parallel stages (``python -m synthetic.world.build --processes 2``)."""

from __future__ import annotations

import inspect

import pytest
import torch
from transformers import LlamaForCausalLM

from synthetic.world import backbones
from synthetic.world.data_parallel import Shard, run_data_parallel
from synthetic.world.language import build_world_tokenizer
from vpgkit.backbones import EvaVisionConfig, TimmEvaEncoder
from vpgkit.modules import QFormer, QFormerConfig


class _LocalShard(Shard):
    """A shard that trains on its own rows without a process group (nothing is averaged)."""

    def reduce(self, params, loss):
        return float(loss.detach())


def _options(public, **given):
    """The keyword arguments a stage's ``_train_*`` takes: ``public``'s defaults, then ``given``."""
    defaults = {
        k: p.default for k, p in inspect.signature(public).parameters.items() if p.default is not p.empty
    }
    return {k: v for k, v in defaults.items() if k != "processes"} | {"log": lambda _: None} | given


def _halves(train, options):
    """Each half's (module after its own step, first-step loss), as processes 0 and 1 of two would get
    them without averaging."""
    runs = [train(_LocalShard(r, 2), **options) for r in range(2)]
    return [m for m, _ in runs], [r.losses[0] for _, r in runs]


def test_shard_rows_split_a_batch_and_refuse_an_uneven_split():
    assert [Shard(r, 2).rows(64) for r in range(2)] == [(0, 32), (32, 32)]
    assert Shard().rows(7) == (0, 7)
    with pytest.raises(ValueError, match="batch size 7 does not split over 2 processes"):
        Shard(0, 2).rows(7)
    with pytest.raises(ValueError, match="expected 2 or more processes"):
        run_data_parallel(backbones._stage_process, 1)


def _changed(module: torch.nn.Module, fresh: torch.nn.Module) -> bool:
    return any(
        not torch.equal(a, b)
        for a, b in zip(module.state_dict().values(), fresh.state_dict().values(), strict=True)
    )


@pytest.mark.slow
def test_the_lm_and_qformer_stages_train_data_parallel_on_the_mean_of_their_shards_losses():
    tok = build_world_tokenizer()
    # The LM: processes 0 and 1 read the two halves of each batch; the step's loss is their mean.
    lm = _options(backbones.train_language_model, tokenizer=tok, seed=0, steps=1, batch_size=8,
                  question_summary=0.1, pair_colours=1.0)  # fmt: skip
    alone, halves = _halves(backbones._train_language_model, lm)
    assert halves[0] != halves[1]  # different documents
    llm, result = backbones.train_language_model(processes=2, **lm)
    assert result.losses[0] == pytest.approx(sum(halves) / 2, rel=1e-5)
    # the step used the averaged gradient, not process 0's own
    assert _changed(llm, alone[0]) and _changed(llm, alone[1])
    torch.manual_seed(0)  # the stage's initial weights
    assert _changed(llm, LlamaForCausalLM(backbones.world_llama_config(len(tok))))
    assert not llm.training and not any(p.requires_grad for p in llm.parameters())
    # a rerun makes the same bits (gloo's sum over two processes has one order)
    again, rerun = backbones.train_language_model(processes=2, **lm)
    assert rerun.losses == result.losses and not _changed(again, llm)

    # (The ViT stage shards its scenes the same way, by rows: not run here, to keep the suite short.)
    # The Q-Former (on the LM above and an untrained ViT): every process draws the whole batch, then takes
    # its half.
    vit = TimmEvaEncoder(EvaVisionConfig.preset("tiny_world"))
    qf = _options(backbones.train_qformer, vit=vit, llm=llm, tokenizer=tok, seed=0, steps=1, batch_size=4,
                  num_images=8, grounding=True, grounding_weight=4.0)  # fmt: skip
    alone, halves = _halves(backbones._train_qformer, qf)
    assert halves[0] != halves[1]
    qformer, result = backbones.train_qformer(processes=2, **qf)
    assert result.losses[0] == pytest.approx(sum(halves) / 2, rel=1e-5)
    assert _changed(qformer, alone[0]) and _changed(qformer, alone[1])
    assert not qformer.training and not any(p.requires_grad for p in qformer.parameters())
    torch.manual_seed(0)
    assert _changed(qformer, QFormer(QFormerConfig.preset("tiny_world")))
