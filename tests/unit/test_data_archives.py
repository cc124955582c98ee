"""Datasets published as one archive (CIFAR-10, CIFAR-100, IMDB): checked against the
published checksum before anything in them is parsed, converted once to .npy in the
cache, read back by workloads.data.load_npy_split.

The archives here are small GENERATED files in the exact official formats: CIFAR
batches pickled as the originals were (Python 2, protocol 2, byte-string keys and
values, numpy < 2 module names), imdb.npz with object arrays of int lists. Their
checksums cannot be the published ones, so each test publishes the generated file's
checksums (and its smaller split sizes) in the registries. Downloads go to a real
HTTP server on 127.0.0.1, never the internet."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from contract import datasets as contract_datasets
from orchestrator import datasets
from orchestrator.datasets import archives as data_archives
from orchestrator.errors import DlbenchError
from tests.data_fixtures import closed_port_url, isolated, serve  # noqa: F401 (autouse)
from workloads.data import load_npy_split

NPY = ("train-x.npy", "train-y.npy", "test-x.npy", "test-y.npy")


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def files_under(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


def entries_under(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# --------------------------------------------------------------------------- archives in the official formats

class Py2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote for the CIFAR batches: every string as a
    byte string (SHORT_BINSTRING/BINSTRING, read back as bytes with encoding='bytes')
    and numpy's globals under their numpy < 2 names."""
    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        raw = obj if isinstance(obj, bytes) else obj.encode("latin1")
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str

    def save_global(self, obj, name=None):
        name = name or obj.__qualname__
        module = pickle.whichmodule(obj, name).replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode())
        self.memoize(obj)


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def chw_rows(first: int, n: int) -> np.ndarray:
    """n images as CIFAR stores them (3072 bytes: the red plane, green, blue; each
    row-major); pixel (c, h, w) of image k is a known function of all four."""
    k, c, h, w = np.meshgrid(np.arange(first, first + n), np.arange(3), np.arange(32), np.arange(32),
                             indexing="ij")
    return ((k * 7 + c * 85 + h * 8 + w) % 256).astype(np.uint8).reshape(n, 3072)


