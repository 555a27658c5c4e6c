"""Data synthesis for vpgkit.

Subpackages:

- :mod:`synthetic.teachers` — the teacher interface and its backends (local transformers model, any
  OpenAI-compatible chat-completions endpoint), with retries, a concurrency limit, an on-disk response
  cache and token accounting.
- :mod:`synthetic.evolution` — MMEvol-style instruction evolution and elimination.
- :mod:`synthetic.syphus` — MIMIC-IT (Syphus) style annotation-to-instruction generation.

Command lines: ``python -m synthetic.evolve --help`` and ``python -m synthetic.instruct --help``.
This package may import :mod:`vpgkit`; :mod:`vpgkit` never imports it.
"""

from vpgkit.threads import prefer_passive_waiting

prefer_passive_waiting()  # before torch loads OpenMP (see vpgkit.threads)
