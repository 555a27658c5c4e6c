"""Controls that could refute a visual gain: how well a DEMON task is solved without looking at the images.

:func:`no_vision_baselines` scores simple **text-only rules** on a task, in percent and with the task's
own metric (:func:`~vpgkit.evaluation.demon.score_sample`, so option mapping and ROUGE-L are exactly the
evaluation's). The rules read the task file alone — instruction and context (``<image>`` markers in
place of the images), choice lists and the responses — never an image. A model's score is evidence of
using the images only by its margin over the best of them (``gain_over_no_vision`` in the results of
:func:`~vpgkit.evaluation.evaluate_demon`).

The **prompt text** of a sample is its user turn without the appended choice list.

Rules of an ``accuracy`` task (a sample's options are its ``choice_list``):

- ``option_k`` (k = 1, 2, …): always the k-th option; wrong for a sample with fewer options.
- ``frequent_answer``: a fixed preference order over answers — the responses ranked by how often the
  file gives them (ties: first seen) — picks the best-ranked option (options never given as a response
  rank last, ties by position). The order is read off the references being scored, i.e. an **oracle**:
  its score is an upper bound for any fixed preference order, not a rule a model could have learned.
- ``mentioned_option`` / ``unmentioned_option``: an option the prompt text mentions / does not mention,
  the preference order deciding among several (and among all options when none qualifies). An option is
  mentioned when the prompt has every one of its *distinctive* tokens — those not shared by all of the
  sample's options (so ``"a red cup"`` vs ``"a blue cup"`` is decided by ``red`` / ``blue``).
- ``nearest_neighbour``: leave-one-out nearest neighbour on the prompt text (Jaccard similarity of token
  sets; ties: the earlier sample) — its response if it is among this sample's options, else the
  preference order.

A sample without a choice list is answered with the most frequent response by every rule except
``nearest_neighbour`` (the neighbour's response) and ``option_k`` (an empty answer).

Rules of a ``rouge_l`` task:

- ``best_constant``: the same answer for every sample — the response of the file with the highest mean
  ROUGE-L against all the references (an **oracle** choice, so an upper bound for constant answers).
  Candidates are the first :data:`MAX_CONSTANT_CANDIDATES` distinct responses (by tokens): scoring one
  candidate costs one LCS per distinct reference, so the search is quadratic — about a second for 300
  samples of story length with the bit-parallel LCS used here.
- ``nearest_neighbour``: the response of the leave-one-out nearest neighbour (as above; a task of one
  sample has none and scores 0).

Everything is deterministic (ties always go to the earlier rule, candidate or sample).

Example:
    >>> import json, os, tempfile
    >>> from vpgkit.evaluation import load_task
    >>> d = tempfile.mkdtemp()
    >>> colours = ["red", "blue", "green"]  # the answer is always the colour the question leaves out
    >>> data = [{"sample_id": i, "task_instance": {"context": f"{{image#1}} Not {colours[i % 3]}, so?",
    ...          "images_path": ["a.png"], "choice_list": sorted([colours[i % 3], colours[(i + 1) % 3]])},
    ...          "response": colours[(i + 1) % 3]} for i in range(6)]
    >>> meta = {"task_instruction": ["Which colour? "], "category": "Colours", "metric": "accuracy"}
    >>> _ = open(os.path.join(d, "core.json"), "w").write(json.dumps({"metadata": meta, "data": data}))
    >>> baselines = no_vision_baselines(load_task(d))
    >>> {rule: round(score, 1) for rule, score in baselines["rules"].items()}
    {'option_1': 33.3, 'option_2': 66.7, 'frequent_answer': 33.3, 'mentioned_option': 0.0, 'unmentioned_option': 100.0, 'nearest_neighbour': 100.0}
    >>> baselines["best"], baselines["oracle"]
    ({'rule': 'unmentioned_option', 'score': 100.0}, ['frequent_answer'])
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from ..data import Sample
from .demon import DemonTask, score_sample
from .metrics import _f1, normalize, tokens

__all__ = ["MAX_CONSTANT_CANDIDATES", "no_vision_baselines"]

MAX_CONSTANT_CANDIDATES = 300


def no_vision_baselines(task: DemonTask, max_candidates: int = MAX_CONSTANT_CANDIDATES) -> dict[str, Any]:
    """Scores of the text-only rules on ``task`` (see the module docstring) and the best of them.

    Args:
        task: the task (its samples after any ``limit``, so the numbers compare with the model's score).
        max_candidates: ``best_constant`` considers the first this many distinct responses.

    Returns:
        ``{"rules": {rule: score}, "best": {"rule", "score"}, "oracle": [rules chosen with the
        references], "count": samples}``; scores in percent. A task without samples has no rules and
        ``best`` is ``{"rule": None, "score": None}``.
    """
    samples = task.samples
    prompts = [frozenset(tokens(_prompt_text(task, s))) for s in samples]
    if not samples:
        rules, oracle = {}, []
    elif task.metric == "accuracy":
        rules, oracle = _choice_rules(task, prompts)
    else:
        rules, oracle = _text_rules(task, prompts, max_candidates)
    best: dict[str, Any] = {"rule": None, "score": None}
    for rule, score in rules.items():
        if best["score"] is None or score > best["score"]:
            best = {"rule": rule, "score": score}
    return {"rules": rules, "best": best, "oracle": oracle, "count": len(samples)}


def _prompt_text(task: DemonTask, sample: Sample) -> str:
    """What the model reads apart from the images, minus the appended choice list (the reader adds it as
    ``Choice list:['a', 'b']. Your answer is:``), so that a mentioned option means the question names it."""
    text = "\n".join(t.text for t in sample.conversation[:-1] if t.role == "user")
    choices = task.choices.get(sample.id)
    if choices is not None:
        suffix = "Choice list:[" + ", ".join(repr(c) for c in choices) + "]. Your answer is:"
        text = text.removesuffix(suffix) if text.endswith(suffix) else text.rpartition("Choice list:[")[0]
    return text


def _percent(task: DemonTask, predictions: Sequence[str]) -> float:
    scores = [score_sample(task, s, p) for s, p in zip(task.samples, predictions, strict=True)]
    return 100.0 * sum(scores) / len(scores)


def _neighbours(prompts: Sequence[frozenset[str]]) -> list[int | None]:
    """Leave-one-out nearest neighbour of every prompt by token-set Jaccard (ties: the earlier one)."""
    best: list[int | None] = [None] * len(prompts)
    best_sim = [-1.0] * len(prompts)
    # Each pair once (similarity is symmetric). Every sample still meets its candidates in ascending
    # order — earlier ones while they are the outer sample, later ones as its own inner loop — so a
    # strict ">" keeps the earliest of equally similar neighbours.
    for i, a in enumerate(prompts):
        for j in range(i + 1, len(prompts)):
            b = prompts[j]
            common = len(a & b)
            union = len(a) + len(b) - common
            sim = common / union if union else 1.0  # two empty prompts are the same prompt
            if sim > best_sim[i]:
                best[i], best_sim[i] = j, sim
            if sim > best_sim[j]:
                best[j], best_sim[j] = i, sim
    return best


def _choice_rules(task: DemonTask, prompts: Sequence[frozenset[str]]) -> tuple[dict[str, float], list[str]]:
    samples = task.samples
    answers = [task.reference(s) for s in samples]
    counts = Counter(normalize(a) for a in answers)
    # Counter keeps first-seen order, and sorted is stable: ties in frequency go to the earlier answer.
    order = sorted(counts, key=lambda a: -counts[a])
    rank = {a: r for r, a in enumerate(order)}
    top = next(a for a in answers if normalize(a) == order[0])

    def prefer(options: Sequence[str]) -> str:
        # min keeps the first of equals: unseen options (rank len(order)) fall back to their position.
        return min(options, key=lambda o: rank.get(normalize(o), len(order))) if options else top

    options = [task.choices.get(s.id, []) for s in samples]
    rules: dict[str, float] = {}
    for k in range(max((len(o) for o in options), default=0)):
        rules[f"option_{k + 1}"] = _percent(task, [o[k] if k < len(o) else "" for o in options])
    rules["frequent_answer"] = _percent(task, [prefer(o) for o in options])
    mentioned = [_mentioned(o, p) for o, p in zip(options, prompts, strict=True)]
    for rule, wanted in (("mentioned_option", True), ("unmentioned_option", False)):
        picks = []
        for opts, flags in zip(options, mentioned, strict=True):
            chosen = [o for o, flag in zip(opts, flags, strict=True) if flag == wanted]
            picks.append(prefer(chosen or opts))
        rules[rule] = _percent(task, picks)
    picks = []
    for opts, j in zip(options, _neighbours(prompts), strict=True):
        if j is None:
            picks.append(prefer(opts))
            continue
        answer = answers[j]
        same = [o for o in opts if normalize(o) == normalize(answer)]
        picks.append(answer if not opts else same[0] if same else prefer(opts))
    rules["nearest_neighbour"] = _percent(task, picks)
    return rules, ["frequent_answer"]


def _mentioned(options: Sequence[str], prompt: frozenset[str]) -> list[bool]:
    """Whether the prompt has every distinctive token (not shared by all options) of each option."""
    sets = [frozenset(tokens(o)) for o in options]
    shared = frozenset.intersection(*sets) if sets else frozenset()
    return [bool(s) and (s - shared or s) <= prompt for s in sets]


def _text_rules(
    task: DemonTask, prompts: Sequence[frozenset[str]], max_candidates: int
) -> tuple[dict[str, float], list[str]]:
    samples = task.samples
    answers = [task.reference(s) for s in samples]
    references = Counter(tuple(tokens(a)) for a in answers)  # distinct references, weighted
    matchers = [(_match_masks(r), len(r), weight) for r, weight in references.items()]
    candidates: dict[tuple[str, ...], str] = {}
    for answer in answers:
        candidates.setdefault(tuple(tokens(answer)), answer)
        if len(candidates) == max_candidates:
            break
    best, best_total = answers[0], -1.0
    for candidate, text in candidates.items():
        total = sum(weight * _rouge_tokens(candidate, masks, n) for masks, n, weight in matchers)
        if total > best_total:
            best, best_total = text, total
    rules = {"best_constant": _percent(task, [best] * len(samples))}
    neighbours = _neighbours(prompts)
    rules["nearest_neighbour"] = _percent(task, ["" if j is None else answers[j] for j in neighbours])
    return rules, ["best_constant"]


def _match_masks(reference: Sequence[str]) -> dict[str, int]:
    """Token → bit mask of its positions in ``reference`` (bit j: reference[j])."""
    masks: dict[str, int] = {}
    for j, token in enumerate(reference):
        masks[token] = masks.get(token, 0) | (1 << j)
    return masks


def _lcs_bits(a: Sequence[str], masks: dict[str, int], n: int) -> int:
    """LCS length of ``a`` and the ``n``-token reference of ``masks``: the bit-parallel recurrence of
    Hyyrö (2004), V ← (V + (V & M)) | (V & ~M), one integer operation per token of ``a`` instead of a
    row of the dynamic programme; the LCS is the number of zero bits left in V. Same value as
    :func:`~vpgkit.evaluation.metrics.lcs_length` (tested)."""
    full = (1 << n) - 1
    v = full
    for token in a:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return n - bin(v).count("1")


def _rouge_tokens(prediction: Sequence[str], masks: dict[str, int], n: int) -> float:
    """:func:`~vpgkit.evaluation.metrics.rouge_l` on token lists (the reference as its masks)."""
    if not prediction and not n:
        return 1.0
    return _f1(_lcs_bits(prediction, masks, n) if prediction and n else 0, len(prediction), n)
