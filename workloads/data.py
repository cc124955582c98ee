"""Datasets as numpy arrays, in memory before any clock starts.

The host prepares and verifies the files (orchestrator/datasets/); here we only read
them: IDX files (MNIST, Fashion-MNIST; plain or gzip-compressed), or the .npy arrays
the host converted the official CIFAR / IMDB archives to once. `synthetic: true`
generates arrays of the same shapes instead, seeded, and learnable (each class has
its own pattern), so a speed run or a test needs no files and still trains.
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib

import numpy as np

# The dataset table is the contract's; DataError and info() are used from here too.
from contract.datasets import NPY_FILES, SPLIT_FILES, DataError, DatasetInfo, info

__all__ = ["DataError", "DatasetInfo", "info", "load", "load_npy_split", "load_split", "read_idx",
           "synthetic_split"]

# IDX type codes -> numpy dtypes (big-endian as the format stores them).
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def load(dataset: dict, split: str, limit: int | None, seed: int):
    """One split of a run's dataset (spec['dataset']): (x, y) with x float32 NHWC in [0, 1]
    for images, int32 token ids for sequences, and y int64."""
    ds = info(dataset["name"])
    if dataset.get("synthetic"):
        return synthetic_split(ds, split, limit, seed)
    if ds.format == "idx":
        return load_split(dataset["path"], split, limit)
    return load_npy_split(ds, dataset["path"], split, limit)


def load_npy_split(ds: DatasetInfo, directory: str, split: str, limit: int | None = None):
    if split not in SPLIT_FILES:
        raise DataError(f"{directory}: unknown split {split!r} (use train or test)")
    x_path, y_path = (os.path.join(directory, n.format(split=split)) for n in NPY_FILES)
    arrays = []
    for path in (x_path, y_path):
        try:  # mmap: a limit reads only the rows it keeps
            arrays.append(np.load(path, mmap_mode="r", allow_pickle=False))
        except FileNotFoundError:
            raise DataError(f"{path}: missing; prepare the dataset on the host with 'dlbench data "
                            f"fetch {ds.name}' or 'dlbench data import {ds.name} FILE'") from None
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: not a readable .npy array ({exc})") from None
    x, y = arrays
    if x.shape[1:] != ds.sample_shape or y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{x_path}: shape {x.shape} with {y.shape} labels; {ds.name} needs "
                        f"(N, {', '.join(map(str, ds.sample_shape))}) and N labels")
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return _as_inputs(ds, np.asarray(x)), np.asarray(y, dtype=np.int64)


def _as_inputs(ds: DatasetInfo, x: np.ndarray) -> np.ndarray:
    if ds.kind == "tokens":
        return x.astype(np.int32)
    return x.astype(np.float32) / 255.0


def synthetic_split(ds: DatasetInfo, split: str, limit: int | None, seed: int):
    """Seeded arrays shaped like the real split. Every class has a pattern the model can
    learn (an image prototype under noise; marker tokens among random words), so accuracy
    rises above chance and a synthetic run still shows a model that trains. Train and test
    draw different samples from the same class patterns."""
    if split not in SPLIT_FILES:
        raise DataError(f"synthetic {ds.name}: unknown split {split!r} (use train or test)")
    n = getattr(ds, split) if limit is None else min(limit, getattr(ds, split))
    patterns = np.random.default_rng([seed, 0])
    rng = np.random.default_rng([seed, 1 if split == "train" else 2])
    y = rng.integers(0, ds.classes, n)
    if ds.kind == "tokens":
        markers = 3 + np.arange(ds.classes * 10).reshape(ds.classes, 10)  # 10 words per class
        x = rng.integers(3 + markers.size, ds.vocab_size, (n, *ds.sample_shape), dtype=np.int32)
        length = ds.sample_shape[0]
        # 8 of the class's words among the last 50 positions (real reviews are pre-padded)
        where = np.argsort(rng.random((n, 50)), axis=1)[:, :8] + (length - 50)
        x[np.arange(n)[:, None], where] = markers[y[:, None], rng.integers(0, 10, (n, 8))]
        return x, y.astype(np.int64)
    # Coarse prototypes (a 4x4 grid of random levels per channel, each cell a block of
    # pixels): they survive convolution and pooling, so a CNN learns them in a few hundred
    # steps even with 100 classes; pixel-level random prototypes averaged out in pooling.
    h, w, c = ds.sample_shape
    grid = patterns.random((ds.classes, 4, 4, c), dtype=np.float32)
    prototypes = grid.repeat(-(-h // 4), axis=1).repeat(-(-w // 4), axis=2)[:, :h, :w]
    images = rng.random((n, *ds.sample_shape), dtype=np.float32)  # in place: CIFAR's is 600 MB
    images *= 0.5
    images += 0.5 * prototypes[y]
    return images, y.astype(np.int64)


def read_idx(path: str) -> np.ndarray:
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as exc:  # zlib.error: corrupt gzip stream
        raise DataError(f"{path}: cannot read ({exc})") from None
    if len(raw) < 4:
        raise DataError(f"{path}: too short to be an IDX file")
    zero, type_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or type_code not in _IDX_TYPES or ndim == 0:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_TYPES[type_code])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: holds {len(raw) - header} data bytes, header {shape} says {expected}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def find_file(directory: str, stem: str) -> str:
    for name in (stem + ".gz", stem):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            return path
    raise DataError(f"{os.path.join(directory, stem)}[.gz]: missing; prepare the dataset "
                    "on the host with 'dlbench data fetch NAME' or 'dlbench data import NAME DIR'")


def load_split(directory: str, split: str, limit: int | None = None):
    """Images as float32 NHWC scaled to [0, 1], labels as int64."""
    if split not in SPLIT_FILES:
        raise DataError(f"{directory}: unknown split {split!r} (use train or test)")
    images_stem, labels_stem = SPLIT_FILES[split]
    images_path = find_file(directory, images_stem)
    labels_path = find_file(directory, labels_stem)
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3:
        raise DataError(f"{images_path}: expected 3 dimensions (N, H, W), found {images.ndim}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{labels_path}: {len(labels)} labels for {len(images)} images")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    x = (images.astype(np.float32) / 255.0)[..., np.newaxis]
    return x, labels.astype(np.int64)
