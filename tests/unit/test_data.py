"""Dataset preparation on the host (orchestrator.datasets) and the IDX reader the
containers use (workloads.data), on REAL data: the official MNIST test split
from shared/ and Debian's Fashion-MNIST package. Downloads go to a real HTTP
server on 127.0.0.1, never the internet."""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from orchestrator import datasets
from orchestrator.cli.data import _Progress
from orchestrator.errors import DlbenchError
from tests.data_fixtures import closed_port_url, isolated, serve  # noqa: F401 (autouse)
from workloads.data import DataError, load_split, read_idx

REPO = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI", "").lower() == "true"
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
MNIST_TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


@pytest.fixture(scope="session")
def debian_fashion() -> Path:
    if not all((DEBIAN_FASHION / f.filename).is_file() for f in datasets.get("fashion-mnist").files):
        if IN_CI:
            pytest.fail("dataset-fashion-mnist not installed (CI installs it)")
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    return DEBIAN_FASHION


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_under(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


def spec(name: str, filename: str) -> datasets.DataFile:
    return next(f for f in datasets.get(name).files if f.filename == filename)


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- registry vs real files

def test_registry_matches_real_mnist_test_files(mnist_test_dir):
    def sums(listing: str) -> dict[str, str]:
        return dict(line.split()[::-1] for line in (mnist_test_dir / listing).read_text().splitlines())

    published_md5, published_sha = sums("MD5SUMS"), sums("SHA256SUMS")
    for filename in MNIST_TEST_FILES:
        f, path = spec("mnist", filename), mnist_test_dir / filename
        assert md5(path) == f.md5 == published_md5[filename]
        assert sha256(path) == f.sha256 == published_sha[filename]
        assert path.stat().st_size == f.size
        assert hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest() == f.content_sha256
    check = datasets.verify_dir("mnist", mnist_test_dir)
    assert check.splits == ("test",)
    assert [c.method for c in check.files if c.path] == ["published .gz"] * 2


def test_registry_is_consistent():
    for ds in datasets.DATASETS.values():
        assert ds.splits == ("train", "test")
        for f in ds.files:
            assert len(f.md5) == 32 and (f.sha256 is None or len(f.sha256) == 64)
            assert f.count == (60000 if f.split == "train" else 10000)
            assert f.shape[1:] == ((28, 28) if f.kind == "images" else ())
        assert ds.mirrors and all(m.startswith(("http://", "https://")) for m in ds.mirrors)
    assert datasets.DATASETS["mnist"].mirrors[0] == "https://ossci-datasets.s3.amazonaws.com/mnist/"
    with pytest.raises(DlbenchError, match="unknown dataset 'cifar'.*fashion-mnist, mnist"):
        datasets.get("cifar")


def test_the_package_has_no_import_cycle():
    """The kinds import only common.py; only the package's face imports the kinds."""
    import grimp

    graph = grimp.build_graph("orchestrator", cache_dir=None)
    package = "orchestrator.datasets"
    inside = graph.find_descendants(package) | {package}
    imports = {m.rsplit(".", 1)[-1]: graph.find_modules_directly_imported_by(m) & inside for m in inside}
    assert imports["common"] == set()
    assert imports["idx"] == imports["archives"] == {f"{package}.common"}
    assert imports["datasets"] == {f"{package}.{m}" for m in ("common", "idx", "archives")}


# --------------------------------------------------------------------------- import, require

def test_import_test_split_only_then_require(mnist_test_dir, isolated):
    result = datasets.import_dir("mnist", mnist_test_dir)     # README, MD5SUMS… are ignored
    cache = isolated / "datasets" / "mnist"
    assert result.directory == cache
    assert result.imported == ("test",) and result.splits == ("test",)
    assert result.missing == ("train",)
    assert sorted(p.name for p in files_under(cache)) == sorted(MNIST_TEST_FILES)
    for filename in MNIST_TEST_FILES:
        assert sha256(cache / filename) == sha256(mnist_test_dir / filename)
        assert (cache / filename).stat().st_mode & 0o044 == 0o044    # readable in containers

    with pytest.raises(DlbenchError) as exc:
        datasets.require("mnist")
    message = one_line(exc)
    assert "mnist: train split missing" in message
    assert "dlbench data fetch mnist" in message and "dlbench data import mnist DIR" in message
    assert datasets.require("mnist", splits=("test",)) == cache

    loc = datasets.locate("mnist")
    assert loc.source == "cache" and loc.splits == ("test",)
    assert ("mnist", loc, ("test",)) in datasets.status()


def test_require_nothing_prepared(isolated):
    with pytest.raises(DlbenchError) as exc:
        datasets.require("mnist")
    message = one_line(exc)
    assert "dataset mnist is not prepared" in message and str(isolated) in message
    with pytest.raises(DlbenchError, match="no split 'valid'"):
        datasets.require("mnist", splits=("valid",))


def test_import_uncompressed_files_are_gzipped_and_verified(mnist_test_dir, tmp_path, isolated):
    source = tmp_path / "plain"
    source.mkdir()
    for filename in MNIST_TEST_FILES:     # the dotted names gunzip -N gives
        stem = filename[:-3].replace("-idx", ".idx")
        (source / stem).write_bytes(gzip.decompress((mnist_test_dir / filename).read_bytes()))
    result = datasets.import_dir("mnist", source)
    assert result.imported == ("test",)
    assert {how for _, how in result.files} == {"content SHA-256"}
    cache = isolated / "datasets" / "mnist"
    assert sorted(p.name for p in files_under(cache)) == sorted(MNIST_TEST_FILES)
    assert datasets.verify_dir("mnist", cache).splits == ("test",)
    first = sha256(cache / MNIST_TEST_FILES[1])
    datasets.import_dir("mnist", source)                    # deterministic gzip: same bytes again
    assert sha256(cache / MNIST_TEST_FILES[1]) == first


def copy_with_one_byte_flipped(source: Path, dest: Path, name: str, mask: int) -> Path:
    """A copy of a real dataset directory in which one file has one byte damaged."""
    shutil.copytree(source, dest)
    target = dest / name
    raw = bytearray(target.read_bytes())
    raw[len(raw) // 2] ^= mask
    target.chmod(0o644)
    target.write_bytes(bytes(raw))
    return dest


def test_import_corrupt_file_names_it_and_copies_nothing(mnist_test_dir, tmp_path, isolated):
    source = copy_with_one_byte_flipped(mnist_test_dir, tmp_path / "src",
                                        "t10k-labels-idx1-ubyte.gz", 0xFF)
    labels = source / "t10k-labels-idx1-ubyte.gz"
    with pytest.raises(DlbenchError) as exc:
        datasets.import_dir("mnist", source)
    message = one_line(exc)
    assert str(labels) in message and "checksum mismatch" in message
    assert md5(labels) in message and spec("mnist", labels.name).md5 in message
    assert files_under(isolated) == []


def test_import_needs_a_complete_split(mnist_test_dir, tmp_path, isolated):
    source = tmp_path / "half"
    source.mkdir()
    shutil.copy(mnist_test_dir / "t10k-images-idx3-ubyte.gz", source)
    with pytest.raises(DlbenchError) as exc:
        datasets.import_dir("mnist", source)
    assert "no complete mnist split" in one_line(exc) and "t10k-labels-idx1-ubyte.gz" in str(exc.value)
    with pytest.raises(DlbenchError, match="no mnist files there"):
        datasets.import_dir("mnist", _empty(tmp_path))
    with pytest.raises(DlbenchError, match="not a directory"):
        datasets.import_dir("mnist", tmp_path / "nope")
    assert files_under(isolated) == []


def _empty(tmp_path: Path) -> Path:
    d = tmp_path / "empty"
    d.mkdir()
    (d / "README.md").write_text("nothing here\n")
    return d


def test_import_other_datasets_file_is_named(debian_fashion, tmp_path, isolated):
    source = tmp_path / "mixed"
    source.mkdir()
    for f in datasets.get("fashion-mnist").split_files("test"):
        shutil.copy(debian_fashion / f.filename, source)
    with pytest.raises(DlbenchError) as exc:
        datasets.import_dir("mnist", source)
    assert "this is the fashion-mnist t10k-images-idx3-ubyte.gz" in one_line(exc)


def test_data_dir_env_is_searched_first(mnist_test_dir, tmp_path, monkeypatch):
    root = tmp_path / "datasets"
    shutil.copytree(mnist_test_dir, root / "mnist")
    monkeypatch.setenv("DLBENCH_DATA_DIR", str(root))
    loc = datasets.locate("mnist", ("test",))
    assert loc.directory == root / "mnist" and loc.source == "DLBENCH_DATA_DIR"
    assert datasets.require("mnist", ("test",)) == root / "mnist"


def test_wrong_header_is_not_a_complete_split(mnist_test_dir, tmp_path, monkeypatch):
    root = tmp_path / "datasets"
    (root / "mnist").mkdir(parents=True)
    shutil.copy(mnist_test_dir / "t10k-images-idx3-ubyte.gz", root / "mnist")
    # labels under the images' name: present, but the IDX header says otherwise
    shutil.copy(mnist_test_dir / "t10k-labels-idx1-ubyte.gz", root / "mnist" / "t10k-labels-idx1-ubyte")
    shutil.copy(mnist_test_dir / "t10k-labels-idx1-ubyte.gz", root / "mnist" / "t10k-images-idx3-ubyte")
    (root / "mnist" / "t10k-images-idx3-ubyte.gz").unlink()
    monkeypatch.setenv("DLBENCH_DATA_DIR", str(root))
    assert datasets.complete_splits("mnist", root / "mnist") == ()
    assert datasets.locate("mnist") is None


# --------------------------------------------------------------------------- reading real data

def test_load_real_mnist_test_split(mnist_test_dir):
    x, y = load_split(str(mnist_test_dir), "test")
    assert x.shape == (10000, 28, 28, 1) and x.dtype == np.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.max()) == 1.0
    assert 0.05 < float(x.mean()) < 0.3                  # real digits, not noise or blanks
    assert y.shape == (10000,) and y.dtype == np.int64
    counts = np.bincount(y, minlength=10)
    assert len(counts) == 10 and counts.sum() == 10000
    assert counts.min() >= 850 and counts.max() <= 1150   # ~1000 of each digit
    assert y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]   # the well-known first test labels
    x5, y5 = load_split(str(mnist_test_dir), "test", limit=5)
    assert x5.shape == (5, 28, 28, 1) and np.array_equal(y5, y[:5])


