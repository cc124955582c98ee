"""What every kind of dataset shares: the cache's place, split checks, one-line messages,
the results fetch and import return, and the download of one published file.

Knows no dataset and no file format (idx.py and archives.py do) and imports neither of
them: both import this module, never the other way round.
"""
from __future__ import annotations

import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from orchestrator import paths
from orchestrator.errors import DlbenchError

SPLITS = ("train", "test")
CHUNK = 1 << 20
USER_AGENT = "dlbench-data/0.1 (+urllib)"   # some mirrors refuse urllib's default agent

ProgressFn = Callable[[str, int, int | None], None]   # (filename, bytes done, bytes in all)

# What a download can raise besides a checksum mismatch: the mirror is unreachable,
# refuses, or breaks off. Each is one failed mirror; the next one is tried.
DOWNLOAD_ERRORS = (urllib.error.URLError, OSError, http.client.HTTPException, ValueError)


class DatasetKind(Protocol):
    """What the public functions need of a dataset, IDX or archive (read-only)."""
    @property
    def name(self) -> str: ...

    @property
    def title(self) -> str: ...

    @property
    def mirrors(self) -> tuple[str, ...]: ...

    @property
    def system_dirs(self) -> tuple[str, ...]: ...

    @property
    def apt_package(self) -> str | None: ...

    @property
    def splits(self) -> tuple[str, ...]: ...

    def how_to_get(self) -> str: ...

    def how_to_repair(self) -> str: ...


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def cache_root() -> Path:
    """Where prepared datasets live: one directory per dataset under it."""
    return paths.cache_dir() / "datasets"


def check_splits(ds: DatasetKind, splits: Iterable[str] | None) -> tuple[str, ...]:
    """``splits`` as a tuple (default: all of the dataset's); a one-line error for one it lacks."""
    if splits is None:
        return ds.splits
    splits = tuple(splits)
    for s in splits:
        if s not in ds.splits:
            raise DlbenchError(f"dataset {ds.name} has no split '{s}'; splits: {', '.join(ds.splits)}")
    return splits


def make_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DlbenchError(f"{directory}: cannot create the dataset cache ({one_line(exc)}); "
                           "point DLBENCH_CACHE at a writable directory") from None


@dataclass
class FetchResult:
    name: str
    directory: Path
    downloaded: list[tuple[str, str]] = field(default_factory=list)   # (filename, url)
    already: list[str] = field(default_factory=list)                  # filenames kept
    failures: list[str] = field(default_factory=list)                 # mirrors that failed
    splits: tuple[str, ...] = ()


@dataclass
class ImportResult:
    name: str
    directory: Path
    imported: tuple[str, ...]          # splits copied in this call
    files: list[tuple[Path, str]]      # (source file, how it was verified)
    splits: tuple[str, ...]            # complete in the cache afterwards
    missing: tuple[str, ...]           # still missing there


def mirror_urls(ds: DatasetKind, mirrors: Iterable[str] | None = None) -> list[str]:
    """Base URLs to try: the argument, else DLBENCH_DATA_MIRROR (one or more,
    separated by spaces or commas), else the dataset's public mirrors."""
    if mirrors is None:
        env = os.environ.get("DLBENCH_DATA_MIRROR", "").replace(",", " ").split()
        mirrors = env or ds.mirrors
    return [m if m.endswith("/") else m + "/" for m in mirrors]


def download(url: str, fh: BinaryIO, filename: str, size: int | None,
             progress: ProgressFn | None, timeout: float) -> None:
    """Write what ``url`` serves into ``fh``, reporting progress against the
    Content-Length (else the published ``size``). Raises one of DOWNLOAD_ERRORS."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else size
        done = 0
        if progress:
            progress(filename, 0, total)
        while chunk := response.read(CHUNK):
            fh.write(chunk)
            done += len(chunk)
            if progress:
                progress(filename, done, total)


def download_failure(url: str, exc: BaseException) -> str:
    """One line for a mirror that failed: the reason a URLError carries (not the
    HTTPError's, whose message already says the status), else the exception itself."""
    reason = None if isinstance(exc, urllib.error.HTTPError) else getattr(exc, "reason", None)
    return f"{url}: {one_line(reason or exc)}"
