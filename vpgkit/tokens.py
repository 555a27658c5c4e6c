"""Added tokens with trainable embedding rows, while the rest of the vocabulary stays frozen.

OpenFlamingo and Otter add special tokens (``<image>``, ``<|endofchunk|>``, a pad token, Otter's
``<answer>``) to a frozen LLM and train their embedding rows. :class:`AddedTokens` does this for any
transformers causal LM without unfreezing the embedding matrix:

* the LLM's vocabulary is grown to hold the new ids (``resize_token_embeddings``; the new rows of the
  frozen matrix are filled with the added rows' starting values, so an export can copy the matrix);
* a forward hook on the input embedding replaces the output at the added ids by ``input_rows``
  (N_add, D), a trainable parameter of this module;
* the output side follows ``output``: ``"tied"`` — the logits of the added ids use ``input_rows`` (LMs
  that tie their embeddings must use this); ``"trained"`` — separate trainable ``output_rows`` (N_add, D)
  through a hook on the LM head; ``"frozen"`` — the LM head's new rows stay frozen at the mean of the
  existing rows (OpenFlamingo with an untied LM trains only the input embeddings).

Because the rows are parameters of this module, an adapter stores exactly these N_add rows, never the
vocabulary. The config records the token strings and their ids, so the tokenizer change travels with
the adapter (:meth:`AddedTokens.apply_to_tokenizer`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from .backbones.language import base_causal_lm
from .modules.presets import PresetConfig

OUTPUT_MODES = ("tied", "trained", "frozen")


@dataclass
class AddedTokensConfig(PresetConfig):
    """Which tokens were added to a base LLM and how their rows are trained.

    Attributes:
        tokens: the token strings, e.g. ``["<|endofchunk|>", "<image>"]``.
        ids: their ids in the grown vocabulary (same order as ``tokens``).
        base_vocab_size: the base LLM's vocabulary size before the tokens were added.
        width: D_llm, the embedding width.
        output: ``"tied"``, ``"trained"`` or ``"frozen"`` (see the module docstring).
    """

    tokens: list[str] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    base_vocab_size: int = 0
    width: int = 0
    output: str = "tied"

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    def __post_init__(self):
        if len(self.tokens) != len(self.ids) or not self.tokens:
            raise ValueError(
                f"AddedTokensConfig: need one id per token, got tokens {self.tokens} and ids {self.ids}"
            )
        if len(set(self.ids)) != len(self.ids) or len(set(self.tokens)) != len(self.tokens):
            raise ValueError(f"AddedTokensConfig: tokens {self.tokens} / ids {self.ids} repeat")
        if self.output not in OUTPUT_MODES:
            raise ValueError(f"AddedTokensConfig.output: expected one of {OUTPUT_MODES}, got {self.output!r}")
        beyond = sorted(i for i in self.ids if i >= self.base_vocab_size)
        if beyond and beyond != list(range(self.base_vocab_size, self.base_vocab_size + len(beyond))):
            raise ValueError(
                f"AddedTokensConfig: ids beyond the base vocabulary ({self.base_vocab_size}) must follow it "
                f"without gaps, got {beyond}"
            )

    @property
    def vocab_size(self) -> int:
        """Vocabulary size of the grown LLM."""
        return max(self.base_vocab_size, max(self.ids) + 1)


class AddedTokens(nn.Module):
    """Trainable embedding rows for added tokens of a frozen LLM.

    Attributes:
        input_rows: (N_add, D) input embedding rows, in ``config.ids`` order.
        output_rows: (N_add, D) LM-head rows when ``config.output == "trained"``, else None.

    Example:
        >>> from transformers import LlamaForCausalLM
        >>> from vpgkit.backbones.language import tiny_llama_config
        >>> llm = LlamaForCausalLM(tiny_llama_config())                 # vocab 128, untied
        >>> added = AddedTokens.for_llm(llm, ["<|endofchunk|>", "<image>"], output="frozen")
        >>> added.config.ids, tuple(added.input_rows.shape)
        ([128, 129], (2, 48))
        >>> handles = added.attach(llm)                                  # vocab grows to 130
        >>> llm.get_input_embeddings().weight.shape[0]
        130
    """

    def __init__(self, config: AddedTokensConfig):
        super().__init__()
        self.config = config
        n, d = len(config.ids), config.width
        self.input_rows = nn.Parameter(torch.zeros(n, d))
        self.output_rows = nn.Parameter(torch.zeros(n, d)) if config.output == "trained" else None
        self.register_buffer("token_ids", torch.tensor(config.ids, dtype=torch.long), persistent=False)

    @classmethod
    def for_llm(
        cls, llm: nn.Module, tokens: list[str], ids: list[int] | None = None, output: str | None = None
    ) -> AddedTokens:
        """Added rows for ``tokens`` of the (not yet grown) ``llm``.

        A new token's rows start at the mean of the existing rows; a token the vocabulary already has
        (e.g. a reserved special token) starts from its own row.

        Args:
            llm: the base causal LM (its vocabulary does not hold the tokens yet).
            tokens: token strings.
            ids: their ids (default: right after the base vocabulary, in order). Pass the tokenizer's
                ids when it already knows the tokens (``tokenizer.convert_tokens_to_ids``).
            output: ``"tied"`` (default for LMs that tie their embeddings), ``"trained"`` or
                ``"frozen"`` (default for untied LMs, as OpenFlamingo does).
        """
        lm = base_causal_lm(llm)
        embed = lm.get_input_embeddings().weight
        base = embed.shape[0]
        tied = _ties_embeddings(lm)
        output = output or ("tied" if tied else "frozen")
        if tied and output != "tied":
            raise ValueError(
                f"AddedTokens: {type(lm).__name__} ties its input and output embeddings; output must be 'tied'"
            )
        ids = list(ids) if ids is not None else list(range(base, base + len(tokens)))
        config = AddedTokensConfig(
            tokens=list(tokens), ids=ids, base_vocab_size=base, width=embed.shape[1], output=output
        )
        added = cls(config)
        head = lm.get_output_embeddings().weight if added.output_rows is not None else None
        with (
            torch.no_grad()
        ):  # a token the vocabulary already has starts from its row, a new one from the mean
            for k, i in enumerate(ids):
                added.input_rows[k] = embed[i] if i < base else embed.float().mean(0)
                if head is not None:
                    added.output_rows[k] = head[i] if i < base else head.float().mean(0)
        return added

    # --- attaching ---------------------------------------------------------------------------------

    def attach(self, llm: nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
        """Grow ``llm``'s vocabulary to ``config.vocab_size`` (frozen) and hook the added rows in.

        Returns:
            the hook handles (the caller removes them to detach).

        Raises:
            ValueError: the LLM's width or vocabulary does not fit the config.
        """
        lm = base_causal_lm(llm)
        embed = lm.get_input_embeddings()
        size = embed.weight.shape[0]
        if embed.weight.shape[1] != self.config.width:
            raise ValueError(
                f"AddedTokens: rows are {self.config.width} wide but the LLM's embeddings are {embed.weight.shape[1]}"
            )
        if size not in (self.config.base_vocab_size, self.config.vocab_size):
            raise ValueError(
                f"AddedTokens: the LLM has {size} embedding rows; expected the base vocabulary "
                f"({self.config.base_vocab_size}) or the grown one ({self.config.vocab_size})"
            )
        if _ties_embeddings(lm) and self.config.output != "tied":
            raise ValueError(f"AddedTokens: {type(lm).__name__} ties its embeddings; output must be 'tied'")
        if size < self.config.vocab_size:
            head = lm.get_output_embeddings()
            head_mean = head.weight.float().mean(0) if head is not None else None
            lm.resize_token_embeddings(self.config.vocab_size, mean_resizing=False)
            lm.requires_grad_(False)
            new = range(size, self.config.vocab_size)
            self._fill_new_rows(lm, new, head_mean)
        embed = lm.get_input_embeddings()
        handles = [embed.register_forward_hook(self._input_hook)]
        if self.config.output != "frozen":
            handles.append(lm.get_output_embeddings().register_forward_hook(self._output_hook))
        return handles

    def _fill_new_rows(self, lm: nn.Module, new: range, head_mean: torch.Tensor | None) -> None:
        """Deterministic values for the grown rows of the frozen matrices (the hooks override them)."""
        position = {int(i): k for k, i in enumerate(self.config.ids)}
        with torch.no_grad():
            weight = lm.get_input_embeddings().weight
            for i in new:
                weight[i] = self.input_rows[position[i]].to(weight.dtype)
            head = lm.get_output_embeddings()
            if head is None or head.weight is weight:
                return
            for i in new:
                k = position[i]
                if self.config.output == "trained":
                    value = self.output_rows[k]
                elif self.config.output == "tied":
                    value = self.input_rows[k]
                else:
                    value = head_mean
                head.weight[i] = value.to(head.weight.dtype)

    def _input_hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        ids = args[0] if args else None
        if ids is None:
            return output
        match = ids[..., None] == self.token_ids  # (..., N_add)
        if not bool(match.any()):
            return output
        row = match.float().argmax(-1)
        rows = self.input_rows.to(output.dtype)[row]
        return torch.where(match.any(-1, keepdim=True), rows, output)

    def _output_hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        hidden = args[0]
        rows = self.output_rows if self.output_rows is not None else self.input_rows
        logits = nn.functional.linear(hidden, rows.to(hidden.dtype))
        bias = getattr(module, "bias", None)
        if bias is not None:
            logits = logits + bias[self.token_ids]
        return output.index_copy(-1, self.token_ids, logits.to(output.dtype))

    # --- tokenizer and export ------------------------------------------------------------------------

    def apply_to_tokenizer(self, tokenizer) -> None:
        """Add the tokens to ``tokenizer`` (as special tokens) and check they get the recorded ids.

        Raises:
            ValueError: the tokenizer gives another id than the adapter was trained with.
        """
        vocab = tokenizer.get_vocab()
        missing = [t for t in self.config.tokens if t not in vocab]
        if missing:
            tokenizer.add_special_tokens({"additional_special_tokens": missing})
        got = tokenizer.convert_tokens_to_ids(self.config.tokens)
        if list(got) != list(self.config.ids):
            raise ValueError(
                f"AddedTokens: tokenizer ids {dict(zip(self.config.tokens, got, strict=True))} differ from the adapter's "
                f"{dict(zip(self.config.tokens, self.config.ids, strict=True))}; add the tokens in the same order to the "
                "base tokenizer"
            )

    def merged_rows(self) -> dict[str, torch.Tensor]:
        """``{"input": (N_add, D), "output": (N_add, D) or absent}`` as they act in the model."""
        out = {"input": self.input_rows.detach()}
        if self.config.output == "trained":
            out["output"] = self.output_rows.detach()
        elif self.config.output == "tied":
            out["output"] = self.input_rows.detach()
        return out


def _ties_embeddings(lm: nn.Module) -> bool:
    head = lm.get_output_embeddings()
    return head is not None and head.weight is lm.get_input_embeddings().weight


__all__ = ["OUTPUT_MODES", "AddedTokens", "AddedTokensConfig"]
