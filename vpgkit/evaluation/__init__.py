"""DEMON-format evaluation: metrics (ROUGE-L, accuracy with free-text answers mapped to options), DEMON
tasks and categories, answer generation, controls (text-only baselines, control variants, subsets), and
:func:`evaluate_demon`. See docs/evaluation.md."""

from .controls import (
    MAX_CONSTANT_CANDIDATES,
    cross_fitted_baseline,
    held_out_baseline,
    no_vision_baselines,
)
from .demon import (
    CATEGORIES,
    DEMON_TASKS,
    METRICS,
    DemonTask,
    TaskScore,
    aggregate,
    find_task_files,
    load_task,
    resolve_category,
    score_sample,
)
from .metrics import (
    ChoiceMatch,
    choice_accuracy,
    lcs_length,
    map_to_choice,
    normalize,
    rouge_l,
    tokens,
    unigram_f1,
)
from .pipeline import evaluate_demon, format_table, load_tasks
from .runner import STOP_STRINGS, PredictionStore, answer_text, generate_answers

__all__ = [
    "CATEGORIES",
    "DEMON_TASKS",
    "MAX_CONSTANT_CANDIDATES",
    "METRICS",
    "STOP_STRINGS",
    "ChoiceMatch",
    "DemonTask",
    "PredictionStore",
    "TaskScore",
    "aggregate",
    "answer_text",
    "choice_accuracy",
    "cross_fitted_baseline",
    "evaluate_demon",
    "find_task_files",
    "format_table",
    "generate_answers",
    "held_out_baseline",
    "lcs_length",
    "load_task",
    "load_tasks",
    "map_to_choice",
    "no_vision_baselines",
    "normalize",
    "resolve_category",
    "rouge_l",
    "score_sample",
    "tokens",
    "unigram_f1",
]
