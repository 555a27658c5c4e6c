"""vpgkit in lmms-eval: the ``vpgkit`` model and DEMON-format tasks read from local files.

Install with the optional extra ``pip install "vpgkit[eval]"`` (lmms-eval 0.7.x). vpgkit registers its model
through lmms-eval's entry-point group ``lmms_eval.models`` (``[project.entry-points."lmms_eval.models"]`` in
pyproject.toml points at :func:`manifest`), so ``lmms-eval --model vpgkit`` finds it with no flag. lmms-eval
0.7 has no entry point for tasks: they are YAML files it finds under ``--include_path``, which
``python -m vpgkit.lmms_tasks`` writes for any DEMON-format folder. See docs/evaluate_with_lmms_eval.md.

Parts (imported only by lmms-eval, so vpgkit imports without it):

* :mod:`vpgkit.evaluation.lmms.model` — :class:`~vpgkit.evaluation.lmms.model.VpgkitLMM`, the model:
  ``generate_until`` and ``loglikelihood`` with interleaved images;
* :mod:`vpgkit.evaluation.lmms.task` — :class:`~vpgkit.evaluation.lmms.task.DemonLmmsTask`, one DEMON task
  file as an lmms-eval task, scored as ``python -m vpgkit.evaluate`` scores it;
* :mod:`vpgkit.evaluation.lmms.configs` — :func:`~vpgkit.evaluation.lmms.configs.write_task_configs`, the
  task YAML files (needs no lmms-eval).

Example (with lmms-eval installed):
    >>> m = manifest()
    >>> m.model_id, m.simple_class_path
    ('vpgkit', 'vpgkit.evaluation.lmms.model.VpgkitLMM')
"""

from __future__ import annotations

from typing import Any

__all__ = ["DEFAULT_MAX_NEW_TOKENS", "MODEL_CLASS", "MODEL_ID", "manifest"]

DEFAULT_MAX_NEW_TOKENS = 32  # answer length limit, as `python -m vpgkit.evaluate --max-new-tokens`
MODEL_ID = "vpgkit"
MODEL_CLASS = "vpgkit.evaluation.lmms.model.VpgkitLMM"


def manifest() -> Any:
    """lmms-eval's ``ModelManifest`` for ``--model vpgkit`` (the target of the ``lmms_eval.models`` entry
    point; lmms-eval calls it while it builds its model registry, so lmms-eval is importable here)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=MODEL_CLASS)
