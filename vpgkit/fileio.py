"""Temporary files and folders for atomic writes that end up with the umask's permissions.

``tempfile.mkstemp`` creates files with mode 0600 and ``tempfile.mkdtemp`` folders with 0700 (they are
meant to be private). vpgkit writes through them and renames them into place, so without a fix every
adapter, checkpoint or results file would stay private to its writer whatever the umask says. These
helpers make the temporary file or folder exactly as ``open()`` / ``os.mkdir()`` would (0666 / 0777
minus the umask) before anything is written to it.

Example:
    >>> import os, tempfile
    >>> old = os.umask(0o022)
    >>> fd, path = mkstemp(dir=tempfile.mkdtemp())
    >>> os.close(fd)
    >>> oct(os.stat(path).st_mode & 0o777)
    '0o644'
    >>> _ = os.umask(old)
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["current_umask", "mkdtemp", "mkstemp", "share", "share_tree", "shared_mode"]


def current_umask() -> int:
    """This process's umask.

    Linux reports it in ``/proc/self/status`` (no change to the process state); elsewhere it is read by
    setting and restoring it, as the os module offers no getter.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def shared_mode(directory: bool = False) -> int:
    """The mode ``open()`` (0666) or ``os.mkdir()`` (0777) would give a new file or folder under the umask."""
    return (0o777 if directory else 0o666) & ~current_umask()


def mkstemp(dir: str | os.PathLike, prefix: str = ".tmp-", suffix: str = ".tmp") -> tuple[int, str]:
    """``tempfile.mkstemp`` whose file has the umask's permissions instead of 0600: ``(fd, path)``."""
    fd, path = tempfile.mkstemp(dir=dir, prefix=prefix, suffix=suffix)
    try:
        os.fchmod(fd, shared_mode())
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    return fd, path


def mkdtemp(dir: str | os.PathLike, prefix: str = ".tmp-") -> str:
    """``tempfile.mkdtemp`` whose folder has the umask's permissions instead of 0700."""
    path = tempfile.mkdtemp(dir=dir, prefix=prefix)
    os.chmod(path, shared_mode(directory=True))
    return path


def share(path: str | os.PathLike) -> Path:
    """Give a file the umask's permissions; returns it as a Path.

    For files written by libraries that create them private: ``safetensors.torch.save_file`` (0600).
    """
    os.chmod(path, shared_mode(directory=os.path.isdir(path)))
    return Path(path)


def share_tree(directory: str | os.PathLike) -> Path:
    """:func:`share` a folder and everything under it (e.g. after peft's ``save_pretrained``)."""
    directory = Path(directory)
    for path in [directory, *directory.rglob("*")]:
        if not path.is_symlink():
            share(path)
    return directory