def test_debian_fashion_mnist_is_located_and_verified(debian_fashion, isolated):
    loc = datasets.locate("fashion-mnist")
    assert loc is not None and loc.directory == debian_fashion and loc.source == "system"
    assert loc.splits == ("train", "test")
    assert datasets.require("fashion-mnist") == debian_fashion
    check = datasets.verify_dir("fashion-mnist", debian_fashion)
    # Debian re-wrote the gzip headers: accepted by content, not by the .gz MD5
    assert check.splits == ("train", "test") and not check.bad
    assert {c.method for c in check.files} == {"content SHA-256"}
    x, y = load_split(str(debian_fashion), "train")
    assert x.shape == (60000, 28, 28, 1) and y.shape == (60000,)
    assert np.bincount(y).tolist() == [6000] * 10          # Fashion-MNIST is exactly balanced


def test_debian_fashion_gzip_is_the_published_stream(debian_fashion):
    """Why content hashes exist: restoring the gzip header Debian normalised (file
    name + original mtime) gives back the published file, MD5 and all."""
    f = spec("fashion-mnist", "t10k-labels-idx1-ubyte.gz")
    body = (debian_fashion / f.filename).read_bytes()
    assert hashlib.md5(body).hexdigest() != f.md5
    original = (b"\x1f\x8b\x08\x08" + struct.pack("<I", 1504176627) + b"\x00\x03"
                + f.stem.encode() + b"\x00" + body[10:])
    assert hashlib.md5(original).hexdigest() == f.md5
    assert hashlib.sha256(original).hexdigest() == f.sha256
    assert len(original) == f.size


