"""Publishing adapters: to a local folder (adapter + model card) or to a hub repo.

``python -m vpgkit.publish RUN_DIR [REPO_ID] [--local-dir DIR] [--dry-run]`` publishes a training run
(the ``output_dir`` of ``python -m vpgkit.train``): the model is rebuilt from the run's config with its
adapter, the model card is written from the run (recipe, data, steps, smoothed final loss, and the
DEMON scores when the run evaluated), and the folder is uploaded to ``REPO_ID`` and/or written to
``--local-dir``. A folder already written by :func:`publish_folder` is uploaded as it is.

Examples::

    python -m vpgkit.publish outputs/vpgc --local-dir pub          # then load_adapter(model, "pub")
    python -m vpgkit.publish outputs/vpgc me/vpgc-tiny --dry-run   # show the card and files only
    python -m vpgkit.publish outputs/vpgc me/vpgc-tiny --private
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from .adapter import CONFIG_NAME, read_config, safetensors_shapes, save_adapter
from .model_card import model_card
from .report import CheckpointError


def publish_folder(
    model: nn.Module,
    directory: str | os.PathLike,
    *,
    repo_id: str | None = None,
    base_model: str | None = None,
    recipe: str | None = None,
    data: Sequence[str] | str | None = None,
    metrics: Mapping[str, Any] | None = None,
    description: str | None = None,
    license: str | None = None,
) -> Path:
    """Write the adapter and its model card (``README.md``) to ``directory``, atomically.

    The folder is exactly what :func:`push_to_hub` uploads, and :func:`~vpgkit.load_adapter` reads it
    back (also from a hub cache with ``HF_HUB_OFFLINE=1``). Card arguments: see :func:`model_card`.
    """
    card = model_card(
        model,
        repo_id=repo_id,
        base_model=base_model,
        recipe=recipe,
        data=data,
        metrics=metrics,
        description=description,
        license=license,
    )
    return save_adapter(model, directory, extra_files={"README.md": card})


def validate_adapter_folder(directory: str | os.PathLike) -> dict[str, Any]:
    """Check a folder before upload: config schema, readable weights header, a model card."""
    directory = Path(directory)
    config = read_config(directory)
    shapes = safetensors_shapes(directory / config.get("weights", "adapter.safetensors"))
    if len(shapes) != config["trainable"]["tensors"]:
        raise CheckpointError(
            f"{directory}: weights file holds {len(shapes)} tensors, config says {config['trainable']['tensors']}"
        )
    if not (directory / "README.md").is_file():
        raise CheckpointError(f"{directory}: no README.md model card; write the folder with publish_folder()")
    return config


def upload_folder(
    directory: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    endpoint: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
):
    """Create ``repo_id`` (if needed) and upload a validated adapter folder; returns the ``CommitInfo``."""
    from huggingface_hub import HfApi

    validate_adapter_folder(directory)
    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo_id, private=private, repo_type="model", exist_ok=True)
    return api.upload_folder(
        repo_id=repo_id,
        repo_type="model",
        folder_path=str(directory),
        revision=revision,
        commit_message=commit_message or "Upload vpgkit adapter",
    )


def push_to_hub(
    model: nn.Module,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    endpoint: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    **card: Any,
):
    """Save ``model``'s adapter with a model card and upload it to ``repo_id``.

    Uses ``huggingface_hub.HfApi().create_repo`` and ``upload_folder``; the endpoint defaults to
    ``HF_ENDPOINT``. ``card`` takes the :func:`model_card` arguments (``base_model``, ``recipe``,
    ``data``, ``metrics`` …). Returns the ``CommitInfo``.

    Example:
        >>> push_to_hub(model, "me/vpgc-vicuna7b", recipe="vpgc", data=["synthetic-64k"])  # doctest: +SKIP
    """
    with tempfile.TemporaryDirectory(prefix="vpgkit-publish-") as tmp:
        folder = publish_folder(model, Path(tmp) / "adapter", repo_id=repo_id, **card)
        return upload_folder(
            folder,
            repo_id,
            private=private,
            token=token,
            endpoint=endpoint,
            revision=revision,
            commit_message=commit_message,
        )


def _is_run(directory: Path) -> bool:
    return (directory / ".hydra" / "config.yaml").is_file() and (directory / "adapter").is_dir()


def run_card(run: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """(model with the run's adapter loaded, :func:`model_card` arguments) of a training run directory.

    The card states only what the run recorded: its recipe, data sources, steps and the mean loss of
    its last steps (``checkpoints/``), and the DEMON category scores of ``eval/results.json`` when the
    run evaluated (none otherwise).

    Example:
        >>> model, card = run_card("outputs/vpgc")  # doctest: +SKIP
        >>> publish_folder(model, "pub", **card)  # doctest: +SKIP
    """
    from ..evaluate import load_run
    from ..training.plot import smoothing_window
    from ..training.state import latest_checkpoint, load_checkpoint

    run = Path(run)
    model, _, cfg, _ = load_run(run)
    data = [f"{s.name} ({s.format}{': ' + Path(s.path).name if s.path else ''})" for s in cfg.data.train]
    metrics: dict[str, Any] = {}
    checkpoint = latest_checkpoint(run / "checkpoints") if (run / "checkpoints").is_dir() else None
    if checkpoint is not None:
        state = load_checkpoint(checkpoint)["trainer_state"]
        losses = state.get("losses") or []
        metrics["training steps"] = state["step"]
        if losses:
            window = smoothing_window(len(losses))
            name = f"train loss (mean of the last {window} steps)" if window > 1 else "train loss (last step)"
            metrics[name] = f"{statistics.fmean(losses[-window:]):.4f}"
    results = run / "eval" / "results.json"
    if results.is_file():
        evaluated = json.loads(results.read_text())
        for key, category in sorted(evaluated.get("categories", {}).items()):
            metrics[f"DEMON {key} ({category['metric']})"] = f"{category['score']:.2f}"
        metrics["DEMON samples evaluated"] = len(evaluated.get("predictions", []))
    llm = cfg.model.llm
    base = llm.path if llm.kind == "pretrained" else f"{llm.kind} (random weights, seed {cfg.seed})"
    return model, {"recipe": cfg.recipe, "data": data, "metrics": metrics or None, "base_model": base}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vpgkit.publish",
        description="Publish a training run (or a folder written by publish_folder): write the model card "
        "from the run, then upload to a hub repo and/or write a local folder.",
    )
    parser.add_argument(
        "source",
        type=Path,
        help="a run's output_dir (.hydra/config.yaml + adapter/), its adapter/ folder, or a published folder",
    )
    parser.add_argument("repo_id", nargs="?", default=None, help="hub repo id, owner/name (upload)")
    parser.add_argument("--local-dir", type=Path, default=None, help="write the published folder here")
    parser.add_argument("--dry-run", action="store_true", help="build and check the folder; upload nothing")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--revision", default=None, help="branch to commit to (default: main)")
    parser.add_argument("--message", default=None, help="commit message")
    parser.add_argument("--endpoint", default=None, help="hub endpoint (default: $HF_ENDPOINT)")
    parser.add_argument("--license", default=None, help="SPDX license id for the card")
    parser.add_argument("--description", default=None, help="text under the card's title")
    return parser


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def main(argv: list[str] | None = None) -> int:
    """``python -m vpgkit.publish SOURCE [REPO_ID] [--local-dir DIR] [--dry-run] ...``; returns the exit code
    (0 done, 1 upload failed, 2 bad input), each error on one line."""
    args = build_parser().parse_args(argv)
    if args.repo_id is None and args.local_dir is None and not args.dry_run:
        print(
            "vpgkit.publish: give REPO_ID to upload, --local-dir DIR to write a folder, or both",
            file=sys.stderr,
        )
        return 2
    source = args.source
    # An adapter folder inside a run (outputs/vpgc/adapter) publishes the run.
    if not (source / "README.md").is_file() and not _is_run(source) and _is_run(source.parent):
        source = source.parent
    with tempfile.TemporaryDirectory(prefix="vpgkit-publish-") as tmp:
        try:
            if _is_run(source):
                model, card = run_card(source)
                folder = publish_folder(
                    model,
                    Path(tmp) / "adapter",
                    repo_id=args.repo_id,
                    license=args.license,
                    description=args.description,
                    **card,
                )
            elif (source / CONFIG_NAME).is_file():
                folder = source
            else:
                raise CheckpointError(
                    f"{source}: neither a training run (.hydra/config.yaml + adapter/) nor an adapter folder"
                )
            config = validate_adapter_folder(folder)
        except (CheckpointError, FileNotFoundError, ValueError) as err:
            print(f"vpgkit.publish: {err}", file=sys.stderr)
            return 2
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        print(
            f"adapter: {config['trainable']['parameters']:,} trainable weights in "
            f"{', '.join(config['trainable']['parts'])}; files: {', '.join(files)}"
        )
        if args.dry_run:
            print((folder / "README.md").read_text())
            return 0
        if args.local_dir is not None:
            try:
                _copy_folder(folder, args.local_dir)
            except (CheckpointError, OSError) as err:
                print(f"vpgkit.publish: cannot write {args.local_dir}: {_one_line(err)}", file=sys.stderr)
                return 2
            print(f"wrote {args.local_dir}")
        if args.repo_id is None:
            return 0
        try:
            info = upload_folder(
                folder,
                args.repo_id,
                private=args.private,
                endpoint=args.endpoint,
                revision=args.revision,
                commit_message=args.message,
            )
        except Exception as err:  # network, auth, hub refusals: the CLI reports them, no traceback
            print(f"vpgkit.publish: upload to {args.repo_id} failed: {_one_line(err)}", file=sys.stderr)
            return 1
        print(f"uploaded to {args.repo_id}: {getattr(info, 'commit_url', info)}")
        return 0


def _copy_folder(folder: Path, target: Path) -> None:
    """Copy a published folder to ``target`` through :func:`atomic_directory` (an existing adapter there
    is replaced only once the copy is complete; anything else there is refused)."""
    from ..fileio import share_tree
    from .adapter import _check_replaceable, atomic_directory

    if folder.resolve() == Path(target).resolve():
        return
    _check_replaceable(Path(target))
    with atomic_directory(target) as tmp:
        shutil.copytree(folder, tmp, dirs_exist_ok=True)
        share_tree(tmp)
