"""What a run trains on, proven: before a run, every dataset file it will open is checked
against the registry, and its SHA-256 goes into the run's run.json.

A file is checked the way `dlbench data verify` checks it (IDX: published .gz checksums or
the content SHA-256; converted arrays: the SHA-256 their manifest records). That re-hashes
it (Fashion-MNIST's training images: 26 MB), so a file that passed is remembered in the
host cache (VERIFIED_CACHE) under its real path with what stat says of it (size, mtime,
ctime, inode) and what it was checked against: the next run over the same untouched file
hashes nothing. Only files that passed are remembered, so a bad file is hashed, and
refused, every time; a file that changed while it was hashed is not remembered.

Sits above the package's face (orchestrator.datasets): imports it, and reaches the kinds
through it; the package never imports this module.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from contract.jsonio import write_json_atomic
from orchestrator import datasets, paths
from orchestrator.errors import DlbenchError
from orchestrator.fileio import sha256_file

VERIFIED_CACHE = "verified-data.json"
CACHE_VERSION = 1
SYNTHETIC = "synthetic"   # the source a run on generated data records


@dataclass(frozen=True)
class VerifiedFile:
    """One dataset file a run opens, as checked."""
    name: str                 # its name in the dataset directory
    split: str | None         # the split it belongs to; None: the whole dataset's (a manifest)
    size: int
    sha256: str               # of the file's bytes, as mounted
    verified: str             # what it was checked against, as `dlbench data verify` says

    def record(self) -> dict:
        return {"name": self.name, "split": self.split, "bytes": self.size,
                "sha256": self.sha256, "verified": self.verified}


@dataclass(frozen=True)
class Provenance:
    """A dataset directory a run mounts, where it was found, and its checked files."""
    dataset: str
    source: str               # as datasets.locate reports it: DLBENCH_DATA_DIR | cache | system
    directory: Path
    files: tuple[VerifiedFile, ...]

    def record(self, splits: Iterable[str] | None = None) -> dict:
        """run.json's `data`: the files of `splits` (default: all checked) and the
        dataset-wide ones."""
        wanted = None if splits is None else set(splits)
        files = [f.record() for f in self.files
                 if wanted is None or f.split is None or f.split in wanted]
        return {"dataset": self.dataset, "source": self.source,
                "directory": str(self.directory), "files": files}


def synthetic_record(dataset: str) -> dict:
    """run.json's `data` for a run on generated arrays: nothing read, nothing mounted."""
    return {"dataset": dataset, "source": SYNTHETIC, "files": []}


def require_verified(name: str, splits: Iterable[str] = datasets.SPLITS) -> Provenance:
    """datasets.require(), and every file a run needing ``splits`` opens in the directory
    it gives checked against the registry: a one-line DlbenchError naming the first
    missing or wrong file and the `dlbench data verify` command that checks them all."""
    want = datasets.check_splits(datasets.get(name), splits)
    loc = datasets.locate(name, want)
    if loc is None or not loc.has(want):
        datasets.require(name, want)  # says what is missing and how to get it
        raise AssertionError(f"datasets.require({name!r}) accepted what locate did not")
    everything = datasets.locate(name)  # what a plain `dlbench data verify NAME` checks
    hint = f"dlbench data verify {loc.name}"
    if everything is None or everything.directory != loc.directory:
        hint += f" --dir {loc.directory}"
    return check(loc.name, loc.directory, loc.source, want, hint)


def check(name: str, directory: Path, source: str, splits: Iterable[str],
          verify_hint: str) -> Provenance:
    """Check every file of `splits` that a run opens in `directory` (workloads.data's
    choice: the .gz of an IDX file before the plain one); a one-line DlbenchError naming
    the first bad file and `verify_hint` (the `dlbench data verify` command to run)."""
    directory = Path(directory)
    splits = tuple(splits)
    memo = _Memo.load()
    try:
        if name in datasets.DATASETS:
            files = _idx_files(name, directory, splits, memo, verify_hint)
        else:
            files = _array_files(name, directory, splits, memo, verify_hint)
    finally:
        memo.save()
    return Provenance(name, source, directory, tuple(files))


def _refuse(path: Path, problem: str, verify_hint: str, repair: str) -> DlbenchError:
    return DlbenchError(f"{path}: {problem}; nothing was run ('{verify_hint}' checks every file; "
                        f"{repair})")


