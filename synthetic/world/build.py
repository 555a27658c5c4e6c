"""Build the tiny world's frozen backbones: ``python -m synthetic.world.build [--out DIR] [--seed N]``.

Writes (each file atomically) into ``--out`` (default: the package's ``vpgkit/assets/tiny_world``):

* ``eva.safetensors`` — ``TimmEvaEncoder.state_dict()`` (``visual_encoder.*``, ``ln_vision.*``), fp16;
  load with ``TimmEvaEncoder.from_checkpoint(path, EvaVisionConfig.preset("tiny_world"))``;
* ``llm/`` — the tiny LLaMA (``save_pretrained``, safetensors, fp16) and its tokenizer; load with
  ``vpgkit.backbones.language.load_causal_lm`` and ``AutoTokenizer.from_pretrained(..., local_files_only=True)``;
* ``qformer.safetensors`` — ``QFormer.state_dict()`` fp16 (``QFormerConfig.preset("tiny_world")``);
* ``manifest.json`` — the command, seed, versions, steps, final losses, the backbones' diagnostics
  (:mod:`synthetic.world.diagnostics`: LM ceilings with perfect input, ViT probe), sizes and sha256.

The build is deterministic per seed on one machine (``torch.use_deterministic_algorithms``, a fixed
thread count); see ``docs/tiny_world.md`` for how close reruns on other machines are.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..storage import atomic_write_json
from .backbones import (
    QUESTION_TASKS,
    SUMMARY_TASKS,
    DocumentLayout,
    check_grounding_weight,
    train_language_model,
    train_qformer,
    train_vision_encoder,
)
from .diagnostics import format_diagnostics, lm_ceilings, vit_probe
from .language import build_world_tokenizer

DEFAULT_STEPS = {"lm": 2000, "vit": 800, "qformer": 600}


def default_out() -> Path:
    """``vpgkit/assets/tiny_world`` of the installed (or checked-out) vpgkit."""
    import vpgkit.assets

    return Path(vpgkit.assets.__file__).parent / "tiny_world"


def provenance(directory: Path | None = None) -> dict[str, Any]:
    """Which world build a result was measured on: its manifest's command(s) and file sha256 (default: the
    assets this vpgkit loads). Results files store it, since builds with other options share the paths."""
    manifest = json.loads(((directory or default_out()) / "manifest.json").read_text(encoding="utf-8"))
    keep = ("command", "reused_backbones_from", "qformer_grounding", "qformer_grounding_weight")
    return {k: manifest[k] for k in keep if k in manifest} | {
        "sha256": {k: v["sha256"][:16] for k, v in manifest["files"].items() if k.endswith(".safetensors")}
    }


def built_by(assets: dict[str, Any]) -> str:
    """Markdown naming the command that made a world (``assets``: a :func:`provenance`) and, for a
    ``--reuse-backbones DIR`` build, the command that made DIR, whose ViT and LM it kept."""
    reused = assets.get("reused_backbones_from")
    return f"`{assets['command']}`" + (f" (DIR: the build of `{reused}`)" if reused else "")


def slot_layout(directory: Path | None = None) -> DocumentLayout:
    """How the LM of the build in ``directory`` (default: the shipped one) was shown images: its manifest's
    ``lm_row_column_slots``, so that diagnostics give it slots as it learned to read them.

    Example (world v10's LM reads a row and a column for every position):
        >>> slot_layout().row_column_slots
        True
    """
    manifest = json.loads(((directory or default_out()) / "manifest.json").read_text(encoding="utf-8"))
    return DocumentLayout(row_column_slots=bool(manifest.get("lm_row_column_slots", False)))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _save_safetensors(path: Path, state: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().to(torch.float16).contiguous() for k, v in state.items()}, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; shipped files must be readable by every user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def round_to_fp16(module: torch.nn.Module) -> None:
    """Round ``module``'s weights to fp16 in place, keeping fp32 storage: the values the build ships.

    Example:
        >>> m = torch.nn.Linear(2, 2); round_to_fp16(m); m.weight.dtype
        torch.float32
    """
    module.load_state_dict({k: v.half().float() for k, v in module.state_dict().items()})


def save_llm(directory: Path, llm, tokenizer) -> None:
    """``save_pretrained`` into a temporary sibling, then swap it in (a killed build leaves the old one)."""
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=".llm.", suffix=".tmp"))
    try:
        llm.to(torch.float16).save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        _swap_in(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(tmp: Path, directory: Path) -> None:
    """Replace ``directory`` by the finished sibling ``tmp``."""
    old = directory.with_name(f".{directory.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if directory.exists():
        os.replace(directory, old)
    os.chmod(tmp, 0o755)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def _copy_backbones(source: Path, out: Path) -> None:
    """Copy an earlier build's ViT and LM files byte for byte (each swapped in whole)."""
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".eva.", suffix=".tmp")
    os.close(fd)
    shutil.copyfile(source / "eva.safetensors", tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, out / "eva.safetensors")
    tmp_dir = Path(tempfile.mkdtemp(dir=out, prefix=".llm.", suffix=".tmp"))
    shutil.copytree(source / "llm", tmp_dir, dirs_exist_ok=True)
    _swap_in(tmp_dir, out / "llm")


