"""Datasets, prepared once on the host and mounted read-only into containers.

Containers never download: a run gets a directory that already holds verified
files (``/data``, read-only). This module knows which files make up each IDX
dataset (MNIST, Fashion-MNIST) and their checksums, finds a directory that holds
them, downloads them (``fetch``) or copies them from a directory the user has
(``import_dir``). Datasets published as one archive (CIFAR-10/100, IMDB) are
converted once to .npy arrays by orchestrator.data_archives; the public
functions here (get, locate, require, status, verify_dir, fetch, import_dir)
dispatch to it for those names, so callers need not tell the kinds apart.

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
``.gz`` is accepted.

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
import http.client
import os
import shutil
import struct
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from orchestrator import paths
from orchestrator.errors import DlbenchError

SPLITS = ("train", "test")
CHUNK = 1 << 20
USER_AGENT = "dlbench-data/0.1 (+urllib)"   # some mirrors refuse urllib's default agent


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


def _image(split, n, md5, sha256, content, size):
    name = f"{'t10k' if split == 'test' else 'train'}-images-idx3-ubyte.gz"
    return DataFile(name, split, "images", (n, 28, 28), md5, sha256, content, size)


def _labels(split, n, md5, sha256, content, size):
    name = f"{'t10k' if split == 'test' else 'train'}-labels-idx1-ubyte.gz"
    return DataFile(name, split, "labels", (n,), md5, sha256, content, size)


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
            _image("train", 60000, "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                   "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                   None, 9912422),
            _labels("train", 60000, "d53e105ee54ea40749a09fcbcd1e9432",
                    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                    None, 28881),
            _image("test", 10000, "9fb629c4189551a2d022fa330f9573f3",
                   "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                   "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", 1648877),
            _labels("test", 10000, "ec29112dd5afa0611ce80d1b7f02629c",
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
            _image("train", 60000, "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                   "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                   "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", 26421880),
            _labels("train", 60000, "25c81989df183df01b3e8a0aad5dffbe",
                    "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                    "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", 29515),
            _image("test", 10000, "bef4ecab320f06d8554ea6380940ec79",
                   "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                   "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", 4422102),
            _labels("test", 10000, "bb300cfdad3c16e7a12a480ee83cd310",
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


def get(name: str) -> "Dataset | data_archives.ArchiveDataset":
    """An IDX Dataset or a data_archives.ArchiveDataset; both have name, title, splits,
    mirrors, system_dirs, how_to_get() and how_to_repair()."""
    if name in DATASETS:
        return DATASETS[name]
    if name in data_archives.ARCHIVES:
        return data_archives.ARCHIVES[name]
    raise DlbenchError(f"unknown dataset '{name}'; known: {', '.join(sorted(DATASETS))} (IDX files), "
                       f"{', '.join(sorted(data_archives.ARCHIVES))} (converted from one archive)")


def names() -> list[str]:
    """Every known dataset, IDX or archive."""
    return sorted([*DATASETS, *data_archives.ARCHIVES])


def _is_archive(name: str) -> bool:
    return get(name).name in data_archives.ARCHIVES


def cache_path(name: str) -> Path:
    return paths.cache_dir() / "datasets" / get(name).name


def _check_splits(ds: Dataset, splits: Iterable[str] | None) -> tuple[str, ...]:
    if splits is None:
        return ds.splits
    splits = tuple(splits)
    for s in splits:
        if s not in ds.splits:
            raise DlbenchError(f"dataset {ds.name} has no split '{s}'; splits: {', '.join(ds.splits)}")
    return splits


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


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


def present_file(directory: Path, f: DataFile) -> Path | None:
    """The file workloads.data.find_file would open (``.gz`` first), if any."""
    for candidate in (directory / f.filename, directory / f.stem):
        if candidate.is_file():
            return candidate
    return None


def _open_content(path: Path):
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
    if _is_archive(name):
        return data_archives.complete_splits(name, directory)
    ds = get(name)
    complete = []
    for split in ds.splits:
        files = ds.split_files(split)
        if all((p := present_file(directory, f)) is not None and _header_ok(p, f) for f in files):
            complete.append(split)
    return tuple(complete)


def locate(name: str, splits: Iterable[str] | None = None) -> DatasetLocation | None:
    """The first directory in search order holding all of ``splits`` (default:
    every split); else the one holding the most splits; None if none holds any."""
    ds = get(name)
    want = _check_splits(ds, splits)
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
    want = _check_splits(ds, splits)
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
                         f"(and not readable as gzip: {_one_line(exc)})")
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


def verify_dir(name: str, directory: Path | str) -> "DirCheck | data_archives.ConvertedCheck":
    """Full checksum check of every dataset file present in ``directory`` (the
    files workloads.data would open); missing files are reported, not raised."""
    if _is_archive(name):
        return data_archives.verify_dir(name, directory)
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


def _make_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DlbenchError(f"{directory}: cannot create the dataset cache ({_one_line(exc)}); "
                           "point DLBENCH_CACHE at a writable directory") from None


def _install(dest_dir: Path, f: DataFile, write: Callable[[object], None]) -> Path:
    """Write a cache file safely: temp file in the same directory, verify, make it
    readable by the container's non-root user, atomic rename. Nothing is left on
    any failure."""
    _make_dir(dest_dir)
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


@dataclass
class FetchResult:
    name: str
    directory: Path
    downloaded: list[tuple[str, str]] = field(default_factory=list)   # (filename, url)
    already: list[str] = field(default_factory=list)                  # filenames kept
    failures: list[str] = field(default_factory=list)                 # mirrors that failed
    splits: tuple[str, ...] = ()


ProgressFn = Callable[[str, int, "int | None"], None]


def mirror_urls(name: str, mirrors: Iterable[str] | None = None) -> list[str]:
    """Base URLs to try: the argument, else DLBENCH_DATA_MIRROR (one or more,
    separated by spaces or commas), else the registry's public mirrors."""
    if mirrors is None:
        env = os.environ.get("DLBENCH_DATA_MIRROR", "").replace(",", " ").split()
        mirrors = env or get(name).mirrors
    return [m if m.endswith("/") else m + "/" for m in mirrors]


