"""The IDX datasets (MNIST, Fashion-MNIST): their published files and checksums, and how
to find, verify, download (``fetch``) or copy in (``import_dir``) a directory of them.

Reached through the package (orchestrator.datasets), which sends it the names of its
``DATASETS``; imports only common.py of its siblings.

What counts as "the right file"
-------------------------------
Each file is identified by two checksums:

* the MD5 (and SHA-256) of the ``.gz`` exactly as published - what torchvision
  and most loaders check, and what a mirror serves;
* the SHA-256 of the decompressed IDX bytes (``content_sha256``). Distributions
  re-write gzip headers (Debian's ``dataset-fashion-mnist`` strips the embedded
  file name and clamps the timestamp, so its ``.gz`` MD5s differ from the
  published ones although the compressed data is byte-identical), and users
  often have the files already gunzipped. The content hash accepts both.

A file is accepted when its ``.gz`` bytes match the published checksums, or its
decompressed content matches ``content_sha256``. Where no content hash is known
(MNIST train: no real copy was at hand to compute one) only the published
``.gz`` is accepted. File names, split sizes and image sizes come from
``contract.datasets`` (the table the workloads read too).

The cache (``paths.cache_dir()/datasets/<name>``) always holds gzip-compressed
files under the published names: ``import_dir`` copies ``.gz`` files as they are
and gzips uncompressed ones (deterministically, mtime 0). One form keeps
verification and ``workloads.data.find_file`` (which prefers ``.gz``) simple,
and takes ~5x less disk. Files enter the cache only through a temporary file
that is verified, made world-readable (containers run as another, non-root
user) and atomically renamed, so the cache never holds a partial or unverified
file.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from contract import datasets as contract_datasets
from orchestrator.datasets.common import (
    CHUNK,
    DOWNLOAD_ERRORS,
    SPLITS,
    FetchResult,
    ImportResult,
    ProgressFn,
    cache_root,
    check_splits,
    download,
    download_failure,
    make_dir,
    mirror_urls,
    one_line,
)
from orchestrator.errors import DlbenchError

# --------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class DataFile:
    """One published file of a dataset and how to recognise it."""
    filename: str                 # published name, e.g. "train-images-idx3-ubyte.gz"
    split: str                    # "train" | "test"
    kind: str                     # "images" | "labels"
    shape: tuple[int, ...]        # IDX shape, uint8 data
    md5: str                      # MD5 of the published .gz (torchvision's value)
    sha256: str | None            # SHA-256 of the published .gz
    content_sha256: str | None    # SHA-256 of the decompressed IDX bytes
    size: int | None = None       # bytes of the published .gz

    @property
    def stem(self) -> str:
        """The uncompressed name, as workloads.data looks for it."""
        return self.filename[:-3]

    @property
    def count(self) -> int:
        return self.shape[0]

    def idx_header(self) -> bytes:
        """The exact IDX header this file must start with (uint8, big-endian dims)."""
        return bytes((0, 0, 0x08, len(self.shape))) + struct.pack(f">{len(self.shape)}I", *self.shape)


@dataclass(frozen=True)
class Dataset:
    name: str
    title: str
    files: tuple[DataFile, ...]
    mirrors: tuple[str, ...]          # base URLs, tried in order
    system_dirs: tuple[str, ...] = () # where distribution packages install it
    apt_package: str | None = None

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(s for s in SPLITS if any(f.split == s for f in self.files))

    def split_files(self, split: str) -> tuple[DataFile, ...]:
        return tuple(f for f in self.files if f.split == split)

    def how_to_get(self) -> str:
        """The one-line advice every 'missing' error ends with."""
        ways = [f"'dlbench data fetch {self.name}'", f"'dlbench data import {self.name} DIR'"]
        if self.apt_package:
            ways.append(f"'apt-get install {self.apt_package}'")
        return "get it with " + ", ".join(ways[:-1]) + " or " + ways[-1]

    def how_to_repair(self) -> str:
        """What to do about a file that failed verification."""
        return f"delete it and run 'dlbench data fetch {self.name}' or 'dlbench data import {self.name} DIR'"


def _image(dataset: str, split: str, md5: str, sha256: str | None, content: str | None,
           size: int | None) -> DataFile:
    info = contract_datasets.info(dataset)
    rows, columns, _ = info.sample_shape     # one grey channel, which IDX does not store
    name = contract_datasets.SPLIT_FILES[split][0] + ".gz"
    return DataFile(name, split, "images", (getattr(info, split), rows, columns), md5, sha256, content, size)


def _labels(dataset: str, split: str, md5: str, sha256: str | None, content: str | None,
            size: int | None) -> DataFile:
    info = contract_datasets.info(dataset)
    name = contract_datasets.SPLIT_FILES[split][1] + ".gz"
    return DataFile(name, split, "labels", (getattr(info, split),), md5, sha256, content, size)


# MD5s: torchvision.datasets.MNIST / FashionMNIST (= the Fashion-MNIST README).
# Verified here against real files:
#   MNIST t10k-*: /work/shared/datasets/mnist-test (MD5 and SHA-256 of the .gz as
#     published, content SHA-256 computed from them).
#   Fashion-MNIST, all four: Debian's dataset-fashion-mnist. Its .gz differ from the
#     published ones only in the gzip header (name dropped, mtime clamped); restoring
#     the original header (FNAME + mtime 2017-08-31) reproduces the published MD5s
#     exactly, so the published SHA-256s below were computed from those rebuilt files.
# Not verifiable here: MNIST train-* (no copy at hand). Their MD5 is torchvision's,
#   their SHA-256 the value widely published for the same files (TFDS, cvdf mirror);
#   no content hash, so only the published .gz is accepted for them.
DATASETS: dict[str, Dataset] = {
    "mnist": Dataset(
        name="mnist",
        title="MNIST handwritten digits",
        files=(
            _image("mnist", "train", "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                   "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                   None, 9912422),
            _labels("mnist", "train", "d53e105ee54ea40749a09fcbcd1e9432",
                    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                    None, 28881),
            _image("mnist", "test", "9fb629c4189551a2d022fa330f9573f3",
                   "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                   "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", 1648877),
            _labels("mnist", "test", "ec29112dd5afa0611ce80d1b7f02629c",
                    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                    "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", 4542),
        ),
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",     # torchvision's mirror
            "https://storage.googleapis.com/cvdf-datasets/mnist/",  # TensorFlow's mirror
            "http://yann.lecun.com/exdb/mnist/",                  # original; often refuses
        ),
    ),
    "fashion-mnist": Dataset(
        name="fashion-mnist",
        title="Fashion-MNIST (Zalando article images)",
        files=(
            _image("fashion-mnist", "train", "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                   "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                   "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", 26421880),
            _labels("fashion-mnist", "train", "25c81989df183df01b3e8a0aad5dffbe",
                    "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                    "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", 29515),
            _image("fashion-mnist", "test", "bef4ecab320f06d8554ea6380940ec79",
                   "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                   "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", 4422102),
            _labels("fashion-mnist", "test", "bb300cfdad3c16e7a12a480ee83cd310",
                    "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                    "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", 5148),
        ),
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",  # Zalando's bucket
            "https://fashion-mnist.s3.eu-central-1.amazonaws.com/",         # same bucket, TLS
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        apt_package="dataset-fashion-mnist",
    ),
}


def get(name: str) -> Dataset:
    return DATASETS[name]


# --------------------------------------------------------------------------- locating

def present_file(directory: Path, f: DataFile) -> Path | None:
    """The file workloads.data.find_file would open (``.gz`` first), if any."""
    for candidate in (directory / f.filename, directory / f.stem):
        if candidate.is_file():
            return candidate
    return None


def _open_content(path: Path) -> io.BufferedIOBase:
    """Open for the IDX bytes, deciding by the name exactly as workloads.data does,
    so that what passes here is what the container can read."""
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def _header_ok(path: Path, f: DataFile) -> bool:
    """Cheap check (a few bytes) that a file is the IDX file we expect; the full
    checksum is for verify_dir, so that locating a 26 MB dataset stays instant."""
    want = f.idx_header()
    try:
        with _open_content(path) as fh:
            return fh.read(len(want)) == want
    except (OSError, EOFError, zlib.error):
        return False


def complete_splits(name: str, directory: Path) -> tuple[str, ...]:
    """Splits whose images and labels are both present in ``directory`` with the
    right IDX header (not a checksum: see verify_dir)."""
    ds = get(name)
    complete = []
    for split in ds.splits:
        files = ds.split_files(split)
        if all((p := present_file(directory, f)) is not None and _header_ok(p, f) for f in files):
            complete.append(split)
    return tuple(complete)


# --------------------------------------------------------------------------- verifying

@dataclass
class FileCheck:
    """Outcome of checking one file against the registry."""
    spec: DataFile
    path: Path | None             # None: missing
    ok: bool = False
    method: str = ""              # "published .gz" | "content SHA-256"
    problem: str = ""             # one line, names no path (callers add it)
    md5: str = ""
    sha256: str = ""
    content_sha256: str = ""

    @property
    def filename(self) -> str:
        return self.spec.filename


def _hash_file(path: Path) -> tuple[str, str]:
    md5, sha = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            md5.update(chunk)
            sha.update(chunk)
    return md5.hexdigest(), sha.hexdigest()


def _hash_content(path: Path) -> str:
    sha = hashlib.sha256()
    with _open_content(path) as fh:
        while chunk := fh.read(CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def _identify(md5: str, content_sha256: str) -> DataFile | None:
    """Which known file these hashes belong to, for 'you gave me the wrong file'."""
    for ds in DATASETS.values():
        for f in ds.files:
            if md5 == f.md5 or (content_sha256 and content_sha256 == f.content_sha256):
                return f
    return None


def _owner(f: DataFile) -> str:
    return next(ds.name for ds in DATASETS.values() if f in ds.files)


def verify_file(path: Path, f: DataFile) -> FileCheck:
    """Check one file: published .gz checksums first (cheap), then content hash."""
    check = FileCheck(spec=f, path=path)
    check.md5, check.sha256 = _hash_file(path)
    if check.md5 == f.md5 and (f.sha256 is None or check.sha256 == f.sha256):
        check.ok, check.method = True, "published .gz"
        return check
    try:
        check.content_sha256 = _hash_content(path)
    except (OSError, EOFError, zlib.error) as exc:
        check.problem = (f"checksum mismatch: MD5 {check.md5}, expected {f.md5} "
                         f"(and not readable as gzip: {one_line(exc)})")
        return check
    if f.content_sha256 and check.content_sha256 == f.content_sha256:
        check.ok, check.method = True, "content SHA-256"
        return check
    other = _identify(check.md5, check.content_sha256)
    if other is not None and other is not f:
        check.problem = (f"this is the {_owner(other)} {other.filename} (MD5 {check.md5}, "
                         f"expected {f.md5})")
    elif f.content_sha256:
        check.problem = (f"checksum mismatch: content SHA-256 {check.content_sha256}, expected "
                         f"{f.content_sha256} (.gz MD5 {check.md5}, published {f.md5})")
    elif check.md5 != f.md5:
        check.problem = (f"checksum mismatch: MD5 {check.md5}, expected {f.md5}; only the "
                         f"published {f.filename} can be verified for this file")
    else:
        check.problem = f"checksum mismatch: SHA-256 {check.sha256}, expected {f.sha256}"
    return check


@dataclass
class DirCheck:
    name: str
    directory: Path
    files: list[FileCheck] = field(default_factory=list)

    @property
    def splits(self) -> tuple[str, ...]:
        """Splits whose files are all present and verified."""
        ds = get(self.name)
        ok = {c.spec.filename for c in self.files if c.ok}
        return tuple(s for s in ds.splits if all(f.filename in ok for f in ds.split_files(s)))

    @property
    def bad(self) -> list[FileCheck]:
        return [c for c in self.files if c.path is not None and not c.ok]


def verify_dir(name: str, directory: Path | str) -> DirCheck:
    """Full checksum check of every dataset file present in ``directory`` (the
    files workloads.data would open); missing files are reported, not raised."""
    ds = get(name)
    directory = Path(directory)
    result = DirCheck(ds.name, directory)
    for f in ds.files:
        path = present_file(directory, f)
        result.files.append(verify_file(path, f) if path else FileCheck(spec=f, path=None))
    return result


# --------------------------------------------------------------------------- installing

class ChecksumError(DlbenchError):
    """A file about to enter the cache is not the one published."""

    def __init__(self, f: DataFile, problem: str):
        super().__init__(f"{f.filename}: {problem}")
        self.problem = problem


def _install(dest_dir: Path, f: DataFile, write: Callable[[BinaryIO], None]) -> Path:
    """Write a cache file safely: temp file in the same directory, verify, make it
    readable by the container's non-root user, atomic rename. Nothing is left on
    any failure."""
    make_dir(dest_dir)
    fd, tmp_name = tempfile.mkstemp(dir=dest_dir, prefix=".part-", suffix="-" + f.filename)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        result = verify_file(tmp, f)
        if not result.ok:
            raise ChecksumError(f, result.problem)
        os.chmod(tmp, 0o644)
        final = dest_dir / f.filename
        os.replace(tmp, final)
        stale = dest_dir / f.stem       # an older uncompressed copy: ignored by find_file, drop it
        if stale.is_file():
            stale.unlink()
        return final
    finally:
        if tmp.exists():
            tmp.unlink()


def _downloader(url: str, f: DataFile, progress: ProgressFn | None,
                timeout: float) -> Callable[[BinaryIO], None]:
    return lambda fh: download(url, fh, f.filename, f.size, progress, timeout)


def fetch(name: str, progress: ProgressFn | None = None, mirrors: Iterable[str] | None = None,
          splits: Iterable[str] | None = None, timeout: float = 60.0) -> FetchResult:
    """Download every file of ``splits`` (default: all) that the cache lacks or
    holds unverified, trying mirrors in order. A checksum mismatch or network
    failure on every mirror raises a one-line DlbenchError; files already
    verified stay, so a re-run resumes."""
    ds = get(name)
    want = check_splits(ds, splits)
    bases = mirror_urls(ds, mirrors)
    dest = cache_root() / ds.name
    result = FetchResult(ds.name, dest)
    make_dir(dest)
    for f in (f for f in ds.files if f.split in want):
        existing = dest / f.filename
        if existing.is_file() and verify_file(existing, f).ok:
            result.already.append(f.filename)
            continue
        errors: list[str] = []
        mismatch = ""
        for base in bases:
            url = base + f.filename
            try:
                _install(dest, f, _downloader(url, f, progress, timeout))
            except ChecksumError as exc:     # this mirror serves something else: try the next
                mismatch = mismatch or f"{url}: {exc.problem}"
                errors.append(f"{url}: checksum mismatch")
                continue
            except DOWNLOAD_ERRORS as exc:
                errors.append(download_failure(url, exc))
                continue
            result.downloaded.append((f.filename, url))
            break
        else:
            if mismatch:
                others = f" (tried {len(bases)} mirrors)" if len(bases) > 1 else ""
                raise DlbenchError(f"{mismatch}{others}; nothing was kept; try another --mirror "
                                   f"or 'dlbench data import {ds.name} DIR'")
            raise DlbenchError(f"cannot download {f.filename} for {ds.name}: {'; '.join(errors)}; "
                               f"without internet, copy the files to this host and run "
                               f"'dlbench data import {ds.name} DIR'"
                               + (f" (or 'apt-get install {ds.apt_package}')" if ds.apt_package else ""))
        result.failures.extend(errors)
    result.splits = complete_splits(name, dest)
    return result


def _import_candidates(source: Path, f: DataFile) -> list[Path]:
    """Accepted names in a user's directory: the published ones, gzip or not,
    and the dotted form ('t10k-images.idx3-ubyte') that the MNIST .gz files
    carry inside and that gunzip -N and several re-distributions produce."""
    dotted = f.stem.replace("-idx", ".idx")
    names = [f.filename, f.stem, dotted + ".gz", dotted]
    return [source / n for n in names if (source / n).is_file()]


def import_dir(name: str, source_dir: Path | str) -> ImportResult:
    """Copy a dataset the user already has into the cache. Every known file found
    is verified first (a wrong or corrupt one is an error naming it, and nothing
    is copied); at least one complete split is required; other files in the
    directory (READMEs, checksum lists) are ignored."""
    ds = get(name)
    source = Path(source_dir).expanduser()
    if not source.is_dir():
        raise DlbenchError(f"{source}: not a directory; give the directory holding the {ds.name} "
                           f"files ({', '.join(f.filename for f in ds.files)})")
    found: dict[str, tuple[DataFile, Path, FileCheck]] = {}
    for f in ds.files:
        candidates = _import_candidates(source, f)
        if not candidates:
            continue
        checks = [verify_file(p, f) for p in candidates]
        good = next(((p, c) for p, c in zip(candidates, checks) if c.ok), None)
        if good is None:
            raise DlbenchError(f"{candidates[0]}: not the {ds.name} {f.filename}: "
                               f"{checks[0].problem}; nothing imported")
        found[f.filename] = (f, *good)
    if not found:
        raise DlbenchError(f"{source}: no {ds.name} files there (expected "
                           f"{', '.join(f.filename for f in ds.files)}, gzip-compressed or not)")
    complete = tuple(s for s in ds.splits
                     if all(f.filename in found for f in ds.split_files(s)))
    if not complete:
        have = ", ".join(sorted(found))
        partial = {found[g][0].split for g in found}
        lacking = ", ".join(f.filename for f in ds.files
                            if f.split in partial and f.filename not in found)
        raise DlbenchError(f"{source}: no complete {ds.name} split (found {have}, missing {lacking}); "
                           f"each split needs its images and labels file")
    dest = cache_root() / ds.name
    make_dir(dest)
    copied: list[tuple[Path, str]] = []
    for split in complete:
        for f in ds.split_files(split):
            _, path, check = found[f.filename]
            _install(dest, f, _copier(path))
            copied.append((path, check.method))
    now = complete_splits(name, dest)
    return ImportResult(ds.name, dest, complete, copied, now,
                        tuple(s for s in ds.splits if s not in now))


def _copier(path: Path) -> Callable[[BinaryIO], None]:
    """Copy a .gz as it is; gzip an uncompressed file without name or timestamp,
    so the same input always gives the same cache file."""
    def write(fh: BinaryIO) -> None:
        with open(path, "rb") as src:
            if path.name.endswith(".gz"):
                shutil.copyfileobj(src, fh, CHUNK)
            else:
                with gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0, compresslevel=6) as gz:
                    shutil.copyfileobj(src, gz, CHUNK)
    return write
