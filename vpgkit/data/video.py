"""Frames of a video file, sampled uniformly with a real decoder (OpenCV, a base dependency).

Otter / MIMIC-IT treat a video as one visual input of F frames: the Perceiver reads the frames' patch
features together, ``(B, T_img, F, N_v, D_v)``. :func:`sample_frames` decodes F frames spread evenly over
the video (the first and last included when F > 1) as RGB arrays, ready for the image processor.

Example:
    >>> import tempfile, os, cv2, numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "clip.avi")
    >>> writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    >>> for i in range(12):
    ...     _ = writer.write(np.full((24, 32, 3), 20 * i, np.uint8))
    >>> writer.release()
    >>> frames = sample_frames(path, 4)
    >>> len(frames), frames[0].shape, frame_indices(12, 4)
    (4, (24, 32, 3), [0, 4, 7, 11])
"""

from __future__ import annotations

import os

import numpy as np

from .errors import DataError

__all__ = ["frame_indices", "sample_frames"]


def frame_indices(total: int, num_frames: int) -> list[int]:
    """``num_frames`` indices spread evenly over ``total`` frames (rounded; first and last included)."""
    if num_frames < 1:
        raise ValueError(f"frame_indices: num_frames must be ≥ 1, got {num_frames}")
    if total < num_frames:
        raise ValueError(f"frame_indices: the video has {total} frames, fewer than num_frames={num_frames}")
    if num_frames == 1:
        return [total // 2]
    return [round(i * (total - 1) / (num_frames - 1)) for i in range(num_frames)]


def sample_frames(path: str | os.PathLike, num_frames: int) -> list[np.ndarray]:
    """Decode ``num_frames`` evenly spaced frames of the video at ``path``.

    Returns:
        F arrays (H, W, 3) uint8, RGB.

    Raises:
        DataError: ``missing_image`` if the file does not exist, ``corrupt_image`` if OpenCV cannot open
            it, reports no frame count, or a chosen frame cannot be decoded — naming the file.
    """
    import cv2

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError("missing_image", f"video {path!r}: no such file")
    capture = cv2.VideoCapture(path)
    try:
        if not capture.isOpened():
            raise DataError(
                "corrupt_image", f"video {path!r}: OpenCV cannot open it (not a video, or no codec)"
            )
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if total <= 0:
            raise DataError("corrupt_image", f"video {path!r}: no frames (frame count {total})")
        try:
            wanted = frame_indices(total, num_frames)
        except ValueError as err:
            raise DataError("corrupt_image", f"video {path!r}: {err}") from err
        frames, index, want = [], 0, iter(wanted)
        target = next(want)
        while target is not None:
            ok, frame = capture.read()  # sequential decoding: exact frames, whatever the container's seeking
            if not ok:
                raise DataError(
                    "corrupt_image", f"video {path!r}: frame {index} of {total} cannot be decoded"
                )
            while target == index:
                frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
                target = next(want, None)
            index += 1
        return frames
    finally:
        capture.release()