# --------------------------------------------------------------------------- fetch over HTTP

def test_fetch_from_loopback_server(mnist_test_dir, isolated, monkeypatch):
    seen = []
    with serve(mnist_test_dir) as url:
        monkeypatch.setenv("DLBENCH_DATA_MIRROR", url)
        result = datasets.fetch("mnist", splits=("test",),
                            progress=lambda name, done, total: seen.append((name, done, total)))
    cache = isolated / "datasets" / "mnist"
    assert [name for name, _ in result.downloaded] == list(MNIST_TEST_FILES)
    assert all(u.startswith(url) for _, u in result.downloaded)
    assert sorted(p.name for p in files_under(cache)) == sorted(MNIST_TEST_FILES)
    for filename in MNIST_TEST_FILES:
        f = spec("mnist", filename)
        assert md5(cache / filename) == f.md5 and sha256(cache / filename) == f.sha256
    assert result.splits == ("test",)
    assert ("t10k-images-idx3-ubyte.gz", 1648877, 1648877) in seen

    # already verified files are kept, so no mirror is needed a second time
    again = datasets.fetch("mnist", splits=("test",), mirrors=[closed_port_url()])
    assert again.downloaded == [] and again.already == list(MNIST_TEST_FILES)


def test_fetch_all_splits_fails_on_the_missing_train_files(mnist_test_dir):
    with serve(mnist_test_dir) as url:
        with pytest.raises(DlbenchError) as exc:
            datasets.fetch("mnist", mirrors=[url])
    message = one_line(exc)
    assert "train-images-idx3-ubyte.gz" in message and "404" in message
    assert "dlbench data import mnist DIR" in message