def _idx_files(name: str, directory: Path, splits: tuple[str, ...], memo: _Memo,
               verify_hint: str) -> list[VerifiedFile]:
    ds = datasets.DATASETS[name]
    files = []
    for f in ds.files:
        if f.split not in splits:
            continue
        path = datasets.present_file(directory, f)
        if path is None:
            raise DlbenchError(f"{directory / f.filename}: missing; {ds.how_to_get()}")

        def verify(path: Path = path, f: datasets.DataFile = f) -> tuple[str, str]:
            result = datasets.verify_file(path, f)
            if not result.ok:
                raise _refuse(path, result.problem, verify_hint, ds.how_to_repair())
            return result.sha256, result.method
        expected = f"idx {ds.name} {f.filename} {f.md5} {f.sha256} {f.content_sha256}"
        files.append(memo.verified(path, f.split, expected, verify))
    return files


def _array_files(name: str, directory: Path, splits: tuple[str, ...], memo: _Memo,
                 verify_hint: str) -> list[VerifiedFile]:
    archives = datasets.archives
    ds = archives.get(name)
    manifest_check, manifest = archives.verify_manifest(name, directory)
    manifest_path = directory / archives.MANIFEST
    if manifest_check.path is None:
        raise DlbenchError(f"{manifest_path}: missing; {ds.how_to_get()}")
    if not manifest_check.ok:
        raise _refuse(manifest_path, manifest_check.problem, verify_hint, ds.how_to_repair())
    # small, and what ties the arrays to the published archive: hashed every time
    manifest_file = VerifiedFile(archives.MANIFEST, None, manifest_path.stat().st_size,
                                 sha256_file(manifest_path), manifest_check.method)
    files = [manifest_file]
    for split in ds.splits:
        if split not in splits:
            continue
        for filename in archives.npy_names(split):
            def verify(filename: str = filename) -> tuple[str, str]:
                result = archives.verify_array(name, directory, filename, manifest)
                if result.path is None:
                    raise DlbenchError(f"{directory / filename}: missing; {ds.how_to_get()}")
                if not result.ok:
                    raise _refuse(directory / filename, result.problem, verify_hint,
                                  ds.how_to_repair())
                return result.sha256, result.method
            expected = f"npy {ds.name} {filename} {archives.recorded_sha256(manifest, filename)}"
            files.append(memo.verified(directory / filename, split, expected, verify))
    return files


def _stat_key(path: Path) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


class _Memo:
    """The files that passed, by real path: {path: {stat, expected, sha256, verified}}."""

    def __init__(self, path: Path, entries: dict[str, dict]):
        self.path = path
        self.entries = entries
        self.changed = False

    @classmethod
    def load(cls) -> _Memo:
        path = paths.cache_dir() / VERIFIED_CACHE
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            document = None
        if isinstance(document, dict) and document.get("version") == CACHE_VERSION \
                and isinstance(document.get("files"), dict):
            return cls(path, dict(document["files"]))
        return cls(path, {})

    def verified(self, path: Path, split: str | None, expected: str,
                 verify: Callable[[], tuple[str, str]]) -> VerifiedFile:
        """The file as checked before, if stat says it is untouched; else verify() it."""
        real = os.path.realpath(path)
        before = _stat_key(Path(real))
        entry = self.entries.get(real)
        if before is not None and isinstance(entry, dict) and entry.get("stat") == before \
                and entry.get("expected") == expected:
            return VerifiedFile(path.name, split, before[0], entry["sha256"], entry["verified"])
        sha256, method = verify()
        after = _stat_key(Path(real))
        if after is not None and after == before:  # not changed while it was hashed
            self.entries[real] = {"stat": after, "expected": expected, "sha256": sha256,
                                  "verified": method}
            self.changed = True
        return VerifiedFile(path.name, split, (after or before or [0])[0], sha256, method)

    def save(self) -> None:
        """Best effort: a cache that cannot be written only costs a re-hash next time."""
        if not self.changed:
            return
        files = {p: e for p, e in sorted(self.entries.items()) if os.path.exists(p)}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(str(self.path), {"version": CACHE_VERSION, "files": files})
        except OSError:
            pass
