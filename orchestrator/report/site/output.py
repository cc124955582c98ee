"""Writing the site: all of it into a fresh temporary directory beside the target, then
renamed into place, so a reader sees the old site or the new one, never half of either.

Refuses (one line) a target that is a link, not a directory, or a directory holding
anything but an earlier site (SITE_MARKER tells one); never writes outside the target's
parent, and leaves no temporary directory behind on failure, Ctrl-C or SIGTERM.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path

from orchestrator.errors import DlbenchError

SITE_MARKER = ".dlbench-site"
MARKER_TEXT = "A results site made by `dlbench site`; running it again replaces this directory.\n"
_TEMP_PREFIX = ".dlbench-site-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def is_site(path: Path) -> bool:
    marker = path / SITE_MARKER
    return marker.is_file() and not marker.is_symlink()


def check_target(out: Path, sources: list[Path]) -> None:
    """One-line DlbenchError unless `out` may become the site: absent, an empty directory
    or an earlier site, in a writable directory, and neither inside a bundle nor holding one."""
    if out.is_symlink():
        raise DlbenchError(f"{out}: a symbolic link; give the site's directory itself")
    if out.exists():
        if not out.is_dir():
            raise DlbenchError(f"{out}: exists and is not a directory; give a new directory for the site")
        if any(out.iterdir()) and not is_site(out):
            raise DlbenchError(f"{out}: exists and is not a dlbench site (no {SITE_MARKER} in it), so "
                               "it is not replaced; give a new directory, or an earlier site's")
    parent = out.absolute().parent
    if out.name in ("", ".", "..") or not parent.is_dir():
        raise DlbenchError(f"{out}: the directory {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DlbenchError(f"{out}: cannot write in {parent}; write the site elsewhere")
    target = out.resolve()
    for source in sources:
        root = source.resolve()
        if root == target or root in target.parents:
            raise DlbenchError(f"{out}: inside the bundle {source}, which must not change; "
                               "write the site outside it")
        if target in root.parents:
            raise DlbenchError(f"{out}: holds the bundle {source}, which replacing the site would "
                               "remove; write the site elsewhere")


def write_site(out: Path, files: dict[str, bytes], sources: list[Path]) -> Path:
    """Every file (relative POSIX path -> bytes) and SITE_MARKER, as the directory `out`."""
    check_target(out, sources)
    with _sigterm_interrupts():
        _write(out, {**files, SITE_MARKER: MARKER_TEXT.encode("utf-8")})
    return out


def _write(out: Path, files: dict[str, bytes]) -> None:
    parent = out.absolute().parent
    try:
        made = Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX, dir=parent))
    except OSError as exc:
        raise DlbenchError(f"{out}: cannot write in {parent} ({exc.strerror}); write elsewhere") from None
    tmp: Path | None = made  # removed unless it became the site
    old: Path | None = None
    try:
        _fill(made, files)
        if out.exists() and any(out.iterdir()):
            old = Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX, dir=parent))
            os.rename(out, old / "site")
            try:
                os.rename(made, out)
            except OSError:
                os.rename(old / "site", out)  # the earlier site stays as it was
                raise
        else:
            os.rename(made, out)  # absent, or an empty directory: replaced in one step
        tmp = None
    except OSError as exc:
        raise DlbenchError(f"{out}: cannot write the site ({exc.strerror or exc}); nothing was "
                           "changed") from None
    finally:
        for leftover in (tmp, old):
            if leftover is not None:
                shutil.rmtree(leftover, ignore_errors=True)


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM raises KeyboardInterrupt meanwhile, as Ctrl-C does, so the temporary
    directory is removed either way."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _fill(root: Path, files: dict[str, bytes]) -> None:
    dir_mode, file_mode = 0o777 & ~_umask(), 0o666 & ~_umask()
    os.chmod(root, dir_mode)  # mkdtemp made it private; a site is for reading
    for rel in sorted(files):
        path = root / rel
        if not path.parent.exists():
            path.parent.mkdir(parents=True, mode=dir_mode)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, file_mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(files[rel])
            fh.flush()
            os.fsync(fh.fileno())
