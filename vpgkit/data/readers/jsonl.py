"""vpgkit's own JSONL samples (one :meth:`Sample.to_json` object per line).

Example:
    >>> import json, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "s.jsonl")
    >>> line = {"id": "a", "images": ["x.png"], "conversation": [
    ...     {"role": "user", "text": "<image> Hi"}, {"role": "assistant", "text": "Hello."}]}
    >>> _ = open(path, "w").write(json.dumps(line) + "\\n")
    >>> [s.id for s in read_samples_jsonl(path)]
    ['a']
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import DataError, SkipReport
from ..sample import Sample
from .common import guarded, iter_jsonl, join_root, require

__all__ = ["read_samples_jsonl", "write_samples_jsonl"]


def read_samples_jsonl(
    path: str | os.PathLike, image_root: str | os.PathLike | None = None, report: SkipReport | None = None
) -> list[Sample]:
    """Samples from a ``.jsonl`` file; errors name ``file:line``.

    Args:
        path: the file.
        image_root: joined to relative image paths (None: keep them as written).
        report: skip bad lines into this report instead of raising.
    """
    samples = []
    for where, obj in iter_jsonl(path, report):
        sample = guarded(report, lambda where=where, obj=obj: _parse(obj, where, image_root))
        if sample is not None:
            samples.append(sample)
    return samples


def _parse(obj: Any, where: str, image_root) -> Sample:
    require(obj, "id", where)
    for i, turn in enumerate(require(obj, "conversation", where, list)):
        require(turn, "role", f"{where}: conversation[{i}]")
        require(turn, "text", f"{where}: conversation[{i}]", str)
    try:
        sample = Sample.from_json(obj, where)
    except ValueError as e:
        reason = "image_count_mismatch" if "markers but" in str(e) else "invalid_value"
        raise DataError(reason, str(e), str(obj.get("id"))) from None
    sample.images = [join_root(image_root, i) if isinstance(i, str) else i for i in sample.images]
    for example in sample.in_context:
        example.images = [join_root(image_root, i) if isinstance(i, str) else i for i in example.images]
    return sample


def write_samples_jsonl(samples: list[Sample], path: str | os.PathLike) -> None:
    """Write samples atomically (temp file in the same directory, then ``os.replace``)."""
    import json

    from ...fileio import mkstemp

    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = mkstemp(dir=directory, prefix=".tmp-", suffix=".jsonl")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for sample in samples:
                f.write(json.dumps(sample.to_json(), ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
