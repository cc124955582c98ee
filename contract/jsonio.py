"""Atomic JSON writing: a killed run or a full disk never leaves a half-written file.

A workload can write into its own run directory, so it may have planted a link at the
target's name or at the temporary's: the temporary is created afresh (O_CREAT|O_EXCL|
O_NOFOLLOW: never through a link, never into an existing file) and renamed over the target,
and a rename replaces a link at the target name rather than writing where it points.
"""
from __future__ import annotations

import contextlib
import json
import os

# What open(path, "w") asks for: the final file's mode is 0o666 less the umask, as before.
_MODE = 0o666
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def _create(tmp: str) -> int:
    """A new, empty regular file at `tmp`. Whatever already stands at that name (a link
    planted there, a temporary a killed writer left) is removed, never followed, once."""
    try:
        return os.open(tmp, _FLAGS, _MODE)
    except FileExistsError:
        os.unlink(tmp)  # unlink removes a link itself, never its target
        return os.open(tmp, _FLAGS, _MODE)


def write_json_atomic(path: str, payload: dict) -> None:
    """Write-then-rename, with the file and its directory flushed to disk."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = _create(tmp)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:  # e.g. a full disk: no half-written file may stay behind
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
