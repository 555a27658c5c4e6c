"""lmms-eval task files for DEMON-format folders: ``python -m vpgkit.lmms_tasks PATH ... --out DIR``.

Writes ``DIR/<group>.yaml`` and one YAML per DEMON task (see :mod:`vpgkit.evaluation.lmms.configs`); then
``lmms-eval --model vpgkit --model_args adapter=RUN --include_path DIR --tasks <group>`` evaluates a run
on them from the local files. Needs no lmms-eval to write the files.

Example::

    python -m vpgkit.lmms_tasks outputs/vpgc/data/mini_demon --out outputs/vpgc/lmms_tasks
    # wrote 18 files to outputs/vpgc/lmms_tasks (group mini_demon: 12 tasks, 5 categories); run: lmms-eval ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import exit_on_input_error

__all__ = ["build_parser", "cli", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vpgkit.lmms_tasks",
        description="Write lmms-eval task YAML files for DEMON-format tasks (read from local files).",
    )
    parser.add_argument(
        "demon",
        nargs="+",
        type=Path,
        help="task folders (core.json + images/), task JSON files, or folders of task folders",
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="folder for the YAML files (lmms-eval --include_path)"
    )
    parser.add_argument(
        "--group", default=None, help="the group's name (default: the first path's folder name)"
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="answer length limit written into every task (default 32)",
    )
    return parser


def main(argv: list[str] | None = None) -> list[Path]:
    """Parse ``argv``, write the files, print what to run; returns the files written."""
    args = build_parser().parse_args(argv)
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise SystemExit(f"--max-new-tokens must be ≥ 1, got {args.max_new_tokens}")
    from ..evaluation.lmms.configs import write_task_configs

    written = write_task_configs(args.demon, args.out, args.group, args.max_new_tokens)
    group = written[0].stem
    tasks = sum(1 for p in written if p.read_text(encoding="utf-8").startswith("task:"))
    print(
        f"wrote {len(written)} files to {args.out} (group {group}: {tasks} tasks, "
        f"{len(written) - 1 - tasks} categories); run:\n"
        f"  lmms-eval --model vpgkit --model_args adapter=RUN_DIR --include_path {args.out} --tasks {group}"
    )
    return written


def cli() -> None:
    """``python -m vpgkit.lmms_tasks``: :func:`main` with input errors as one ``error:`` line (exit 1)."""
    exit_on_input_error(main)


if __name__ == "__main__":
    cli()