def _load_backbones(directory: Path):
    """The ViT, LM and tokenizer of an earlier build in ``directory`` (fp32), and its manifest's stages."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    from vpgkit.backbones import EvaVisionConfig, TimmEvaEncoder

    manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    vit = TimmEvaEncoder.from_checkpoint(directory / "eva.safetensors", EvaVisionConfig.preset("tiny_world"))
    llm = LlamaForCausalLM.from_pretrained(directory / "llm", dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(directory / "llm")
    return vit.eval(), llm.eval(), tokenizer, manifest


def build(
    out: Path,
    seed: int = 0,
    steps: dict[str, int] | None = None,
    threads: int = 2,
    log=print,
    reuse: Path | None = None,
    grounding: bool = False,
    grounding_weight: float = 1.0,
    question_summary: float = 0.0,
    summary_tasks: tuple[str, ...] = SUMMARY_TASKS,
    compare: float = 0.0,
    length_groups: int = 1,
    pair_colours: float = 0.0,
    row_column_slots: bool = False,
    asked_cells: float = 0.0,
    paraphrase: float = 0.0,
    processes: int = 1,
) -> dict[str, Any]:
    """Train the three backbones and write them with a manifest to ``out``; returns the manifest.

    ``reuse``: a directory of an earlier build whose ViT and LM (and their manifest entries) are taken as
    they are, so only the Q-Former is trained. It learns against fp16-rounded backbones either way, so with
    the same seed this gives the files a full build would, ~17 minutes sooner. ``grounding``: the Q-Former
    also learns :class:`~synthetic.world.backbones.GroundingHead`'s objective (a stage-1 stand-in), its
    loss scaled by ``grounding_weight``.
    ``question_summary``: weight of the LM's :class:`~synthetic.world.backbones.QuestionSummaryHead` loss
    (0: off; the shipped build uses 0.1, world v5 used 0.5), on the documents of ``summary_tasks``.
    ``compare``: weight of the LM's :class:`~synthetic.world.backbones.SlotRelationHead` loss (0: off;
    worlds v8 to v10 use 1). ``length_groups``: the LM's steps run in that many groups of documents of
    similar length (1: whole batches; N > 1: the same loss with less padding, other bits; faster with
    ``processes`` > 1, not with 2 threads in one process; worlds v9 and v10 use 4). ``pair_colours``:
    weight of the LM's :class:`~synthetic.world.backbones.PairColourHead` loss (0: off; worlds v8 to v10
    use 1). ``row_column_slots``: the LM's object slots name a row and a column for every position
    (:class:`~synthetic.world.backbones.DocumentLayout`); recorded in the manifest, where
    :func:`slot_layout` finds it for the diagnostics (on in world v10). ``asked_cells``: weight of the
    LM's :class:`~synthetic.world.backbones.AskedCellHead` loss (0: off; world v10 uses 0.1).
    ``paraphrase``: the share of the LM's documents asked in
    :data:`~synthetic.world.language.PARAPHRASE_WORDING` (0: none, as up to world v9; world v10 uses 0.5).
    ``processes`` > 1: each stage trains data-parallel in that many processes of one thread each
    (:mod:`synthetic.world.data_parallel`; other bits than one process of ``threads`` threads; worlds v9
    and v10 use 2).
    """
    import timm
    import transformers

    check_grounding_weight(grounding, grounding_weight)  # before the ~17 minutes of the LM and ViT
    steps = {**DEFAULT_STEPS, **(steps or {})}
    layout = DocumentLayout(row_column_slots=row_column_slots, paraphrase=paraphrase)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    reused: dict[str, Any] = {}
    trained = {}  # stage name → StageResult
    if reuse is not None:
        vit, llm, tokenizer, previous = _load_backbones(reuse)
        layout = slot_layout(reuse)
        reused = {k: previous["stages"][k] for k in ("language_model", "vision_encoder")}
        reused_command = previous.get("reused_backbones_from", previous["command"])
        log(f"reusing the ViT and LM of {reuse} (steps {steps['lm']}/{steps['vit']} not trained)")
    else:
        tokenizer = build_world_tokenizer()
        llm, trained["language_model"] = train_language_model(
            tokenizer,
            seed,
            steps["lm"],
            log=log,
            question_summary=question_summary,
            summary_tasks=summary_tasks,
            compare=compare,
            length_groups=length_groups,
            pair_colours=pair_colours,
            layout=layout,
            asked_cells=asked_cells,
            processes=processes,
        )
        vit, trained["vision_encoder"] = train_vision_encoder(
            seed, steps["vit"], log=log, processes=processes
        )
    # The Q-Former learns against the backbones exactly as shipped (fp16-rounded weights).
    round_to_fp16(vit)
    round_to_fp16(llm)
    qformer, trained["qformer"] = train_qformer(
        vit, llm, tokenizer, seed, steps["qformer"], log=log, grounding=grounding,
        grounding_weight=grounding_weight, processes=processes,
    )  # fmt: skip
    # What the frozen backbones can do alone, before any adapter claim (the weights as shipped).
    diagnostics = {"lm_ceilings": lm_ceilings(llm, tokenizer, layout=layout), "vit_probe": vit_probe(vit)}
    log(format_diagnostics(diagnostics))
    if reuse is None:
        _save_safetensors(out / "eva.safetensors", vit.state_dict())
        save_llm(out / "llm", llm, tokenizer)
    elif reuse.resolve() != out.resolve():
        _copy_backbones(reuse, out)
    _save_safetensors(out / "qformer.safetensors", qformer.state_dict())
    files = sorted(
        p for p in out.rglob("*") if p.is_file() and p.name != "manifest.json" and not p.name.startswith(".")
    )
    manifest = {
        "command": f"python -m synthetic.world.build --seed {seed}",  # main() records the full command
        "seed": seed,
        "threads": threads,
        **({"processes": processes} if processes > 1 else {}),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "timm": timm.__version__,
            "numpy": np.__version__,
        },
        "presets": {"vision": "tiny_world", "qformer": "tiny_world", "vpgc": "tiny_world"},
        "qformer_grounding": grounding,
        **({"qformer_grounding_weight": grounding_weight} if grounding_weight != 1.0 else {}),
        "vocab_size": len(tokenizer),
        "stages": reused
        | {
            name: {
                "steps": r.steps,
                "final_loss": round(r.final_loss, 5),
                "seconds": round(r.seconds, 1),
                "first_loss": round(r.losses[0], 5),
            }
            for name, r in trained.items()
        },
        "diagnostics": diagnostics,
        # with reuse: the command that trained the ViT and LM (the files' sha256 identify them too)
        **({"reused_backbones_from": reused_command} if reuse is not None else {}),
        **({"lm_question_summary": question_summary} if question_summary else {}),
        **({"lm_question_summary_tasks": list(summary_tasks)} if summary_tasks != SUMMARY_TASKS else {}),
        **({"lm_compare": compare} if compare else {}),
        **({"lm_length_groups": length_groups} if length_groups != 1 else {}),
        **({"lm_pair_colours": pair_colours} if pair_colours else {}),
        **({"lm_row_column_slots": True} if layout.row_column_slots else {}),
        **({"lm_asked_cells": asked_cells} if asked_cells else {}),
        **({"lm_paraphrase": paraphrase} if paraphrase else {}),
        "wall_seconds": round(time.perf_counter() - start, 1),
        "files": {
            p.relative_to(out).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256(p)} for p in files
        },
        "total_bytes": sum(p.stat().st_size for p in files),
    }
    atomic_write_json(out / "manifest.json", manifest)
    log(
        f"wrote {len(files)} files ({manifest['total_bytes'] / 1e6:.2f} MB) to {out} in {manifest['wall_seconds']} s"
    )
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m synthetic.world.build",
        description="Train the tiny world's frozen EVA ViT, LLaMA (+ tokenizer) and Q-Former and write them "
        "as fp16 safetensors with a manifest (command, seed, versions, losses, sha256).",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output directory (default: vpgkit/assets/tiny_world)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    parser.add_argument("--lm-steps", type=int, default=DEFAULT_STEPS["lm"])
    parser.add_argument("--vit-steps", type=int, default=DEFAULT_STEPS["vit"])
    parser.add_argument("--qformer-steps", type=int, default=DEFAULT_STEPS["qformer"])
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads (results depend on it slightly)"
    )
    parser.add_argument(
        "--reuse-backbones", type=Path, default=None, metavar="DIR",
        help="take the ViT and LM of an earlier build in DIR and train only the Q-Former (same files as a "
        "full build with the same seed and steps, ~17 min sooner)",
    )  # fmt: skip
    parser.add_argument(
        "--qformer-grounding", action="store_true",
        help="the Q-Former also learns to read the object a phrase added to its queries names (a stand-in "
        "for BLIP-2's stage 1, which lets VPG-C steer it; on in the shipped build)",
    )  # fmt: skip
    parser.add_argument(
        "--qformer-grounding-weight", type=float, default=1.0, metavar="WEIGHT",
        help="weight of the grounding loss against the caption loss (default 1; worlds v7 to v10 use 4)",
    )  # fmt: skip
    parser.add_argument(
        "--lm-question-summary", type=float, default=0.0, metavar="WEIGHT",
        help="the LM also learns to hold what a question names about its object in the last prompt token "
        "at the input of layer 3 (VPG-C's guidance), with this loss weight (0: off; the shipped build uses 0.1)",
    )  # fmt: skip
    parser.add_argument(
        "--lm-question-summary-tasks", nargs="+", default=list(SUMMARY_TASKS), choices=QUESTION_TASKS,
        metavar="TASK", help=f"the documents whose questions the summary reads (default: {' '.join(SUMMARY_TASKS)}; "
        "difference: the region its question names)",
    )  # fmt: skip
    parser.add_argument(
        "--lm-compare", type=float, default=0.0, metavar="WEIGHT",
        help="the LM also learns what each slot of a two-image document is to the other image (first image; "
        "second image: new, changed or the same there) at the input of layer 5, with this loss weight (0: off; "
        "worlds v8 to v10 use 1; docs/tiny_world.md)",
    )  # fmt: skip
    parser.add_argument(
        "--lm-length-groups", type=int, default=1, metavar="N",
        help="run each LM step's documents in N groups of similar length: the same loss with less padding, "
        "other bits than whole batches; faster with --processes, not with 2 threads in one process (default 1; "
        "worlds v9 and v10 use 4)",
    )  # fmt: skip
    parser.add_argument(
        "--lm-pair-colours", type=float, default=0.0, metavar="WEIGHT",
        help="the LM also learns to name, at the last prompt token at the input of layer 5, the colour of the "
        "asked object in each image of a two-image question, with this loss weight (0: off; worlds v8 to v10 "
        "use 1; docs/tiny_world.md)",
    )  # fmt: skip
    parser.add_argument(
        "--lm-row-column-slots", action="store_true",
        help="the LM's object slots name a row and a column for every position ('center left' for 'left'), "
        "so that a middle row or column is a word in the slot, not a word missing from it (on in world v10)",
    )  # fmt: skip
    parser.add_argument(
        "--lm-asked-cells", type=float, default=0.0, metavar="WEIGHT",
        help="the LM also learns to name, at the last prompt token at the input of layer 5, the grid cell of "
        "the object a detail question asks about, with this loss weight (0: off; world v10 uses 0.1; "
        "docs/tiny_world.md)",
    )  # fmt: skip
    parser.add_argument(
        "--lm-paraphrase", type=float, default=0.0, metavar="SHARE",
        help="this share of the LM's documents asks its tasks in the paraphrase wording (more ways to ask "
        "the training wording's questions, held to the evaluation wording's hold-out rules; 0: off; world v10 "
        "uses 0.5)",
    )  # fmt: skip
    parser.add_argument(
        "--processes", type=int, default=1, metavar="N",
        help="train each stage data-parallel in N processes of one thread each (--threads then applies only "
        "to the diagnostics; other bits than 1; default 1; worlds v9 and v10 use 2)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.processes < 1:
        parser.error(f"--processes: expected a positive number of processes, got {args.processes}")
    if args.lm_length_groups < 1:
        parser.error(f"--lm-length-groups: expected a positive number of groups, got {args.lm_length_groups}")
    if not 0.0 <= args.lm_paraphrase <= 1.0:
        parser.error(f"--lm-paraphrase: expected a share in [0, 1], got {args.lm_paraphrase}")
    summary_tasks = tuple(t for t in QUESTION_TASKS if t in args.lm_question_summary_tasks)
    if summary_tasks != SUMMARY_TASKS and not args.lm_question_summary:
        parser.error("--lm-question-summary-tasks needs --lm-question-summary WEIGHT")
    try:
        check_grounding_weight(args.qformer_grounding, args.qformer_grounding_weight)
    except ValueError as e:
        parser.error(f"--qformer-grounding-weight: {e}")
    for flag, value in (
        ("--lm-question-summary", args.lm_question_summary),
        ("--lm-compare", args.lm_compare),
        ("--lm-length-groups", args.lm_length_groups != 1),
        ("--lm-pair-colours", args.lm_pair_colours),
        ("--lm-row-column-slots", args.lm_row_column_slots),
        ("--lm-asked-cells", args.lm_asked_cells),
        ("--lm-paraphrase", args.lm_paraphrase),
    ):
        if value and args.reuse_backbones is not None:
            parser.error(f"{flag} trains the LM; it cannot be combined with --reuse-backbones")
    out = args.out or default_out()
    steps = {"lm": args.lm_steps, "vit": args.vit_steps, "qformer": args.qformer_steps}
    manifest = build(
        out, args.seed, steps, args.threads, reuse=args.reuse_backbones, grounding=args.qformer_grounding,
        grounding_weight=args.qformer_grounding_weight, question_summary=args.lm_question_summary, summary_tasks=summary_tasks,
        compare=args.lm_compare, length_groups=args.lm_length_groups, pair_colours=args.lm_pair_colours,
        row_column_slots=args.lm_row_column_slots, asked_cells=args.lm_asked_cells, paraphrase=args.lm_paraphrase,
        processes=args.processes,
    )  # fmt: skip
    cmd = ["python -m synthetic.world.build", f"--seed {args.seed}"]  # --out changes no byte: not recorded
    cmd += [f"--{k.replace('_', '-')}-steps {v}" for k, v in steps.items() if v != DEFAULT_STEPS[k]]
    if args.threads != 2:
        cmd.append(f"--threads {args.threads}")
    if args.qformer_grounding:
        cmd.append("--qformer-grounding")
    if args.qformer_grounding_weight != 1.0:
        cmd.append(f"--qformer-grounding-weight {args.qformer_grounding_weight:g}")
    if args.lm_question_summary:
        cmd.append(f"--lm-question-summary {args.lm_question_summary:g}")
    if summary_tasks != SUMMARY_TASKS:
        cmd.append("--lm-question-summary-tasks " + " ".join(summary_tasks))
    if args.lm_compare:
        cmd.append(f"--lm-compare {args.lm_compare:g}")
    if args.lm_length_groups != 1:
        cmd.append(f"--lm-length-groups {args.lm_length_groups}")
    if args.lm_pair_colours:
        cmd.append(f"--lm-pair-colours {args.lm_pair_colours:g}")
    if args.lm_row_column_slots:
        cmd.append("--lm-row-column-slots")
    if args.lm_asked_cells:
        cmd.append(f"--lm-asked-cells {args.lm_asked_cells:g}")
    if args.lm_paraphrase:
        cmd.append(f"--lm-paraphrase {args.lm_paraphrase:g}")
    if args.processes != 1:
        cmd.append(f"--processes {args.processes}")
    if args.reuse_backbones is not None:
        cmd.append("--reuse-backbones DIR")  # DIR: a build made by manifest["reused_backbones_from"]
    manifest["command"] = " ".join(cmd)
    atomic_write_json(out / "manifest.json", manifest)
    os.chmod(out / "manifest.json", 0o644)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