def _download(url: str, fh, f: DataFile, progress: ProgressFn | None, timeout: float) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else f.size
        done = 0
        if progress:
            progress(f.filename, 0, total)
        while chunk := response.read(CHUNK):
            fh.write(chunk)
            done += len(chunk)
            if progress:
                progress(f.filename, done, total)


def fetch(name: str, progress: ProgressFn | None = None, mirrors: Iterable[str] | None = None,
          splits: Iterable[str] | None = None, timeout: float = 60.0) -> FetchResult:
    """Download every file of ``splits`` (default: all) that the cache lacks or
    holds unverified, trying mirrors in order. A checksum mismatch or network
    failure on every mirror raises a one-line DlbenchError; files already
    verified stay, so a re-run resumes."""
    if _is_archive(name):
        return data_archives.fetch(name, progress, mirrors, splits, timeout)
    ds = get(name)
    want = _check_splits(ds, splits)
    bases = mirror_urls(name, mirrors)
    dest = cache_path(name)
    result = FetchResult(ds.name, dest)
    _make_dir(dest)
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
                _install(dest, f, lambda fh, url=url: _download(url, fh, f, progress, timeout))
            except ChecksumError as exc:     # this mirror serves something else: try the next
                mismatch = mismatch or f"{url}: {exc.problem}"
                errors.append(f"{url}: checksum mismatch")
                continue
            except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
                reason = getattr(exc, "reason", None) if not isinstance(exc, urllib.error.HTTPError) else None
                errors.append(f"{url}: {_one_line(reason or exc)}")
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


@dataclass
class ImportResult:
    name: str
    directory: Path
    imported: tuple[str, ...]          # splits copied in this call
    files: list[tuple[Path, str]]      # (source file, how it was verified)
    splits: tuple[str, ...]            # complete in the cache afterwards
    missing: tuple[str, ...]           # still missing there


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
    directory (READMEs, checksum lists) are ignored. For an archive dataset,
    ``source_dir`` is the archive file (or a directory holding it)."""
    if _is_archive(name):
        return data_archives.import_file(name, source_dir)
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
        good = next((c for c in checks if c.ok), None)
        if good is None:
            raise DlbenchError(f"{candidates[0]}: not the {ds.name} {f.filename}: "
                               f"{checks[0].problem}; nothing imported")
        found[f.filename] = (f, good.path, good)
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
    dest = cache_path(name)
    _make_dir(dest)
    copied: list[tuple[Path, str]] = []
    for split in complete:
        for f in ds.split_files(split):
            _, path, check = found[f.filename]
            _install(dest, f, _copier(path))
            copied.append((path, check.method))
    now = complete_splits(name, dest)
    return ImportResult(ds.name, dest, complete, copied, now,
                        tuple(s for s in ds.splits if s not in now))


def _copier(path: Path) -> Callable[[object], None]:
    """Copy a .gz as it is; gzip an uncompressed file without name or timestamp,
    so the same input always gives the same cache file."""
    def write(fh) -> None:
        with open(path, "rb") as src:
            if path.name.endswith(".gz"):
                shutil.copyfileobj(src, fh, CHUNK)
            else:
                with gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0, compresslevel=6) as gz:
                    shutil.copyfileobj(src, gz, CHUNK)
    return write


# Last: data_archives imports the helpers above from this module.
from orchestrator.datasets import archives as data_archives  # noqa: E402
