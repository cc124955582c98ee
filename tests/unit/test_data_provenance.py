"""Every run's data, proven (orchestrator.datasets.provenance): the files a run opens are
checked against the registry before it starts, on REAL data (the official MNIST test split
from shared/, Debian's Fashion-MNIST), and their SHA-256 land in run.json. A file that
`dlbench data verify` rejects stops the suite before anything is created; a file checked
once is not read again while it stays untouched.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import textwrap
import time
from pathlib import Path

import pytest

from orchestrator import datasets
from orchestrator.datasets import idx, provenance
from orchestrator.errors import DlbenchError
from orchestrator.execution import runner
from orchestrator.plan.suite import load_suite
from orchestrator.report import charts
from orchestrator.results import bundle
from orchestrator.results.directory import schema_error
from tests.data_fixtures import isolated  # noqa: F401 (autouse)
from tests.fake_backend import FakeBackend, registered
from tests.unit.test_data import debian_fashion  # noqa: F401 (a fixture)
from tests.unit.test_data_archives import cifar10  # noqa: F401 (a fixture)

IMAGES, LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def user_data(tmp_path, monkeypatch) -> Path:
    """DLBENCH_DATA_DIR with an mnist/ directory (empty: each test puts its files there)."""
    root = tmp_path / "user-datasets"
    (root / "mnist").mkdir(parents=True)
    monkeypatch.setenv("DLBENCH_DATA_DIR", str(root))
    return root / "mnist"


def gunzip(source: Path, dest: Path) -> Path:
    dest.write_bytes(gzip.decompress(source.read_bytes()))
    return dest


def flip_one_pixel_byte(path: Path) -> None:
    """One changed byte in the image data: the IDX header (all that finding a dataset reads)
    is intact, so only a checksum tells."""
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))


def write_suite(tmp_path: Path, synthetic_too: bool = False) -> Path:
    """Fashion-MNIST's CNN on MNIST's test split (the only split shared/ has)."""
    runs = "  - {framework: pytorch, api: eager}\n"
    if synthetic_too:
        runs += "  - {framework: pytorch, api: eager, synthetic: true}\n"
    path = tmp_path / "suite.yaml"
    path.write_text(textwrap.dedent("""\
        name: provenance
        defaults: {dataset: mnist, train_split: test, epochs: 1, train_limit: 256, test_limit: 128}
        runs:
        """) + runs)
    return path


@pytest.fixture()
def quick_report(monkeypatch):
    monkeypatch.setattr(charts, "all_charts", lambda groups, rows: [])


@pytest.fixture()
def hashing(monkeypatch) -> list[str]:
    """Every file the IDX checks hash, by name (both hash functions: .gz bytes and content)."""
    hashed: list[str] = []
    for name in ("_hash_file", "_hash_content"):
        real = getattr(idx, name)

        def counted(path, real=real):
            hashed.append(Path(path).name)
            return real(path)
        monkeypatch.setattr(idx, name, counted)
    return hashed


# ------------------------------------------------------------------ a wrong file stops the suite

@pytest.mark.usefixtures("quick_report")
def test_an_uncompressed_idx_with_one_changed_byte_stops_the_suite_before_it_starts(
        mnist_test_dir, user_data, tmp_path):
    images = gunzip(mnist_test_dir / f"{IMAGES}.gz", user_data / IMAGES)
    gunzip(mnist_test_dir / f"{LABELS}.gz", user_data / LABELS)
    flip_one_pixel_byte(images)
    assert datasets.require("mnist", ("test",)) == user_data  # finding it does not see the damage
    assert [c.filename for c in datasets.verify_dir("mnist", user_data).bad] == [f"{IMAGES}.gz"]

    suite = load_suite(write_suite(tmp_path))
    backend = FakeBackend()
    with registered(FakeBackend), pytest.raises(DlbenchError) as info:
        runner.run_suite(suite, backend, tmp_path / "results", say=lambda line: None)
    message = str(info.value)
    want = datasets.get("mnist").files[2]
    assert message == (f"{images}: checksum mismatch: content SHA-256 {sha256(images)}, expected "
                       f"{want.content_sha256} (.gz MD5 {hashlib.md5(images.read_bytes()).hexdigest()}, "
                       f"published {want.md5}); nothing was run ('dlbench data verify mnist' checks "
                       f"every file; {datasets.get('mnist').how_to_repair()})")
    assert backend.calls == [] and not (tmp_path / "results").exists()  # not even a preflight


def test_a_wrong_file_is_refused_every_time_not_remembered(mnist_test_dir, user_data, hashing):
    shutil.copy(mnist_test_dir / f"{LABELS}.gz", user_data)
    images = gunzip(mnist_test_dir / f"{IMAGES}.gz", user_data / IMAGES)
    flip_one_pixel_byte(images)
    for _ in range(2):
        hashing.clear()
        with pytest.raises(DlbenchError, match=f"^{images}: checksum mismatch"):
            provenance.require_verified("mnist", ("test",))
        assert IMAGES in hashing


def test_the_verify_hint_names_the_directory_when_a_plain_verify_would_check_another(
        mnist_test_dir, user_data, tmp_path, monkeypatch):
    """The run uses the user's test split; when a plain `data verify mnist` would check
    another directory (one holding every split), the hint says which one to check."""
    images = gunzip(mnist_test_dir / f"{IMAGES}.gz", user_data / IMAGES)
    gunzip(mnist_test_dir / f"{LABELS}.gz", user_data / LABELS)
    flip_one_pixel_byte(images)
    real_locate = datasets.locate

    def locate(name, splits=None):
        if splits is None:  # every split: found in another directory
            return datasets.DatasetLocation(name, tmp_path / "full", ("train", "test"), "cache")
        return real_locate(name, splits)
    monkeypatch.setattr(datasets, "locate", locate)
    with pytest.raises(DlbenchError) as info:
        provenance.require_verified("mnist", ("test",))
    assert f"; nothing was run ('dlbench data verify mnist --dir {user_data}' checks every file; " \
        in str(info.value)


# ------------------------------------------------------------------ an ok run records what it read

@pytest.mark.usefixtures("quick_report")
def test_an_ok_run_records_the_sha256_of_every_file_it_opened(mnist_test_dir, user_data, tmp_path):
    shutil.copy(mnist_test_dir / f"{IMAGES}.gz", user_data)             # as published
    labels = gunzip(mnist_test_dir / f"{LABELS}.gz", user_data / LABELS)  # uncompressed
    suite = load_suite(write_suite(tmp_path, synthetic_too=True))
    with registered(FakeBackend):
        results = runner.run_suite(suite, FakeBackend(), tmp_path / "results", say=lambda line: None).path
        assert bundle.verify(results) == []  # run.json, with `data`, against its schema

    real, synthetic = (json.loads((results / "runs" / run.run_id / "run.json").read_text())
                       for run in suite.runs)
    assert real["outcome"] == synthetic["outcome"] == "ok"
    assert real["data"] == {
        "dataset": "mnist", "source": "DLBENCH_DATA_DIR", "directory": str(user_data),
        "files": [
            {"name": f"{IMAGES}.gz", "split": "test", "bytes": (user_data / f"{IMAGES}.gz").stat().st_size,
             "sha256": sha256(mnist_test_dir / f"{IMAGES}.gz"), "verified": "published .gz"},
            {"name": LABELS, "split": "test", "bytes": labels.stat().st_size,
             "sha256": sha256(labels), "verified": "content SHA-256"},
        ]}
    assert synthetic["data"] == {"dataset": "mnist", "source": "synthetic", "files": []}


def test_a_system_package_is_recorded_as_such(debian_fashion):  # noqa: F811
    checked = provenance.require_verified("fashion-mnist")
    assert (checked.source, checked.directory) == ("system", debian_fashion)
    record = checked.record(("test",))
    assert record["source"] == "system"
    assert {f["name"]: f["sha256"] for f in record["files"]} == {
        f.filename: sha256(debian_fashion / f.filename) for f in datasets.get("fashion-mnist").split_files("test")}


def test_a_converted_dataset_records_its_arrays_and_manifest(cifar10, isolated):  # noqa: F811
    datasets.import_dir("cifar10", cifar10.path)
    directory = isolated / "datasets" / "cifar10"
    record = provenance.require_verified("cifar10", ("train", "test")).record(("test",))
    assert record["source"] == "cache"
    assert [(f["name"], f["split"], f["verified"]) for f in record["files"]] == [
        ("manifest.json", None, "current source and settings"),
        ("test-x.npy", "test", "SHA-256 in manifest.json"), ("test-y.npy", "test", "SHA-256 in manifest.json")]
    assert all(f["sha256"] == sha256(directory / f["name"]) for f in record["files"])

    damaged = directory / "test-y.npy"
    raw = bytearray(damaged.read_bytes())
    raw[-1] ^= 0x01
    damaged.write_bytes(bytes(raw))
    with pytest.raises(DlbenchError, match=f"^{damaged}: checksum mismatch: SHA-256 .*; nothing was run "
                                           r"\('dlbench data verify cifar10' checks every file; "):
        provenance.require_verified("cifar10", ("test",))


# ------------------------------------------------------------------ checked once, then remembered

def test_a_second_check_reads_no_file_until_one_changes(mnist_test_dir, user_data, hashing, isolated):
    shutil.copy(mnist_test_dir / f"{IMAGES}.gz", user_data)
    labels = gunzip(mnist_test_dir / f"{LABELS}.gz", user_data / LABELS)

    first = provenance.require_verified("mnist", ("test",))
    assert sorted(set(hashing)) == sorted([f"{IMAGES}.gz", LABELS])
    assert (isolated / provenance.VERIFIED_CACHE).is_file()  # in the host cache

    hashing.clear()
    again = provenance.require_verified("mnist", ("test",))
    assert hashing == [] and again == first

    stat = labels.stat()
    os.utime(labels, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched
    assert provenance.require_verified("mnist", ("test",)) == first  # checked again, still fine
    assert hashing == [LABELS, LABELS]  # its bytes, then its content

    # changed, with its old size and mtime put back: the ctime still tells (a clock tick
    # later: file times have the kernel clock's granularity)
    time.sleep(0.05)
    hashing.clear()
    stat = labels.stat()
    raw = bytearray(labels.read_bytes())
    raw[-1] ^= 0x01
    labels.write_bytes(bytes(raw))
    os.utime(labels, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(DlbenchError, match=f"^{labels}: checksum mismatch"):
        provenance.require_verified("mnist", ("test",))
    assert hashing == [LABELS, LABELS]  # its bytes, then its content: the images stayed remembered


def test_an_unwritable_cache_only_costs_a_rehash(mnist_test_dir, user_data, hashing, isolated):
    shutil.copytree(mnist_test_dir, user_data, dirs_exist_ok=True)
    isolated.parent.mkdir(parents=True, exist_ok=True)
    isolated.write_text("a file where the cache directory should be")
    provenance.require_verified("mnist", ("test",))
    hashing.clear()
    provenance.require_verified("mnist", ("test",))
    assert sorted(hashing) == sorted([f"{IMAGES}.gz", f"{LABELS}.gz"])


# ------------------------------------------------------------------ the record's schema

def run_record(**data) -> dict:
    return {"schema_version": 1, "run_id": "r", "outcome": "ok", "backend": "local",
            "started_at": "a", "finished_at": "b", "wall_s": 1.0, **({"data": data} if data else {})}


def test_the_run_schema_takes_old_records_and_checks_new_ones():
    good_file = {"name": "x", "split": "test", "bytes": 3, "sha256": "0" * 64, "verified": "published .gz"}
    assert schema_error("run", run_record()) is None  # made before dlbench recorded data
    assert schema_error("run", run_record(dataset="mnist", source="synthetic", files=[])) is None
    assert schema_error("run", run_record(dataset="mnist", source="cache", directory="/d",
                                          files=[good_file])) is None
    assert schema_error("run", run_record(dataset="mnist", source="cache", directory="/d", files=[]))
    assert schema_error("run", run_record(dataset="mnist", source="synthetic", files=[good_file]))
    assert schema_error("run", run_record(dataset="mnist", source="cache", directory="/d",
                                          files=[{**good_file, "sha256": "abc"}]))
    assert schema_error("run", run_record(dataset="mnist", source="elsewhere", files=[]))
