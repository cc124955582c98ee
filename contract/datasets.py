"""The dataset table both sides share: each dataset's format, sample shape, classes and
split sizes (the host prepares and verifies files to match; a workload loads them), and
whether a model can take a dataset. Pure data: no numpy, no file access."""
from __future__ import annotations

from dataclasses import dataclass

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DataError(Exception):
    """A dataset file is missing or malformed (message names the file)."""


@dataclass(frozen=True)
class DatasetInfo:
    """What a workload sees of a dataset: one sample's shape and kind, and the split sizes."""
    name: str
    format: str                 # "idx" (IDX files) | "npy" ({split}-x.npy, {split}-y.npy)
    sample_shape: tuple[int, ...]
    kind: str                   # "image" (uint8 HWC on disk, float32 in [0, 1] here) | "tokens" (int32 ids)
    classes: int
    train: int
    test: int
    vocab_size: int | None = None  # tokens: ids are < vocab_size (0 padding, 1 start, 2 unknown)


DATASETS = {d.name: d for d in (
    DatasetInfo("mnist", "idx", (28, 28, 1), "image", 10, 60000, 10000),
    DatasetInfo("fashion-mnist", "idx", (28, 28, 1), "image", 10, 60000, 10000),
    DatasetInfo("cifar10", "npy", (32, 32, 3), "image", 10, 50000, 10000),
    DatasetInfo("cifar100", "npy", (32, 32, 3), "image", 100, 50000, 10000),
    DatasetInfo("imdb", "npy", (150,), "tokens", 2, 25000, 25000, vocab_size=30000),
)}
NPY_FILES = ("{split}-x.npy", "{split}-y.npy")


def info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r} (known: {', '.join(sorted(DATASETS))})")
    return DATASETS[name]


def model_fits(model, ds: DatasetInfo) -> str | None:
    """Why a workload's model cannot take this dataset, or None when it can."""
    if tuple(model.input_shape) != ds.sample_shape or model.classes != ds.classes:
        return (f"workload {model.name} takes inputs of shape {tuple(model.input_shape)} in "
                f"{model.classes} classes; dataset {ds.name} has {ds.sample_shape} in {ds.classes}")
    if ds.vocab_size and getattr(model, "vocab_size", ds.vocab_size) < ds.vocab_size:
        return f"workload {model.name} has a vocabulary of {model.vocab_size}; {ds.name} uses {ds.vocab_size}"
    return None