def test_fetch_corrupted_file_is_an_error_and_leaves_nothing(mnist_test_dir, tmp_path, isolated):
    served = copy_with_one_byte_flipped(mnist_test_dir, tmp_path / "served",
                                        "t10k-images-idx3-ubyte.gz", 0x01)
    target = served / "t10k-images-idx3-ubyte.gz"
    with serve(served) as url:
        with pytest.raises(DlbenchError) as exc:
            datasets.fetch("mnist", splits=("test",), mirrors=[url])
    message = one_line(exc)
    assert "t10k-images-idx3-ubyte.gz" in message and "checksum mismatch" in message
    assert md5(target) in message and spec("mnist", target.name).md5 in message
    assert files_under(isolated) == []                     # no partial or unverified file


def test_fetch_unreachable_mirror_is_one_line(isolated):
    url = closed_port_url()
    with pytest.raises(DlbenchError) as exc:
        datasets.fetch("mnist", mirrors=[url])
    message = one_line(exc)
    assert url in message and "dlbench data import mnist DIR" in message
    assert files_under(isolated) == []


def test_fetch_tries_mirrors_in_order(mnist_test_dir, isolated):
    dead = closed_port_url()
    with serve(mnist_test_dir) as url:
        result = datasets.fetch("mnist", splits=("test",), mirrors=[dead, url])
    assert [u for _, u in result.downloaded] == [url + f for f in MNIST_TEST_FILES]
    assert len(result.failures) == 2 and all(dead in f for f in result.failures)


# --------------------------------------------------------------------------- workloads.data edge cases

def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes((0, 0, 0x08, array.ndim)) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_split(directory: Path, images: bytes, labels: bytes, compress=True) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for stem, payload in (("t10k-images-idx3-ubyte", images), ("t10k-labels-idx1-ubyte", labels)):
        if compress:
            (directory / (stem + ".gz")).write_bytes(gzip.compress(payload))
        else:
            (directory / stem).write_bytes(payload)


@pytest.fixture
def small():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (6, 28, 28)), np.arange(6) % 10


def test_idx_uncompressed_files_load(tmp_path, small):
    images, labels = small
    write_split(tmp_path, idx_bytes(images), idx_bytes(labels), compress=False)
    x, y = load_split(str(tmp_path), "test")
    assert x.shape == (6, 28, 28, 1) and np.allclose(x[..., 0] * 255, images)
    assert y.tolist() == labels.tolist()


def test_idx_truncated_file(tmp_path, small):
    images, labels = small
    write_split(tmp_path, idx_bytes(images)[:-100], idx_bytes(labels))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: holds"):
        load_split(str(tmp_path), "test")


