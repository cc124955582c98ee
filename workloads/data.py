"""Read IDX datasets (MNIST, Fashion-MNIST) into numpy arrays.

The host prepares and verifies the files; here we only parse them. Both the
plain and the gzip-compressed form of each file are accepted.
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib

import numpy as np

# IDX type codes -> numpy dtypes (big-endian as the format stores them).
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DataError(Exception):
    """A dataset file is missing or malformed (message names the file)."""


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
