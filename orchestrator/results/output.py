"""Writing a file the user named (`report -o`, `pack -o`, `compare --html`): atomically,
with a one-line error when the place cannot take it, and never a temporary file left behind.

The bytes go to a fresh temporary file in the target's own directory (O_EXCL: nothing
planted there is written through), are flushed, and replace the target in one rename: a
reader sees the old file or the new one, never half of it. Never writes anywhere else.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from orchestrator.errors import DlbenchError

_TEMP_PREFIX, _TEMP_SUFFIX = ".dlbench-", ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_place(path: str | Path) -> Path:
    """The path, when a file can be written there (callers check before the work of making
    what goes there); else the one-line DlbenchError write_output would raise."""
    path = Path(path)
    parent = path.parent
    if path.name in ("", ".", "..") or path.is_dir():
        raise DlbenchError(f"{path}: is a directory; give a file name inside it")
    if path.exists() and not path.is_file():  # /dev/null, a FIFO: the rename would replace it
        raise DlbenchError(f"{path}: not a regular file (a device, FIFO or socket); give a file path")
    if not parent.exists():
        raise DlbenchError(f"{path}: the directory {parent} does not exist; create it first "
                           "or write elsewhere")
    if not parent.is_dir():
        raise DlbenchError(f"{path}: {parent} is not a directory; give a path in a directory")
    try:  # a file made and removed: what a read-only filesystem or /proc refuses, even to root
        fd, probe = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=_TEMP_SUFFIX, dir=parent)
    except OSError as exc:
        raise DlbenchError(f"{path}: cannot write in {parent} ({exc.strerror}); "
                           "write elsewhere") from None
    os.close(fd)
    os.unlink(probe)
    return path


def write_output(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically; DlbenchError (one line naming the path and what to
    do) when its directory is missing, not a directory or not writable, when the path is a
    directory, or when the write fails (a full disk); no temporary file survives a failure."""
    path = check_place(path)
    parent = path.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=_TEMP_SUFFIX, dir=parent)
    except OSError as exc:
        raise DlbenchError(f"{path}: cannot write in {parent} ({exc.strerror}); "
                           "write elsewhere") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~_umask())  # as a plain open() would create it
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise DlbenchError(f"{path}: cannot write ({exc.strerror or exc}); nothing was "
                           "written") from None
    except BaseException:  # Ctrl-C, SIGTERM: no temporary file stays behind
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path
