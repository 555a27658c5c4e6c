"""Frozen-feature cache: vision features in safetensors shards, keyed by image content hash.

A frozen vision encoder gives the same features for the same image every epoch, so they can be computed
once. Each shard ``shard-<time>-<pid>-<n>.safetensors`` maps content hashes (see
:func:`~vpgkit.data.images.content_hash`) to feature tensors (N_v, D_v) and records the encoder
fingerprint in its metadata. Opening the cache with another fingerprint (other weights, image size or
preprocessing) ignores those shards — the cache is invalidated — and :meth:`FeatureCache.clear_stale`
deletes them. Shards are written atomically (temp file in the same folder, then ``os.replace``): a
process killed mid-write leaves at most a ``.tmp`` file, which is ignored and cleaned up.

Example:
    >>> import tempfile, torch
    >>> d = tempfile.mkdtemp()
    >>> cache = FeatureCache(d, encoder_fingerprint="eva-tiny-28px")
    >>> cache.put("ab12", torch.ones(5, 32))
    >>> cache.flush().suffix
    '.safetensors'
    >>> FeatureCache(d, "eva-tiny-28px").get("ab12").shape
    torch.Size([5, 32])
    >>> FeatureCache(d, "another-encoder").contains("ab12")
    False
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..fileio import mkstemp, share

__all__ = ["FeatureCache", "fingerprint"]

_META_KEY = "vpgkit_encoder_fingerprint"


def fingerprint(tensors: Mapping[str, torch.Tensor], config: Mapping | None = None) -> str:
    """A fingerprint of an encoder: SHA-256 over its tensors (names, shapes, dtypes, values) and a
    JSON config (image size, mean/std, dtype…). Any change of weights or preprocessing changes it.

    Example:
        >>> a = fingerprint({"w": torch.zeros(2)}, {"image_size": 28})
        >>> a == fingerprint({"w": torch.zeros(2)}, {"image_size": 28}), a == fingerprint({"w": torch.ones(2)}, {"image_size": 28})
        (True, False)
    """
    h = hashlib.sha256(json.dumps(dict(config or {}), sort_keys=True, default=str).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class FeatureCache:
    """Get / put features by content hash under ``directory`` for one encoder fingerprint.

    Args:
        directory: the cache folder (created).
        encoder_fingerprint: identifies the encoder + preprocessing (see :func:`fingerprint`).
        shard_size: buffered entries per shard; :meth:`put` writes a shard when the buffer is full.

    Several processes may fill the same folder (shard names hold the pid); call :meth:`refresh` to see
    shards written by others. Picklable: DataLoader workers get the index, not open files.
    """

    def __init__(self, directory: str | os.PathLike, encoder_fingerprint: str, shard_size: int = 1024):
        if not encoder_fingerprint:
            raise ValueError("FeatureCache: encoder_fingerprint must be a non-empty string")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.encoder_fingerprint = str(encoder_fingerprint)
        self.shard_size = shard_size
        self._pending: dict[str, torch.Tensor] = {}
        self._shards_written = 0
        self._open: dict[str, Any] = {}  # shard name → open safetensors handle (per process)
        self.refresh()

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.directory)!r}, fingerprint={self.encoder_fingerprint[:12]}…, {len(self)} entries)"

    def refresh(self) -> None:
        """Re-read the shard headers (entries, fingerprints); removes stale ``.tmp`` files of dead writes."""
        self.index: dict[str, str] = {}
        self._open = {}
        self.stale_shards: list[str] = []
        self.feature_shape: tuple[int, ...] | None = None
        for tmp in self.directory.glob(".tmp-*"):
            if time.time() - tmp.stat().st_mtime > 3600:  # an interrupted write, not a concurrent one
                tmp.unlink(missing_ok=True)
        for shard in sorted(self.directory.glob("shard-*.safetensors")):
            with safe_open(str(shard), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get(_META_KEY) != self.encoder_fingerprint:
                    self.stale_shards.append(shard.name)
                    continue
                for key in f.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                    self.index[key] = shard.name
                    if self.feature_shape is None:
                        self.feature_shape = tuple(f.get_slice(key).get_shape())

    def __len__(self) -> int:
        return len(set(self.index) | set(self._pending))

    def contains(self, key: str) -> bool:
        """Whether features for content hash ``key`` are cached (written or pending)."""
        return key in self._pending or key in self.index

    __contains__ = contains

    def get(self, key: str) -> torch.Tensor:
        """Features for ``key``; KeyError naming the key and the folder on a miss."""
        if key in self._pending:
            return self._pending[key]
        shard = self.index.get(key)
        if shard is None:
            raise KeyError(
                f"FeatureCache: no features for {key!r} in {self.directory} (fingerprint {self.encoder_fingerprint[:12]}…)"
            )
        # One handle per shard, kept open: opening parses the shard's header (an entry per image), which
        # cost more than the read itself when done for every image of every batch.
        handle = self._open.get(shard)
        if handle is None:
            handle = self._open[shard] = safe_open(str(self.directory / shard), framework="pt")
        return handle.get_tensor(key)

    def __getstate__(self) -> dict:
        """Pickled without open handles (DataLoader workers open their own)."""
        state = self.__dict__.copy()
        state["_open"] = {}
        return state

    def put(self, key: str, features: torch.Tensor) -> None:
        """Buffer features (N_v, D_v) for ``key``; a full buffer is written as a shard."""
        if self.feature_shape is None:
            self.feature_shape = tuple(features.shape)
        elif tuple(features.shape) != self.feature_shape:
            raise ValueError(
                f"FeatureCache.put: features for {key!r} have shape {tuple(features.shape)}, the cache holds {self.feature_shape}"
            )
        if not self.contains(key):
            self._pending[key] = features.detach().cpu().contiguous().clone()
        if len(self._pending) >= self.shard_size:
            self.flush()

    def flush(self) -> Path | None:
        """Write buffered entries as one shard, atomically; returns its path (None if nothing pending)."""
        if not self._pending:
            return None
        name = f"shard-{time.time_ns()}-{os.getpid()}-{self._shards_written}.safetensors"
        fd, tmp = mkstemp(dir=self.directory, prefix=".tmp-", suffix=".safetensors")
        os.close(fd)
        try:
            save_file(self._pending, tmp, metadata={_META_KEY: self.encoder_fingerprint})
            share(tmp)  # safetensors writes 0600
            os.replace(tmp, self.directory / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        for key in self._pending:
            self.index[key] = name
        self._pending = {}
        self._shards_written += 1
        return self.directory / name

    def clear_stale(self) -> int:
        """Delete shards of other fingerprints; returns how many."""
        for name in self.stale_shards:
            (self.directory / name).unlink(missing_ok=True)
        n, self.stale_shards = len(self.stale_shards), []
        return n