def test_idx_truncated_header(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(DataError, match="x-idx3-ubyte: truncated header"):
        read_idx(str(path))


def test_idx_bad_magic(tmp_path, small):
    images, labels = small
    write_split(tmp_path, b"\x12\x34" + idx_bytes(images)[2:], idx_bytes(labels))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: not an IDX file"):
        load_split(str(tmp_path), "test")


def test_idx_label_image_count_mismatch(tmp_path, small):
    images, labels = small
    write_split(tmp_path, idx_bytes(images), idx_bytes(labels[:5]))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: 5 labels for 6 images"):
        load_split(str(tmp_path), "test")


def test_idx_missing_file(tmp_path, small):
    images, _ = small
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte\\[.gz\\]: missing"):
        load_split(str(tmp_path), "test")


def test_idx_truncated_gzip(tmp_path, small):
    images, labels = small
    write_split(tmp_path, idx_bytes(images), idx_bytes(labels))
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: cannot read"):
        load_split(str(tmp_path), "test")


def test_idx_corrupt_gzip_stream(tmp_path, mnist_test_dir):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray((mnist_test_dir / path.name).read_bytes())
    raw[100] ^= 0xFF                     # inside the deflate data: 'invalid distance too far back'
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz"):
        read_idx(str(path))


# --------------------------------------------------------------------------- dlbench data …

def run_cli(*argv: str) -> int:
    import argparse

    from orchestrator.cli.data import add_data_commands
    parser = argparse.ArgumentParser(prog="dlbench")
    add_data_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_cli_data_lines_show_control_characters_escaped(mnist_test_dir, isolated, tmp_path, monkeypatch,
                                                       capsys):
    """A data directory's name is the user's: an ESC in it must not drive the terminal."""
    root = tmp_path / "data\x1b[2J\x1b]0;owned\x07"
    shutil.copytree(mnist_test_dir, root / "mnist")
    monkeypatch.setenv("DLBENCH_DATA_DIR", str(root))
    shown = str(root).replace("\x1b", "\\x1b").replace("\x07", "\\x07")
    assert run_cli("data", "list") == 0
    assert run_cli("data", "verify", "mnist") == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    line = next(l for l in out.splitlines() if l.startswith("mnist "))
    assert f" {shown}/mnist  [DLBENCH_DATA_DIR]" in line
    assert out.splitlines()[-1] == f"mnist: test verified in {shown}/mnist"


def test_the_progress_line_escapes_the_name_not_its_own_carriage_return():
    stream = io.StringIO()
    stream.isatty = lambda: True
    _Progress(stream)("evil\x1b[2K.gz", 5_000_000, 10_000_000)
    shown = stream.getvalue()
    assert shown.startswith("\r  evil\\x1b[2K.gz ") and shown.endswith("5.0/10.0 MB")
    assert "\x1b" not in shown and shown.count("\r") == 1


def test_cli_import_list_verify_fetch(mnist_test_dir, isolated, capsys):
    assert run_cli("data", "import", "mnist", str(mnist_test_dir)) == 0
    out = capsys.readouterr().out
    assert "mnist: imported test into" in out and "train still missing" in out

    assert run_cli("data", "list") == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("mnist "))
    assert "test" in line and str(isolated) in line and "(train missing)" in line

    assert run_cli("data", "verify", "mnist") == 0
    out = capsys.readouterr().out
    assert "missing  train-images-idx3-ubyte.gz" in out and "mnist: test verified" in out

    (isolated / "datasets" / "mnist" / MNIST_TEST_FILES[0]).unlink()
    with serve(mnist_test_dir) as url:
        assert run_cli("data", "fetch", "mnist", "--split", "test", "--mirror", url) == 0
    out = capsys.readouterr().out
    assert f"downloaded {MNIST_TEST_FILES[0]} from {url}" in out
    assert f"already in the cache: {MNIST_TEST_FILES[1]}" in out

    labels = isolated / "datasets" / "mnist" / MNIST_TEST_FILES[1]
    labels.write_bytes(gzip.compress(b"not idx"))
    with pytest.raises(DlbenchError) as exc:
        run_cli("data", "verify", "mnist", "--dir", str(labels.parent))
    assert str(labels) in one_line(exc) and "checksum mismatch" in str(exc.value)
