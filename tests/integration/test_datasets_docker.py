"""CIFAR and IMDB from their official archive formats into real containers, each run next
to its synthetic twin: the import path, the read-only mount, the workloads' .npy reading and
the input-bound check, end to end. The archives are small generated files in the exact
official formats (the real ones cannot be downloaded here); their checksums are published
for the test, as tests/unit/test_data_archives.py does."""
from __future__ import annotations

import json

import numpy as np
import pytest

from orchestrator import datasets
from orchestrator.execution.backends.docker import DockerBackend
from orchestrator.execution.runner import run_suite
from orchestrator.images import BuildOptions
from orchestrator.plan.suite import load_suite
from tests.unit.test_data_archives import make_cifar10, make_imdb, publish

from .helpers import runs, write_suite

pytestmark = [pytest.mark.docker, pytest.mark.framework]


def test_imported_cifar10_and_imdb_train_in_containers_beside_synthetic_twins(
        docker_client, base_image, tmp_path, monkeypatch):
    monkeypatch.setenv("DLBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DLBENCH_DATA_DIR", raising=False)
    cifar = make_cifar10(tmp_path / "cifar-10-python.tar.gz", train=640, test=128)
    publish(monkeypatch, "cifar10", cifar.path, train=640, test=128)
    rng = np.random.default_rng(0)
    # Python ints, as the real file holds (numpy scalars would pickle as globals it refuses)
    reviews = lambda n: [rng.integers(1, 40000, rng.integers(20, 300)).tolist() for _ in range(n)]  # noqa: E731
    imdb = make_imdb(tmp_path / "imdb.npz", x_train=reviews(256), x_test=reviews(64))
    publish(monkeypatch, "imdb", imdb.path, train=256, test=64)
    for name, archive in (("cifar10", cifar.path), ("imdb", imdb.path)):
        datasets.import_dir(name, archive)

    suite = load_suite(write_suite(tmp_path, """
        name: archives
        defaults: {epochs: 1, warmup_steps: 1, batch_size: 64, timeout: 900, train_limit: 256,
                   test_limit: 64}
        matrix:
          workload: [cifar10_cnn, imdb_lstm]
          synthetic: [false, true]
          include: [{workload: cifar10_cnn, dataset: cifar10}, {workload: imdb_lstm, dataset: imdb}]
          framework: [pytorch/eager]
    """))
    backend = DockerBackend(docker_client,
                            build_options=BuildOptions.from_env({"DLBENCH_BASE_IMAGE": base_image}))
    results = run_suite(suite, backend, tmp_path / "results", say=lambda line: None).path

    found = runs(results)
    assert [r["record"]["outcome"] for r in found.values()] == ["ok"] * 4, \
        {k: r["record"].get("message") for k, r in found.items()}
    by_data = {(r["metrics"]["dataset"]["name"], r["metrics"]["dataset"]["synthetic"]): r["metrics"]
               for r in found.values()}
    # the same samples from the converted files as from the generator
    assert {m["dataset"]["train_samples"] for m in by_data.values()} == {256}
    assert {m["dataset"]["test_samples"] for m in by_data.values()} == {64}
    assert by_data[("cifar10", False)]["model"]["parameters"] == 3_441_592
    assert by_data[("imdb", False)]["model"]["parameters"] == 3_840_602
    assert by_data[("imdb", False)]["dataset"]["layout"] == "NT"
    # the synthetic twins were given no dataset directory, the real runs their mount
    specs = [json.loads((results / "runs" / run_id / "spec.json").read_text()) for run_id in found]
    assert sorted((s["dataset"]["synthetic"], s["dataset"]["path"]) for s in specs) == \
        [(False, "/data/cifar10"), (False, "/data/imdb"), (True, None), (True, None)]

    summary = json.loads((results / "summary.json").read_text())
    pairs = {p["dataset"]: p for p in summary["input_bound"]}
    assert set(pairs) == {"cifar10", "imdb"}
    for pair in pairs.values():
        assert pair["ratio"] > 0 and isinstance(pair["input_bound"], bool)
    html = (results / "report.html").read_text()
    assert "Input-bound check" in html and "cifar10_cnn / cifar10 (synthetic)" in html
