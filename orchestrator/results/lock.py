"""One writer per results directory: an exclusive lock, held for as long as a process writes it.

`dlbench run` (from the directory's creation to its seal), `run --resume`, `rerun` (into its
new directory) and `check` hold it; a second writer is refused at once, in one line naming
the holder, and never waits.

The lock is flock(2) on LOCK_FILE inside the directory, on a descriptor kept open while
the lock is held. The kernel drops it when the process ends, however it ends (SIGKILL, a
crash, a lost terminal), so a lock is never stuck and its staleness needs no guess from a
pid that may have been reused: a lock file whose flock is free is stale, whatever it says.
The file's content (pid, host, start time, command) only feeds the messages: who holds the
directory, or whose lock was left behind. Across hosts this relies on the filesystem
passing flock on to the server (NFSv4 does; a `local_lock=flock` mount does not).

The holder removes the file when it lets go (normal end, DlbenchError, Ctrl-C, and
SIGTERM, which while the lock is held ends the process through KeyboardInterrupt). The
bundle leaves the file out of its manifest, pack and verify: it is not a result.
This module never imports above the results layer and never deletes a lock it does not hold.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from orchestrator.errors import DlbenchError

LOCK_FILE = ".dlbench.lock"

# Directories this process holds, resolved, with how deep the holding is nested: run_suite
# and resume_suite hold the lock and call execute_runs, which holds it too. flock locks
# belong to an open file, so a second open of the same file in this process would refuse
# the process itself.
_held: dict[Path, int] = {}


def lock_path(directory: Path) -> Path:
    return Path(directory) / LOCK_FILE


def holder_info() -> dict:
    """What the lock file says of this process (for other processes' messages)."""
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]) if sys.argv else ""}


def describe(holder: dict | None) -> str:
    """'dlbench pid 1234 on host H since T', or what is known of it."""
    if not holder:
        return "another dlbench process"
    return (f"dlbench pid {holder.get('pid', '?')} on host {holder.get('host', '?')} "
            f"since {holder.get('since', '?')}")


@contextlib.contextmanager
def hold(directory: Path, say: Callable[[str], None] = print) -> Iterator[None]:
    """Hold `directory`'s lock for the body (re-entrant within one process); a one-line
    DlbenchError when another live process holds it; `say` tells of a stale lock taken over."""
    directory = Path(directory)
    key = directory.resolve()
    if key in _held:  # an outer caller of this process holds it already
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    fd = _acquire(directory, say)
    _held[key] = 1
    try:
        with sigterm_as_interrupt():
            yield
    finally:
        del _held[key]
        _release(directory, fd)


def _acquire(directory: Path, say: Callable[[str], None]) -> int:
    path = lock_path(directory)
    for _ in range(10):  # again only when the holder removed the file between our open and flock
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise DlbenchError(_cannot_lock(directory, exc)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise DlbenchError(f"{directory} is being written by {describe(holder)}; "
                                   "wait for it or stop it") from None
            raise DlbenchError(_cannot_lock(directory, exc)) from None
        if _is_file_at(fd, path):
            break
        os.close(fd)
    else:
        raise DlbenchError(f"{directory}: its lock keeps changing hands; try again")
    left = _read(fd)
    if left is not None:
        say(f"{directory}: taking over the lock left by {describe(left)} "
            "(that process has ended without releasing it)")
    payload = (json.dumps(holder_info(), sort_keys=True) + "\n").encode("utf-8")
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, payload, 0)
    except OSError as exc:  # the lock is ours all the same; only the message of others suffers
        say(f"{path}: cannot record the lock's holder ({exc.strerror})")
    return fd


def _release(directory: Path, fd: int) -> None:
    """Remove the file while still holding it (a process that opened it meanwhile finds,
    once it gets the flock, that it locked a removed file, and starts again), then let go."""
    try:
        path = lock_path(directory)
        if _is_file_at(fd, path):
            path.unlink()
    except OSError:
        pass  # the directory went away, or turned read-only: the flock goes all the same
    finally:
        os.close(fd)


def _is_file_at(fd: int, path: Path) -> bool:
    try:
        at_path = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (at_path.st_dev, at_path.st_ino)


def _read(fd: int) -> dict | None:
    """The holder the file names; None when it is empty or unreadable (e.g. half written)."""
    try:
        document = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def _cannot_lock(directory: Path, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"{directory}: no such results directory"
    return (f"{directory}: cannot take the results directory's lock ({exc.strerror or exc}); "
            "dlbench writes a results directory only where it can lock it")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """`kill` (or a service manager) ends what runs inside the way Ctrl-C does, so every
    `finally` runs: the lock file goes with it, and the runner stops its containers, records
    the interrupted run and renders the report."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
