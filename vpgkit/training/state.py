"""Training checkpoints in safetensors + JSON only, written atomically.

A checkpoint directory ``step_000123/`` holds:

* ``trainable.safetensors`` — the trainable weights (names as in ``model.trainable_parameters()``);
* ``optimizer.safetensors`` + ``optimizer.json`` — every tensor of the optimiser state, and the rest
  (param groups, scalar state) as JSON;
* ``scheduler.json`` — the LR scheduler's state;
* ``rng_rank{r}.safetensors`` + ``rng_rank{r}.json`` — torch, numpy and Python RNG states per process;
* ``trainer_state.json`` — step, data position and anything else the loop needs, written LAST.

The directory is written under a temporary name and renamed into place, and ``latest.json`` is replaced
atomically afterwards, so a kill at any moment leaves the previous checkpoint complete and findable.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..fileio import mkstemp, share

STATE_FILE = "trainer_state.json"
LATEST = "latest.json"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _split_tensors(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace every tensor in a nested dict/list by ``{"__tensor__": key}``, collecting the tensors."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {str(k): _split_tensors(v, f"{prefix}.{k}", tensors) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_split_tensors(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    return obj


def _join_tensors(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        return {k: _join_tensors(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_tensors(v, tensors) for v in obj]
    return obj


def optimizer_to_files(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimiser ``state_dict`` into tensors (for safetensors) and a JSON-able rest."""
    tensors: dict[str, torch.Tensor] = {}
    rest = _split_tensors(state_dict, "optimizer", tensors)
    return tensors, rest


def optimizer_from_files(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    """Inverse of :func:`optimizer_to_files` (integer state keys restored)."""
    state = _join_tensors(rest, tensors)
    state["state"] = {int(k): v for k, v in state["state"].items()}
    for group in state["param_groups"]:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    return state


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """This process's torch / numpy / Python RNG states as (tensors, JSON)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    tensors = {"torch": torch.get_rng_state(), "numpy_keys": torch.from_numpy(keys.astype(np.int64))}
    info = {
        "numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }
    return tensors, info


def set_rng_state(tensors: dict[str, torch.Tensor], info: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    n = info["numpy"]
    np.random.set_state(
        (n["kind"], tensors["numpy_keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    p = info["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))


def begin_checkpoint(root: Path, step: int) -> Path:
    """Create the (empty) temporary directory of checkpoint ``step``; main process only.

    Every process then writes its RNG state into it (:func:`save_rng`) before the main process completes
    it with :func:`finish_checkpoint`.
    """
    tmp = root / f".step_{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)  # left over by a run killed while writing
    tmp.mkdir(parents=True)
    return tmp


def finish_checkpoint(
    tmp: Path,
    trainable: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    trainer_state: dict,
    keep: int = 2,
) -> Path:
    """Write the weights and states into ``tmp``, rename it into place, update ``latest.json``, prune.

    ``trainer_state`` must hold ``step``; its file is written last, so a directory without it is never
    treated as a checkpoint.
    """
    step = int(trainer_state["step"])
    root, final = tmp.parent, tmp.parent / f"step_{step:06d}"
    try:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in trainable.items()}, tmp / "trainable.safetensors"
        )
        tensors, rest = optimizer_to_files(optimizer.state_dict())
        save_file(tensors, tmp / "optimizer.safetensors")
        share(tmp / "trainable.safetensors")
        share(tmp / "optimizer.safetensors")
        write_json_atomic(tmp / "optimizer.json", rest)
        write_json_atomic(tmp / "scheduler.json", scheduler.state_dict())
        write_json_atomic(tmp / STATE_FILE, trainer_state)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_json_atomic(root / LATEST, {"checkpoint": final.name, "step": step})
    complete = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in complete[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save_rng(checkpoint: Path, rank: int) -> None:
    """Write this process's RNG states into ``checkpoint`` (files are per rank)."""
    tensors, info = rng_state()
    save_file(tensors, checkpoint / f"rng_rank{rank}.safetensors")
    share(checkpoint / f"rng_rank{rank}.safetensors")
    write_json_atomic(checkpoint / f"rng_rank{rank}.json", info)


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint under ``root`` (via ``latest.json``), or None."""
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    path = root / json.loads(pointer.read_text())["checkpoint"]
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"{pointer} points to {path}, which is not a complete checkpoint")
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`: trainable, optimizer, scheduler, trainer_state."""
    missing = [
        f
        for f in (
            "trainable.safetensors",
            "optimizer.safetensors",
            "optimizer.json",
            "scheduler.json",
            STATE_FILE,
        )
        if not (path / f).is_file()
    ]
    if missing:
        raise FileNotFoundError(f"checkpoint {path} is incomplete: missing {missing}")
    return {
        "trainable": load_file(path / "trainable.safetensors"),
        "optimizer": optimizer_from_files(
            load_file(path / "optimizer.safetensors"), json.loads((path / "optimizer.json").read_text())
        ),
        "scheduler": json.loads((path / "scheduler.json").read_text()),
        "trainer_state": json.loads((path / STATE_FILE).read_text()),
    }


def load_rng(path: Path, rank: int) -> None:
    """Restore this process's RNG states from ``path`` (a missing rank file is an error)."""
    tensors_file, info_file = path / f"rng_rank{rank}.safetensors", path / f"rng_rank{rank}.json"
    if not tensors_file.is_file() or not info_file.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} has no RNG state for process {rank} (resumed with more processes?)"
        )
    set_rng_state(load_file(tensors_file), json.loads(info_file.read_text()))
