"""Controls that could refute a visual gain: how well a DEMON task is solved without looking at the images.

:func:`no_vision_baselines` scores simple **text-only rules** on a task, in percent and with the task's
own metric (:func:`~vpgkit.evaluation.demon.score_sample`, so option mapping and ROUGE-L are exactly the
evaluation's). The rules read the task file alone — instruction and context (``<image>`` markers in
place of the images), choice lists and the responses — never an image. A model's score is evidence of
using the images only by its margin over the best of them (``gain_over_no_vision`` in the results of
:func:`~vpgkit.evaluation.evaluate_demon`).

That best rule is chosen, and two rules are fitted, on the answers being scored, so on a small file it
sits above what the rules are worth on new samples. :func:`cross_fitted_baseline` (other folds of the
file) and :func:`held_out_baseline` (another file of the task) answer every sample with rules chosen and
fitted elsewhere: out-of-sample numbers to read beside it.

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
from dataclasses import replace
from typing import Any

from ..data import Sample
from .demon import DemonTask, score_sample
from .metrics import _f1, normalize, tokens

__all__ = ["MAX_CONSTANT_CANDIDATES", "cross_fitted_baseline", "held_out_baseline", "no_vision_baselines"]

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
    if not task.samples:
        return {"rules": {}, "best": {"rule": None, "score": None}, "oracle": [], "count": 0}
    rules, _ = _rules(task, replace(task, samples=[]), max_candidates)
    best = _best(rules)
    oracle = ["frequent_answer" if task.metric == "accuracy" else "best_constant"]
    return {
        "rules": rules,
        "best": {"rule": best, "score": rules[best]},
        "oracle": oracle,
        "count": len(task.samples),
    }


def cross_fitted_baseline(
    task: DemonTask, folds: int = 5, max_candidates: int = MAX_CONSTANT_CANDIDATES
) -> dict[str, Any]:
    """The text-only rules of :func:`no_vision_baselines` with nothing read off the samples they answer.

    The best rule of :func:`no_vision_baselines` is chosen after scoring every rule on the task itself,
    and ``frequent_answer`` / ``best_constant`` read the task's own references: on a small file that
    maximum sits above what any rule is worth on new samples. Here sample ``i`` goes to fold
    ``i % folds``; the samples of each fold are answered by rules **fitted on the other folds** (preference
    order, constant, neighbours), by the rule that scores best there (ties: the earlier rule, as in
    :func:`no_vision_baselines`). Every score is then an out-of-sample estimate: on a file whose
    answers the text does not predict it is chance in expectation, and a text prior that holds across
    samples still shows. One exception: a file that balances its answers exactly makes the fit's
    commonest answer the held fold's rarest, which puts answer-frequency rules *under* chance;
    :func:`held_out_baseline`, fitted on another file, has no such tie.

    Args:
        task: the task, as for :func:`no_vision_baselines`.
        folds: number of folds, ≥ 2 (fewer when the task has fewer samples).
        max_candidates: as for :func:`no_vision_baselines`.

    Returns:
        ``{"rules": {rule: score}, "score", "chosen": [rule per fold], "folds", "count"}``: each rule
        answering every fold with its fit on the other folds, and ``score`` the answers of the rule
        chosen per fold; percent. A task of fewer than two samples has ``rules`` empty and ``score`` None.

    Example:
        >>> import json, os, tempfile
        >>> from vpgkit.evaluation import load_task
        >>> d = tempfile.mkdtemp()
        >>> data = [{"sample_id": i, "task_instance": {"context": "{image#1} Which?", "images_path": ["a.png"],
        ...          "choice_list": ["a", "b"]}, "response": "ab"[i % 2]} for i in range(8)]
        >>> meta = {"task_instruction": ["Pick. "], "category": "Toy", "metric": "accuracy"}
        >>> _ = open(os.path.join(d, "core.json"), "w").write(json.dumps({"metadata": meta, "data": data}))
        >>> task = load_task(d)
        >>> no_vision_baselines(task)["best"]  # in-sample: half the answers are the first option
        {'rule': 'option_1', 'score': 50.0}
        >>> fitted = cross_fitted_baseline(task, folds=2)  # even samples answer "a", odd ones "b"
        >>> fitted["chosen"], fitted["score"]  # each fold gets the rule that fits the other fold
        (['option_2', 'option_1'], 0.0)
    """
    if folds < 2:
        raise ValueError(f"cross_fitted_baseline: folds must be at least 2, got {folds}")
    samples = task.samples
    n = len(samples)
    if n < 2:
        return {"rules": {}, "score": None, "chosen": [], "folds": 0, "count": n}
    folds = min(folds, n)
    columns: dict[str, list[str]] = {}
    selected = [""] * n
    chosen = []
    for fold in range(folds):
        held = [i for i in range(n) if i % folds == fold]
        fit = replace(task, samples=[s for i, s in enumerate(samples) if i % folds != fold])
        on_fit, predictions = _rules(fit, replace(task, samples=[samples[i] for i in held]), max_candidates)
        rule = _best(on_fit)
        chosen.append(rule)
        for name, p in predictions.items():
            column = columns.setdefault(name, [""] * n)  # option_k a fold lacks: "" (wrong), as in-sample
            for i, answer in zip(held, p, strict=True):
                column[i] = answer
        for i, answer in zip(held, predictions[rule], strict=True):
            selected[i] = answer
    return {
        "rules": {rule: _percent(task, p) for rule, p in columns.items()},
        "score": _percent(task, selected),
        "chosen": chosen,
        "folds": folds,
        "count": n,
    }


def held_out_baseline(
    task: DemonTask, fit_on: DemonTask, max_candidates: int = MAX_CONSTANT_CANDIDATES
) -> dict[str, Any]:
    """The text-only rules of :func:`no_vision_baselines` fitted on another file of the same task, e.g. a
    training split or another seed's mini-DEMON: the rule that scores best on ``fit_on``, with its
    preference order, constant and neighbours from ``fit_on``, answers every sample of ``task``.

    Unlike :func:`cross_fitted_baseline` the answers it is fitted on are independent of the scored ones,
    so a file that balances its answers exactly (the majority of some folds is then the minority of the
    rest) does not push it under chance.

    Returns:
        ``{"rules": {rule: score}, "score", "chosen", "count"}``: every rule's score on ``task`` as fitted
        on ``fit_on``, and ``score`` that of ``chosen``, the best rule on ``fit_on``; percent. ``task``
        without samples has ``rules`` empty and ``score`` None.

    Raises:
        ValueError: ``fit_on`` has no samples or another metric than ``task``.

    Example:
        >>> import json, os, tempfile
        >>> from vpgkit.evaluation import load_task
        >>> def toy(answer):  # every answer the given option of two
        ...     d = tempfile.mkdtemp()
        ...     data = [{"sample_id": i, "task_instance": {"context": "{image#1} Which?", "images_path": ["a.png"],
        ...              "choice_list": ["a", "b"]}, "response": answer} for i in range(4)]
        ...     meta = {"task_instruction": ["Pick. "], "category": "Toy", "metric": "accuracy"}
        ...     _ = open(os.path.join(d, "core.json"), "w").write(json.dumps({"metadata": meta, "data": data}))
        ...     return load_task(d)
        >>> fitted = held_out_baseline(toy("b"), fit_on=toy("a"))
        >>> fitted["chosen"], fitted["score"], fitted["rules"]["option_2"]
        ('option_1', 0.0, 100.0)
    """
    if not fit_on.samples:
        raise ValueError(f"held_out_baseline: fit_on ({fit_on.path}) has no samples")
    if fit_on.metric != task.metric:
        raise ValueError(
            f"held_out_baseline: fit_on ({fit_on.path}) is scored by {fit_on.metric}, the task by {task.metric}"
        )
    if not task.samples:
        return {"rules": {}, "score": None, "chosen": None, "count": 0}
    on_fit, predictions = _rules(fit_on, task, max_candidates)
    rule = _best(on_fit)
    return {
        "rules": {name: _percent(task, p) for name, p in predictions.items()},
        "score": _percent(task, predictions[rule]),
        "chosen": rule,
        "count": len(task.samples),
    }


def _rules(
    fit: DemonTask, target: DemonTask, max_candidates: int
) -> tuple[dict[str, float], dict[str, list[str]]]:
    """Every rule's score on ``fit`` (percent; neighbours leave-one-out, ``frequent_answer`` and
    ``best_constant`` read off ``fit``'s references) and its answers to the samples of ``target``, fitted
    on ``fit`` the same way (a target sample's neighbour is its nearest ``fit`` sample). ``fit`` has samples."""
    fit_prompts = [frozenset(tokens(_prompt_text(fit, s))) for s in fit.samples]
    target_prompts = [frozenset(tokens(_prompt_text(target, s))) for s in target.samples]
    fit_answers = [fit.reference(s) for s in fit.samples]
    neighbours = _neighbours(fit_prompts) + _nearest(target_prompts, fit_prompts)
    if fit.metric == "accuracy":
        options = [fit.choices.get(s.id, []) for s in fit.samples]
        options += [target.choices.get(s.id, []) for s in target.samples]
        predictions = _choice_predictions(fit_answers, options, fit_prompts + target_prompts, neighbours)
    else:
        predictions = _text_predictions(fit_answers, neighbours, max_candidates)
    n = len(fit.samples)
    scores = {rule: _percent(fit, p[:n]) for rule, p in predictions.items()}
    return scores, {rule: p[n:] for rule, p in predictions.items()}


def _best(scores: dict[str, float]) -> str:
    """The rule with the highest score; ties go to the earlier rule."""
    return max(scores, key=scores.__getitem__)


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


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    common = len(a & b)
    union = len(a) + len(b) - common
    return common / union if union else 1.0  # two empty prompts are the same prompt


def _neighbours(prompts: Sequence[frozenset[str]]) -> list[int | None]:
    """Leave-one-out nearest neighbour of every prompt by token-set Jaccard (ties: the earlier one)."""
    best: list[int | None] = [None] * len(prompts)
    best_sim = [-1.0] * len(prompts)
    # Each pair once (similarity is symmetric). Every sample still meets its candidates in ascending
    # order — earlier ones while they are the outer sample, later ones as its own inner loop — so a
    # strict ">" keeps the earliest of equally similar neighbours.
    for i, a in enumerate(prompts):
        for j in range(i + 1, len(prompts)):
            sim = _jaccard(a, prompts[j])
            if sim > best_sim[i]:
                best[i], best_sim[i] = j, sim
            if sim > best_sim[j]:
                best[j], best_sim[j] = i, sim
    return best


def _nearest(targets: Sequence[frozenset[str]], pool: Sequence[frozenset[str]]) -> list[int | None]:
    """Each target's nearest prompt of ``pool`` by token-set Jaccard (ties: the earlier one)."""
    nearest: list[int | None] = []
    for a in targets:
        sims = [_jaccard(a, b) for b in pool]
        nearest.append(sims.index(max(sims)) if sims else None)
    return nearest


def _choice_predictions(
    fit_answers: Sequence[str],
    options: Sequence[Sequence[str]],
    prompts: Sequence[frozenset[str]],
    neighbours: Sequence[int | None],
) -> dict[str, list[str]]:
    """Every choice rule's answers to samples with ``options`` and ``prompts``, its preference order read
    off ``fit_answers`` and ``neighbours[i]`` an index into ``fit_answers`` (None: no neighbour)."""
    counts = Counter(normalize(a) for a in fit_answers)
    # Counter keeps first-seen order, and sorted is stable: ties in frequency go to the earlier answer.
    order = sorted(counts, key=lambda a: -counts[a])
    rank = {a: r for r, a in enumerate(order)}
    top = next(a for a in fit_answers if normalize(a) == order[0])

    def prefer(opts: Sequence[str]) -> str:
        # min keeps the first of equals: unseen options (rank len(order)) fall back to their position.
        return min(opts, key=lambda o: rank.get(normalize(o), len(order))) if opts else top

    predictions: dict[str, list[str]] = {}
    for k in range(max((len(o) for o in options), default=0)):
        predictions[f"option_{k + 1}"] = [o[k] if k < len(o) else "" for o in options]
    predictions["frequent_answer"] = [prefer(o) for o in options]
    mentioned = [_mentioned(o, p) for o, p in zip(options, prompts, strict=True)]
    for rule, wanted in (("mentioned_option", True), ("unmentioned_option", False)):
        picks = []
        for opts, flags in zip(options, mentioned, strict=True):
            chosen = [o for o, flag in zip(opts, flags, strict=True) if flag == wanted]
            picks.append(prefer(chosen or opts))
        predictions[rule] = picks
    picks = []
    for opts, j in zip(options, neighbours, strict=True):
        if j is None:
            picks.append(prefer(opts))
            continue
        answer = fit_answers[j]
        same = [o for o in opts if normalize(o) == normalize(answer)]
        picks.append(answer if not opts else same[0] if same else prefer(opts))
    predictions["nearest_neighbour"] = picks
    return predictions


def _mentioned(options: Sequence[str], prompt: frozenset[str]) -> list[bool]:
    """Whether the prompt has every distinctive token (not shared by all options) of each option."""
    sets = [frozenset(tokens(o)) for o in options]
    shared = frozenset.intersection(*sets) if sets else frozenset()
    return [bool(s) and (s - shared or s) <= prompt for s in sets]


def _text_predictions(
    fit_answers: Sequence[str], neighbours: Sequence[int | None], max_candidates: int
) -> dict[str, list[str]]:
    """Both ROUGE-L rules' answers to ``len(neighbours)`` samples: the constant with the highest ROUGE-L
    against ``fit_answers``, and the answer of each sample's neighbour (an index into ``fit_answers``)."""
    references = Counter(tuple(tokens(a)) for a in fit_answers)  # distinct references, weighted
    matchers = [(_match_masks(r), len(r), weight) for r, weight in references.items()]
    candidates: dict[tuple[str, ...], str] = {}
    for answer in fit_answers:
        candidates.setdefault(tuple(tokens(answer)), answer)
        if len(candidates) == max_candidates:
            break
    best, best_total = fit_answers[0], -1.0
    for candidate, text in candidates.items():
        total = sum(weight * _rouge_tokens(candidate, masks, n) for masks, n, weight in matchers)
        if total > best_total:
            best, best_total = text, total
    return {
        "best_constant": [best] * len(neighbours),
        "nearest_neighbour": ["" if j is None else fit_answers[j] for j in neighbours],
    }


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
