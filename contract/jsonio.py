"""Atomic JSON writing: a killed run or a full disk never leaves a half-written file."""
from __future__ import annotations

import contextlib
import json
import os


def write_json_atomic(path: str, payload: dict) -> None:
    """Write-then-rename, with the file and its directory flushed to disk."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
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
