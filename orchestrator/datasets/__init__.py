"""Datasets, prepared once on the host and mounted read-only into containers.

Containers never download: a run gets a directory that already holds verified
files (``/data``, read-only). Two kinds of dataset, one module each:

* idx.py       - MNIST and Fashion-MNIST, published as IDX files with known checksums;
* archives.py  - CIFAR-10/100 and IMDB, published as one archive each and converted
                 once to .npy arrays;

and common.py for what both share (the cache, downloads, results, one-line messages);
provenance.py, above this face, checks the files a run opens and records them.
This package is their public face: get, locate, require, status, verify_dir, fetch and
import_dir take any dataset name and send it to its kind, so callers never tell the
kinds apart. It imports the kinds; they import only common.py, never this module.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.datasets import archives, idx
from orchestrator.datasets.archives import ARCHIVES, ArchiveDataset, ConvertedCheck
from orchestrator.datasets.common import (
    CHUNK,
    SPLITS,
    USER_AGENT,
    DatasetKind,
    FetchResult,
    ImportResult,
    ProgressFn,
    cache_root,
    check_splits,
    mirror_urls,
)
from orchestrator.datasets.idx import (
    DATASETS,
    ChecksumError,
    DataFile,
    Dataset,
    DirCheck,
    FileCheck,
    present_file,
    verify_file,
)
from orchestrator.errors import DlbenchError

__all__ = [
    "ARCHIVES", "CHUNK", "DATASETS", "SPLITS", "USER_AGENT",
    "ArchiveDataset", "ChecksumError", "ConvertedCheck", "DataFile", "Dataset", "DatasetKind",
    "DatasetLocation", "DirCheck", "FetchResult", "FileCheck", "ImportResult", "ProgressFn",
    "archives", "cache_path", "complete_splits", "fetch", "get", "idx", "import_dir", "locate",
    "mirror_urls", "names", "present_file", "require", "search_dirs", "status", "verify_dir",
    "verify_file",
]


def get(name: str) -> Dataset | ArchiveDataset:
    """An IDX Dataset or an archives.ArchiveDataset; both have name, title, splits,
    mirrors, system_dirs, how_to_get() and how_to_repair()."""
    if name in DATASETS:
        return DATASETS[name]
    if name in ARCHIVES:
        return ARCHIVES[name]
    raise DlbenchError(f"unknown dataset '{name}'; known: {', '.join(sorted(DATASETS))} (IDX files), "
                       f"{', '.join(sorted(ARCHIVES))} (converted from one archive)")


def names() -> list[str]:
    """Every known dataset, IDX or archive."""
    return sorted([*DATASETS, *ARCHIVES])


def _is_archive(name: str) -> bool:
    return get(name).name in ARCHIVES


def cache_path(name: str) -> Path:
    return cache_root() / get(name).name


# --------------------------------------------------------------------------- locating

@dataclass(frozen=True)
class DatasetLocation:
    """A directory holding a dataset and the splits that are complete in it."""
    name: str
    directory: Path
    splits: tuple[str, ...]
    source: str                   # "DLBENCH_DATA_DIR" | "cache" | "system"

    def has(self, splits: Iterable[str]) -> bool:
        return all(s in self.splits for s in splits)


def search_dirs(name: str) -> list[tuple[Path, str]]:
    """Where a dataset may live, in search order: DLBENCH_DATA_DIR (a list of
    directories holding <name>/ sub-directories), the cache, system packages."""
    ds = get(name)
    found: list[tuple[Path, str]] = []
    for root in filter(None, os.environ.get("DLBENCH_DATA_DIR", "").split(os.pathsep)):
        found.append((Path(root).expanduser() / ds.name, "DLBENCH_DATA_DIR"))
    found.append((cache_path(name), "cache"))
    found.extend((Path(d), "system") for d in ds.system_dirs)
    seen, unique = set(), []
    for directory, source in found:
        if directory not in seen:
            seen.add(directory)
            unique.append((directory, source))
    return unique


def complete_splits(name: str, directory: Path) -> tuple[str, ...]:
    """Splits complete in ``directory`` by a cheap check of each file's header (IDX
    header, or .npy header against the manifest); verify_dir does the full check."""
    if _is_archive(name):
        return archives.complete_splits(name, directory)
    return idx.complete_splits(name, directory)


def locate(name: str, splits: Iterable[str] | None = None) -> DatasetLocation | None:
    """The first directory in search order holding all of ``splits`` (default:
    every split); else the one holding the most splits; None if none holds any."""
    ds = get(name)
    want = check_splits(ds, splits)
    best: DatasetLocation | None = None
    for directory, source in search_dirs(name):
        if not directory.is_dir():
            continue
        loc = DatasetLocation(ds.name, directory, complete_splits(name, directory), source)
        if loc.has(want):
            return loc
        if loc.splits and (best is None or len(loc.splits) > len(best.splits)):
            best = loc
    return best


def require(name: str, splits: Iterable[str] = SPLITS) -> Path:
    """The directory to mount as /data for a run needing ``splits``; a one-line
    DlbenchError saying what is missing and how to get it otherwise."""
    ds = get(name)
    want = check_splits(ds, splits)
    loc = locate(name, want)
    if loc is not None and loc.has(want):
        return loc.directory
    if loc is None:
        looked = ", ".join(str(d) for d, _ in search_dirs(name))
        raise DlbenchError(f"dataset {ds.name} is not prepared on this host (looked in {looked}); "
                           f"{ds.how_to_get()}")
    missing = [s for s in want if s not in loc.splits]
    raise DlbenchError(f"dataset {ds.name}: {' and '.join(missing)} split missing "
                       f"({loc.directory} holds only {', '.join(loc.splits)}); {ds.how_to_get()}")


def status() -> list[tuple[str, DatasetLocation | None, tuple[str, ...]]]:
    """(name, best location or None, complete splits) for every known dataset."""
    rows = []
    for name in names():
        loc = locate(name)
        rows.append((name, loc, loc.splits if loc else ()))
    return rows


# --------------------------------------------------------------------------- verifying, installing

def verify_dir(name: str, directory: Path | str) -> DirCheck | ConvertedCheck:
    """Full check of every dataset file present in ``directory`` (the files
    workloads.data would open); missing files are reported, not raised."""
    if _is_archive(name):
        return archives.verify_dir(name, directory)
    return idx.verify_dir(name, directory)


def fetch(name: str, progress: ProgressFn | None = None, mirrors: Iterable[str] | None = None,
          splits: Iterable[str] | None = None, timeout: float = 60.0) -> FetchResult:
    """Download what the cache lacks of ``splits`` (default: all), trying mirrors in
    order (``mirrors``, else $DLBENCH_DATA_MIRROR, else the public ones); a one-line
    DlbenchError when every mirror fails. An archive dataset is downloaded and
    converted whole."""
    if _is_archive(name):
        return archives.fetch(name, progress, mirrors, splits, timeout)
    return idx.fetch(name, progress, mirrors, splits, timeout)


def import_dir(name: str, source_dir: Path | str) -> ImportResult:
    """Copy a dataset the user already has into the cache, verified first. For an
    IDX dataset ``source_dir`` is the directory holding its files; for an archive
    dataset, the archive file (or a directory holding it)."""
    if _is_archive(name):
        return archives.import_file(name, source_dir)
    return idx.import_dir(name, source_dir)