def write_tar_gz(path: Path, folder: str, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(folder)
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
        for name, payload in members.items():
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size, info.mode = len(payload), 0o644
            tar.addfile(info, io.BytesIO(payload))
    return path


@dataclasses.dataclass
class Made:
    path: Path
    x: dict[str, np.ndarray]          # split -> CHW rows, in file order
    y: dict[str, np.ndarray]


def make_cifar10(path: Path, train: int = 50, test: int = 10, override: dict | None = None) -> Made:
    """cifar-10-python.tar.gz: cifar-10-batches-py/data_batch_1..5, test_batch,
    batches.meta, readme.html."""
    rows = {"train": chw_rows(0, train), "test": chw_rows(train, test)}
    labels = {"train": (np.arange(train) * 3) % 10, "test": (np.arange(test) * 7) % 10}
    members = {"batches.meta": py2_pickle({b"num_cases_per_batch": train // 5,
                                           b"label_names": [b"airplane", b"automobile", b"bird", b"cat",
                                                            b"deer", b"dog", b"frog", b"horse",
                                                            b"ship", b"truck"],
                                           b"num_vis": 3072})}
    per = train // 5
    for i in range(5):
        part = slice(i * per, (i + 1) * per)
        members[f"data_batch_{i + 1}"] = py2_pickle({
            b"batch_label": f"training batch {i + 1} of 5".encode(),
            b"labels": [int(v) for v in labels["train"][part]],
            b"data": rows["train"][part],
            b"filenames": [f"img_{j}.png".encode() for j in range(part.start, part.stop)]})
    members["test_batch"] = py2_pickle({b"batch_label": b"testing batch 1 of 1",
                                        b"labels": [int(v) for v in labels["test"]],
                                        b"data": rows["test"],
                                        b"filenames": [b"t.png"] * test})
    members["readme.html"] = b"<html></html>\n"
    members.update(override or {})
    members = {k: v for k, v in members.items() if v is not None}
    write_tar_gz(path, "cifar-10-batches-py", members)
    return Made(path, rows, labels)


def make_cifar100(path: Path, train: int = 20, test: int = 10) -> Made:
    """cifar-100-python.tar.gz: cifar-100-python/train, test, meta (fine and coarse labels)."""
    rows = {"train": chw_rows(100, train), "test": chw_rows(200, test)}
    fine = {"train": (np.arange(train) * 13) % 100, "test": (np.arange(test) * 37 + 5) % 100}
    members = {"meta": py2_pickle({b"fine_label_names": [f"c{i}".encode() for i in range(100)],
                                   b"coarse_label_names": [f"s{i}".encode() for i in range(20)]})}
    for split, batch_label in (("train", b"training batch 1 of 1"), ("test", b"testing batch 1 of 1")):
        members[split] = py2_pickle({b"filenames": [b"f.png"] * len(rows[split]),
                                     b"batch_label": batch_label,
                                     b"fine_labels": [int(v) for v in fine[split]],
                                     b"coarse_labels": [int(v) // 5 for v in fine[split]],
                                     b"data": rows[split]})
    write_tar_gz(path, "cifar-100-python", members)
    return Made(path, rows, fine)


def object_array(items) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out


IMDB_TRAIN = [
    [0, 5, 29996, 29997, 40000],     # -> 1, 3, 8, 29999, then 30000 and 40003 are beyond num_words
    list(range(200)),                # longer than maxlen: the FRONT is cut (truncating='pre')
    [7] * 149,                       # 149 words + the start mark: exactly maxlen
    [],                              # only the start mark
    [12, 13],
    [29997, 1],
]
IMDB_TEST = [[4, 4, 4], list(range(1000, 1300)), [29999], [8, 9, 10, 11]]


def make_imdb(path: Path, x_train=IMDB_TRAIN, x_test=IMDB_TEST, evil=None) -> Made:
    """imdb.npz as Keras publishes it: x_* object arrays of int lists, y_* int labels."""
    y = {"train": np.arange(len(x_train)) % 2, "test": (np.arange(len(x_test)) + 1) % 2}
    x_train = object_array(list(x_train) + ([evil] if evil is not None else []))
    if evil is not None:
        y["train"] = np.append(y["train"], 0)
    np.savez(path, x_train=x_train, y_train=y["train"], x_test=object_array(x_test), y_test=y["test"])
    return Made(path, {"train": x_train, "test": object_array(x_test)}, y)


def keras_like(review, num_words=30000, maxlen=150) -> list[int]:
    """keras.datasets.imdb.load_data(num_words) then pad_sequences(maxlen), per review,
    written plainly (defaults: start_char=1, oov_char=2, index_from=3, 'pre', 'pre', 0)."""
    ids = [1] + [w + 3 for w in review]
    ids = [w if w < num_words else 2 for w in ids]
    ids = ids[-maxlen:]
    return [0] * (maxlen - len(ids)) + ids


def digests(path: Path) -> dict:
    raw = path.read_bytes()
    return {"size": len(raw), "md5": hashlib.md5(raw).hexdigest(),
            "sha256": hashlib.sha256(raw).hexdigest()}


def publish(monkeypatch, name: str, archive: Path, train: int | None = None, test: int | None = None):
    """Make ``archive`` the published one for ``name`` (checksums, size) and the
    dataset this size in contract.datasets.DATASETS (the one place sizes live)."""
    monkeypatch.setitem(data_archives.ARCHIVES, name,
                        dataclasses.replace(data_archives.ARCHIVES[name], **digests(archive)))
    sizes = {k: v for k, v in (("train", train), ("test", test)) if v is not None}
    if sizes:
        monkeypatch.setitem(contract_datasets.DATASETS, name, dataclasses.replace(contract_datasets.DATASETS[name], **sizes))


@pytest.fixture
def cifar10(tmp_path, monkeypatch) -> Made:
    (tmp_path / "dl").mkdir()
    made = make_cifar10(tmp_path / "dl" / "cifar-10-python.tar.gz")
    publish(monkeypatch, "cifar10", made.path, train=50, test=10)
    return made


@pytest.fixture
def cifar100(tmp_path, monkeypatch) -> Made:
    (tmp_path / "dl100").mkdir()
    made = make_cifar100(tmp_path / "dl100" / "cifar-100-python.tar.gz")
    publish(monkeypatch, "cifar100", made.path, train=20, test=10)
    return made


@pytest.fixture
def imdb(tmp_path, monkeypatch) -> Made:
    (tmp_path / "dlimdb").mkdir()
    made = make_imdb(tmp_path / "dlimdb" / "imdb.npz")
    publish(monkeypatch, "imdb", made.path, train=len(IMDB_TRAIN), test=len(IMDB_TEST))
    return made


# --------------------------------------------------------------------------- registry

def test_registry_matches_workloads_and_published_values():
    formats = {name: info.format for name, info in contract_datasets.DATASETS.items()}
    assert set(data_archives.ARCHIVES) == {n for n, f in formats.items() if f == "npy"}
    assert set(datasets.DATASETS) == {n for n, f in formats.items() if f == "idx"}
    assert datasets.names() == sorted(formats)
    published = {  # torchvision's MD5s, Keras' SHA-256s and imdb.npz MD5
        "cifar10": ("cifar-10-python.tar.gz", 170498071, "c58f30108f718f92721af3b95e74349a",
                    "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"),
        "cifar100": ("cifar-100-python.tar.gz", 169001437, "eb9058c3a382ffc7106e4002c42a8d85",
                     "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7"),
        "imdb": ("imdb.npz", 17464789, "599dadb1135973df5b59232a0e9a887c",
                 "69664113be75683a8fe16e3ed0ab59fda8886cb3cd7ada244f7d9544e4676b9f"),
    }
    for name, (filename, size, md5, sha256) in published.items():
        ds = datasets.get(name)
        assert (ds.filename, ds.size, ds.md5, ds.sha256) == (filename, size, md5, sha256)
        assert ds.splits == ("train", "test") and ds.mirrors[0].startswith("https://")
    assert datasets.get("cifar100").settings()["labels"] == "fine_labels"
    assert datasets.get("imdb").settings() == {
        "num_words": 30000, "maxlen": 150, "seed": 113, "start_char": 1, "oov_char": 2,
        "index_from": 3, "skip_top": 0, "padding": "pre", "truncating": "pre", "value": 0}
    with pytest.raises(DlbenchError) as exc:
        datasets.get("cifar")
    assert "cifar10, cifar100, imdb" in one_line(exc) and "fashion-mnist, mnist" in str(exc.value)


# --------------------------------------------------------------------------- CIFAR-10

def test_cifar10_import_converts_to_nhwc(cifar10, isolated):
    result = datasets.import_dir("cifar10", cifar10.path)
    cache = isolated / "datasets" / "cifar10"
    assert result.directory == cache and result.imported == ("train", "test") and result.missing == ()
    assert result.files == [(cifar10.path, "published MD5 and SHA-256, converted to .npy")]
    assert entries_under(isolated / "datasets") == ["cifar10"]        # no temporary left, no archive
    assert entries_under(cache) == sorted([*NPY, "manifest.json"])

    x = np.load(cache / "train-x.npy", allow_pickle=False)
    assert x.dtype == np.uint8 and x.shape == (50, 32, 32, 3)
    rows = cifar10.x["train"]
    # CHW rows -> HWC: the red plane's first bytes run along the first image row, the
    # green plane starts at byte 1024, blue at 2048
    k = 17
    assert x[k, 0, 0, 0] == rows[k, 0] and x[k, 0, 1, 0] == rows[k, 1] and x[k, 1, 0, 0] == rows[k, 32]
    assert x[k, 0, 0, 1] == rows[k, 1024] and x[k, 1, 1, 2] == rows[k, 2048 + 33]
    assert np.array_equal(x, rows.reshape(50, 3, 32, 32).transpose(0, 2, 3, 1))
    y = np.load(cache / "train-y.npy", allow_pickle=False)
    assert y.dtype == np.uint8 and y.tolist() == cifar10.y["train"].tolist()   # batches 1..5 in order

    ds = contract_datasets.info("cifar10")
    xs, ys = load_npy_split(ds, str(cache), "test")
    assert xs.shape == (10, 32, 32, 3) and xs.dtype == np.float32 and ys.dtype == np.int64
    assert np.array_equal(np.rint(xs * 255).astype(np.uint8),
                          cifar10.x["test"].reshape(10, 3, 32, 32).transpose(0, 2, 3, 1))
    assert ys.tolist() == cifar10.y["test"].tolist()
    x5, y5 = load_npy_split(ds, str(cache), "train", limit=5)
    assert x5.shape == (5, 32, 32, 3) and y5.tolist() == cifar10.y["train"][:5].tolist()

    assert datasets.require("cifar10", splits=("train", "test")) == cache
    loc = datasets.locate("cifar10")
    assert loc.source == "cache" and loc.splits == ("train", "test")
    assert ("cifar10", loc, ("train", "test")) in datasets.status()


def test_converted_files_are_world_readable_with_a_manifest(cifar10, isolated):
    old = os.umask(0o077)                  # a strict umask must not make the data private
    try:
        datasets.import_dir("cifar10", cifar10.path)
    finally:
        os.umask(old)
    cache = isolated / "datasets" / "cifar10"
    assert cache.stat().st_mode & 0o777 == 0o755
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in cache.iterdir())
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["dataset"] == "cifar10"
    assert manifest["source"] == {"filename": "cifar-10-python.tar.gz", **digests(cifar10.path)}
    assert manifest["settings"] == {"labels": "labels", "layout": "NHWC"}
    assert manifest["files"]["train-x.npy"]["shape"] == [50, 32, 32, 3]
    for name in NPY:
        assert manifest["files"][name]["sha256"] == hashlib.sha256((cache / name).read_bytes()).hexdigest()
    check = datasets.verify_dir("cifar10", cache)
    assert not check.bad and check.splits == ("train", "test")


def test_import_a_directory_holding_the_archive(cifar10):
    assert datasets.import_dir("cifar10", cifar10.path.parent).splits == ("train", "test")


def test_import_twice_replaces_and_gives_the_same_bytes(cifar10, isolated):
    datasets.import_dir("cifar10", cifar10.path)
    cache = isolated / "datasets" / "cifar10"
    first = {p.name: p.read_bytes() for p in cache.iterdir()}
    datasets.import_dir("cifar10", cifar10.path)
    assert {p.name: p.read_bytes() for p in cache.iterdir()} == first
    assert entries_under(isolated / "datasets") == ["cifar10"]


def test_require_before_anything_is_prepared(isolated):
    with pytest.raises(DlbenchError) as exc:
        datasets.require("cifar10", splits=("train", "test"))
    message = one_line(exc)
    assert "dataset cifar10 is not prepared" in message and str(isolated) in message
    assert "dlbench data fetch cifar10" in message and "dlbench data import cifar10 FILE" in message
    with pytest.raises(DlbenchError, match="no split 'valid'"):
        datasets.require("imdb", splits=("valid",))


def test_data_dir_env_holds_a_converted_copy(cifar10, isolated, tmp_path, monkeypatch):
    datasets.import_dir("cifar10", cifar10.path)
    root = tmp_path / "shared-data"
    shutil.copytree(isolated / "datasets" / "cifar10", root / "cifar10")
    monkeypatch.setenv("DLBENCH_DATA_DIR", str(root))
    loc = datasets.locate("cifar10")
    assert loc.directory == root / "cifar10" and loc.source == "DLBENCH_DATA_DIR"


# --------------------------------------------------------------------------- refusing other files

def test_wrong_checksum_is_refused_and_leaves_nothing(cifar10, tmp_path, monkeypatch, isolated):
    ds = data_archives.ARCHIVES["cifar10"]
    monkeypatch.setitem(data_archives.ARCHIVES, "cifar10", dataclasses.replace(ds, md5="0" * 32))
    with pytest.raises(DlbenchError) as exc:
        datasets.import_dir("cifar10", cifar10.path)
    message = one_line(exc)
    assert message.startswith(f"{cifar10.path}: not the published cifar-10-python.tar.gz")
    assert f"checksum mismatch: MD5 {digests(cifar10.path)['md5']}, expected {'0' * 32}" in message
    assert "nothing was imported" in message
    assert files_under(isolated) == []

    monkeypatch.setitem(data_archives.ARCHIVES, "cifar10", dataclasses.replace(ds, sha256="f" * 64))
    with pytest.raises(DlbenchError, match="checksum mismatch: SHA-256 .*expected f{64}"):
        datasets.import_dir("cifar10", cifar10.path)
    assert files_under(isolated) == []


def test_truncated_archive(cifar10, tmp_path, monkeypatch, isolated):
    cut = tmp_path / "cut" / "cifar-10-python.tar.gz"
    cut.parent.mkdir()
    raw = cifar10.path.read_bytes()
    cut.write_bytes(raw[:len(raw) // 2])
    with pytest.raises(DlbenchError) as exc:          # the published size tells it at once
        datasets.import_dir("cifar10", cut)
    message = one_line(exc)
    assert f"{len(raw) // 2} bytes, the published cifar-10-python.tar.gz has {len(raw)}" in message
    assert "truncated download?" in message and files_under(isolated) == []

    publish(monkeypatch, "cifar10", cut)              # even if its checksum matched
    with pytest.raises(DlbenchError) as exc:
        datasets.import_dir("cifar10", cut)
    message = one_line(exc)
    assert str(cut) in message and "cannot be converted" in message and "nothing was kept" in message
    assert files_under(isolated) == []


def test_malicious_pickle_in_a_matching_archive_is_refused(tmp_path, monkeypatch, isolated):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    made = make_cifar10(tmp_path / "cifar-10-python.tar.gz",
                        override={"data_batch_3": py2_pickle({b"data": Evil()})})
    publish(monkeypatch, "cifar10", made.path, train=50, test=10)
    with pytest.raises(DlbenchError) as exc:
        datasets.import_dir("cifar10", made.path)
    message = one_line(exc)
    assert "cifar-10-batches-py/data_batch_3" in message
    assert f"refers to {os.system.__module__}.system, which is not allowed" in message
    assert not marker.exists() and files_under(isolated) == []

    made = make_imdb(tmp_path / "imdb.npz", evil=Evil())
    publish(monkeypatch, "imdb", made.path, train=len(IMDB_TRAIN) + 1, test=len(IMDB_TEST))
    with pytest.raises(DlbenchError) as exc:
        datasets.import_dir("imdb", made.path)
    assert "x_train.npy" in one_line(exc) and "system, which is not allowed" in str(exc.value)
    assert not marker.exists() and files_under(isolated) == []


def test_archive_missing_a_member_or_with_other_sizes(tmp_path, monkeypatch, isolated):
    made = make_cifar10(tmp_path / "cifar-10-python.tar.gz", override={"test_batch": None})
    publish(monkeypatch, "cifar10", made.path, train=50, test=10)
    with pytest.raises(DlbenchError, match="the archive lacks cifar-10-batches-py/test_batch"):
        datasets.import_dir("cifar10", made.path)
    made = make_cifar10(tmp_path / "other.tar.gz", train=40)
    publish(monkeypatch, "cifar10", made.path, train=50, test=10)   # DATASETS says 50
    with pytest.raises(DlbenchError) as exc:
        datasets.import_dir("cifar10", made.path)
    assert "train-x.npy as uint8 (40, 32, 32, 3), cifar10 is uint8 (50, 32, 32, 3)" in one_line(exc)
    assert files_under(isolated) == []


def test_the_other_datasets_archive_is_named(cifar10, cifar100, isolated):
    with pytest.raises(DlbenchError) as exc:
        datasets.import_dir("cifar10", cifar100.path)
    assert "this is the cifar100 archive cifar-100-python.tar.gz" in one_line(exc)
    assert "dlbench data import cifar100 FILE" in str(exc.value)


def test_import_needs_the_archive(tmp_path, isolated):
    with pytest.raises(DlbenchError, match="no such file; give the cifar-10-python.tar.gz"):
        datasets.import_dir("cifar10", tmp_path / "nope.tar.gz")
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(DlbenchError, match="no cifar-10-python.tar.gz there.*not an unpacked copy"):
        datasets.import_dir("cifar10", tmp_path / "cifar-10-batches-py")


# --------------------------------------------------------------------------- interrupted conversions

def test_interrupted_conversion_keeps_the_previous_one(cifar10, isolated, monkeypatch):
    datasets.import_dir("cifar10", cifar10.path)
    cache = isolated / "datasets" / "cifar10"
    before = {p.name: p.read_bytes() for p in cache.iterdir()}
    real, calls = data_archives._write_npy, []

    def dies_on_the_third(path, array):
        calls.append(path.name)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(path, array)

    monkeypatch.setattr(data_archives, "_write_npy", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        datasets.import_dir("cifar10", cifar10.path)
    assert entries_under(isolated / "datasets") == ["cifar10"]
    assert {p.name: p.read_bytes() for p in cache.iterdir()} == before


def test_what_a_killed_conversion_left_is_swept(cifar10, isolated):
    root = isolated / "datasets"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = root / f".cifar10-{dead.pid}-0badc0de.part"
    stale.mkdir(parents=True)
    (stale / "train-x.npy").write_bytes(b"half")
    (root / f".cifar10-{dead.pid}-0badc0de.download").write_bytes(b"half")
    live = root / f".cifar10-{os.getpid()}-12345678.part"       # a running import's: kept
    live.mkdir()
    other = root / f".cifar100-{dead.pid}-0badc0de.part"          # another dataset's: not ours
    other.mkdir()
    datasets.import_dir("cifar10", cifar10.path)
    assert entries_under(root) == sorted([live.name, other.name, "cifar10"])


# --------------------------------------------------------------------------- CIFAR-100, IMDB

def test_cifar100_uses_the_fine_labels(cifar100, isolated):
    result = datasets.import_dir("cifar100", cifar100.path)
    assert result.splits == ("train", "test")
    ds = contract_datasets.info("cifar100")
    for split, n in (("train", 20), ("test", 10)):
        x, y = load_npy_split(ds, str(result.directory), split)
        assert x.shape == (n, 32, 32, 3)
        assert np.array_equal(np.rint(x * 255).astype(np.uint8),
                              cifar100.x[split].reshape(n, 3, 32, 32).transpose(0, 2, 3, 1))
        assert y.tolist() == cifar100.y[split].tolist() and max(y) >= 20     # fine, not coarse


def test_imdb_indices_shuffle_and_padding_match_keras(imdb, isolated):
    result = datasets.import_dir("imdb", imdb.path)
    cache = result.directory
    x = np.load(cache / "train-x.npy", allow_pickle=False)
    assert x.dtype == np.int32 and x.shape == (len(IMDB_TRAIN), 150)
    # load_data's order: one RandomState(113) shuffles train, then test
    rng = np.random.RandomState(113)
    order = {}
    for split, n in (("train", len(IMDB_TRAIN)), ("test", len(IMDB_TEST))):
        order[split] = np.arange(n)
        rng.shuffle(order[split])
    ds = contract_datasets.info("imdb")
    for split, raw in (("train", IMDB_TRAIN), ("test", IMDB_TEST)):
        xs, ys = load_npy_split(ds, str(cache), split)
        assert xs.dtype == np.int32 and xs.shape == (len(raw), 150)
        assert xs.tolist() == [keras_like(raw[i]) for i in order[split]]
        assert ys.tolist() == imdb.y[split][order[split]].tolist()
    # the known sequences, spelled out
    first = x[list(order["train"]).index(0)]
    assert first[-6:].tolist() == [1, 3, 8, 29999, 2, 2] and not first[:-6].any()
    long = x[list(order["train"]).index(1)]
    assert long.tolist() == list(range(53, 203))            # start mark and 50 first words cut
    exact = x[list(order["train"]).index(2)]
    assert exact.tolist() == [1] + [10] * 149
    assert x[list(order["train"]).index(3)].tolist() == [0] * 149 + [1]
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["settings"]["num_words"] == 30000 and manifest["settings"]["maxlen"] == 150


# --------------------------------------------------------------------------- verify, stale conversions

def test_verify_finds_a_damaged_or_stale_conversion(cifar10, imdb, isolated):
    datasets.import_dir("cifar10", cifar10.path)
    cache = isolated / "datasets" / "cifar10"
    target = cache / "test-y.npy"
    raw = bytearray(target.read_bytes())
    raw[-1] ^= 0x01
    target.write_bytes(bytes(raw))
    check = datasets.verify_dir("cifar10", cache)
    assert [c.filename for c in check.bad] == ["test-y.npy"] and check.splits == ("train",)
    assert "checksum mismatch: SHA-256" in check.bad[0].problem

    truncated = cache / "train-x.npy"
    truncated.write_bytes(truncated.read_bytes()[:-10])
    assert datasets.complete_splits("cifar10", cache) == ("test",)       # header check: no hashing
    assert "truncated?" in datasets.verify_dir("cifar10", cache).bad[0].problem

    datasets.import_dir("imdb", imdb.path)
    imdb_dir = isolated / "datasets" / "imdb"
    manifest = json.loads((imdb_dir / "manifest.json").read_text())
    manifest["settings"]["num_words"] = 20000
    (imdb_dir / "manifest.json").write_text(json.dumps(manifest))
    check = datasets.verify_dir("imdb", imdb_dir)
    assert check.bad[0].filename == "manifest.json"
    assert "converted with other settings: num_words=20000 (now 30000)" in check.bad[0].problem
    assert datasets.locate("imdb") is None                # a stale conversion is not used


# --------------------------------------------------------------------------- fetch over HTTP

def test_fetch_from_loopback_server(cifar10, isolated):
    seen = []
    with serve(cifar10.path.parent) as url:
        result = datasets.fetch("cifar10", mirrors=[url],
                            progress=lambda name, done, total: seen.append((name, done, total)))
    size = cifar10.path.stat().st_size
    assert result.downloaded == [("cifar-10-python.tar.gz", url + "cifar-10-python.tar.gz")]
    assert result.splits == ("train", "test") and result.failures == []
    assert ("cifar-10-python.tar.gz", size, size) in seen
    assert entries_under(isolated / "datasets") == ["cifar10"]          # the download is not kept
    xs, _ = load_npy_split(contract_datasets.info("cifar10"), str(result.directory), "train")
    assert xs.shape == (50, 32, 32, 3)

    again = datasets.fetch("cifar10", mirrors=[closed_port_url()])         # nothing to download
    assert again.downloaded == [] and again.already == list(NPY)


def test_fetch_skips_a_mirror_serving_something_else(cifar10, imdb, tmp_path, monkeypatch, isolated):
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "imdb.npz").write_bytes(cifar10.path.read_bytes())
    with serve(wrong) as bad, serve(imdb.path.parent) as good:
        monkeypatch.setenv("DLBENCH_DATA_MIRROR", f"{bad} {good}")
        result = datasets.fetch("imdb")
    assert result.downloaded == [("imdb.npz", good + "imdb.npz")]
    assert result.failures == [f"{bad}imdb.npz: checksum mismatch"]
    assert result.splits == ("train", "test")


def test_fetch_refused_or_unreachable_is_one_line_and_keeps_nothing(cifar10, tmp_path, isolated):
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    damaged = bytearray(cifar10.path.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF                     # same size, other bytes
    (wrong / "cifar-10-python.tar.gz").write_bytes(bytes(damaged))
    with serve(wrong) as url:
        with pytest.raises(DlbenchError) as exc:
            datasets.fetch("cifar10", mirrors=[url])
    message = one_line(exc)
    assert f"{url}cifar-10-python.tar.gz: checksum mismatch: MD5" in message
    assert "nothing was kept" in message and files_under(isolated) == []

    dead = closed_port_url()
    with pytest.raises(DlbenchError) as exc:
        datasets.fetch("cifar10", mirrors=[dead])
    message = one_line(exc)
    assert dead in message and "dlbench data import cifar10 FILE" in message
    assert files_under(isolated) == []
    with serve(tmp_path) as url:
        with pytest.raises(DlbenchError, match="404"):
            datasets.fetch("cifar10", mirrors=[url])


# --------------------------------------------------------------------------- dlbench data …

def run_cli(*argv: str) -> int:
    import argparse

    from orchestrator.cli.data import add_data_commands
    parser = argparse.ArgumentParser(prog="dlbench")
    add_data_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_cli_import_list_verify_fetch(cifar10, imdb, isolated, capsys):
    cache = isolated / "datasets" / "cifar10"
    assert run_cli("data", "import", "cifar10", str(cifar10.path)) == 0
    out = capsys.readouterr().out
    assert "imported cifar-10-python.tar.gz (verified: published MD5 and SHA-256, converted to .npy)" in out
    assert f"cifar10: imported train+test into {cache}" in out

    assert run_cli("data", "list") == 0
    lines = {l.split()[0]: l for l in capsys.readouterr().out.splitlines()}
    assert all(part in lines["cifar10"] for part in ("train+test", str(cache), "[cache]"))
    assert "not prepared" in lines["imdb"] and "dlbench data import imdb FILE" in lines["imdb"]
    assert "not prepared" in lines["cifar100"]

    assert run_cli("data", "verify", "cifar10") == 0
    out = capsys.readouterr().out
    assert "ok       manifest.json  (current source and settings)" in out
    assert "ok       train-x.npy  (SHA-256 in manifest.json)" in out
    assert f"cifar10: train+test verified in {cache}" in out

    with serve(imdb.path.parent) as url:
        assert run_cli("data", "fetch", "imdb", "--mirror", url) == 0
    out = capsys.readouterr().out
    assert f"downloaded imdb.npz from {url}imdb.npz" in out and "imdb: train+test ready in" in out
    assert run_cli("data", "fetch", "imdb", "--mirror", closed_port_url()) == 0
    assert "already in the cache: train-x.npy, train-y.npy, test-x.npy, test-y.npy" in capsys.readouterr().out

    target = cache / "train-y.npy"
    raw = bytearray(target.read_bytes())
    raw[-1] ^= 0x02
    target.write_bytes(bytes(raw))
    with pytest.raises(DlbenchError) as exc:
        run_cli("data", "verify", "cifar10")
    message = one_line(exc)
    assert message.startswith(f"{target}: checksum mismatch: SHA-256")
    assert "convert it again with 'dlbench data fetch cifar10'" in message

    with pytest.raises(DlbenchError) as exc:
        run_cli("data", "import", "cifar100", str(cifar10.path))
    assert "not the published cifar-100-python.tar.gz" in one_line(exc)
