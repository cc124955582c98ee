"""Reading a results directory without following links: what it holds, and each file's bytes.

A bundle holds regular files and directories, nothing else. A workload can write into its
own run directory, so it can plant a symbolic link there (to a host file, or to a
directory that would pass for a run), a FIFO or a socket. Everything that reads a bundle
(seal, verify, pack, report, compare, resume) lists it with scan() and opens each file
with open_regular(), which walks the path one component at a time relative to the
directory it came from (O_NOFOLLOW at every step) and never blocks on a FIFO. Nothing here
ever follows a link, or opens anything that is not a regular file.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from pathlib import Path, PurePosixPath

from orchestrator.errors import DlbenchError

ONLY_FILES = "a bundle holds only regular files and directories; dlbench never follows or reads it"
_KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"))


class RefusedEntry(DlbenchError):
    """A path of a bundle that is a link, a FIFO, a device, lies outside the bundle, or
    cannot be read: one line naming it."""

    def __init__(self, rel: str, what: str):
        super().__init__(f"{rel}: {what}")
        self.rel = rel
        self.what = what


def kind(mode: int) -> str:
    """What a non-regular, non-directory entry is, in words."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def strange(rel: str, mode: int) -> str:
    """The one line that names an entry a bundle may not hold."""
    return f"{rel}: {kind(mode)} ({ONLY_FILES})"


def scan(root: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """(every regular file as a sorted relative POSIX path, [(relative path, one line)] for
    every entry that is neither a regular file nor a directory, or cannot be listed).
    Directories are entered only when they are real directories, never through a link."""
    files: list[str] = []
    others: list[tuple[str, str]] = []
    pending = [""]
    while pending:  # iterative: a deep tree a workload made must not exhaust the stack
        rel_dir = pending.pop()
        try:
            fd = _open_directory(root, PurePosixPath(rel_dir).parts if rel_dir else ())
        except (OSError, RefusedEntry) as exc:
            why = exc.what if isinstance(exc, RefusedEntry) else exc.strerror or exc
            others.append((rel_dir or ".", f"{rel_dir or '.'}: unreadable directory ({why})"))
            continue
        try:  # entries of a descriptor's listing are looked at while it is open
            with os.scandir(fd) as entries:
                for entry in entries:
                    rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            pending.append(rel)
                        elif entry.is_file(follow_symlinks=False):
                            files.append(rel)
                        else:
                            others.append((rel, strange(rel, entry.stat(follow_symlinks=False).st_mode)))
                    except OSError as exc:
                        others.append((rel, f"{rel}: cannot be examined ({exc.strerror or exc})"))
        except OSError as exc:
            others.append((rel_dir or ".", f"{rel_dir or '.'}: unreadable directory ({exc.strerror or exc})"))
        finally:
            os.close(fd)
    return sorted(files), sorted(others)


def refuse_strange(root: Path) -> None:
    """One-line error for the first entry a bundle may not hold (and how many more)."""
    _, others = scan(root)
    if others:
        more = f" (and {len(others) - 1} more such entr{'y' if len(others) == 2 else 'ies'})" \
            if len(others) > 1 else ""
        raise DlbenchError(f"{Path(root)}/{others[0][1]}{more}")


def inside(rel: str) -> bool:
    """Whether a relative path names something inside the bundle: not absolute, no `..`."""
    parts = PurePosixPath(rel).parts
    return bool(parts) and not rel.startswith("/") and "\\" not in rel and \
        all(part not in ("", ".", "..") for part in parts) and rel == "/".join(parts)


def open_regular(root: Path, rel: str) -> int:
    """A read-only descriptor of the regular file `rel` under `root`. Raises
    FileNotFoundError when absent, RefusedEntry when any component is a link, the file is
    no regular file, or the path leaves the bundle."""
    if not inside(rel):
        raise RefusedEntry(rel, "a path outside the bundle (absolute, or with `..`)")
    parts = PurePosixPath(rel).parts
    directory = -1
    try:
        directory = _open_directory(root, parts[:-1])
        mode = os.stat(parts[-1], dir_fd=directory, follow_symlinks=False).st_mode
        if stat.S_ISDIR(mode):
            raise RefusedEntry(rel, "a directory where a file belongs")
        if not stat.S_ISREG(mode):  # decided before opening: a FIFO would block, a device act
            raise RefusedEntry(rel, f"{kind(mode)} ({ONLY_FILES})")
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=directory)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError | NotADirectoryError):
            raise FileNotFoundError(exc.errno, exc.strerror, rel) from None
        if exc.errno == errno.ELOOP:  # made a link between the look and the open
            raise RefusedEntry(rel, f"a symbolic link ({ONLY_FILES})") from None
        raise RefusedEntry(rel, f"cannot be read ({exc.strerror or exc})") from None
    finally:
        if directory >= 0:
            os.close(directory)
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced between the look and the open
        os.close(fd)
        raise RefusedEntry(rel, f"not a regular file ({ONLY_FILES})")
    return fd


def _open_directory(root: Path, parts: tuple[str, ...]) -> int:
    """A descriptor of the directory root/parts..., reached one component at a time without
    following a link (the root itself is taken as given)."""
    directory = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for index, part in enumerate(parts):
            mode = os.stat(part, dir_fd=directory, follow_symlinks=False).st_mode
            if stat.S_ISREG(mode):
                raise FileNotFoundError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), "/".join(parts))
            if not stat.S_ISDIR(mode):
                where = "/".join(parts[:index + 1])
                raise RefusedEntry(where, f"{kind(mode)}, not a directory ({ONLY_FILES})")
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                            dir_fd=directory)
            os.close(directory)
            directory = inner
    except BaseException:
        os.close(directory)
        raise
    return directory


def read_bytes(root: Path, rel: str) -> bytes:
    with os.fdopen(open_regular(root, rel), "rb") as fh:
        return fh.read()


def sha256(root: Path, rel: str) -> str:
    digest = hashlib.sha256()
    with os.fdopen(open_regular(root, rel), "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json_or_none(root: Path, rel: str):
    """The parsed file, None when missing or not JSON; RefusedEntry for a link or FIFO."""
    try:
        return json.loads(read_bytes(root, rel).decode("utf-8"))
    except (FileNotFoundError, UnicodeDecodeError, ValueError, RecursionError):
        return None


def remove_strange(root: Path, prefix: str = "") -> list[str]:
    """Remove (unlink, never follow) every entry under root that a bundle may not hold;
    one line for each, its path shown under `prefix` (e.g. runs/<id>)."""
    _, others = scan(root)
    lines = []
    for rel, line in others:
        shown = f"{prefix}/{line}" if prefix else line
        parts = PurePosixPath(rel).parts
        try:
            parent = _open_directory(root, parts[:-1])
            try:  # unlink removes the link (or FIFO) itself, and no link leads to its parent
                os.unlink(parts[-1], dir_fd=parent)
            finally:
                os.close(parent)
        except IsADirectoryError:  # an unreadable directory: not removed, sealing refuses it
            lines.append(shown)
            continue
        except (OSError, RefusedEntry) as exc:
            why = exc.what if isinstance(exc, RefusedEntry) else exc.strerror or exc
            shown += f"; it could not be removed ({why})"
        lines.append(shown)
    return lines
