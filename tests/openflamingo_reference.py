"""OpenFlamingo 2.0.1's own code on tiny backbones, to compare vpgkit with.

open-flamingo pins torch 2.0.1, so it is installed with ``pip install --no-deps open-flamingo==2.0.1``
(README's test command); its runtime imports (open-clip-torch, einops, einops-exts) come with the
``dev`` extra. Its trainer module imports wandb at the top for logging only; a stub module stands in
for it so that the real ``filter_state_dict_to_trainable`` can write the checkpoint.
"""

from __future__ import annotations

import sys
import types

import torch
from transformers import LlamaForCausalLM

from vpgkit.backbones.language import tiny_llama_config

# OpenFlamingo's factory adds these after the base vocabulary, in this order (``<PAD>`` because
# LLaMA's tokenizer has no pad token).
OF_TOKENS = ["<|endofchunk|>", "<image>", "<PAD>"]
BASE_VOCAB = 128
EOC, MEDIA = BASE_VOCAB, BASE_VOCAB + 1
VIS_WIDTH = 32


def import_open_flamingo():
    """(Flamingo, FlamingoLMMixin, extend_instance, filter_state_dict_to_trainable) from the real package."""
    try:
        sys.modules.setdefault("wandb", types.ModuleType("wandb"))
        from open_flamingo.src.flamingo import Flamingo
        from open_flamingo.src.flamingo_lm import FlamingoLMMixin
        from open_flamingo.src.utils import extend_instance
        from open_flamingo.train.train_utils import filter_state_dict_to_trainable
    except ImportError as err:  # pragma: no cover - a set-up error, not a skip
        raise RuntimeError(
            "this comparison needs OpenFlamingo's code: pip install --no-deps open-flamingo==2.0.1 "
            f"(and the dev extra for open-clip-torch / einops / einops-exts): {err}"
        ) from err
    return Flamingo, FlamingoLMMixin, extend_instance, filter_state_dict_to_trainable


def tiny_open_clip(seed: int = 0):
    """An open_clip CLIP with a 2-layer, 32-wide ViT on 28 px images (4 patches of 14 px)."""
    import open_clip
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(seed)
    clip = open_clip.CLIP(
        embed_dim=16,
        vision_cfg=CLIPVisionCfg(
            layers=2, width=VIS_WIDTH, head_width=8, mlp_ratio=2.0, patch_size=14, image_size=28
        ),
        text_cfg=CLIPTextCfg(context_length=8, vocab_size=64, width=16, heads=2, layers=1),
    )
    with torch.no_grad():  # open_clip zero-initialises nothing relevant, but spread the LayerNorms
        for name, p in clip.visual.named_parameters():
            if "ln" in name or "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return clip.eval()


def base_llm_state(tied: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    llm = LlamaForCausalLM(tiny_llama_config(vocab_size=BASE_VOCAB, tie_word_embeddings=tied))
    return {k: v.clone() for k, v in llm.state_dict().items()}


def trained_openflamingo(tied: bool, every: int = 2, seed: int = 0):
    """An OpenFlamingo model built as its factory does, with its trainable parts 'trained' (randomised).

    Returns:
        (flamingo model in eval mode, the checkpoint state dict its trainer would save)
    """
    Flamingo, FlamingoLMMixin, extend_instance, filter_state_dict_to_trainable = import_open_flamingo()
    lm = LlamaForCausalLM(tiny_llama_config(vocab_size=BASE_VOCAB, tie_word_embeddings=tied))
    lm.load_state_dict(base_llm_state(tied, seed))
    # The factory's steps, on local tiny modules instead of hub downloads.
    clip = tiny_open_clip(seed)
    clip.visual.output_tokens = True
    extend_instance(lm, FlamingoLMMixin)
    lm.set_decoder_layers_attr_name("model.layers")
    lm.resize_token_embeddings(BASE_VOCAB + len(OF_TOKENS))
    torch.manual_seed(seed + 1)
    model = Flamingo(clip, lm, EOC, MEDIA, vis_dim=VIS_WIDTH, cross_attn_every_n_layers=every)
    model.requires_grad_(False)
    model.perceiver.requires_grad_(True)
    model.lang_encoder.gated_cross_attn_layers.requires_grad_(True)
    model.lang_encoder.get_input_embeddings().requires_grad_(True)
    # "Training": every trainable tensor moves, the gates away from zero.
    g = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("_gate"):
                p.copy_(0.3 + 0.5 * torch.rand(p.shape, generator=g))  # tanh(gate) in [0.29, 0.66]
            elif p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    model.eval()
    state = filter_state_dict_to_trainable(model, model.state_dict())
    return model, {k: v.detach().clone() for k, v in state.items()}
