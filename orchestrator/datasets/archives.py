"""Datasets published as ONE archive (CIFAR-10, CIFAR-100, IMDB), converted once to .npy.

Reached through the package (orchestrator.datasets), which sends it the names of its
``ARCHIVES``; the IDX datasets are idx.py's. Imports only common.py of its siblings.

What counts as "the right file"
-------------------------------
The archive exactly as published, identified by its published checksums (MD5
and, where a public source gives it, SHA-256) and size. The checksum is checked
BEFORE anything in the archive is parsed: CIFAR batches are pickles and
imdb.npz holds pickled object arrays, and a pickle can run code. Even then,
pickles are read with an unpickler that can build numpy arrays and nothing
else (no other global, so no ``os.system``), as a second line of defence.

What the cache holds
--------------------
``paths.cache_dir()/datasets/<name>/`` with the arrays workloads.data reads
(``NPY_FILES``: ``{split}-x.npy``, ``{split}-y.npy``) and ``manifest.json``:
the source archive (name, size, checksums), the conversion settings and the
SHA-256, shape and dtype of every array, so ``dlbench data verify`` can re-hash
them. Shapes, split sizes, classes and vocabulary come from
``contract.datasets.DATASETS`` (one place for them, read at call time); the
conversion checks its output against them. The directory is built beside its
final place and renamed into it, world-readable (containers run as another
user), so the cache never holds a half-converted dataset; the temporary
directory a killed conversion leaves is removed by the next fetch or import.
The archive itself is not kept: a fetch downloads it to a temporary file.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import secrets
import shutil
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
X_DTYPES = {"image": np.uint8, "tokens": np.int32}   # by DatasetInfo.kind
Y_DTYPE = np.uint8


class ConversionError(Exception):
    """The archive's content is not what the converter expects (message: what, where)."""


# --------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class ArchiveDataset:
    """A dataset published as one archive, and how to turn it into .npy arrays."""
    name: str
    title: str
    filename: str                  # the archive's published name
    size: int                      # its bytes
    md5: str
    sha256: str | None
    mirrors: tuple[str, ...]       # base URLs holding ``filename``, tried in order
    convert: Callable[..., dict[str, np.ndarray]] = field(repr=False, compare=False)
    options: tuple[tuple[str, object], ...] = ()   # fixed conversion settings
    system_dirs: tuple[str, ...] = ()
    apt_package: str | None = None
    splits: tuple[str, ...] = SPLITS

    @property
    def info(self) -> contract_datasets.DatasetInfo:
        return contract_datasets.info(self.name)

    def settings(self) -> dict:
        """Everything the conversion depends on besides the archive: recorded in the
        manifest, so a conversion made with other settings is not taken for this one."""
        settings = dict(self.options)
        info = self.info
        if info.kind == "tokens":
            settings.update(num_words=info.vocab_size, maxlen=info.sample_shape[0])
        return settings

    def how_to_get(self) -> str:
        """The one-line advice every 'missing' error ends with."""
        return (f"get it with 'dlbench data fetch {self.name}' or 'dlbench data import {self.name} "
                f"FILE' (FILE: {self.filename} as published at {self.mirrors[0]})")

    def how_to_repair(self) -> str:
        return (f"convert it again with 'dlbench data fetch {self.name}' or "
                f"'dlbench data import {self.name} FILE'")


def _cifar(folder: str, train: tuple[str, ...], test: tuple[str, ...]):
    members = {"train": train, "test": test}
    return lambda fh, ds, settings: _convert_cifar(fh, ds, settings, folder=folder, members=members)


KRIZ = "https://www.cs.toronto.edu/~kriz/"
KERAS_DATASETS = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"

# Checksums and sizes of the archives as published:
#   MD5: torchvision.datasets.CIFAR10/CIFAR100 ``tgz_md5``; imdb.npz: keras/tf.keras 2.x
#     imdb.load_data ``file_hash`` (an MD5 there).
#   SHA-256: keras 3 ``keras.datasets.cifar10/cifar100/imdb.load_data`` ``file_hash``.
#   Sizes: the Content-Length these hosts serve, as printed in many public download logs
#     (keras/torchvision progress bars); nothing here could reach the hosts to re-check.
ARCHIVES: dict[str, ArchiveDataset] = {a.name: a for a in (
    ArchiveDataset(
        name="cifar10", title="CIFAR-10 tiny images, 10 classes",
        filename="cifar-10-python.tar.gz", size=170498071,
        md5="c58f30108f718f92721af3b95e74349a",
        sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
        mirrors=(KRIZ,),
        convert=_cifar("cifar-10-batches-py",
                       tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",)),
        options=(("labels", "labels"), ("layout", "NHWC")),
    ),
    ArchiveDataset(
        name="cifar100", title="CIFAR-100 tiny images, 100 fine classes",
        filename="cifar-100-python.tar.gz", size=169001437,
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        sha256="85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
        mirrors=(KRIZ,),
        convert=_cifar("cifar-100-python", ("train",), ("test",)),
        options=(("labels", "fine_labels"), ("layout", "NHWC")),
    ),
    ArchiveDataset(
        name="imdb", title="IMDB movie reviews (Keras word indices), sentiment",
        filename="imdb.npz", size=17464789,
        md5="599dadb1135973df5b59232a0e9a887c",
        sha256="69664113be75683a8fe16e3ed0ab59fda8886cb3cd7ada244f7d9544e4676b9f",
        mirrors=(KERAS_DATASETS,),
        convert=lambda fh, ds, settings: _convert_imdb(fh, ds, settings),
        # keras.datasets.imdb.load_data defaults (num_words and maxlen come from
        # workloads.data), then keras.utils.pad_sequences defaults.
        options=(("seed", 113), ("start_char", 1), ("oov_char", 2), ("index_from", 3),
                 ("skip_top", 0), ("padding", "pre"), ("truncating", "pre"), ("value", 0)),
    ),
)}


def get(name: str) -> ArchiveDataset:
    return ARCHIVES[name]


def npy_names(split: str) -> tuple[str, str]:
    """The (x, y) array files of a split."""
    x, y = contract_datasets.NPY_FILES
    return x.format(split=split), y.format(split=split)


# --------------------------------------------------------------------------- the archive

@dataclass
class ArchiveCheck:
    ok: bool
    size: int
    md5: str = ""
    sha256: str = ""
    problem: str = ""              # one line, names no path (callers add it)


def _hash_open_file(fh) -> tuple[str, str]:
    md5, sha = hashlib.md5(), hashlib.sha256()
    while chunk := fh.read(CHUNK):
        md5.update(chunk)
        sha.update(chunk)
    return md5.hexdigest(), sha.hexdigest()


def check_archive(fh, ds: ArchiveDataset) -> ArchiveCheck:
    """Compare an open archive with the published one. Size first: a truncated or
    unrelated file is told apart without reading it."""
    size = os.fstat(fh.fileno()).st_size
    if size not in {a.size for a in ARCHIVES.values()}:
        hint = " (truncated download?)" if size < ds.size else ""
        return ArchiveCheck(False, size, problem=f"{size} bytes, the published {ds.filename} "
                                                 f"has {ds.size}{hint}")
    fh.seek(0)
    md5, sha = _hash_open_file(fh)
    check = ArchiveCheck(False, size, md5, sha)
    if size == ds.size and md5 == ds.md5 and (ds.sha256 is None or sha == ds.sha256):
        check.ok = True
        return check
    other = next((a for a in ARCHIVES.values() if a is not ds and a.size == size and a.md5 == md5), None)
    if other is not None:
        check.problem = (f"this is the {other.name} archive {other.filename}; "
                         f"use 'dlbench data import {other.name} FILE'")
    elif md5 != ds.md5:
        check.problem = f"checksum mismatch: MD5 {md5}, expected {ds.md5}"
    else:
        check.problem = f"checksum mismatch: SHA-256 {sha}, expected {ds.sha256}"
    return check


# --------------------------------------------------------------------------- safe unpickling

_RECONSTRUCT = np.empty(0).__reduce__()[0]     # numpy's multiarray._reconstruct
# The only globals a pickled numpy array refers to, under the module names numpy < 2
# (the published files) and numpy >= 2 write. Resolved here, never imported by name.
_PICKLE_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Builds dicts, lists, numbers, strings and numpy arrays; refuses every other global."""

    def find_class(self, module: str, name: str):
        try:
            return _PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which is not allowed "
                                         "(only numpy arrays are)") from None


def _unpickle(fh, what: str, encoding: str):
    try:
        return NumpyOnlyUnpickler(fh, encoding=encoding).load()
    except Exception as exc:  # noqa: BLE001 - any failure of a malformed pickle: say which file
        raise ConversionError(f"{what}: not a readable pickle ({one_line(exc)})") from None


# --------------------------------------------------------------------------- CIFAR

def _read_tar_members(fh, wanted: set[str]) -> dict[str, bytes]:
    """The named regular files of a .tar.gz, read in one forward pass (nothing is
    extracted to disk, so member paths cannot point anywhere)."""
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=fh, mode="r|gz") as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if name in wanted and member.isfile() and (data := tar.extractfile(member)) is not None:
                found[name] = data.read()
    missing = sorted(wanted - found.keys())
    if missing:
        raise ConversionError(f"the archive lacks {', '.join(missing)}")
    return found


def _cifar_batch(raw: bytes, what: str, label_key: str, info: contract_datasets.DatasetInfo):
    batch = _unpickle(io.BytesIO(raw), what, encoding="bytes")   # keys are bytes, as written by Python 2
    if not isinstance(batch, dict):
        raise ConversionError(f"{what}: holds a {type(batch).__name__}, not a dict")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    h, w, c = info.sample_shape
    x = batch.get("data")
    if not (isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 2 and x.shape[1] == c * h * w):
        raise ConversionError(f"{what}: 'data' is not uint8 rows of {c}x{h}x{w} pixels")
    if label_key not in batch:
        raise ConversionError(f"{what}: no '{label_key}'")
    try:
        y = np.asarray(batch[label_key])
    except ValueError as exc:
        raise ConversionError(f"{what}: '{label_key}' is not a list of labels ({one_line(exc)})") from None
    if y.shape != (len(x),) or (len(y) and (y.dtype.kind not in "iu" or y.min() < 0
                                            or y.max() >= info.classes)):
        raise ConversionError(f"{what}: '{label_key}' is not {len(x)} labels in 0..{info.classes - 1}")
    # rows are C x H x W (all red, then green, then blue); workloads read N x H x W x C
    return x.reshape(-1, c, h, w).transpose(0, 2, 3, 1), y.astype(Y_DTYPE)


def _convert_cifar(fh, ds: ArchiveDataset, settings: dict, *, folder: str,
                   members: dict[str, tuple[str, ...]]) -> dict[str, np.ndarray]:
    info = ds.info
    wanted = {f"{folder}/{m}" for split in SPLITS for m in members[split]}
    raw = _read_tar_members(fh, wanted)
    arrays = {}
    for split in SPLITS:
        parts = [_cifar_batch(raw.pop(f"{folder}/{m}"), f"{folder}/{m}", settings["labels"], info)
                 for m in members[split]]
        x_name, y_name = npy_names(split)
        arrays[x_name] = np.ascontiguousarray(np.concatenate([x for x, _ in parts]))
        arrays[y_name] = np.concatenate([y for _, y in parts])
    return arrays


# --------------------------------------------------------------------------- IMDB

def _read_npy(fh, what: str) -> np.ndarray:
    """One .npy from an .npz: plain arrays without pickle, object arrays through
    NumpyOnlyUnpickler (np.load(allow_pickle=True) would accept any global)."""
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            _, _, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            _, _, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f".npy format version {version} not supported")
        if not dtype.hasobject:
            fh.seek(0)
            return np.lib.format.read_array(fh, allow_pickle=False)
    except ValueError as exc:
        raise ConversionError(f"{what}: not a readable .npy array ({one_line(exc)})") from None
    array = _unpickle(fh, what, encoding="latin1")
    if not isinstance(array, np.ndarray):
        raise ConversionError(f"{what}: holds a {type(array).__name__}, not an array")
    return array


def _read_npz(fh, names: Iterable[str]) -> dict[str, np.ndarray]:
    arrays = {}
    with zipfile.ZipFile(fh) as npz:
        for name in names:
            try:
                raw = npz.read(name + ".npy")
            except KeyError:
                raise ConversionError(f"the archive lacks {name}.npy") from None
            arrays[name] = _read_npy(io.BytesIO(raw), f"{name}.npy")
    return arrays


def encode_reviews(reviews: np.ndarray, settings: dict, what: str) -> np.ndarray:
    """Word indices as keras.datasets.imdb.load_data(num_words=...) gives them (start
    mark, indices shifted by index_from, rare words -> oov_char), then cut and padded
    to maxlen as keras.utils.pad_sequences does by default (both at the front)."""
    s = settings
    maxlen = s["maxlen"]
    out = np.full((len(reviews), maxlen), s["value"], dtype=np.int32)
    for i, review in enumerate(reviews):
        try:
            words = np.asarray(review)
        except ValueError:
            words = np.empty((0, 0))
        if words.ndim != 1 or (words.size and (words.dtype.kind not in "iu" or words.min() < 0)):
            raise ConversionError(f"{what}[{i}] is not a list of word indices")
        ids = np.concatenate(([s["start_char"]], words.astype(np.int64) + s["index_from"]))
        ids[(ids < s["skip_top"]) | (ids >= s["num_words"])] = s["oov_char"]
        kept = ids[-maxlen:]                       # truncating="pre": keep the end
        out[i, maxlen - len(kept):] = kept         # padding="pre": zeros in front
    return out


def _convert_imdb(fh, ds: ArchiveDataset, settings: dict) -> dict[str, np.ndarray]:
    arrays = _read_npz(fh, ("x_train", "y_train", "x_test", "y_test"))
    # load_data shuffles train, then test, with one RandomState(seed) (a frozen stream)
    rng = np.random.RandomState(settings["seed"])
    classes = ds.info.classes
    out = {}
    for split in SPLITS:
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 1 or y.shape != x.shape:
            raise ConversionError(f"x_{split}.npy, y_{split}.npy: {x.shape} reviews with {y.shape} labels")
        if len(y) and (y.dtype.kind not in "iub" or y.min() < 0 or y.max() >= classes):
            raise ConversionError(f"y_{split}.npy: labels are not in 0..{classes - 1}")
        order = np.arange(len(x))
        rng.shuffle(order)
        x_name, y_name = npy_names(split)
        out[x_name] = encode_reviews(x[order], settings, f"x_{split}.npy")
        out[y_name] = y[order].astype(Y_DTYPE)
    return out


# --------------------------------------------------------------------------- the converted directory

def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a .npy we wrote, checking the file holds all its data
    (a few bytes read, so locating a dataset stays instant)."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        reader = {(1, 0): np.lib.format.read_array_header_1_0,
                  (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if reader is None:
            raise ValueError(f".npy format version {version} not supported")
        shape, fortran, dtype = reader(fh)
        offset = fh.tell()
    if fortran or dtype.hasobject:
        raise ValueError("not a C-ordered numeric array")
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if path.stat().st_size != expected:
        raise ValueError(f"{path.stat().st_size} bytes, its header says {expected} (truncated?)")
    return shape, dtype


def _expected_shape(ds: ArchiveDataset, filename: str) -> tuple[tuple[int, ...], np.dtype]:
    info = ds.info
    for split in SPLITS:
        x_name, y_name = npy_names(split)
        n = getattr(info, split)
        if filename == x_name:
            return (n, *info.sample_shape), np.dtype(X_DTYPES[info.kind])
        if filename == y_name:
            return (n,), np.dtype(Y_DTYPE)
    raise KeyError(filename)


def _array_problem(ds: ArchiveDataset, path: Path) -> str:
    """'' when the .npy has the shape and dtype workloads.data expects; else why not."""
    try:
        shape, dtype = _npy_header(path)
    except (OSError, ValueError) as exc:
        return f"not a readable .npy array ({one_line(exc)})"
    want_shape, want_dtype = _expected_shape(ds, path.name)
    if shape != want_shape or dtype != want_dtype:
        return f"holds {dtype} {shape}, {ds.name} needs {want_dtype} {want_shape}"
    return ""


def read_manifest(directory: Path) -> dict | None:
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _manifest_problem(ds: ArchiveDataset, manifest: dict | None) -> str:
    """'' when the manifest describes a conversion of the published archive with the
    settings this dlbench uses; else what differs."""
    if manifest is None:
        return "missing or not JSON"
    if manifest.get("dataset") != ds.name or manifest.get("manifest_version") != MANIFEST_VERSION:
        return f"not a {ds.name} manifest (version {MANIFEST_VERSION})"
    source = manifest["source"] if isinstance(manifest.get("source"), dict) else {}
    if source.get("md5") != ds.md5 or (ds.sha256 and source.get("sha256") != ds.sha256):
        return (f"converted from another archive (MD5 {source.get('md5')}, "
                f"the published {ds.filename} has {ds.md5})")
    settings, want = manifest.get("settings"), ds.settings()
    if settings != want:
        settings = settings if isinstance(settings, dict) else {}
        diff = ", ".join(f"{k}={settings.get(k)!r} (now {want.get(k)!r})"
                         for k in sorted(set(settings) | set(want)) if settings.get(k) != want.get(k))
        return f"converted with other settings: {diff}"
    if not isinstance(manifest.get("files"), dict):
        return "lists no files"
    return ""


def complete_splits(name: str, directory: Path) -> tuple[str, ...]:
    """Splits whose two arrays are listed in a current manifest and have the right
    shape and dtype (headers only; verify_dir re-hashes them)."""
    ds = get(name)
    manifest = read_manifest(directory)
    if manifest is None or _manifest_problem(ds, manifest):
        return ()
    return tuple(s for s in ds.splits
                 if all(f in manifest["files"] and not _array_problem(ds, directory / f)
                        for f in npy_names(s)))


@dataclass
class ArrayCheck:
    """Outcome of checking one file of a converted dataset (the CLI prints these)."""
    filename: str
    path: Path | None              # None: missing
    ok: bool = False
    method: str = ""
    problem: str = ""
    sha256: str = ""               # of the file, when it was hashed


@dataclass
class ConvertedCheck:
    name: str
    directory: Path
    files: list[ArrayCheck] = field(default_factory=list)

    @property
    def splits(self) -> tuple[str, ...]:
        ok = {c.filename for c in self.files if c.ok}
        if MANIFEST not in ok:
            return ()
        return tuple(s for s in get(self.name).splits if all(f in ok for f in npy_names(s)))

    @property
    def bad(self) -> list[ArrayCheck]:
        return [c for c in self.files if c.path is not None and not c.ok]


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return _hash_open_file(fh)[1]


def verify_manifest(name: str, directory: Path) -> tuple[ArrayCheck, dict | None]:
    """The manifest's check (current source and settings) and the manifest itself."""
    ds = get(name)
    manifest = read_manifest(directory)
    path = directory / MANIFEST
    problem = _manifest_problem(ds, manifest) if path.is_file() else None
    check = ArrayCheck(MANIFEST, path if path.is_file() else None, ok=problem == "",
                       method="current source and settings", problem=problem or "")
    return check, manifest


def recorded_sha256(manifest: dict | None, filename: str) -> str | None:
    """The SHA-256 the manifest records for one array."""
    recorded = manifest.get("files") if manifest else None
    entry = recorded.get(filename) if isinstance(recorded, dict) else None
    return entry.get("sha256") if isinstance(entry, dict) else None


def verify_array(name: str, directory: Path, filename: str, manifest: dict | None) -> ArrayCheck:
    """One array: the shape and dtype workloads.data expects, and the SHA-256 the
    manifest records for it."""
    ds = get(name)
    path = directory / filename
    check = ArrayCheck(filename, path if path.is_file() else None, method="SHA-256 in manifest.json")
    if check.path is None:
        return check
    want = recorded_sha256(manifest, filename)
    check.problem = _array_problem(ds, path)
    if not check.problem:
        if not want:
            check.problem = "not listed in manifest.json, cannot be verified"
        elif (got := _sha256(path)) != want:
            check.problem = f"checksum mismatch: SHA-256 {got}, manifest.json says {want}"
        else:
            check.sha256 = got
    check.ok = not check.problem
    return check


def verify_dir(name: str, directory: Path | str) -> ConvertedCheck:
    """Full check: the manifest is current, and every array has the shape, dtype and
    SHA-256 it records. Missing files are reported, not raised."""
    ds = get(name)
    directory = Path(directory)
    result = ConvertedCheck(ds.name, directory)
    manifest_check, manifest = verify_manifest(name, directory)
    result.files.append(manifest_check)
    for split in ds.splits:
        for filename in npy_names(split):
            result.files.append(verify_array(name, directory, filename, manifest))
    return result


# --------------------------------------------------------------------------- converting into the cache

_TEMP_SUFFIXES = ("part", "download", "old")


def _temp_name(name: str, suffix: str) -> str:
    """Temporary entries beside the dataset carry the owner's pid: a later run removes
    those whose process is gone (a killed conversion), never a live one's."""
    return f".{name}-{os.getpid()}-{secrets.token_hex(4)}.{suffix}"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(name: str) -> list[Path]:
    """Remove what a killed fetch/import of ``name`` left beside the cache."""
    root = cache_root()
    pattern = re.compile(rf"^\.{re.escape(name)}-(\d+)-[0-9a-f]+\.({'|'.join(_TEMP_SUFFIXES)})$")
    removed = []
    if root.is_dir():
        for entry in root.iterdir():
            match = pattern.match(entry.name)
            if match and not _alive(int(match.group(1))):
                _remove(entry)
                removed.append(entry)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _write_npy(path: Path, array: np.ndarray) -> str:
    with open(path, "wb") as fh:
        np.save(fh, array, allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(path, 0o644)
    return _sha256(path)


def _check_output(ds: ArchiveDataset, arrays: dict[str, np.ndarray]) -> None:
    """The conversion gives exactly what contract.datasets.DATASETS says (counts too)."""
    for split in SPLITS:
        for filename in npy_names(split):
            want_shape, want_dtype = _expected_shape(ds, filename)
            got = arrays[filename]
            if got.shape != want_shape or got.dtype != want_dtype:
                raise ConversionError(f"it gives {filename} as {got.dtype} {got.shape}, "
                                      f"{ds.name} is {want_dtype} {want_shape}")


def install(ds: ArchiveDataset, arrays: dict[str, np.ndarray], settings: dict,
            source: ArchiveCheck) -> Path:
    """Write converted arrays and their manifest into the cache, replacing what is
    there in one rename; nothing is left behind on any failure (OSError)."""
    root = cache_root()
    dest = root / ds.name
    tmp = root / _temp_name(ds.name, "part")
    tmp.mkdir()
    try:
        os.chmod(tmp, 0o755)                       # whatever the umask: containers read it
        files = {}
        for filename in sorted(arrays):
            files[filename] = {"sha256": _write_npy(tmp / filename, arrays[filename]),
                               "shape": list(arrays[filename].shape),
                               "dtype": str(arrays[filename].dtype)}
        manifest = {"manifest_version": MANIFEST_VERSION, "dataset": ds.name,
                    "source": {"filename": ds.filename, "size": source.size,
                               "md5": source.md5, "sha256": source.sha256},
                    "settings": settings, "files": files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        os.chmod(tmp / MANIFEST, 0o644)
        old = None
        if dest.exists() or dest.is_symlink():
            old = root / _temp_name(ds.name, "old")
            os.rename(dest, old)
        os.rename(tmp, dest)
        if old is not None:
            _remove(old)
        return dest
    finally:
        if tmp.exists():
            _remove(tmp)


# what a malformed (if checksum-matching) archive can raise while it is read
_READ_ERRORS = (ConversionError, tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError)


def _convert_file(fh, path: Path | str, ds: ArchiveDataset, check: ArchiveCheck) -> Path:
    """Convert a verified archive (an open file) into the cache; one-line errors."""
    fh.seek(0)
    settings = ds.settings()
    try:
        arrays = ds.convert(fh, ds, settings)
        _check_output(ds, arrays)
    except _READ_ERRORS as exc:
        raise DlbenchError(f"{path}: matches the published {ds.filename} checksum but cannot be "
                           f"converted: {one_line(exc)}; nothing was kept") from None
    make_dir(cache_root())
    try:
        return install(ds, arrays, settings, check)
    except OSError as exc:
        raise DlbenchError(f"{cache_root() / ds.name}: cannot write the converted {ds.name} "
                           f"({one_line(exc)}); nothing was kept; free some space or point "
                           "DLBENCH_CACHE at another directory") from None


def _current(ds: ArchiveDataset) -> bool:
    """The cache already holds a full, verified conversion with current settings."""
    check = verify_dir(ds.name, cache_root() / ds.name)
    return not check.bad and check.splits == ds.splits


def fetch(name: str, progress: ProgressFn | None = None, mirrors: Iterable[str] | None = None,
          splits: Iterable[str] | None = None, timeout: float = 60.0) -> FetchResult:
    """Download the archive (mirrors in order) to a temporary file, verify it, convert
    it, drop it. The archive holds every split: ``splits`` is only checked. Nothing is
    downloaded when the cache already holds a verified conversion."""
    ds = get(name)
    check_splits(ds, splits)
    dest = cache_root() / ds.name
    result = FetchResult(ds.name, dest)
    sweep_stale(ds.name)
    if _current(ds):                    # the archive is not kept: its conversion is
        result.already.extend(f for split in ds.splits for f in npy_names(split))
        result.splits = complete_splits(name, dest)
        return result
    make_dir(cache_root())
    errors: list[str] = []
    mismatch = ""
    for base in mirror_urls(ds, mirrors):
        url = base + ds.filename
        tmp = cache_root() / _temp_name(ds.name, "download")
        try:
            with open(tmp, "w+b") as fh:
                try:
                    download(url, fh, ds.filename, ds.size, progress, timeout)
                    fh.flush()
                except DOWNLOAD_ERRORS as exc:
                    errors.append(download_failure(url, exc))
                    continue
                check = check_archive(fh, ds)
                if not check.ok:                    # this mirror serves something else: try the next
                    mismatch = mismatch or f"{url}: {check.problem}"
                    errors.append(f"{url}: checksum mismatch")
                    continue
                _convert_file(fh, url, ds, check)
        finally:
            tmp.unlink(missing_ok=True)
        result.downloaded.append((ds.filename, url))
        break
    else:
        if mismatch:
            raise DlbenchError(f"{mismatch}; nothing was kept; try another --mirror or "
                               f"'dlbench data import {ds.name} FILE'")
        raise DlbenchError(f"cannot download {ds.filename} for {ds.name}: {'; '.join(errors)}; "
                           f"without internet, copy {ds.filename} to this host and run "
                           f"'dlbench data import {ds.name} FILE'")
    result.failures.extend(errors)
    result.splits = complete_splits(name, dest)
    return result


def import_file(name: str, source: Path | str) -> ImportResult:
    """Verify the archive the user has (a file, or a directory holding it under its
    published name) and convert it into the cache."""
    ds = get(name)
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / ds.filename).is_file():
            raise DlbenchError(f"{path}: no {ds.filename} there; give the archive file as published "
                               f"({ds.mirrors[0]}{ds.filename}), not an unpacked copy")
        path = path / ds.filename
    elif not path.is_file():
        raise DlbenchError(f"{path}: no such file; give the {ds.filename} you downloaded from "
                           f"{ds.mirrors[0]}")
    sweep_stale(ds.name)
    try:
        with open(path, "rb") as fh:     # one open file: the bytes converted are the bytes checked
            check = check_archive(fh, ds)
            if not check.ok:
                raise DlbenchError(f"{path}: not the published {ds.filename}: {check.problem}; "
                                   f"nothing was imported")
            dest = _convert_file(fh, path, ds, check)
    except OSError as exc:
        raise DlbenchError(f"{path}: cannot read it ({one_line(exc)})") from None
    how = "published MD5" + (" and SHA-256" if ds.sha256 else "") + ", converted to .npy"
    now = complete_splits(name, dest)
    return ImportResult(ds.name, dest, now, [(path, how)], now,
                        tuple(s for s in ds.splits if s not in now))
